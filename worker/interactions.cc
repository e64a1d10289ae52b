#include "worker/interactions.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace m6rec {

namespace {

// Parses a non-negative integer field; false when it is not one.
bool ParseU64(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (*end != '\0' || errno != 0) return false;
  *out = v;
  return true;
}

std::vector<std::string> SplitFields(const std::string& line) {
  std::vector<std::string> f;
  std::istringstream is(line);
  for (std::string x; is >> x;) f.push_back(x);
  return f;
}

}  // namespace

StatusOr<Interactions> ReadInteractions(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open interactions file '" + path + "'");
  struct Row {
    uint32_t user, item;
    int64_t ts;
    uint64_t line;
    int64_t domain;
    float rating;
  };
  int rated = -1;  // whether lines carry a rating (decided by the first line)
  std::vector<Row> rows;
  std::string line;
  uint64_t lineno = 0;
  uint32_t max_user = 0, max_item = 0;
  const uint64_t kMaxId = 1u << 31;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto f = SplitFields(line);
    auto where = path + ":" + std::to_string(lineno) + ": ";
    if (f.size() < 2 || f.size() > 5)
      return Status::InvalidArgument(where +
                                     "expected 'user item [domain] [timestamp] [rating]', got " +
                                     std::to_string(f.size()) + " fields");
    float rating = 0;
    if (rated < 0) rated = f.size() == 5;
    if ((f.size() == 5) != (rated == 1))
      return Status::InvalidArgument(where + (rated ? "no rating, but earlier lines have one"
                                                    : "a rating, but earlier lines have none"));
    if (f.size() == 5) {
      char* end = nullptr;
      rating = std::strtof(f[4].c_str(), &end);
      if (f[4].empty() || *end != '\0' || !std::isfinite(rating))
        return Status::InvalidArgument(where + "rating '" + f[4] + "' is not a number");
    }
    uint64_t u, i, ts = 0, dom = 0;
    if (!ParseU64(f[0], &u) || u >= kMaxId)
      return Status::InvalidArgument(where + "user id '" + f[0] +
                                     "' is not a non-negative integer");
    if (!ParseU64(f[1], &i) || i >= kMaxId)
      return Status::InvalidArgument(where + "item id '" + f[1] +
                                     "' is not a non-negative integer");
    if (f.size() >= 3 && !ParseU64(f[2], &dom))
      return Status::InvalidArgument(where + "domain '" + f[2] + "' is not a non-negative integer");
    if (f.size() >= 4 && !ParseU64(f[3], &ts))
      return Status::InvalidArgument(where + "timestamp '" + f[3] +
                                     "' is not a non-negative integer");
    rows.push_back(Row{static_cast<uint32_t>(u), static_cast<uint32_t>(i), static_cast<int64_t>(ts),
                       lineno, f.size() >= 3 ? static_cast<int64_t>(dom) : -1, rating});
    max_user = std::max<uint32_t>(max_user, u);
    max_item = std::max<uint32_t>(max_item, i);
  }
  if (in.bad()) return Status::IOError("error reading '" + path + "'");
  if (rows.empty()) return Status::InvalidArgument(path + ": no interactions");
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.user != b.user ? a.user < b.user : a.ts < b.ts;
  });
  Interactions out;
  out.num_users = max_user + 1;
  out.num_items = max_item + 1;
  out.by_user.resize(out.num_users);
  for (const auto& r : rows) out.by_user[r.user].push_back(r.item);
  if (rated == 1) {
    out.ratings_by_user.resize(out.num_users);
    for (const auto& r : rows) out.ratings_by_user[r.user].push_back(r.rating);
  }
  out.user_domain.assign(out.num_users, -1);
  out.item_domain.assign(out.num_items, -1);
  out.partitioned = rows[0].domain >= 0;
  for (const auto& r : rows) {
    for (auto [slot, id] :
         {std::make_pair(&out.user_domain, r.user), std::make_pair(&out.item_domain, r.item)}) {
      int64_t& d = (*slot)[id];
      if (d >= 0 && d != r.domain) out.partitioned = false;
      d = r.domain;
    }
  }
  out.count = rows.size();
  return out;
}

}  // namespace m6rec
