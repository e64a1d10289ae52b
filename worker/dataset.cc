#include "worker/dataset.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "common/keys.h"
#include "worker/dataset_parts.h"
#include "worker/interactions.h"
#include "worker/pca.h"

namespace m6rec {

namespace dataset_parts {

bool ParseId(const std::string& s, uint32_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v >= (1u << 31)) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

std::string Where(const std::string& path, uint64_t line) {
  return path + ":" + std::to_string(line) + ": ";
}

void Finish(Dataset* d) {
  d->item_popularity.assign(d->num_items, 0);
  d->train_interactions = 0;
  for (const auto& items : d->train) {
    for (uint32_t i : items) d->item_popularity[i]++;
    d->train_interactions += items.size();
  }
  d->train.resize(d->num_users);
}

// Leave-last-out on time-ordered per-user lists: last = test, second last = valid (>= 3 items).
void LeaveLastOut(const std::vector<std::vector<uint32_t>>& seqs, Dataset* d) {
  d->num_users = static_cast<uint32_t>(seqs.size());
  d->train.assign(seqs.size(), {});
  d->test_item.assign(seqs.size(), -1);
  d->valid_item.assign(seqs.size(), -1);
  for (size_t u = 0; u < seqs.size(); ++u) {
    const auto& s = seqs[u];
    if (s.size() >= 3) {
      d->train[u].assign(s.begin(), s.end() - 2);
      d->valid_item[u] = s[s.size() - 2];
      d->test_item[u] = s.back();
    } else {
      d->train[u] = s;
    }
  }
}

// Ratings parallel to the sequences LeaveLastOut split: the training ones, and the validation
// (and, with test_too, the test) items' as rated pairs.
void SplitRatings(const std::vector<std::vector<float>>& ratings, bool test_too, Dataset* d) {
  d->train_ratings.resize(d->num_users);
  d->rated_valid.resize(d->num_users);
  d->rated_test.resize(d->num_users);
  for (uint32_t u = 0; u < d->num_users && u < ratings.size(); ++u) {
    const auto& r = ratings[u];
    d->train_ratings[u].assign(r.begin(), r.begin() + long(d->train[u].size()));
    if (d->valid_item[u] >= 0) d->rated_valid[u] = {{uint32_t(d->valid_item[u]), r[r.size() - 2]}};
    if (d->test_item[u] >= 0 && test_too)
      d->rated_test[u] = {{uint32_t(d->test_item[u]), r.back()}};
  }
}

uint32_t MaxItem(const std::vector<std::vector<uint32_t>>& lists) {
  uint32_t m = 0;
  for (const auto& l : lists)
    for (uint32_t i : l) m = std::max(m, i);
  return m;
}

// Token t's name in the dataset's vocabulary.
void NameToken(Dataset* d, uint32_t t, std::string s) {
  if (d->token_names.size() <= t) d->token_names.resize(t + 1);
  d->token_names[t] = std::move(s);
}

void CountTokens(Dataset* d) {
  uint32_t m = 0;
  bool any = false;
  for (const auto* lists : {&d->item_tokens, &d->user_tokens})
    for (const auto& l : *lists)
      for (uint32_t t : l) {
        m = std::max(m, t);
        any = true;
      }
  d->num_tokens = any ? m + 1 : 0;
  d->item_tokens.resize(d->num_items);
  d->user_tokens.resize(d->num_users);
}

}  // namespace dataset_parts

namespace {

Status ReadAttributes(const std::string& path, Dataset* d) {
  std::ifstream in(path);
  if (!in) return Status::OK();  // optional
  auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Status::InvalidArgument(path + ": not a JSON object of item -> [attribute ids]");
  d->item_tokens.assign(d->num_items, {});
  for (auto& [key, val] : j.items()) {
    uint32_t item;
    if (!ParseId(key, &item) || !val.is_array())
      return Status::InvalidArgument(path + ": entry '" + key + "' is not item -> [attribute ids]");
    if (item >= d->num_items) continue;  // an item that never occurs in the sequences
    for (const auto& a : val) {
      if (!a.is_number_unsigned())
        return Status::InvalidArgument(path + ": item " + key + " has a non-integer attribute");
      d->item_tokens[item].push_back(a.get<uint32_t>());
    }
  }
  return Status::OK();
}

// Calls fn(line number, first field, rest of the line) for every non-blank, non-'#' line.
Status ForEachRecord(
    const std::string& path,
    const std::function<Status(uint64_t, const std::string&, std::istringstream&)>& fn) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::string line, first;
  uint64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    if (!(is >> first)) continue;
    M6_RETURN_IF_ERROR(fn(n, first, is));
  }
  return Status::OK();
}

// "item f1 f2 ... fd" lines (any order; every item 0..items-1 exactly once, d the same on
// every line) -> a row-major matrix.
StatusOr<NpyMatrix> ReadFeatureTsv(const std::string& path, uint32_t items) {
  NpyMatrix m;
  m.rows = items;
  std::vector<uint8_t> seen(items, 0);
  M6_RETURN_IF_ERROR(ForEachRecord(
      path, [&](uint64_t n, const std::string& first, std::istringstream& is) -> Status {
        uint32_t id;
        if (!ParseId(first, &id))
          return Status::InvalidArgument(Where(path, n) + "item id '" + first +
                                         "' is not a non-negative integer");
        if (id >= items)
          return Status::InvalidArgument(Where(path, n) + "item " + first +
                                         " is out of range (the interactions have " +
                                         std::to_string(items) + ")");
        if (seen[id])
          return Status::InvalidArgument(Where(path, n) + "item " + first + " appears twice");
        seen[id] = 1;
        std::vector<float> row;
        for (std::string tok; is >> tok;) {
          char* end = nullptr;
          const float v = std::strtof(tok.c_str(), &end);
          if (*end != '\0' || !std::isfinite(v))
            return Status::InvalidArgument(Where(path, n) + "'" + tok + "' is not a finite number");
          row.push_back(v);
        }
        if (row.empty())
          return Status::InvalidArgument(Where(path, n) + "item " + first + " has no features");
        if (m.cols == 0) {
          m.cols = row.size();
          m.data.assign(size_t(items) * m.cols, 0.0f);
        }
        if (row.size() != m.cols)
          return Status::InvalidArgument(Where(path, n) + std::to_string(row.size()) +
                                         " features, earlier lines have " + std::to_string(m.cols));
        std::copy(row.begin(), row.end(), m.data.begin() + size_t(id) * m.cols);
        return Status::OK();
      }));
  for (uint32_t i = 0; i < items; ++i)
    if (!seen[i])
      return Status::InvalidArgument(path + ": no line for item " + std::to_string(i) +
                                     " (every item needs one)");
  return m;
}

