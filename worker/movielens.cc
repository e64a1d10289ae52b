// The MovieLens readers (LoadMovieLens, worker/dataset.h): ML-100K's u.data, its published
// splits (u1..u5, ua, ub) and a time-ordered stream split, u.item's genres, decades and title
// words, u.user's profiles and attributes; ML-1M's "::"-separated files (ratings.dat, movies.dat,
// users.dat) or the re-indexed ratings without times that ../shared/data holds (gzip'd TSV).
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/keys.h"
#include "worker/dataset.h"
#include "worker/dataset_parts.h"

namespace m6rec {

namespace {

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

// The genres' token names, ML-100K's order (token id = index), ML-1M's genres named the same,
// so that a shared vocabulary (data.vocabulary: shared) joins the two datasets' genres.
const char* const kGenreNames[19] = {"unknown", "action",   "adventure",   "animation", "children",
                                     "comedy",  "crime",    "documentary", "drama",     "fantasy",
                                     "noir",    "horror",   "musical",     "mystery",   "romance",
                                     "sci-fi",  "thriller", "war",         "western"};

// u.item genres (19 flags) and release decade as item tokens; u.user age band, gender and
// occupation as user tokens. Token ids: 0-18 genres, 20-39 decades, 40-49 age bands,
// 50-51 gender, 60+ occupations (in order of first appearance), and with title_words 200+ the
// titles' words (in order of first appearance). Every token is named in d->token_names.
Status ReadMovieLensContent(const std::string& dir, bool title_words, Dataset* d) {
  auto name = [d](uint32_t t, std::string s) { NameToken(d, t, std::move(s)); };
  for (uint32_t g = 0; g < 19; ++g) name(g, kGenreNames[g]);
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
  for (const auto& [g, t] : kGenres) name(t, kGenreNames[t]);
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
  TouchedByRatedTest(&d);
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
  TouchedByRatedTest(&d);
  d.num_items = max_i + 1;
  Finish(&d);
  M6_RETURN_IF_ERROR(ReadMovieLensContent(dir, title_words, &d));
  CountTokens(&d);
  return d;
}

}  // namespace m6rec
