#include "worker/datasets.h"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <unordered_set>

#include "common/keys.h"
#include "worker/data.h"

namespace m6rec {

namespace {

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

std::string Where(const std::string& path, uint64_t line) { return path + ":" + std::to_string(line) + ": "; }

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

uint32_t MaxItem(const std::vector<std::vector<uint32_t>>& lists) {
  uint32_t m = 0;
  for (const auto& l : lists)
    for (uint32_t i : l) m = std::max(m, i);
  return m;
}

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

StatusOr<Dataset> LoadLightGcn(const std::string& dir) {
  Dataset d;
  d.name = "lightgcn:" + dir;
  d.protocol = Dataset::Protocol::kFullRanking;
  M6_ASSIGN_OR_RETURN(d.train, ReadUserLists(dir + "/train.txt"));
  M6_ASSIGN_OR_RETURN(d.test_sets, ReadUserLists(dir + "/test.txt"));
  d.num_users = static_cast<uint32_t>(std::max(d.train.size(), d.test_sets.size()));
  d.test_sets.resize(d.num_users);
  d.num_items = std::max(MaxItem(d.train), MaxItem(d.test_sets)) + 1;
  Finish(&d);
  return d;
}

StatusOr<Dataset> LoadS3Rec(const std::string& dir, const std::string& name) {
  if (name.empty()) return Status::InvalidArgument("data.name: the s3rec format needs a dataset name (e.g. Beauty)");
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
  return d;
}

StatusOr<Dataset> LoadMovieLens(const std::string& dir) {
  const std::string path = dir + "/u.data";
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  struct R {
    uint32_t u, i;
    uint64_t ts;
  };
  std::vector<R> rows;
  std::string line;
  uint64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    std::istringstream is(line);
    std::string f[4];
    if (!(is >> f[0] >> f[1] >> f[2] >> f[3]))
      return Status::InvalidArgument(Where(path, n) + "expected 'user item rating timestamp'");
    uint32_t u, i, r, ts;
    if (!ParseId(f[0], &u) || !ParseId(f[1], &i) || !ParseId(f[2], &r) || !ParseId(f[3], &ts))
      return Status::InvalidArgument(Where(path, n) + "fields must be non-negative integers");
    rows.push_back({u, i, ts});
  }
  if (rows.empty()) return Status::InvalidArgument(path + ": no ratings");
  std::stable_sort(rows.begin(), rows.end(),
                   [](const R& a, const R& b) { return a.u != b.u ? a.u < b.u : a.ts < b.ts; });
  uint32_t max_u = 0;
  for (const auto& r : rows) max_u = std::max(max_u, r.u);
  std::vector<std::vector<uint32_t>> seqs(max_u + 1);
  for (const auto& r : rows) seqs[r.u].push_back(r.i);
  Dataset d;
  d.name = "movielens:" + dir;
  d.first_item = 1;
  LeaveLastOut(seqs, &d);
  d.num_items = MaxItem(seqs) + 1;
  Finish(&d);
  return d;
}

StatusOr<Dataset> LoadTsv(const std::string& path, const std::string& name) {
  M6_ASSIGN_OR_RETURN(Interactions in, ReadInteractions(path));
  Dataset d;
  d.name = name;
  LeaveLastOut(in.by_user, &d);
  d.num_items = in.num_items;
  Finish(&d);
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
    if (!ParseId(tok, &u)) return Status::InvalidArgument(Where(path, n) + "user id '" + tok + "' is not a non-negative integer");
    if (u >= out.size()) out.resize(u + 1);
    if (!out[u].empty()) return Status::InvalidArgument(Where(path, n) + "user " + tok + " appears twice");
    while (is >> tok) {
      uint32_t i;
      if (!ParseId(tok, &i)) return Status::InvalidArgument(Where(path, n) + "item id '" + tok + "' is not a non-negative integer");
      out[u].push_back(i);
    }
  }
  if (out.empty()) return Status::InvalidArgument(path + ": no users");
  return out;
}

std::vector<uint32_t> SampledNegatives(const Dataset& d, uint32_t u, uint64_t seed) {
  if (u < d.fixed_negatives.size() && !d.fixed_negatives[u].empty()) return d.fixed_negatives[u];
  std::unordered_set<uint32_t> seen(d.train[u].begin(), d.train[u].end());
  if (d.valid_item[u] >= 0) seen.insert(static_cast<uint32_t>(d.valid_item[u]));
  if (d.test_item[u] >= 0) seen.insert(static_cast<uint32_t>(d.test_item[u]));
  std::vector<uint32_t> out;
  const uint32_t span = d.num_items - d.first_item;
  const size_t want = std::min<size_t>(d.sampled_negatives, span > seen.size() ? span - seen.size() : 0);
  std::mt19937_64 rng(Mix64(seed ^ (uint64_t{u} << 20)));
  while (out.size() < want) {
    uint32_t j = d.first_item + static_cast<uint32_t>(rng() % span);
    if (seen.insert(j).second) out.push_back(j);
  }
  return out;
}

std::string Dataset::Describe() const {
  uint64_t evals = 0;
  for (uint32_t u = 0; u < num_users; ++u)
    evals += protocol == Protocol::kFullRanking ? !test_sets[u].empty() : test_item[u] >= 0;
  return name + ": " + std::to_string(num_users) + " users, " + std::to_string(num_items - first_item) +
         " items, " + std::to_string(train_interactions) + " training interactions, " +
         std::to_string(evals) + " test users (" +
         (protocol == Protocol::kFullRanking ? "full ranking" : "sampled, 99 negatives") + ")";
}

StatusOr<Dataset> LoadDataset(const DataConfig& cfg, const std::string& data_dir) {
  if (cfg.source == "synth") return LoadTsv(data_dir + "/interactions.tsv", "synthetic");
  const std::string& f = cfg.format;
  if (f == "tsv") return LoadTsv(cfg.path + "/interactions.tsv", "tsv:" + cfg.path);
  if (f == "lightgcn") return LoadLightGcn(cfg.path);
  if (f == "s3rec") return LoadS3Rec(cfg.path, cfg.name);
  if (f == "movielens") return LoadMovieLens(cfg.path);
  return Status::InvalidArgument("data.format: unknown format '" + f + "' (tsv, lightgcn, s3rec, movielens)");
}

}  // namespace m6rec