// "id x x x" lines (tab or space separated, '#' comments) -> per-id lists. Ids must be below
// `rows`, values below `limit`; `symmetric` adds the reverse edge (undirected graphs).
StatusOr<std::vector<std::vector<uint32_t>>> ReadIdLists(const std::string& path, uint32_t rows,
                                                         uint32_t limit, const char* what,
                                                         const char* value, bool symmetric) {
  std::vector<std::vector<uint32_t>> out(rows);
  M6_RETURN_IF_ERROR(ForEachRecord(
      path, [&](uint64_t n, const std::string& first, std::istringstream& is) -> Status {
        uint32_t id;
        if (!ParseId(first, &id))
          return Status::InvalidArgument(Where(path, n) + what + " id '" + first +
                                         "' is not a non-negative integer");
        if (id >= rows)
          return Status::InvalidArgument(Where(path, n) + what + " " + first +
                                         " is out of range (the interactions have " +
                                         std::to_string(rows) + ")");
        for (std::string tok; is >> tok;) {
          uint32_t v;
          if (!ParseId(tok, &v))
            return Status::InvalidArgument(Where(path, n) + value + " '" + tok +
                                           "' is not a non-negative integer");
          if (v >= limit)
            return Status::InvalidArgument(Where(path, n) + value + " " + tok + " is out of range");
          out[id].push_back(v);
          if (symmetric) out[v].push_back(id);
        }
        return Status::OK();
      }));
  if (symmetric)
    for (auto& l : out) {
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
    }
  return out;
}

StatusOr<Dataset> LoadLightGcn(const std::string& dir) {
  Dataset d;
  d.name = "lightgcn:" + dir;
  d.protocol = Dataset::Protocol::kFullRanking;
  d.ordered = false;  // the split ships item sets, not sequences
  M6_ASSIGN_OR_RETURN(d.train, ReadUserLists(dir + "/train.txt"));
  M6_ASSIGN_OR_RETURN(d.test_sets, ReadUserLists(dir + "/test.txt"));
  d.num_users = static_cast<uint32_t>(std::max(d.train.size(), d.test_sets.size()));
  d.test_sets.resize(d.num_users);
  d.num_items = std::max(MaxItem(d.train), MaxItem(d.test_sets)) + 1;
  Finish(&d);
  return d;
}

StatusOr<Dataset> LoadS3Rec(const std::string& dir, const std::string& name) {
  if (name.empty())
    return Status::InvalidArgument(
        "data.name: the s3rec format needs a dataset name (e.g. Beauty)");
  Dataset d;
  d.name = "s3rec:" + name;
  d.protocol = Dataset::Protocol::kSampled;
  d.first_item = 1;
  M6_ASSIGN_OR_RETURN(auto seqs, ReadUserLists(dir + "/" + name + ".txt"));
  LeaveLastOut(seqs, &d);
  d.num_items = MaxItem(seqs) + 1;
  const std::string sample = dir + "/" + name + "_sample.txt";
  if (std::ifstream(sample)) {
    M6_ASSIGN_OR_RETURN(d.fixed_negatives, ReadUserLists(sample));
    d.fixed_negatives.resize(d.num_users);
    for (uint32_t u = 0; u < d.num_users; ++u)
      if (d.test_item[u] >= 0 && d.fixed_negatives[u].size() != 99)
        return Status::InvalidArgument(sample + ": user " + std::to_string(u) + " has " +
                                       std::to_string(d.fixed_negatives[u].size()) +
                                       " negatives, the protocol has 99");
  }
  Finish(&d);
  M6_RETURN_IF_ERROR(ReadAttributes(dir + "/" + name + "_item2attributes.json", &d));
  CountTokens(&d);
  return d;
}

}  // namespace

void AppendInteractions(Dataset* d, const StreamEvent* ev, size_t n) {
  uint32_t users = d->num_users, items = d->num_items;
  for (size_t k = 0; k < n; ++k) {
    users = std::max(users, ev[k].user + 1);
    items = std::max(items, ev[k].item + 1);
  }
  auto grow = [](auto& v, size_t size, auto value) {
    if (!v.empty() && v.size() < size) v.resize(size, value);
  };
  if (users > d->num_users) {
    d->train.resize(users);
    grow(d->test_item, users, int64_t{-1});
    grow(d->valid_item, users, int64_t{-1});
    grow(d->fixed_negatives, users, std::vector<uint32_t>{});
    grow(d->test_sets, users, std::vector<uint32_t>{});
    grow(d->user_tokens, users, std::vector<uint32_t>{});
    grow(d->social, users, std::vector<uint32_t>{});
    grow(d->train_ratings, users, std::vector<float>{});
    grow(d->rated_valid, users, std::vector<std::pair<uint32_t, float>>{});
    grow(d->rated_test, users, std::vector<std::pair<uint32_t, float>>{});
    grow(d->trained, users, uint8_t{1});
    grow(d->cold_user, users, uint8_t{0});
    grow(d->held_out, users, std::vector<uint32_t>{});
    for (auto& a : d->user_attributes) a.label.resize(users, -1);
    d->num_users = users;
  }
  if (items > d->num_items) {
    d->item_popularity.resize(items, 0);
    grow(d->item_tokens, items, std::vector<uint32_t>{});
    grow(d->item_categories, items, std::vector<uint32_t>{});
    grow(d->cold, items, uint8_t{0});
    grow(d->item_image, size_t(items) * d->image_dim, 0.0f);
    grow(d->item_audio, size_t(items) * d->audio_dim, 0.0f);
    d->num_items = items;
  }
  if (d->domains.size() == 1) {
    d->domains[0].user_end = d->num_users;
    d->domains[0].item_end = d->num_items;
  }
  const bool rated = d->has_ratings();
  for (size_t k = 0; k < n; ++k) {
    const StreamEvent& e = ev[k];
    d->train[e.user].push_back(e.item);
    if (rated) d->train_ratings[e.user].push_back(0.0f);  // parallel lists; no rating task streams
    if (d->Trained(e.user)) {
      d->item_popularity[e.item]++;
      d->train_interactions++;
    }
  }
}

