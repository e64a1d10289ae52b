#include "worker/dataset.h"

#include <zlib.h>

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
#include <unordered_set>

#include "common/keys.h"
#include "worker/interactions.h"
#include "worker/pca.h"

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

// A title's words: lowercased letters and digits, split at anything else; the trailing
// "(1995)" year, one-letter pieces and a few stop words dropped ("Usual Suspects, The (1995)"
// -> usual, suspects).
std::vector<std::string> TitleWords(std::string title) {
  static const std::set<std::string> kStop = {"the", "a",   "an",  "of",  "and", "in",  "to",
                                              "on",  "at",  "la",  "le",  "les", "de",  "il",
                                              "el",  "das", "der", "die", "for", "with"};
  auto open = title.rfind('(');
  if (open != std::string::npos && title.find(')', open) != std::string::npos &&
      title.size() - open <= 7)
    title.erase(open);
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] {
    if (cur.size() > 1 && !kStop.count(cur) &&
        std::find(words.begin(), words.end(), cur) == words.end())
      words.push_back(cur);
    cur.clear();
  };
  for (unsigned char c : title) {
    if (std::isalnum(c))
      cur.push_back(char(std::tolower(c)));
    else
      flush();
  }
  flush();
  return words;
}

// u.item genres (19 flags) and release decade as item tokens; u.user age band, gender and
// occupation as user tokens. Token ids: 0-18 genres, 20-39 decades, 40-49 age bands,
// 50-51 gender, 60+ occupations (in order of first appearance), and with title_words 200+ the
// titles' words (in order of first appearance). Every token is named in d->token_names.
Status ReadMovieLensContent(const std::string& dir, bool title_words, Dataset* d) {
  static const char* kGenres[] = {"unknown", "action",   "adventure",   "animation", "children",
                                  "comedy",  "crime",    "documentary", "drama",     "fantasy",
                                  "noir",    "horror",   "musical",     "mystery",   "romance",
                                  "sci-fi",  "thriller", "war",         "western"};
  auto name = [d](uint32_t t, std::string s) { NameToken(d, t, std::move(s)); };
  for (uint32_t g = 0; g < 19; ++g) name(g, kGenres[g]);
  std::map<std::string, uint32_t> words;
  auto split = [](const std::string& line) {
    std::vector<std::string> f;
    std::string cur;
    for (char c : line) {
      if (c == '|') {
        f.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    f.push_back(cur);
    return f;
  };
  // Both files are optional.
  const std::string ip = dir + "/u.item";
  std::ifstream items(ip, std::ios::binary);
  if (items) d->item_tokens.assign(d->num_items, {});
  if (items) d->item_categories.assign(d->num_items, {});
  std::string line;
  uint64_t n = 0;
  while (items && std::getline(items, line)) {
    ++n;
    if (line.empty()) continue;
    auto f = split(line);
    uint32_t id;
    if (f.size() != 24 || !ParseId(f[0], &id))
      return Status::InvalidArgument(Where(ip, n) + "expected 24 '|'-separated fields");
    if (id >= d->num_items) continue;
    for (int g = 0; g < 19; ++g)
      if (f[5 + g] == "1") d->item_tokens[id].push_back(g);
    d->item_categories[id] = d->item_tokens[id];  // the genres (not the decade)
    const std::string& date = f[2];               // dd-Mon-yyyy
    if (date.size() >= 4) {
      int year = std::atoi(date.substr(date.size() - 4).c_str());
      if (year >= 1900) {
        const uint32_t decade = 20 + std::min(19, (year - 1900) / 10);
        d->item_tokens[id].push_back(decade);
        name(decade, std::to_string(1900 + (decade - 20) * 10) + "s");
      }
    }
    if (title_words)
      for (const std::string& w : TitleWords(f[1])) {
        auto [it, fresh] = words.emplace(w, 200 + uint32_t(words.size()));
        if (fresh) name(it->second, w);
        d->item_tokens[id].push_back(it->second);
      }
  }
  const std::string up = dir + "/u.user";
  std::ifstream users(up, std::ios::binary);
  if (!users) return Status::OK();
  d->user_tokens.assign(d->num_users, {});
  std::vector<std::string> occupations;
  std::vector<std::vector<int32_t>> labels(3, std::vector<int32_t>(d->num_users, -1));
  n = 0;
  while (std::getline(users, line)) {
    ++n;
    if (line.empty()) continue;
    auto f = split(line);
    uint32_t id, age;
    if (f.size() != 5 || !ParseId(f[0], &id) || !ParseId(f[1], &age))
      return Status::InvalidArgument(Where(up, n) + "expected 'user|age|gender|occupation|zip'");
    if (id >= d->num_users) continue;
    auto occ = std::find(occupations.begin(), occupations.end(), f[3]);
    if (occ == occupations.end()) occ = occupations.insert(occupations.end(), f[3]);
    const auto occ_id = static_cast<uint32_t>(occ - occupations.begin());
    d->user_tokens[id] = {40 + std::min<uint32_t>(9, age / 10), f[2] == "F" ? 51u : 50u,
                          60 + occ_id};
    name(40 + std::min<uint32_t>(9, age / 10),
         "age:" + std::to_string(std::min<uint32_t>(9, age / 10) * 10) + "s");
    name(50, "gender:m");
    name(51, "gender:f");
    name(60 + occ_id, "occupation:" + f[3]);
    if (f[2] != "M" && f[2] != "F")
      return Status::InvalidArgument(Where(up, n) + "gender '" + f[2] + "' (M or F)");
    labels[0][id] = f[2] == "F" ? 1 : 0;
    // ML-1M's age groups (what attribute-prediction work reports on).
    static const uint32_t kAgeEdges[] = {18, 25, 35, 45, 50, 56};
    labels[1][id] = int32_t(std::upper_bound(std::begin(kAgeEdges), std::end(kAgeEdges), age) -
                            std::begin(kAgeEdges));
    labels[2][id] = int32_t(occ_id);
  }
  Dataset::UserAttribute gender{"gender", {"M", "F"}, std::move(labels[0]), {50, 51}, {50, 51}};
  // Profiles carry the age's decade; a group is read as the decade of its middle.
  Dataset::UserAttribute age{"age",
                             {"<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"},
                             std::move(labels[1]),
                             {},
                             {41, 42, 43, 44, 44, 45, 46}};
  for (uint32_t t = 40; t < 50; ++t) age.tokens.push_back(t);
  Dataset::UserAttribute occupation{"occupation", occupations, std::move(labels[2]), {}, {}};
  for (uint32_t k = 0; k < occupations.size(); ++k) {
    occupation.tokens.push_back(60 + k);
    occupation.class_tokens.push_back(60 + k);
  }
  d->user_attributes = {std::move(gender), std::move(age), std::move(occupation)};
  return Status::OK();
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

// MovieLens rating lines ("user item rating timestamp", tab-separated).
struct Rating {
  uint32_t u, i;
  float r;
  uint64_t ts;
};
StatusOr<std::vector<Rating>> ReadRatings(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::vector<Rating> rows;
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
    rows.push_back({u, i, float(r), ts});
  }
  if (rows.empty()) return Status::InvalidArgument(path + ": no ratings");
  return rows;
}

// Per user (ids up to max_u), its items and their ratings in time order (ties: file order).
void UserLists(std::vector<Rating> rows, uint32_t max_u, std::vector<std::vector<uint32_t>>* seqs,
               std::vector<std::vector<float>>* ratings) {
  std::stable_sort(rows.begin(), rows.end(), [](const Rating& a, const Rating& b) {
    return a.u != b.u ? a.u < b.u : a.ts < b.ts;
  });
  seqs->assign(max_u + 1, {});
  ratings->assign(max_u + 1, {});
  for (const auto& r : rows) {
    (*seqs)[r.u].push_back(r.i);
    (*ratings)[r.u].push_back(r.r);
  }
}

}  // namespace

namespace {

// Interactions in global time order (ties: user, then item), the first (1 - share) as the
// training lists, the rest as the stream.
StatusOr<Dataset> MovieLensStream(const std::string& dir, std::vector<Rating> rows,
                                  bool title_words, double share) {
  std::stable_sort(rows.begin(), rows.end(), [](const Rating& a, const Rating& b) {
    if (a.ts != b.ts) return a.ts < b.ts;
    return a.u != b.u ? a.u < b.u : a.i < b.i;
  });
  const size_t cut = rows.size() - size_t(double(rows.size()) * share);
  uint32_t max_u = 0, max_i = 0;
  for (const auto& r : rows) max_u = std::max(max_u, r.u), max_i = std::max(max_i, r.i);
  Dataset d;
  d.name = "movielens:" + dir + "#stream";
  d.first_item = 1;
  d.num_users = max_u + 1;
  d.num_items = max_i + 1;
  d.train.assign(d.num_users, {});
  d.train_ratings.assign(d.num_users, {});
  d.rated_valid.assign(d.num_users, {});
  d.rated_test.assign(d.num_users, {});
  d.test_item.assign(d.num_users, -1);
  d.valid_item.assign(d.num_users, -1);
  for (size_t k = 0; k < cut; ++k) {
    d.train[rows[k].u].push_back(rows[k].i);
    d.train_ratings[rows[k].u].push_back(rows[k].r);
  }
  for (size_t k = cut; k < rows.size(); ++k)
    d.stream_events.push_back({rows[k].u, rows[k].i, int64_t(rows[k].ts)});
  Finish(&d);
  M6_RETURN_IF_ERROR(ReadMovieLensContent(dir, title_words, &d));
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
    grow(d->cold_removed, users, std::vector<uint32_t>{});
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

// MovieLens-1M: "::"-separated fields.
std::vector<std::string> SplitColons(const std::string& line) {
  std::vector<std::string> f;
  size_t a = 0;
  for (size_t b; (b = line.find("::", a)) != std::string::npos; a = b + 2)
    f.push_back(line.substr(a, b - a));
  f.push_back(line.substr(a));
  if (!f.back().empty() && f.back().back() == '\r') f.back().pop_back();
  return f;
}

// ML-1M's ratings: ratings.dat ("UserID::MovieID::Rating::Timestamp", the official file) when
// it is there, else the re-indexed copy without times (ratings_svdapprox_user_itemidx_rating
// .tsv.gz, "user<TAB>item_index<TAB>rating"; ../shared/data/ml-1m/SOURCE.md). *timed says which.
StatusOr<std::vector<Rating>> ReadMl1mRatings(const std::string& dir, bool* timed) {
  std::vector<Rating> rows;
  std::string line;
  uint64_t n = 0;
  const std::string dat = dir + "/ratings.dat";
  if (std::ifstream in(dat); in) {
    *timed = true;
    while (std::getline(in, line)) {
      ++n;
      if (line.empty()) continue;
      auto f = SplitColons(line);
      uint32_t u, i, r, ts;
      if (f.size() != 4 || !ParseId(f[0], &u) || !ParseId(f[1], &i) || !ParseId(f[2], &r) ||
          !ParseId(f[3], &ts))
        return Status::InvalidArgument(Where(dat, n) +
                                       "expected 'UserID::MovieID::Rating::Timestamp'");
      rows.push_back({u, i, float(r), ts});
    }
  } else {
    *timed = false;
    const std::string gz = dir + "/ratings_svdapprox_user_itemidx_rating.tsv.gz";
    gzFile gzin = gzopen(gz.c_str(), "rb");
    if (!gzin)
      return Status::NotFound("'" + dir +
                              "' has users.dat (MovieLens-1M) but neither ratings.dat nor " + gz);
    char buf[256];
    while (gzgets(gzin, buf, sizeof(buf))) {
      ++n;
      std::istringstream is(buf);
      std::string f[3];
      if (!(is >> f[0])) continue;  // an empty line
      uint32_t u, i, r;
      if (!(is >> f[1] >> f[2]) || !ParseId(f[0], &u) || !ParseId(f[1], &i) || !ParseId(f[2], &r)) {
        gzclose(gzin);
        return Status::InvalidArgument(Where(gz, n) + "expected 'user<TAB>item<TAB>rating'");
      }
      rows.push_back({u, i, float(r), 0});
    }
    const bool ok = gzeof(gzin);
    gzclose(gzin);
    if (!ok) return Status::Corruption(gz + ": not a complete gzip file");
  }
  if (rows.empty()) return Status::InvalidArgument(dir + ": no ratings");
  return rows;
}

// users.dat ("UserID::Gender::Age::Occupation::Zip-code", the README's codes): profile tokens
// (40-46 the age groups, 50/51 gender, 60-80 occupations, as ML-100K's) and the gender, age
// group and occupation attributes.
Status ReadMl1mUsers(const std::string& path, Dataset* d) {
  static const uint32_t kAges[] = {1, 18, 25, 35, 45, 50, 56};
  static const char* kAgeNames[] = {"<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"};
  static const char* kJobs[] = {"other",
                                "academic/educator",
                                "artist",
                                "clerical/admin",
                                "college/grad student",
                                "customer service",
                                "doctor/health care",
                                "executive/managerial",
                                "farmer",
                                "homemaker",
                                "K-12 student",
                                "lawyer",
                                "programmer",
                                "retired",
                                "sales/marketing",
                                "scientist",
                                "self-employed",
                                "technician/engineer",
                                "tradesman/craftsman",
                                "unemployed",
                                "writer"};
  constexpr uint32_t kNumJobs = sizeof(kJobs) / sizeof(kJobs[0]);
  auto name = [d](uint32_t t, std::string s) { NameToken(d, t, std::move(s)); };
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  d->user_tokens.assign(d->num_users, {});
  std::vector<std::vector<int32_t>> labels(3, std::vector<int32_t>(d->num_users, -1));
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    auto f = SplitColons(line);
    uint32_t id, age, job;
    if (f.size() != 5 || !ParseId(f[0], &id) || !ParseId(f[2], &age) || !ParseId(f[3], &job))
      return Status::InvalidArgument(Where(path, n) +
                                     "expected 'UserID::Gender::Age::Occupation::Zip-code'");
    const auto a = std::find(std::begin(kAges), std::end(kAges), age);
    if (a == std::end(kAges))
      return Status::InvalidArgument(Where(path, n) + "age " + f[2] +
                                     " is none of the README's codes 1, 18, 25, 35, 45, 50, 56");
    if (job >= kNumJobs)
      return Status::InvalidArgument(Where(path, n) + "occupation " + f[3] + " (codes 0-20)");
    if (f[1] != "M" && f[1] != "F")
      return Status::InvalidArgument(Where(path, n) + "gender '" + f[1] + "' (M or F)");
    if (id >= d->num_users) continue;  // a user without ratings
    const auto group = uint32_t(a - std::begin(kAges));
    d->user_tokens[id] = {40 + group, f[1] == "F" ? 51u : 50u, 60 + job};
    labels[0][id] = f[1] == "F" ? 1 : 0;
    labels[1][id] = int32_t(group);
    labels[2][id] = int32_t(job);
  }
  Dataset::UserAttribute gender{"gender", {"M", "F"}, std::move(labels[0]), {50, 51}, {50, 51}};
  Dataset::UserAttribute age{"age", {}, std::move(labels[1]), {}, {}};
  Dataset::UserAttribute occupation{"occupation", {}, std::move(labels[2]), {}, {}};
  name(50, "gender:m");
  name(51, "gender:f");
  for (uint32_t g = 0; g < 7; ++g) {
    age.classes.push_back(kAgeNames[g]);
    age.tokens.push_back(40 + g);
    age.class_tokens.push_back(40 + g);
    name(40 + g, std::string("age:") + kAgeNames[g]);
  }
  for (uint32_t k = 0; k < kNumJobs; ++k) {
    occupation.classes.push_back(kJobs[k]);
    occupation.tokens.push_back(60 + k);
    occupation.class_tokens.push_back(60 + k);
    name(60 + k, std::string("occupation:") + kJobs[k]);
  }
  d->user_attributes = {std::move(gender), std::move(age), std::move(occupation)};
  return Status::OK();
}

// movies.dat ("MovieID::Title::Genres", genres '|'-separated): genres and release decade as item
// tokens, named as ML-100K's (read only when the item ids are MovieIDs: with ratings.dat).
Status ReadMl1mMovies(const std::string& path, bool title_words, Dataset* d) {
  static const std::map<std::string, uint32_t> kGenres = {
      {"Action", 1},    {"Adventure", 2},   {"Animation", 3}, {"Children's", 4}, {"Comedy", 5},
      {"Crime", 6},     {"Documentary", 7}, {"Drama", 8},     {"Fantasy", 9},    {"Film-Noir", 10},
      {"Horror", 11},   {"Musical", 12},    {"Mystery", 13},  {"Romance", 14},   {"Sci-Fi", 15},
      {"Thriller", 16}, {"War", 17},        {"Western", 18}};
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::OK();  // optional
  d->item_tokens.assign(d->num_items, {});
  d->item_categories.assign(d->num_items, {});
  std::map<std::string, uint32_t> words;
  auto name = [d](uint32_t t, std::string s) { NameToken(d, t, std::move(s)); };
  for (const auto& [g, t] : kGenres) {
    std::string lower;
    for (char c : g) lower.push_back(char(std::tolower(static_cast<unsigned char>(c))));
    name(t, lower);
  }
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    auto f = SplitColons(line);
    uint32_t id;
    if (f.size() != 3 || !ParseId(f[0], &id))
      return Status::InvalidArgument(Where(path, n) + "expected 'MovieID::Title::Genres'");
    if (id >= d->num_items) continue;
    auto& toks = d->item_tokens[id];
    std::istringstream gs(f[2]);
    for (std::string g; std::getline(gs, g, '|');) {
      auto it = kGenres.find(g);
      if (it == kGenres.end())
        return Status::InvalidArgument(Where(path, n) + "unknown genre '" + g + "'");
      toks.push_back(it->second);
    }
    d->item_categories[id] = toks;
    const size_t open = f[1].rfind('(');  // "Title (1995)"
    const int year = open == std::string::npos ? 0 : std::atoi(f[1].c_str() + open + 1);
    if (year >= 1900) {
      const uint32_t decade = 20 + std::min(19, (year - 1900) / 10);
      toks.push_back(decade);
      name(decade, std::to_string(1900 + (decade - 20) * 10) + "s");
    }
    if (title_words)
      for (const std::string& w : TitleWords(f[1])) {
        auto [it, fresh] = words.emplace(w, 200 + uint32_t(words.size()));
        if (fresh) name(it->second, w);
        toks.push_back(it->second);
      }
  }
  return Status::OK();
}

// The MovieLens-1M directory (users.dat, movies.dat and the ratings, ReadMl1mRatings). Split ""
// leaves the last two ratings of each user out (by time with ratings.dat; without times, two
// ratings picked by a fixed hash of (user, item), and the lists are unordered sets); split
// "90/10" also holds 10% of all ratings out, picked by the same kind of hash, to test the
// rating and like tasks on (GC-MC's ML-1M protocol), retrieval being left out inside the 90%.
StatusOr<Dataset> LoadMovieLens1M(const std::string& dir, const std::string& split,
                                  bool title_words) {
  if (!split.empty() && split != "90/10")
    return Status::InvalidArgument("data.split '" + split + "': MovieLens-1M (" + dir +
                                   ") has the split \"90/10\" (or none)");
  bool timed = false;
  M6_ASSIGN_OR_RETURN(std::vector<Rating> all, ReadMl1mRatings(dir, &timed));
  std::vector<Rating> rows, test_rows;
  uint32_t max_u = 0, max_i = 0;
  for (Rating r : all) {
    max_u = std::max(max_u, r.u);
    max_i = std::max(max_i, r.i);
    const uint64_t h = Mix64((uint64_t(r.u) << 32) | r.i);  // fixed: the data's, not the job's
    if (!timed) r.ts = h >> 1;                              // a fixed order that is no one's time
    if (!split.empty() && (h >> 40) % 10 == 0)
      test_rows.push_back(r);
    else
      rows.push_back(r);
  }
  std::vector<std::vector<uint32_t>> seqs;
  std::vector<std::vector<float>> ratings;
  UserLists(std::move(rows), max_u, &seqs, &ratings);
  Dataset d;
  d.name = "movielens-1m:" + dir + (split.empty() ? "" : "#" + split);
  d.first_item = 1;
  d.ordered = timed;
  LeaveLastOut(seqs, &d);
  SplitRatings(ratings, split.empty(), &d);
  for (const auto& r : test_rows) d.rated_test[r.u].push_back({r.i, r.r});
  d.num_items = max_i + 1;
  Finish(&d);
  // Genres only where the item ids are MovieIDs: the copy without times re-indexed its items,
  // and that index cannot be mapped back to movies.dat exactly (SOURCE.md).
  if (timed) M6_RETURN_IF_ERROR(ReadMl1mMovies(dir + "/movies.dat", title_words, &d));
  M6_RETURN_IF_ERROR(ReadMl1mUsers(dir + "/users.dat", &d));
  CountTokens(&d);
  return d;
}

}  // namespace

