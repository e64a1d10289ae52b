#include "worker/data.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "common/util.h"

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
  };
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
    if (f.size() < 2 || f.size() > 4)
      return Status::InvalidArgument(where + "expected 'user item [domain] [timestamp]', got " +
                                     std::to_string(f.size()) + " fields");
    uint64_t u, i, ts = 0, dom = 0;
    if (!ParseU64(f[0], &u) || u >= kMaxId)
      return Status::InvalidArgument(where + "user id '" + f[0] + "' is not a non-negative integer");
    if (!ParseU64(f[1], &i) || i >= kMaxId)
      return Status::InvalidArgument(where + "item id '" + f[1] + "' is not a non-negative integer");
    if (f.size() >= 3 && !ParseU64(f[2], &dom))
      return Status::InvalidArgument(where + "domain '" + f[2] + "' is not a non-negative integer");
    if (f.size() == 4 && !ParseU64(f[3], &ts))
      return Status::InvalidArgument(where + "timestamp '" + f[3] + "' is not a non-negative integer");
    rows.push_back(Row{static_cast<uint32_t>(u), static_cast<uint32_t>(i), static_cast<int64_t>(ts),
                       lineno});
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
  out.count = rows.size();
  return out;
}

Split LeaveLastOut(const Interactions& data) {
  Split s;
  s.train.resize(data.num_users);
  s.test.assign(data.num_users, -1);
  s.item_popularity.assign(data.num_items, 0);
  for (uint32_t u = 0; u < data.num_users; ++u) {
    const auto& items = data.by_user[u];
    size_t n_train = items.size() >= 3 ? items.size() - 1 : items.size();
    s.train[u].assign(items.begin(), items.begin() + n_train);
    if (n_train < items.size()) s.test[u] = items.back();
    for (uint32_t i : s.train[u]) s.item_popularity[i]++;
  }
  return s;
}

Status WriteNpy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status::IOError("cannot write '" + path + "'");
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&hl), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  if (!out) return Status::IOError("cannot write '" + path + "'");
  return Status::OK();
}

Status WriteSynthetic(const SynthConfig& c, uint64_t seed, const std::string& dir) {
  M6_RETURN_IF_ERROR(MakeDirs(dir));
  std::mt19937_64 rng(seed);
  const int K = c.clusters;
  std::vector<int> user_cluster(c.users), item_cluster(c.items), item_domain(c.items);
  std::uniform_int_distribution<int> pick_cluster(0, K - 1);
  for (auto& x : user_cluster) x = pick_cluster(rng);
  for (int i = 0; i < c.items; ++i) {
    item_cluster[i] = pick_cluster(rng);
    item_domain[i] = i % c.domains;
  }
  std::vector<std::vector<int>> items_of(K);
  for (int i = 0; i < c.items; ++i) items_of[item_cluster[i]].push_back(i);
  for (auto& v : items_of)
    if (v.empty()) v.push_back(static_cast<int>(rng() % c.items));

  // Popularity inside a cluster follows a Zipf-like law: rank r drawn with weight 1/(r+1)^0.8.
  std::vector<std::discrete_distribution<size_t>> zipf(K);
  for (int k = 0; k < K; ++k) {
    std::vector<double> w(items_of[k].size());
    for (size_t r = 0; r < w.size(); ++r) w[r] = 1.0 / std::pow(r + 1.0, 0.8);
    zipf[k] = std::discrete_distribution<size_t>(w.begin(), w.end());
  }

  std::ofstream inter(dir + "/interactions.tsv");
  inter << "# user\titem\tdomain\ttimestamp (synthetic, seed " << seed << ")\n";
  std::uniform_real_distribution<double> unif(0, 1);
  std::uniform_int_distribution<int> any_item(0, c.items - 1);
  for (int u = 0; u < c.users; ++u) {
    // A user's interest drifts to a second cluster over time: sequences carry order information.
    int k1 = user_cluster[u], k2 = (k1 + 1 + static_cast<int>(rng() % (K > 1 ? K - 1 : 1))) % K;
    int n = c.interactions_per_user / 2 + static_cast<int>(rng() % (c.interactions_per_user + 1));
    n = std::max(n, 3);
    for (int t = 0; t < n; ++t) {
      double drift = static_cast<double>(t) / n;
      int item;
      double r = unif(rng);
      if (r < 0.1) {
        item = any_item(rng);
      } else {
        int k = unif(rng) < 0.75 - 0.5 * drift ? k1 : k2;
        item = items_of[k][zipf[k](rng)];
      }
      inter << u << '\t' << item << '\t' << item_domain[item] << '\t' << (1000000 + u * 1000 + t)
            << '\n';
    }
  }
  if (!inter) return Status::IOError("cannot write " + dir + "/interactions.tsv");

  std::ofstream social(dir + "/social.tsv");
  social << "# user\tfriend\n";
  std::vector<std::vector<int>> users_of(K);
  for (int u = 0; u < c.users; ++u) users_of[user_cluster[u]].push_back(u);
  for (int u = 0; u < c.users; ++u)
    for (int f = 0; f < c.friends_per_user; ++f) {
      const auto& pool = unif(rng) < 0.8 ? users_of[user_cluster[u]] : users_of[pick_cluster(rng)];
      if (pool.empty()) continue;
      int v = pool[rng() % pool.size()];
      if (v != u) social << u << '\t' << v << '\n';
    }

  std::ofstream tokens(dir + "/item_tokens.tsv");
  tokens << "# item\ttokens...\n";
  const int per_cluster_vocab = std::max(1, c.tokens / (2 * K));
  for (int i = 0; i < c.items; ++i) {
    tokens << i;
    for (int t = 0; t < c.tokens_per_item; ++t) {
      int tok = unif(rng) < 0.6
                    ? item_cluster[i] * per_cluster_vocab + static_cast<int>(rng() % per_cluster_vocab)
                    : static_cast<int>(rng() % c.tokens);
      tokens << '\t' << tok % c.tokens;
    }
    tokens << '\n';
  }

  std::normal_distribution<float> noise(0.0f, 1.0f);
  auto features = [&](int d, const std::string& name) -> Status {
    if (d == 0) return Status::OK();
    std::vector<float> centroid(size_t(K) * d), m(size_t(c.items) * d);
    for (auto& x : centroid) x = noise(rng);
    for (int i = 0; i < c.items; ++i)
      for (int j = 0; j < d; ++j)
        m[size_t(i) * d + j] = centroid[size_t(item_cluster[i]) * d + j] + 0.7f * noise(rng);
    return WriteNpy(dir + "/" + name, m, c.items, d);
  };
  M6_RETURN_IF_ERROR(features(c.image_dim, "item_image.npy"));
  M6_RETURN_IF_ERROR(features(c.audio_dim, "item_audio.npy"));

  std::ofstream meta(dir + "/meta.json");
  meta << "{\"users\": " << c.users << ", \"items\": " << c.items << ", \"domains\": " << c.domains
       << ", \"clusters\": " << K << ", \"seed\": " << seed << "}\n";
  if (!meta || !social || !tokens) return Status::IOError("cannot write synthetic data under " + dir);
  return Status::OK();
}

}  // namespace m6rec