namespace {

// The domain column as domains of the dataset, when it partitions the users and the items into
// contiguous id ranges (domain 0's users first, ...); names from domains.tsv ("id name") when
// present. Otherwise the dataset stays one domain.
Status ReadDomainColumn(const Interactions& in, const std::string& dir, Dataset* d) {
  if (!in.partitioned) return Status::OK();
  // Per domain: [user begin, user end, item begin, item end] (item end 0: no item seen yet).
  std::map<int64_t, std::array<uint32_t, 4>> range;
  auto widen = [&](int64_t dom, int side, uint32_t id) {
    auto [it, fresh] = range.emplace(dom, std::array<uint32_t, 4>{UINT32_MAX, 0, UINT32_MAX, 0});
    (void)fresh;
    auto& r = it->second;
    r[2 * side] = std::min(r[2 * side], id);
    r[2 * side + 1] = std::max(r[2 * side + 1], id + 1);
  };
  for (uint32_t u = 0; u < in.num_users; ++u)
    if (in.user_domain[u] >= 0) widen(in.user_domain[u], 0, u);
  for (uint32_t i = 0; i < in.num_items; ++i)
    if (in.item_domain[i] >= 0) widen(in.item_domain[i], 1, i);
  if (range.size() < 2) return Status::OK();
  // Contiguous and in domain order, users and items alike.
  uint32_t ue = 0, ie = 0;
  for (const auto& [dom, r] : range) {
    if (r[1] == 0 || r[3] == 0 || r[0] < ue || r[2] < ie) return Status::OK();
    ue = r[1], ie = r[3];
  }
  std::map<int64_t, std::string> names;
  if (std::ifstream names_file{dir + "/domains.tsv"}) {
    std::string line;
    for (uint64_t n = 1; std::getline(names_file, line); ++n) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream is(line);
      int64_t id;
      std::string label;
      if (!(is >> id >> label) || label.find('/') != std::string::npos)
        return Status::InvalidArgument(Where(dir + "/domains.tsv", n) +
                                       "expected 'domain name' (a name without '/')");
      names[id] = label;
    }
  }
  d->domains.clear();
  uint32_t prev_user = 0, prev_item = d->first_item;
  for (auto it = range.begin(); it != range.end(); ++it) {
    const auto next = std::next(it);
    const bool last = next == range.end();
    Dataset::Domain dom;
    dom.name = names.count(it->first) ? names[it->first] : "domain" + std::to_string(it->first);
    dom.user_begin = prev_user;
    dom.user_end = last ? d->num_users : next->second[0];
    dom.item_begin = prev_item;
    dom.item_end = last ? d->num_items : next->second[2];
    dom.item_offset = dom.item_begin;
    prev_user = dom.user_end;
    prev_item = dom.item_end;
    d->domains.push_back(dom);
  }
  return Status::OK();
}

// user_profile.tsv: "# user <attribute> <attribute>..." naming the attributes, then one
// "user value value..." line per user; each attribute's classes are its distinct values.
Status ReadUserProfile(const std::string& path, Dataset* d) {
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> names;
  std::vector<std::vector<std::pair<uint32_t, std::string>>> values;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    std::istringstream is(line);
    std::vector<std::string> f;
    for (std::string x; is >> x;) f.push_back(x);
    if (line[0] == '#') {
      if (names.empty() && f.size() >= 3 && f[0] == "#" && f[1] == "user")
        names.assign(f.begin() + 2, f.end());
      continue;
    }
    if (names.empty())
      return Status::InvalidArgument(Where(path, n) +
                                     "the first line must name the attributes: '# user NAME...'");
    uint32_t u;
    if (f.size() != names.size() + 1 || !ParseId(f[0], &u))
      return Status::InvalidArgument(Where(path, n) + "expected 'user' and " +
                                     std::to_string(names.size()) + " value(s)");
    if (u >= d->num_users) continue;  // a user without interactions
    values.resize(names.size());
    for (size_t a = 0; a < names.size(); ++a) values[a].push_back({u, f[a + 1]});
  }
  for (size_t a = 0; a < names.size() && a < values.size(); ++a) {
    Dataset::UserAttribute attr;
    attr.name = names[a];
    for (const auto& uv : values[a]) attr.classes.push_back(uv.second);
    std::sort(attr.classes.begin(), attr.classes.end());
    attr.classes.erase(std::unique(attr.classes.begin(), attr.classes.end()), attr.classes.end());
    attr.label.assign(d->num_users, -1);
    for (const auto& [u, v] : values[a])
      attr.label[u] = int32_t(std::lower_bound(attr.classes.begin(), attr.classes.end(), v) -
                              attr.classes.begin());
    d->user_attributes.push_back(std::move(attr));
  }
  return Status::OK();
}