StatusOr<Dataset> LoadMovieLens(const std::string& dir, const std::string& split, bool title_words,
                                double stream_split) {
  if (!std::filesystem::exists(dir + "/u.data") && std::filesystem::exists(dir + "/users.dat")) {
    if (stream_split > 0)
      return Status::InvalidArgument("data.stream_split: MovieLens-1M (" + dir +
                                     ") is read without a stream (ML-100K's u.data has one)");
    return LoadMovieLens1M(dir, split, title_words);
  }
  if (split == "90/10")
    return Status::InvalidArgument("data.split 90/10 is MovieLens-1M's; " + dir +
                                   " is MovieLens-100K (u1..u5, ua, ub)");
  const std::string path = dir + "/" + (split.empty() ? "u.data" : split + ".base");
  M6_ASSIGN_OR_RETURN(std::vector<Rating> rows, ReadRatings(path));
  if (stream_split > 0 && split.empty())
    return MovieLensStream(dir, rows, title_words, stream_split);
  uint32_t max_u = 0;
  for (const auto& r : rows) max_u = std::max(max_u, r.u);
  std::vector<Rating> test_rows;
  if (!split.empty()) {
    M6_ASSIGN_OR_RETURN(test_rows, ReadRatings(dir + "/" + split + ".test"));
    for (const auto& r : test_rows) max_u = std::max(max_u, r.u);
  }
  std::vector<std::vector<uint32_t>> seqs;
  std::vector<std::vector<float>> ratings;
  UserLists(std::move(rows), max_u, &seqs, &ratings);
  Dataset d;
  d.name = "movielens:" + dir + (split.empty() ? "" : "#" + split);
  d.first_item = 1;
  LeaveLastOut(seqs, &d);
  // The ratings follow the items (a published split tests on its own file).
  SplitRatings(ratings, split.empty(), &d);
  uint32_t max_i = MaxItem(seqs);
  for (const auto& r : test_rows) {
    d.rated_test[r.u].push_back({r.i, r.r});
    max_i = std::max(max_i, r.i);
  }
  d.num_items = max_i + 1;
  Finish(&d);
  M6_RETURN_IF_ERROR(ReadMovieLensContent(dir, title_words, &d));
  CountTokens(&d);
  return d;
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

std::vector<uint32_t> SampledNegatives(const Dataset& d, uint32_t u, uint64_t seed) {
  if (u < d.fixed_negatives.size() && !d.fixed_negatives[u].empty()) return d.fixed_negatives[u];
  std::unordered_set<uint32_t> seen(d.train[u].begin(), d.train[u].end());
  if (u < d.cold_removed.size()) seen.insert(d.cold_removed[u].begin(), d.cold_removed[u].end());
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
    const float share = ds->domains.empty() ? 1.0f : ds->domains[ds->UserDomain(u)].train_users;
    const double r = double(Mix64(seed ^ 0x7a11u ^ (uint64_t{u} << 20)) >> 11) * 0x1.0p-53;
    ds->trained[u] = r < double(share);
    if (!ds->trained[u]) continue;
    for (uint32_t i : ds->train[u]) ds->item_popularity[i]++;
    ds->train_interactions += ds->train[u].size();
  }
}