// token_names.tsv: "token<TAB>name" per line ('#' comments): the tokens' names, which a shared
// vocabulary joins domains by and `m6rec import` maps vectors through. Each token at most once,
// within the tokens the data uses; a name may not repeat (two rows could not both be it).
Status ReadTokenNames(const std::string& path, Dataset* d) {
  std::ifstream in(path);
  std::set<std::string> seen;
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    uint32_t t;
    if (tab == std::string::npos || !ParseId(line.substr(0, tab), &t) || tab + 1 == line.size())
      return Status::InvalidArgument(Where(path, n) + "expected 'token<TAB>name'");
    if (t >= d->num_tokens)
      return Status::InvalidArgument(Where(path, n) + "token " + std::to_string(t) +
                                     " is not used by the data (tokens 0.." +
                                     std::to_string(int64_t(d->num_tokens) - 1) + ")");
    std::string name = line.substr(tab + 1);
    if (t < d->token_names.size() && !d->token_names[t].empty())
      return Status::InvalidArgument(Where(path, n) + "token " + std::to_string(t) +
                                     " named a second time");
    if (!seen.insert(name).second)
      return Status::InvalidArgument(Where(path, n) + "the name '" + name +
                                     "' is another token's already");
    NameToken(d, t, std::move(name));
  }
  return Status::OK();
}

StatusOr<Dataset> LoadTsv(const std::string& dir, const std::string& name) {
  M6_ASSIGN_OR_RETURN(Interactions in, ReadInteractions(dir + "/interactions.tsv"));
  Dataset d;
  d.name = name;
  LeaveLastOut(in.by_user, &d);
  if (!in.ratings_by_user.empty()) SplitRatings(in.ratings_by_user, true, &d);
  d.num_items = in.num_items;
  Finish(&d);
  M6_RETURN_IF_ERROR(ReadDomainColumn(in, dir, &d));
  if (std::ifstream(dir + "/user_profile.tsv"))
    M6_RETURN_IF_ERROR(ReadUserProfile(dir + "/user_profile.tsv", &d));
  // Optional side files: each one present must be well formed and fit the interactions.
  if (std::ifstream(dir + "/social.tsv")) {
    M6_ASSIGN_OR_RETURN(d.social, ReadIdLists(dir + "/social.tsv", d.num_users, d.num_users, "user",
                                              "friend", true));
  }
  if (std::ifstream(dir + "/item_categories.tsv")) {
    M6_ASSIGN_OR_RETURN(d.item_categories, ReadIdLists(dir + "/item_categories.tsv", d.num_items,
                                                       1u << 30, "item", "category", false));
  }
  if (std::ifstream(dir + "/item_tokens.tsv")) {
    M6_ASSIGN_OR_RETURN(d.item_tokens, ReadIdLists(dir + "/item_tokens.tsv", d.num_items, 1u << 30,
                                                   "item", "token", false));
  }
  for (auto [name, out, dim] : {std::make_tuple("item_image", &d.item_image, &d.image_dim),
                                std::make_tuple("item_audio", &d.item_audio, &d.audio_dim)}) {
    const std::string npy = dir + "/" + name + ".npy", tsv = dir + "/" + name + ".tsv";
    const bool have_npy = bool(std::ifstream(npy)), have_tsv = bool(std::ifstream(tsv));
    if (have_npy && have_tsv)
      return Status::InvalidArgument(dir + ": both " + name + ".npy and " + name +
                                     ".tsv; keep one");
    if (!have_npy && !have_tsv) continue;
    const std::string path = have_npy ? npy : tsv;
    NpyMatrix m;
    if (have_npy) {
      M6_ASSIGN_OR_RETURN(m, ReadNpy(path));
    } else {
      M6_ASSIGN_OR_RETURN(m, ReadFeatureTsv(path, d.num_items));
    }
    if (m.rows != d.num_items)
      return Status::InvalidArgument(path + ": " + std::to_string(m.rows) +
                                     " rows, but the interactions have " +
                                     std::to_string(d.num_items) + " items");
    *out = std::move(m.data);
    *dim = static_cast<uint32_t>(m.cols);
  }
  CountTokens(&d);
  if (std::ifstream(dir + "/token_names.tsv"))
    M6_RETURN_IF_ERROR(ReadTokenNames(dir + "/token_names.tsv", &d));
  return d;
}

}  // namespace

StatusOr<std::vector<std::vector<uint32_t>>> ReadUserLists(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::vector<std::vector<uint32_t>> out;
  std::string line, tok;
  uint64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream is(line);
    if (!(is >> tok)) continue;  // blank line
    uint32_t u;
    if (!ParseId(tok, &u))
      return Status::InvalidArgument(Where(path, n) + "user id '" + tok +
                                     "' is not a non-negative integer");
    if (u >= out.size()) out.resize(u + 1);
    if (!out[u].empty())
      return Status::InvalidArgument(Where(path, n) + "user " + tok + " appears twice");
    while (is >> tok) {
      uint32_t i;
      if (!ParseId(tok, &i))
        return Status::InvalidArgument(Where(path, n) + "item id '" + tok +
                                       "' is not a non-negative integer");
      out[u].push_back(i);
    }
  }
  if (out.empty()) return Status::InvalidArgument(path + ": no users");
  return out;
}

void TouchedByRatedTest(Dataset* d) {
  d->held_out.resize(d->rated_test.size());
  for (size_t u = 0; u < d->rated_test.size(); ++u)
    for (const auto& [item, r] : d->rated_test[u])
      if (int64_t(item) != (u < d->test_item.size() ? d->test_item[u] : -1))
        d->held_out[u].push_back(item);
}

std::vector<uint32_t> SampledNegatives(const Dataset& d, uint32_t u, uint64_t seed) {
  if (u < d.fixed_negatives.size() && !d.fixed_negatives[u].empty()) return d.fixed_negatives[u];
  std::unordered_set<uint32_t> seen(d.train[u].begin(), d.train[u].end());
  if (u < d.held_out.size()) seen.insert(d.held_out[u].begin(), d.held_out[u].end());
  if (d.valid_item[u] >= 0) seen.insert(static_cast<uint32_t>(d.valid_item[u]));
  if (d.test_item[u] >= 0) seen.insert(static_cast<uint32_t>(d.test_item[u]));
  std::vector<uint32_t> out;
  const auto [begin, end] = d.CandidateItems(u);
  const uint32_t span = end - begin;
  const size_t want =
      std::min<size_t>(d.sampled_negatives, span > seen.size() ? span - seen.size() : 0);
  std::mt19937_64 rng(Mix64(seed ^ (uint64_t{u} << 20)));
  while (out.size() < want) {
    uint32_t j = begin + static_cast<uint32_t>(rng() % span);
    if (seen.insert(j).second) out.push_back(j);
  }
  return out;
}

std::vector<std::vector<uint32_t>> Dataset::ItemUsers() const {
  std::vector<std::vector<uint32_t>> out(num_items);
  for (uint32_t u = 0; u < num_users; ++u)
    if (Trained(u))
      for (uint32_t i : train[u]) out[i].push_back(u);
  return out;
}

void SelectTrainedUsers(Dataset* ds, uint64_t seed) {
  bool all = true;
  for (const auto& d : ds->domains) all = all && d.train_users >= 1.0f;
  if (all) return;
  ds->trained.assign(ds->num_users, 1);
  ds->item_popularity.assign(ds->num_items, 0);
  ds->train_interactions = 0;
  for (uint32_t u = 0; u < ds->num_users; ++u) {
    // Drawn by the user's id within its domain, so a domain's trained users are the same
    // whether it is trained alone or after other domains (an adapted job against scratch).
    const Dataset::Domain* dom = ds->domains.empty() ? nullptr : &ds->domains[ds->UserDomain(u)];
    const float share = dom ? dom->train_users : 1.0f;
    const uint64_t local = dom ? u - dom->user_begin : u;
    const double r = double(Mix64(seed ^ 0x7a11u ^ (local << 20)) >> 11) * 0x1.0p-53;
    ds->trained[u] = r < double(share);
    if (!ds->trained[u]) continue;
    for (uint32_t i : ds->train[u]) ds->item_popularity[i]++;
    ds->train_interactions += ds->train[u].size();
  }
}

namespace {

// Moves the entries k of user u's training list for which take(k, kept) holds (kept: how many
// entries before k stay) to held_out, the ratings with them where the list has them; take sees
// the list as it was (entry k and its rating unmoved). The caller recounts (Finish).
template <class Take>
void TakeFromTraining(Dataset* ds, uint32_t u, Take take) {
  auto& items = ds->train[u];
  const bool rated = u < ds->train_ratings.size() && ds->train_ratings[u].size() == items.size();
  if (ds->held_out.size() < ds->num_users) ds->held_out.resize(ds->num_users);
  size_t out = 0;
  for (size_t k = 0; k < items.size(); ++k) {
    if (take(k, out)) {
      ds->held_out[u].push_back(items[k]);
      continue;
    }
    if (rated) ds->train_ratings[u][out] = ds->train_ratings[u][k];
    items[out++] = items[k];
  }
  items.resize(out);
  if (rated) ds->train_ratings[u].resize(out);
}

}  // namespace

void MakeColdItems(Dataset* ds, double share, uint64_t seed) {
  if (share <= 0) return;
  ds->cold.assign(ds->num_items, 0);
  ds->held_out.resize(ds->num_users);
  for (uint32_t i = ds->first_item; i < ds->num_items; ++i) {
    const double r = double(Mix64(seed ^ 0xc01du ^ (uint64_t{i} << 21)) >> 11) * 0x1.0p-53;
    ds->cold[i] = r < share;
  }
  for (uint32_t u = 0; u < ds->num_users; ++u)
    TakeFromTraining(ds, u, [&](size_t k, size_t) { return bool(ds->cold[ds->train[u][k]]); });
  Finish(ds);
}

void HoldOutValidationRatings(Dataset* ds, double share) {
  if (share <= 0 || !ds->has_ratings()) return;
  ds->held_out.resize(ds->num_users);
  ds->rated_valid.resize(ds->num_users);
  for (uint32_t u = 0; u < ds->num_users && u < ds->train_ratings.size(); ++u) {
    const auto& items = ds->train[u];
    const auto& ratings = ds->train_ratings[u];
    if (ratings.size() != items.size()) continue;
    TakeFromTraining(ds, u, [&](size_t k, size_t kept) {
      const uint64_t h = Mix64(((uint64_t{u} << 32) | items[k]) ^ 0x7a11dba7e5ull);
      const bool held = double(h >> 11) * 0x1.0p-53 < share;
      const bool last_one = kept == 0 && k + 1 == items.size();  // keep one training item
      if (!held || last_one) return false;
      ds->rated_valid[u].push_back({items[k], ratings[k]});
      return true;
    });
  }
  Finish(ds);
}

std::string ReduceItemFeatures(Dataset* ds, int k) {
  std::string report;
  for (auto [m, d, name] : {std::tuple{&ds->item_image, &ds->image_dim, "image"},
                            std::tuple{&ds->item_audio, &ds->audio_dim, "audio"}}) {
    if (k <= 0 || *d <= uint32_t(k) || m->empty()) continue;
    const int64_t n = int64_t(m->size() / *d);
    const Pca p = FitPca(*m, n, *d, k);
    std::ostringstream o;
    o << (report.empty() ? "" : "; ") << name << " features " << *d << " -> " << k
      << " principal components, " << std::fixed << std::setprecision(1) << 100.0 * p.explained()
      << "% of the variance";
    report += o.str();
    *m = ApplyPca(p, *m, n);
    *d = uint32_t(k);
  }
  return report;
}

void MakeColdUsers(Dataset* ds, double share, int keep, bool profile, uint64_t seed) {
  if (share <= 0) return;
  ds->cold_user.assign(ds->num_users, 0);
  ds->held_out.resize(ds->num_users);
  for (uint32_t u = 0; u < ds->num_users; ++u) {
    auto& items = ds->train[u];
    const double r = double(Mix64(seed ^ 0xc0105u ^ (uint64_t{u} << 23)) >> 11) * 0x1.0p-53;
    if (r >= share || items.size() <= size_t(keep)) continue;
    ds->cold_user[u] = 1;
    const size_t cut = items.size() - size_t(keep);
    ds->held_out[u].insert(ds->held_out[u].end(), items.begin(), items.begin() + cut);
    items.erase(items.begin(), items.begin() + cut);
    if (u < ds->train_ratings.size() && ds->train_ratings[u].size() == cut + size_t(keep))
      ds->train_ratings[u].erase(ds->train_ratings[u].begin(), ds->train_ratings[u].begin() + cut);
    if (!profile && u < ds->user_tokens.size()) ds->user_tokens[u].clear();
  }
  Finish(ds);
}