void MakeColdItems(Dataset* ds, double share, uint64_t seed) {
  if (share <= 0) return;
  ds->cold.assign(ds->num_items, 0);
  ds->cold_removed.resize(ds->num_users);
  for (uint32_t i = ds->first_item; i < ds->num_items; ++i) {
    const double r = double(Mix64(seed ^ 0xc01du ^ (uint64_t{i} << 21)) >> 11) * 0x1.0p-53;
    ds->cold[i] = r < share;
  }
  for (uint32_t u = 0; u < ds->num_users; ++u) {
    auto& items = ds->train[u];
    const bool rated = u < ds->train_ratings.size() && ds->train_ratings[u].size() == items.size();
    size_t out = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      if (ds->cold[items[k]]) {
        ds->cold_removed[u].push_back(items[k]);
        continue;
      }
      if (rated) ds->train_ratings[u][out] = ds->train_ratings[u][k];
      items[out++] = items[k];
    }
    items.resize(out);
    if (rated) ds->train_ratings[u].resize(out);
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
  ds->cold_removed.resize(ds->num_users);
  for (uint32_t u = 0; u < ds->num_users; ++u) {
    auto& items = ds->train[u];
    const double r = double(Mix64(seed ^ 0xc0105u ^ (uint64_t{u} << 23)) >> 11) * 0x1.0p-53;
    if (r >= share || items.size() <= size_t(keep)) continue;
    ds->cold_user[u] = 1;
    const size_t cut = items.size() - size_t(keep);
    ds->cold_removed[u].insert(ds->cold_removed[u].end(), items.begin(), items.begin() + cut);
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

StatusOr<Dataset> MergeDomains(std::vector<Dataset> parts, const std::vector<DomainSpec>& specs) {
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
    for (auto& l : p.train) shift(l, ioff);
    for (auto& l : p.test_sets) shift(l, ioff);
    for (auto& l : p.fixed_negatives) shift(l, ioff);
    for (auto& l : p.item_tokens) shift(l, toff);
    for (auto& l : p.item_categories) shift(l, toff);
    for (auto& l : p.user_tokens) shift(l, toff);
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
    // Attributes by name (the same classes in every domain that has them).
    for (auto& a : p.user_attributes) {
      auto it = std::find_if(m.user_attributes.begin(), m.user_attributes.end(),
                             [&](const Dataset::UserAttribute& x) { return x.name == a.name; });
      if (it == m.user_attributes.end()) {
        m.user_attributes.push_back({a.name, a.classes, {}, {}, {}});
        it = m.user_attributes.end() - 1;
      } else if (it->classes != a.classes) {
        return Status::InvalidArgument("data.domains: the user attribute '" + a.name + "' of '" +
                                       label + "' has other classes than an earlier domain's");
      }
      it->label.resize(uoff, -1);
      a.label.resize(p.num_users, -1);
      it->label.insert(it->label.end(), a.label.begin(), a.label.end());
      for (uint32_t t : a.tokens) it->tokens.push_back(t + toff);
      // A new user's profile reads the first domain's tokens that have them.
      if (it->class_tokens.empty())
        for (int64_t t : a.class_tokens) it->class_tokens.push_back(t < 0 ? t : t + toff);
    }
    append(m.social, p.social, p.num_users, uoff);
    append(m.user_tokens, p.user_tokens, p.num_users, uoff);
    append(m.item_tokens, p.item_tokens, p.num_items, ioff);
    append(m.token_names, p.token_names, p.num_tokens, toff);
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
    toff += p.num_tokens;
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
      auto ds = LoadDataset(one, data_dir);
      if (!ds.ok())
        return Status(ds.status().code(),
                      "data.domains '" + d.label + "': " + ds.status().message());
      parts.push_back(std::move(*ds));
    }
    return MergeDomains(std::move(parts), cfg.domains);
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
  return ds;
}

}  // namespace m6rec