const std::vector<uint32_t>& Dataset::Categories(uint32_t item) const {
  static const std::vector<uint32_t> kNone;
  if (item < item_categories.size()) return item_categories[item];
  return item < item_tokens.size() ? item_tokens[item] : kNone;
}

const Dataset::UserAttribute* Dataset::FindAttribute(const std::string& n) const {
  for (const auto& a : user_attributes)
    if (a.name == n) return &a;
  return nullptr;
}

int Dataset::AttributeSplit(uint32_t u, uint64_t seed) {
  const uint64_t r = Mix64(seed ^ 0xa77bu ^ (uint64_t{u} << 22)) % 10;
  return r < 8 ? 0 : r < 9 ? 1 : 2;
}

Status PrepareTasks(const std::vector<TaskSpec>& tasks, Dataset* ds) {
  for (const TaskSpec& t : tasks) {
    if ((t.type == TaskKind::kLike || t.type == TaskKind::kRating) && !ds->has_ratings())
      return Status::InvalidArgument("train.tasks: the " + std::string(EnumName(t.type)) +
                                     " task '" + t.name + "' needs ratings; " + ds->name +
                                     " has none (data.format movielens has them)");
    if (t.type != TaskKind::kAttribute) continue;
    const Dataset::UserAttribute* a = ds->FindAttribute(t.attribute);
    if (!a) {
      std::string have;
      for (const auto& x : ds->user_attributes) have += (have.empty() ? "" : ", ") + x.name;
      return Status::InvalidArgument("train.tasks: the attribute task '" + t.name + "' predicts '" +
                                     t.attribute + "'; " + ds->name + " has " +
                                     (have.empty() ? std::string("no user attributes") : have));
    }
    // The answer must not be among the inputs.
    for (auto& toks : ds->user_tokens)
      toks.erase(std::remove_if(toks.begin(), toks.end(),
                                [&](uint32_t x) {
                                  return std::find(a->tokens.begin(), a->tokens.end(), x) !=
                                         a->tokens.end();
                                }),
                 toks.end());
  }
  return Status::OK();
}

StatusOr<NpyMatrix> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return Status::InvalidArgument(path + ": not a .npy file (bad magic)");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16;
    if (!in.read(reinterpret_cast<char*>(&h16), 2))
      return Status::InvalidArgument(path + ": truncated header");
    hlen = h16;
  } else if (magic[6] == 2 || magic[6] == 3) {
    if (!in.read(reinterpret_cast<char*>(&hlen), 4))
      return Status::InvalidArgument(path + ": truncated header");
  } else {
    return Status::InvalidArgument(path + ": unsupported .npy version " +
                                   std::to_string(int(magic[6])));
  }
  if (hlen > (1u << 20)) return Status::InvalidArgument(path + ": header too large");
  std::string header(hlen, '\0');
  if (!in.read(header.data(), hlen)) return Status::InvalidArgument(path + ": truncated header");
  auto field = [&](const std::string& key) -> std::string {
    size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) return "";
    p = header.find(':', p);
    size_t e = key == "shape" ? header.find(')', p) + 1 : header.find(',', p);
    return header.substr(p + 1, e - p - 1);
  };
  std::string descr = field("descr"), order = field("fortran_order"), shape = field("shape");
  if (descr.find("<f4") == std::string::npos)
    return Status::InvalidArgument(path + ": dtype " + descr +
                                   " (expected little-endian float32 '<f4')");
  if (order.find("False") == std::string::npos)
    return Status::InvalidArgument(path +
                                   ": Fortran order is not supported (save it C-contiguous)");
  std::vector<size_t> dims;
  for (size_t p = shape.find('('); p != std::string::npos && p < shape.size();) {
    size_t q = shape.find_first_of("0123456789", p);
    if (q == std::string::npos) break;
    size_t e = shape.find_first_not_of("0123456789", q);
    dims.push_back(std::stoull(shape.substr(q, e - q)));
    p = e;
  }
  if (dims.size() != 2)
    return Status::InvalidArgument(path + ": shape " + shape + " (expected a 2-D matrix)");
  NpyMatrix m;
  m.rows = dims[0];
  m.cols = dims[1];
  m.data.resize(m.rows * m.cols);
  if (!in.read(reinterpret_cast<char*>(m.data.data()), m.data.size() * sizeof(float)))
    return Status::InvalidArgument(path + ": truncated data (expected " + std::to_string(m.rows) +
                                   " x " + std::to_string(m.cols) + " floats)");
  for (float x : m.data)
    if (!std::isfinite(x)) return Status::InvalidArgument(path + ": holds a NaN or infinity");
  return m;
}

std::string Dataset::Describe() const {
  uint64_t evals = 0;
  for (uint32_t u = 0; u < num_users; ++u)
    evals += protocol == Protocol::kFullRanking ? !test_sets[u].empty() : test_item[u] >= 0;
  return name + ": " + std::to_string(num_users) + " users, " +
         std::to_string(num_items - first_item) + " items, " + std::to_string(train_interactions) +
         " training interactions, " + std::to_string(evals) + " test users (" + ProtocolName() +
         ")";
}

int Dataset::NegativesPerTarget() const {
  for (const auto& f : fixed_negatives)
    if (!f.empty()) return static_cast<int>(f.size());
  return sampled_negatives;
}

std::string Dataset::ProtocolName() const {
  if (protocol == Protocol::kFullRanking) return "full ranking";
  return "sampled, " + std::to_string(NegativesPerTarget()) + " negatives";
}

uint32_t Dataset::UserDomain(uint32_t u) const {
  if (domains.size() <= 1) return 0;
  auto it = std::upper_bound(domains.begin(), domains.end(), u,
                             [](uint32_t v, const Domain& d) { return v < d.user_end; });
  return it == domains.end() ? uint32_t(domains.size() - 1) : uint32_t(it - domains.begin());
}

uint32_t Dataset::DomainsOfSpecs(uint32_t n) const {
  uint32_t c = 0;
  for (const Domain& d : domains) c += d.spec < n ? 1 : 0;
  return c;
}

uint32_t Dataset::ItemDomain(uint32_t i) const {
  if (domains.size() <= 1) return 0;
  auto it = std::upper_bound(domains.begin(), domains.end(), i,
                             [](uint32_t v, const Domain& d) { return v < d.item_end; });
  return it == domains.end() ? uint32_t(domains.size() - 1) : uint32_t(it - domains.begin());
}

std::pair<uint32_t, uint32_t> Dataset::CandidateItems(uint32_t u) const {
  if (domains.empty()) return {first_item, num_items};
  const Domain& d = domains[UserDomain(u)];
  return {d.item_begin, d.item_end};
}

StatusOr<Dataset> MergeDomains(std::vector<Dataset> parts, const std::vector<DomainSpec>& specs,
                               bool shared_vocabulary) {
  if (parts.empty() || parts.size() != specs.size())
    return Status::InvalidArgument("MergeDomains: one dataset per domain spec");
  if (parts.size() > 255) return Status::InvalidArgument("data.domains: at most 255 domains");
  Dataset m;
  m.protocol = parts[0].protocol;
  m.first_item = parts[0].first_item;
  m.image_dim = parts[0].image_dim;
  m.audio_dim = parts[0].audio_dim;
  uint32_t uoff = 0, ioff = 0, toff = 0;
  auto shift = [](std::vector<uint32_t>& v, uint32_t off) {
    for (uint32_t& x : v) x += off;
  };
  std::unordered_map<std::string, uint32_t> token_ids;  // shared_vocabulary: name -> merged id
  for (size_t k = 0; k < parts.size(); ++k) {
    Dataset& p = parts[k];
    const std::string& label = specs[k].label;
    if (p.protocol != m.protocol)
      return Status::InvalidArgument("data.domains: '" + label + "' is evaluated by " +
                                     p.ProtocolName() + ", '" + specs[0].label + "' by " +
                                     parts[0].ProtocolName() + " (one protocol per job)");
    if (p.image_dim != m.image_dim || p.audio_dim != m.audio_dim)
      return Status::InvalidArgument("data.domains: '" + label +
                                     "' has other image/audio dimensions than '" + specs[0].label +
                                     "'");
    m.name += (k ? "+" : "") + label;
    if (p.domains.size() > 1) {
      for (const Dataset::Domain& d : p.domains)
        m.domains.push_back({d.name, uoff + d.user_begin, uoff + d.user_end, ioff + d.item_begin,
                             ioff + d.item_end, specs[k].weight, ioff + d.item_offset,
                             specs[k].train_users, specs[k].evaluate, uint32_t(k)});
    } else {
      m.domains.push_back({label, uoff, uoff + p.num_users, ioff + p.first_item, ioff + p.num_items,
                           specs[k].weight, ioff, specs[k].train_users, specs[k].evaluate,
                           uint32_t(k)});
    }
    m.ordered = m.ordered && p.ordered;
    for (size_t d = m.domains.size() - std::max<size_t>(1, p.domains.size()); d < m.domains.size();
         ++d)
      m.domains[d].ordered = p.ordered;
    for (auto& l : p.train) shift(l, ioff);
    for (auto& l : p.test_sets) shift(l, ioff);
    for (auto& l : p.fixed_negatives) shift(l, ioff);
    // The part's token t becomes remap[t]: toff + t, or with a shared vocabulary the id its
    // name already has (new names and unnamed tokens get the next free ids, in order).
    std::vector<uint32_t> remap(p.num_tokens);
    for (uint32_t t = 0; t < p.num_tokens; ++t) {
      const std::string* name =
          t < p.token_names.size() && !p.token_names[t].empty() ? &p.token_names[t] : nullptr;
      if (!shared_vocabulary) {
        remap[t] = toff + t;
      } else if (auto it = name ? token_ids.find(*name) : token_ids.end(); it != token_ids.end()) {
        remap[t] = it->second;
      } else {
        remap[t] = toff++;
        if (name) token_ids.emplace(*name, remap[t]);
        m.token_names.resize(toff);
        if (name) m.token_names[remap[t]] = *name;
      }
    }
    auto retoken = [&remap](std::vector<uint32_t>& v) {
      for (uint32_t& x : v) x = remap[x];
    };
    for (auto& l : p.item_tokens) retoken(l);
    for (auto& l : p.item_categories) retoken(l);
    for (auto& l : p.user_tokens) retoken(l);
    for (auto& l : p.social) shift(l, uoff);
    for (int64_t& t : p.test_item)
      if (t >= 0) t += ioff;
    for (int64_t& t : p.valid_item)
      if (t >= 0) t += ioff;
    auto append = [](auto& dst, auto& src, size_t n, size_t have) {
      // Lists some parts lack are padded with empties so that index = id holds throughout.
      if (src.empty() && dst.empty()) return;
      dst.resize(have);
      src.resize(n);
      for (auto& x : src) dst.push_back(std::move(x));
    };
    const bool full = m.protocol == Dataset::Protocol::kFullRanking;
    append(m.train, p.train, p.num_users, uoff);
    if (full) append(m.test_sets, p.test_sets, p.num_users, uoff);
    if (!full) {
      p.test_item.resize(p.num_users, -1);
      p.valid_item.resize(p.num_users, -1);
      m.test_item.insert(m.test_item.end(), p.test_item.begin(), p.test_item.end());
      m.valid_item.insert(m.valid_item.end(), p.valid_item.begin(), p.valid_item.end());
    }
    append(m.fixed_negatives, p.fixed_negatives, p.num_users, uoff);
    append(m.train_ratings, p.train_ratings, p.num_users, uoff);
    for (auto* rated : {&p.rated_valid, &p.rated_test})
      for (auto& l : *rated)
        for (auto& [item, r] : l) item += ioff;
    append(m.rated_valid, p.rated_valid, p.num_users, uoff);
    append(m.rated_test, p.rated_test, p.num_users, uoff);
    for (auto& l : p.held_out)
      for (uint32_t& item : l) item += ioff;
    append(m.held_out, p.held_out, p.num_users, uoff);
    // Attributes by name where the classes agree (ML-1M's and ML-100K's age groups); one with
    // other classes under the same name (their occupations) is the domain's own, named
    // "<name>/<label>".
    for (auto& a : p.user_attributes) {
      auto it = std::find_if(m.user_attributes.begin(), m.user_attributes.end(),
                             [&](const Dataset::UserAttribute& x) { return x.name == a.name; });
      if (it != m.user_attributes.end() && it->classes != a.classes) {
        a.name += "/" + label;
        it = std::find_if(m.user_attributes.begin(), m.user_attributes.end(),
                          [&](const Dataset::UserAttribute& x) { return x.name == a.name; });
      }
      if (it == m.user_attributes.end()) {
        m.user_attributes.push_back({a.name, a.classes, {}, {}, {}});
        it = m.user_attributes.end() - 1;
      }
      it->label.resize(uoff, -1);
      a.label.resize(p.num_users, -1);
      it->label.insert(it->label.end(), a.label.begin(), a.label.end());
      for (uint32_t t : a.tokens) it->tokens.push_back(remap[t]);
      // A new user's profile reads the first domain's tokens that have them.
      if (it->class_tokens.empty())
        for (int64_t t : a.class_tokens) it->class_tokens.push_back(t < 0 ? t : remap[t]);
    }
    append(m.social, p.social, p.num_users, uoff);
    append(m.user_tokens, p.user_tokens, p.num_users, uoff);
    append(m.item_tokens, p.item_tokens, p.num_items, ioff);
    if (!shared_vocabulary) append(m.token_names, p.token_names, p.num_tokens, toff);
    // Categories, where some part has them: a part without reads its (shifted) tokens as them.
    auto tokens_of = [&m](uint32_t i) {
      return i < m.item_tokens.size() ? m.item_tokens[i] : std::vector<uint32_t>{};
    };
    if (p.item_categories.empty() && !m.item_categories.empty())
      for (uint32_t i = 0; i < p.num_items; ++i) p.item_categories.push_back(tokens_of(ioff + i));
    if (!p.item_categories.empty() && m.item_categories.empty())
      for (uint32_t i = 0; i < ioff; ++i) m.item_categories.push_back(tokens_of(i));
    append(m.item_categories, p.item_categories, p.num_items, ioff);
    m.item_image.insert(m.item_image.end(), p.item_image.begin(), p.item_image.end());
    m.item_audio.insert(m.item_audio.end(), p.item_audio.begin(), p.item_audio.end());
    uoff += p.num_users;
    ioff += p.num_items;
    if (!shared_vocabulary) toff += p.num_tokens;
    m.tokens_after_spec.push_back(toff);
  }
  if (m.domains.size() > 255) return Status::InvalidArgument("data.domains: at most 255 domains");
  m.num_users = uoff;
  m.num_items = ioff;
  m.num_tokens = toff;
  // Lists present in some parts only cover every id.
  for (auto* v : {&m.fixed_negatives, &m.social, &m.user_tokens})
    if (!v->empty()) v->resize(m.num_users);
  for (auto* v : {&m.rated_valid, &m.rated_test})
    if (!v->empty()) v->resize(m.num_users);
  if (!m.held_out.empty()) m.held_out.resize(m.num_users);
  if (!m.train_ratings.empty()) m.train_ratings.resize(m.num_users);
  for (auto& a : m.user_attributes) a.label.resize(m.num_users, -1);
  if (!m.item_tokens.empty()) m.item_tokens.resize(m.num_items);
  if (!m.item_categories.empty()) m.item_categories.resize(m.num_items);
  Finish(&m);
  return m;
}

StatusOr<Dataset> LoadDataset(const DataConfig& cfg, const std::string& data_dir) {
  if (!cfg.domains.empty()) {
    std::vector<Dataset> parts;
    for (const DomainSpec& d : cfg.domains) {
      DataConfig one;
      one.source = DataSource::kDir;
      one.path = d.path;
      one.format = d.format;
      one.name = d.name;
      one.split = d.split;
      one.title_words = d.title_words;
      auto ds = LoadDataset(one, data_dir);
      if (!ds.ok())
        return Status(ds.status().code(),
                      "data.domains '" + d.label + "': " + ds.status().message());
      parts.push_back(std::move(*ds));
    }
    return MergeDomains(std::move(parts), cfg.domains, cfg.shared_vocabulary);
  }
  StatusOr<Dataset> ds = Status::InvalidArgument("data.format: unknown format");
  if (cfg.source == DataSource::kSynth) {
    ds = LoadTsv(data_dir, "synthetic");
  } else {
    switch (cfg.format) {
      case DataFormat::kTsv:
        ds = LoadTsv(cfg.path, "tsv:" + cfg.path);
        break;
      case DataFormat::kLightGcn:
        ds = LoadLightGcn(cfg.path);
        break;
      case DataFormat::kS3Rec:
        ds = LoadS3Rec(cfg.path, cfg.name);
        break;
      case DataFormat::kMovieLens:
        ds = LoadMovieLens(cfg.path, cfg.split, cfg.title_words, cfg.stream_split);
        break;
    }
  }
  if (ds.ok() && ds->domains.empty())
    ds->domains = {{ds->name, 0, ds->num_users, ds->first_item, ds->num_items, 1.0f}};
  if (ds.ok() && ds->tokens_after_spec.empty()) ds->tokens_after_spec = {ds->num_tokens};
  if (ds.ok() && cfg.domains.empty())
    for (auto& d : ds->domains) d.ordered = ds->ordered;
  return ds;
}

}  // namespace m6rec
