#include "worker/strategy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "common/config.h"
#include "common/util.h"
#include "worker/evaluator.h"
#include "worker/metrics.h"
#include "worker/model_plugin.h"
#include "worker/training_engine.h"

namespace m6rec {

using nlohmann::json;

namespace {

// CategoryOverlap of `item` with the kRecentItems items before position `end` of h.
double OverlapBefore(const Dataset& ds, const std::vector<uint32_t>& h, size_t end, uint32_t item) {
  const auto& cats = ds.Categories(item);
  if (cats.empty()) return 0;
  const size_t from = end > size_t(kRecentItems) ? end - kRecentItems : 0;
  int hits = 0;
  for (uint32_t c : cats) {
    bool found = false;
    for (size_t j = from; j < end && !found; ++j) {
      const auto& hc = ds.Categories(h[j]);
      found = std::find(hc.begin(), hc.end(), c) != hc.end();
    }
    hits += found;
  }
  return double(hits) / double(cats.size());
}

double Sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

constexpr size_t kFeatures = 6;

}  // namespace

const char* IntentName(int intent) { return intent == 0 ? "continue" : "explore"; }

int IntentFromName(const std::string& name) {
  for (int i = 0; i < kIntents; ++i)
    if (name == IntentName(i)) return i;
  return -1;
}

double CategoryOverlap(const Dataset& ds, const std::vector<uint32_t>& history, uint32_t item) {
  return OverlapBefore(ds, history, history.size(), item);
}

int IntentOf(const Dataset& ds, const std::vector<uint32_t>& history, uint32_t target) {
  return CategoryOverlap(ds, history, target) >= 0.5 ? 0 : 1;
}

std::vector<double> IntentFeatures(const Dataset& ds, const std::vector<uint32_t>& h) {
  const size_t n = h.size();
  // Every transition's kind (continuation or not), over the last 200 transitions at most.
  const size_t first = std::max<size_t>(1, n > 200 ? n - 200 : 1);
  double all = 0, recent = 0, last = 0.5;
  int n_all = 0, n_recent = 0;
  for (size_t j = first; j < n; ++j) {
    const double cont = OverlapBefore(ds, h, j, h[j]) >= 0.5 ? 1 : 0;
    all += cont, ++n_all;
    if (j + 5 >= n) recent += cont, ++n_recent;
    if (j + 1 == n) last = cont;
  }
  // The recent items' category diversity and popularity.
  std::vector<uint32_t> cats;
  size_t total = 0;
  double pop = 0;
  const size_t from = n > 5 ? n - 5 : 0;
  for (size_t j = from; j < n; ++j) {
    const auto& c = ds.Categories(h[j]);
    total += c.size();
    cats.insert(cats.end(), c.begin(), c.end());
    pop += std::log1p(h[j] < ds.item_popularity.size() ? double(ds.item_popularity[h[j]]) : 0);
  }
  std::sort(cats.begin(), cats.end());
  const size_t distinct = size_t(std::unique(cats.begin(), cats.end()) - cats.begin());
  return {n_recent ? recent / n_recent : 0.5,
          n_all ? all / n_all : 0.5,
          last,
          total ? double(distinct) / double(total) : 0.0,
          std::log1p(double(n)),
          n > from ? pop / double(n - from) : 0.0};
}

IntentClassifier IntentClassifier::Fit(const Dataset& ds, const std::vector<uint32_t>& users,
                                       uint64_t seed, size_t max_requests) {
  size_t total = 0;
  for (uint32_t u : users)
    total += ds.train[u].size() > size_t(kRecentItems) ? ds.train[u].size() - kRecentItems : 0;
  const double keep = total > max_requests ? double(max_requests) / double(total) : 1.0;
  std::mt19937_64 rng(seed ^ 0x1e7e);
  std::uniform_real_distribution<double> unif(0, 1);
  std::vector<std::vector<double>> x;
  std::vector<int> y;
  std::vector<uint32_t> prefix;
  for (uint32_t u : users) {
    const auto& l = ds.train[u];
    for (size_t p = kRecentItems; p < l.size(); ++p) {
      if (keep < 1 && unif(rng) >= keep) continue;
      prefix.assign(l.begin(), l.begin() + long(p));
      x.push_back(IntentFeatures(ds, prefix));
      y.push_back(IntentOf(ds, prefix, l[p]));
    }
  }
  IntentClassifier c;
  c.mean_.assign(kFeatures, 0);
  c.std_.assign(kFeatures, 1);
  c.w_.assign(kFeatures + 1, 0);
  if (x.empty()) return c;
  for (size_t f = 0; f < kFeatures; ++f) {
    double s = 0, s2 = 0;
    for (const auto& r : x) s += r[f], s2 += r[f] * r[f];
    c.mean_[f] = s / double(x.size());
    const double var = s2 / double(x.size()) - c.mean_[f] * c.mean_[f];
    c.std_[f] = var > 1e-12 ? std::sqrt(var) : 1.0;
  }
  for (auto& r : x)
    for (size_t f = 0; f < kFeatures; ++f) r[f] = (r[f] - c.mean_[f]) / c.std_[f];
  std::vector<size_t> order(x.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (int epoch = 0; epoch < 15; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    const double lr = 0.05 / (1 + epoch);
    for (size_t i : order) {
      double z = c.w_[0];
      for (size_t f = 0; f < kFeatures; ++f) z += c.w_[f + 1] * x[i][f];
      const double g = Sigmoid(z) - y[i];
      c.w_[0] -= lr * g;
      for (size_t f = 0; f < kFeatures; ++f) c.w_[f + 1] -= lr * (g * x[i][f] + 1e-4 * c.w_[f + 1]);
    }
  }
  return c;
}

double IntentClassifier::ProbExplore(const Dataset& ds, const std::vector<uint32_t>& h) const {
  if (w_.empty()) return 0.5;
  const std::vector<double> x = IntentFeatures(ds, h);
  double z = w_[0];
  for (size_t f = 0; f < kFeatures; ++f) z += w_[f + 1] * (x[f] - mean_[f]) / std_[f];
  return Sigmoid(z);
}

json IntentClassifier::ToJson() const {
  return {{"features",
           {"recent_continue", "all_continue", "last_continue", "recent_diversity", "log_length",
            "recent_log_popularity"}},
          {"mean", mean_},
          {"std", std_},
          {"weights", w_},
          {"threshold", threshold}};
}

StatusOr<IntentClassifier> IntentClassifier::FromJson(const json& j) {
  IntentClassifier c;
  try {
    c.mean_ = j.at("mean").get<std::vector<double>>();
    c.std_ = j.at("std").get<std::vector<double>>();
    c.w_ = j.at("weights").get<std::vector<double>>();
    c.threshold = j.value("threshold", 0.5);
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("strategy.json classifier: ") + e.what());
  }
  const bool untrained = c.mean_.empty() && c.std_.empty() && c.w_.empty();
  if (!untrained &&
      (c.mean_.size() != kFeatures || c.std_.size() != kFeatures || c.w_.size() != kFeatures + 1))
    return Status::Corruption("strategy.json classifier: expected " + std::to_string(kFeatures) +
                              " features");
  return c;
}

json Strategy::ToJson() const {
  json j = {{"sources", sources}, {"category_weight", category_weight}, {"k", k}};
  j["min_score"] = std::isfinite(min_score) ? json(min_score) : json(nullptr);
  return j;
}

StatusOr<Strategy> Strategy::FromJson(const json& j, const std::string& where) {
  Strategy s;
  try {
    if (j.contains("sources")) s.sources = j.at("sources").get<std::map<std::string, float>>();
    s.category_weight = j.value("category_weight", 0.0f);
    s.k = j.value("k", 10);
    if (j.contains("min_score") && !j.at("min_score").is_null())
      s.min_score = j.at("min_score").get<float>();
  } catch (const json::exception& e) {
    return Status::InvalidArgument(where + ": " + e.what());
  }
  if (s.k < 1) return Status::InvalidArgument(where + ".k: " + std::to_string(s.k) + " (>= 1)");
  for (const auto& [name, v] : s.sources)
    if (!(v >= 0) || v > 100)
      return Status::InvalidArgument(where + ".sources." + name + ": " + std::to_string(v) +
                                     " (a scale in [0, 100])");
  return s;
}

json StrategyBook::ToJson() const {
  json j = {{"classifier", classifier.ToJson()},
            {"global", global.ToJson()},
            {"serve_intents", serve_intents},
            {"report", report}};
  for (int i = 0; i < kIntents; ++i) j["intents"][IntentName(i)] = intents[size_t(i)].ToJson();
  return j;
}

StatusOr<StrategyBook> StrategyBook::FromJson(const json& j) {
  StrategyBook b;
  if (!j.is_object() || !j.contains("intents") || !j.contains("global"))
    return Status::Corruption("strategy.json: expected {classifier, global, intents}");
  if (j.contains("classifier")) {
    M6_ASSIGN_OR_RETURN(b.classifier, IntentClassifier::FromJson(j["classifier"]));
  }
  M6_ASSIGN_OR_RETURN(b.global, Strategy::FromJson(j["global"], "strategy.json global"));
  for (int i = 0; i < kIntents; ++i) {
    const std::string where = std::string("strategy.json intents.") + IntentName(i);
    if (!j["intents"].contains(IntentName(i))) return Status::Corruption(where + ": missing");
    M6_ASSIGN_OR_RETURN(b.intents[size_t(i)],
                        Strategy::FromJson(j["intents"][IntentName(i)], where));
  }
  b.report = j.value("report", json::object());
  b.serve_intents = j.value("serve_intents", true);
  return b;
}

const Strategy& StrategyBook::For(const Dataset& ds, const std::vector<uint32_t>& history,
                                  int* intent, double* p_explore) const {
  *p_explore = classifier.ProbExplore(ds, history);
  *intent = *p_explore >= classifier.threshold ? 1 : 0;
  if (serve_intents && classifier.trained()) return intents[size_t(*intent)];
  *intent = -1;
  return global;
}

std::string StrategyPath(const std::string& run_dir) { return run_dir + "/strategy.json"; }

StatusOr<StrategyBook> ReadStrategyBook(const std::string& run_dir) {
  const std::string path = StrategyPath(run_dir);
  M6_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::Corruption(path + ": not valid JSON");
  auto b = StrategyBook::FromJson(j);
  if (!b.ok()) return Status(b.status().code(), path + ": " + b.status().message());
  return b;
}

Status WriteStrategyBook(const std::string& run_dir, const StrategyBook& book) {
  return WriteFileAtomic(StrategyPath(run_dir), book.ToJson().dump(2) + "\n");
}

Status SetStrategyField(StrategyBook* book, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  const size_t dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    return Status::InvalidArgument("--set '" + assignment +
                                   "': expected INTENT.FIELD=VALUE (INTENT: continue, explore "
                                   "or global; FIELD: k, min_score, category_weight, "
                                   "sources.NAME)");
  const std::string who = assignment.substr(0, dot);
  const std::string field = assignment.substr(dot + 1, eq - dot - 1);
  const std::string value = assignment.substr(eq + 1);
  Strategy* s = who == "global" ? &book->global : nullptr;
  const int intent = IntentFromName(who);
  if (intent >= 0) s = &book->intents[size_t(intent)];
  if (!s)
    return Status::InvalidArgument("--set '" + assignment + "': '" + who +
                                   "' is no intent (continue, explore, global)");
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  const bool none = value == "none" && field == "min_score";
  if (!none && (value.empty() || *end != '\0' || !std::isfinite(v)))
    return Status::InvalidArgument("--set '" + assignment + "': '" + value + "' is not a number");
  json j = s->ToJson();
  if (field == "k" || field == "category_weight") {
    j[field] = field == "k" ? json(int(v)) : json(v);
  } else if (field == "min_score") {
    j[field] = none ? json(nullptr) : json(v);
  } else if (field.rfind("sources.", 0) == 0 && field.size() > 8) {
    j["sources"][field.substr(8)] = v;
  } else {
    return Status::InvalidArgument("--set '" + assignment + "': no field '" + field +
                                   "' (k, min_score, category_weight, sources.NAME)");
  }
  M6_ASSIGN_OR_RETURN(*s, Strategy::FromJson(j, "--set " + who));
  return Status::OK();
}

std::string DescribeStrategies(const StrategyBook& book) {
  std::ostringstream o;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%-9s %5s %9s %16s  %s\n", "intent", "k", "min_score",
                "category_weight", "source scales");
  o << buf;
  auto row = [&](const std::string& name, const Strategy& s) {
    std::string scales;
    for (const auto& [src, v] : s.sources) {
      std::snprintf(buf, sizeof(buf), "%s%s %.2f", scales.empty() ? "" : ", ", src.c_str(), v);
      scales += buf;
    }
    const std::string min = std::isfinite(s.min_score) ? std::to_string(s.min_score) : "none";
    std::snprintf(buf, sizeof(buf), "%-9s %5d %9s %16.2f  %s\n", name.c_str(), s.k, min.c_str(),
                  s.category_weight, scales.empty() ? "(all 1)" : scales.c_str());
    o << buf;
  };
  for (int i = 0; i < kIntents; ++i) row(IntentName(i), book.intents[size_t(i)]);
  row("global", book.global);
  o << (book.serve_intents ? "served: each request by its inferred intent's strategy\n"
                           : "served: the global strategy (inferred intents did not beat it on "
                             "validation)\n");
  const json& r = book.report;
  if (r.contains("classifier")) {
    const json& c = r["classifier"];
    std::snprintf(buf, sizeof(buf),
                  "\nintent classifier: test accuracy %.4f (majority %.4f), AUC %.4f, "
                  "validation accuracy %.4f; serving threshold %.2f (test accuracy there "
                  "%.4f); explore share %.3f of test requests\n",
                  c.value("test_accuracy", 0.0), c.value("test_majority", 0.0),
                  c.value("test_auc", 0.0), c.value("valid_accuracy", 0.0),
                  c.value("threshold", 0.5), c.value("test_accuracy_at_threshold", 0.0),
                  r.value("test_explore_share", 0.0));
    o << buf;
  }
  if (r.contains("test")) {
    std::snprintf(buf, sizeof(buf), "%-12s %8s %8s %16s %16s\n", "test", "HR@10", "NDCG@10",
                  "continue NDCG@10", "explore NDCG@10");
    o << buf;
    for (const char* m : {"as_trained", "global", "inferred", "oracle", "served"}) {
      if (!r["test"].contains(m)) continue;
      const json& t = r["test"][m];
      std::snprintf(buf, sizeof(buf), "%-12s %8.4f %8.4f %16.4f %16.4f\n", m, t.value("HR@10", 0.0),
                    t.value("NDCG@10", 0.0), t["by_intent"].value("continue", 0.0),
                    t["by_intent"].value("explore", 0.0));
      o << buf;
    }
  }
  return o.str();
}

void ApplyCategoryWeight(const Dataset& ds, const std::vector<uint32_t>& history,
                         const std::vector<uint32_t>& items, float weight,
                         std::vector<float>* scores) {
  if (weight == 0 || scores->size() < 2) return;
  double s = 0, s2 = 0;
  for (float x : *scores) s += x, s2 += double(x) * x;
  const double n = double(scores->size());
  const double spread = std::sqrt(std::max(0.0, s2 / n - (s / n) * (s / n)));
  for (size_t k = 0; k < items.size() && k < scores->size(); ++k)
    (*scores)[k] += float(weight * spread * CategoryOverlap(ds, history, items[k]));
}

namespace {

// One split's requests: user, history, candidates (target first), their overlaps, the intent.
struct Requests {
  std::vector<uint32_t> users;
  std::vector<std::vector<uint32_t>> history, neighbours, cands;
  std::vector<std::vector<float>> neighbour_ratings;  // empty on data without ratings
  std::vector<int> intent;
};

Requests MakeRequests(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                      uint64_t seed) {
  Requests r;
  for (uint32_t u : users) {
    const int64_t target = valid ? ds.valid_item[u] : ds.test_item[u];
    if (target < 0) continue;
    std::vector<uint32_t> h = ds.train[u];
    if (!valid && ds.valid_item[u] >= 0) h.push_back(uint32_t(ds.valid_item[u]));
    std::vector<uint32_t> c{uint32_t(target)};
    for (uint32_t n : SampledNegatives(ds, u, seed)) c.push_back(n);
    r.intent.push_back(IntentOf(ds, h, uint32_t(target)));
    r.users.push_back(u);
    r.history.push_back(std::move(h));
    r.neighbours.push_back(ds.train[u]);  // as evaluation reads the graph
    if (ds.has_ratings())
      r.neighbour_ratings.push_back(u < ds.train_ratings.size() ? ds.train_ratings[u]
                                                                : std::vector<float>{});
    r.cands.push_back(std::move(c));
  }
  return r;
}

// The candidates' scores of every request with the user sources scaled.
Status ScoreRequests(ModelPlugin& model, const Requests& r,
                     const std::map<std::string, float>& scales,
                     std::vector<std::vector<float>>* out) {
  out->clear();
  for (size_t start = 0; start < r.users.size(); start += 256) {
    std::vector<UserQuery> q;
    std::vector<std::vector<uint32_t>> c;
    for (size_t k = start; k < std::min(r.users.size(), start + 256); ++k) {
      UserQuery uq;
      uq.user = r.users[k];
      uq.history = r.history[k];
      uq.neighbours = r.neighbours[k];
      if (k < r.neighbour_ratings.size()) uq.neighbour_ratings = r.neighbour_ratings[k];
      uq.source_scale = scales;
      q.push_back(std::move(uq));
      c.push_back(r.cands[k]);
    }
    std::vector<std::vector<float>> s;
    M6_RETURN_IF_ERROR(model.ScoreCandidates(q, c, &s));
    for (auto& x : s) out->push_back(std::move(x));
  }
  return Status::OK();
}

// The target's (candidate 0's) rank under every category weight: each candidate's score moved
// by weight x the scores' spread x its category overlap (as ApplyCategoryWeight serves it).
std::vector<int> WeightedRanks(const std::vector<float>& scores, const std::vector<double>& overlap,
                               const std::vector<float>& weights) {
  double m = 0, m2 = 0;
  for (float x : scores) m += x, m2 += double(x) * x;
  const double n = double(scores.size());
  const double spread = std::sqrt(std::max(0.0, m2 / n - (m / n) * (m / n)));
  std::vector<int> ranks;
  for (float w : weights) {
    std::vector<float> adj(scores);
    for (size_t j = 0; j < adj.size(); ++j) adj[j] += float(w * spread * overlap[j]);
    ranks.push_back(RankOfFirst(adj));
  }
  return ranks;
}

// Per request, the rank of its target under every (scales, weight) choice.
struct Grid {
  std::vector<std::map<std::string, float>> scales;
  std::vector<float> weights{-1.0f, -0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 1.0f};
  // rank[c][w][request]
  std::vector<std::vector<std::vector<int>>> rank;
};

Status RankAll(const Dataset& ds, ModelPlugin& model, const Requests& r,
               const Calibration* calibration, Grid* g) {
  std::vector<std::vector<double>> overlap(r.users.size());
  for (size_t k = 0; k < r.users.size(); ++k)
    for (uint32_t i : r.cands[k]) overlap[k].push_back(CategoryOverlap(ds, r.history[k], i));
  g->rank.assign(g->scales.size(), {});
  for (size_t c = 0; c < g->scales.size(); ++c) {
    std::vector<std::vector<float>> scores;
    M6_RETURN_IF_ERROR(model.BeginScoring());
    Status s = ScoreRequests(model, r, g->scales[c], &scores);
    model.EndScoring();
    M6_RETURN_IF_ERROR(s);
    if (calibration && !calibration->empty())
      for (size_t k = 0; k < r.users.size(); ++k) {
        const size_t d = ds.multi_domain() ? ds.UserDomain(r.users[k]) : 0;
        for (size_t j = 0; j < scores[k].size(); ++j)
          scores[k][j] += float(calibration->Offset(ds, d, r.cands[k][j]));
      }
    g->rank[c].assign(g->weights.size(), std::vector<int>(r.users.size()));
    for (size_t k = 0; k < r.users.size(); ++k) {
      const std::vector<int> ranks = WeightedRanks(scores[k], overlap[k], g->weights);
      for (size_t w = 0; w < g->weights.size(); ++w) g->rank[c][w][k] = ranks[w];
    }
  }
  return Status::OK();
}

struct Choice {
  size_t c = 0, w = 0;
};

// Mean NDCG@10 (and HR@10) over the requests `pick` selects, each ranked by choose(k).
template <typename Pick, typename Choose>
std::pair<double, double> Measure(const Grid& g, size_t n, Pick pick, Choose choose) {
  double ndcg = 0, hr = 0, count = 0;
  for (size_t k = 0; k < n; ++k) {
    if (!pick(k)) continue;
    const Choice ch = choose(k);
    const int rank = g.rank[ch.c][ch.w][k];
    ndcg += NdcgAtK(rank, 10);
    hr += HitAtK(rank, 10);
    count += 1;
  }
  return count > 0 ? std::make_pair(ndcg / count, hr / count) : std::make_pair(0.0, 0.0);
}

// The grid's source scales: the short-term (sequence) and long-term (id, graph) sources scaled
// apart, for the sources the model has.
Grid SourceGrid(const ModelPlugin& model) {
  std::vector<std::string> sources;
  const json d = model.Describe();
  if (d.contains("user_sources")) sources = d["user_sources"].get<std::vector<std::string>>();
  auto has = [&](const char* s) {
    return std::find(sources.begin(), sources.end(), s) != sources.end();
  };
  const bool shortterm = has("sequence"), longterm = has("id") || has("graph");
  Grid g;
  for (float s : shortterm ? std::vector<float>{0.5f, 1.0f, 1.5f} : std::vector<float>{1.0f})
    for (float l : longterm ? std::vector<float>{0.5f, 1.0f, 1.5f} : std::vector<float>{1.0f}) {
      std::map<std::string, float> m;
      if (shortterm && s != 1.0f) m["sequence"] = s;
      for (const char* src : {"id", "graph"})
        if (has(src) && l != 1.0f) m[src] = l;
      g.scales.push_back(m);
    }
  return g;
}

// The model as trained: unscaled, no category weight.
Choice Identity(const Grid& g) {
  Choice identity;
  for (size_t c = 0; c < g.scales.size(); ++c)
    if (g.scales[c].empty()) identity.c = c;
  identity.w = size_t(std::find(g.weights.begin(), g.weights.end(), 0.0f) - g.weights.begin());
  return identity;
}

// The best choice on the validation grid `gv` for the n requests `pick` selects: the model as
// trained unless a choice beats it by kMinGain (relative): picking the best of 63 on a few
// hundred requests finds noise otherwise.
template <typename Pick>
Choice BestChoice(const Grid& gv, size_t n, Pick pick) {
  constexpr double kMinGain = 0.01;
  const Choice identity = Identity(gv);
  const double base = Measure(gv, n, pick, [&](size_t) { return identity; }).first;
  Choice b = identity;
  double top = base * (1 + kMinGain);
  for (size_t c = 0; c < gv.scales.size(); ++c)
    for (size_t w = 0; w < gv.weights.size(); ++w) {
      const double v = Measure(gv, n, pick, [&](size_t) { return Choice{c, w}; }).first;
      if (v > top + 1e-12) top = v, b = {c, w};
    }
  return b;
}

// The classifier's decision threshold: the one whose inferred intents serve the validation
// requests (P(explore) p_valid) best with the per-intent choices (intents are rarely balanced,
// and a wrong explore costs more than a wrong continue or the other way round: 0.5 need not be
// the right cut). Returns the validation NDCG@10 it reaches.
double FitThreshold(const Grid& gv, const std::vector<float>& p_valid,
                    const std::array<Choice, kIntents>& per_intent, double* threshold) {
  double best = -1;
  for (int step = 1; step <= 20; ++step) {
    const double t = step == 20 ? 1.01 : step * 0.05;  // 1.01: never explore
    const double v = Measure(
                         gv, p_valid.size(), [](size_t) { return true; },
                         [&](size_t k) { return per_intent[p_valid[k] >= t ? 1 : 0]; })
                         .first;
    if (v > best + 1e-12 || (std::fabs(t - 0.5) < 1e-9 && v >= best - 1e-12))
      best = v, *threshold = t;
  }
  return best;
}

std::vector<int> Decide(const std::vector<float>& p, double threshold) {
  std::vector<int> out;
  for (float x : p) out.push_back(x >= threshold ? 1 : 0);
  return out;
}

double Accuracy(const std::vector<int>& a, const std::vector<int>& b) {
  double hit = 0;
  for (size_t k = 0; k < a.size(); ++k) hit += a[k] == b[k];
  return a.empty() ? 0.0 : hit / double(a.size());
}

// The classifier's quality on the requests (P(explore) p_valid / p_test).
json ClassifierReport(const Requests& valid, const Requests& test,
                      const std::vector<float>& p_valid, const std::vector<float>& p_test,
                      double threshold) {
  double explore = 0;
  for (int i : test.intent) explore += i;
  explore /= double(test.intent.size());
  std::vector<float> p_copy(p_test);
  std::vector<int> labels(test.intent.begin(), test.intent.end());
  return {{"valid_accuracy", Accuracy(Decide(p_valid, 0.5), valid.intent)},
          {"test_accuracy", Accuracy(Decide(p_test, 0.5), test.intent)},
          {"test_majority", std::max(explore, 1 - explore)},
          {"test_auc", Auc(p_copy, labels)},
          {"threshold", threshold},
          {"test_accuracy_at_threshold", Accuracy(Decide(p_test, threshold), test.intent)},
          {"valid_accuracy_at_threshold", Accuracy(Decide(p_valid, threshold), valid.intent)}};
}

}  // namespace

Status FitStrategies(const Dataset& ds, const JobConfig& cfg, ModelPlugin& model,
                     const std::vector<uint32_t>& users, StrategyBook* book,
                     const Calibration* calibration) {
  if (ds.protocol != Dataset::Protocol::kSampled)
    return Status::InvalidArgument(
        "strategies are fitted on the sampled protocol's validation requests; " + ds.name +
        " is evaluated by " + ds.ProtocolName());
  const uint64_t seed = EvalSeed(cfg);
  book->classifier = IntentClassifier::Fit(ds, users, cfg.seed);
  const Requests valid = MakeRequests(ds, users, true, seed);
  const Requests test = MakeRequests(ds, users, false, seed);
  if (valid.users.empty() || test.users.empty())
    return Status::InvalidArgument("no validation or test requests to fit strategies on");
  Grid gv = SourceGrid(model), gt = gv;
  M6_RETURN_IF_ERROR(RankAll(ds, model, valid, calibration, &gv));
  M6_RETURN_IF_ERROR(RankAll(ds, model, test, calibration, &gt));
  const size_t nv = valid.users.size(), n = test.users.size();
  auto strategy = [&](const Choice& ch) {
    Strategy s;
    s.sources = gv.scales[ch.c];
    s.category_weight = gv.weights[ch.w];
    return s;
  };
  const Choice identity = Identity(gv);
  const Choice global = BestChoice(gv, nv, [](size_t) { return true; });
  std::array<Choice, kIntents> per_intent;
  for (int i = 0; i < kIntents; ++i)
    per_intent[size_t(i)] = BestChoice(gv, nv, [&](size_t k) { return valid.intent[k] == i; });
  book->global = strategy(global);
  for (int i = 0; i < kIntents; ++i) book->intents[size_t(i)] = strategy(per_intent[size_t(i)]);

  std::vector<float> p_valid(nv), p_test(n);
  for (size_t k = 0; k < nv; ++k)
    p_valid[k] = float(book->classifier.ProbExplore(ds, valid.history[k]));
  for (size_t k = 0; k < n; ++k)
    p_test[k] = float(book->classifier.ProbExplore(ds, test.history[k]));
  const double inferred_valid = FitThreshold(gv, p_valid, per_intent, &book->classifier.threshold);
  const double global_valid =
      Measure(
          gv, nv, [](size_t) { return true; }, [&](size_t) { return global; })
          .first;
  book->serve_intents = inferred_valid > global_valid;

  // The test requests under each way of choosing a strategy.
  const std::vector<int> inferred = Decide(p_test, book->classifier.threshold);
  json report = {
      {"requests", {{"valid", nv}, {"test", n}}},
      {"classifier", ClassifierReport(valid, test, p_valid, p_test, book->classifier.threshold)}};
  double explore = 0;
  for (int i : test.intent) explore += i;
  report["test_explore_share"] = explore / double(n);
  auto measure = [&](const char* name, auto choose) {
    json m;
    const auto all = Measure(
        gt, n, [](size_t) { return true; }, choose);
    m["NDCG@10"] = all.first;
    m["HR@10"] = all.second;
    for (int i = 0; i < kIntents; ++i)
      m["by_intent"][IntentName(i)] =
          Measure(
              gt, n, [&](size_t k) { return test.intent[k] == i; }, choose)
              .first;
    report["test"][name] = m;
  };
  measure("as_trained", [&](size_t) { return identity; });
  measure("global", [&](size_t) { return global; });
  measure("oracle", [&](size_t k) { return per_intent[size_t(test.intent[k])]; });
  measure("inferred", [&](size_t k) { return per_intent[size_t(inferred[k])]; });
  measure("served",
          [&](size_t k) { return book->serve_intents ? per_intent[size_t(inferred[k])] : global; });
  report["serve_intents"] = book->serve_intents;
  report["calibrated"] = calibration != nullptr && !calibration->empty();
  report["valid"] = {{"global_NDCG@10", global_valid}, {"inferred_NDCG@10", inferred_valid}};
  book->report = report;
  return Status::OK();
}

struct OnlineStrategy::Impl {
  explicit Impl(Grid g) : grid(std::move(g)) {}
  Grid grid;
};

OnlineStrategy::OnlineStrategy(const ModelPlugin& model, IntentClassifier classifier, double decay)
    : g_(std::make_shared<Impl>(SourceGrid(model))),
      classifier_(std::move(classifier)),
      decay_(decay) {
  const auto& g = g_->grid;
  const Choice id = Identity(g);
  identity_ = id.c * g.weights.size() + id.w;
  const size_t n = g.scales.size() * g.weights.size();
  chunk_.assign(kIntents * n, 0.0);
  total_.assign(kIntents * n, 0.0);
  choice_.fill(identity_);
}

const std::vector<std::map<std::string, float>>& OnlineStrategy::Scales() const {
  return g_->grid.scales;
}

void OnlineStrategy::Observe(const Dataset& ds, const std::vector<uint32_t>& history,
                             const std::vector<uint32_t>& cands,
                             const std::vector<std::vector<float>>& scores, int* dynamic,
                             int* fixed) {
  const auto& g = g_->grid;
  const int intent = classifier_.trained() ? classifier_.Predict(ds, history) : 0;
  const size_t W = g.weights.size(), n = g.scales.size() * W;
  std::vector<double> overlap;
  for (uint32_t i : cands) overlap.push_back(CategoryOverlap(ds, history, i));
  for (size_t c = 0; c < g.scales.size(); ++c) {
    const std::vector<int> ranks = WeightedRanks(scores[c], overlap, g.weights);
    for (size_t w = 0; w < W; ++w) {
      const int rank = ranks[w];
      const size_t flat = c * W + w;
      chunk_[size_t(intent) * n + flat] += HitAtK(rank, 10);
      if (flat == choice_[size_t(intent)]) *dynamic = rank;
      if (flat == identity_) *fixed = rank;
    }
  }
}

void OnlineStrategy::EndChunk() {
  const size_t n = g_->grid.scales.size() * g_->grid.weights.size();
  for (size_t k = 0; k < total_.size(); ++k) total_[k] = decay_ * total_[k] + chunk_[k];
  std::fill(chunk_.begin(), chunk_.end(), 0.0);
  for (size_t i = 0; i < size_t(kIntents); ++i) {
    // The model as trained unless another strategy has more hits (ties keep it).
    size_t best = identity_;
    for (size_t f = 0; f < n; ++f)
      if (total_[i * n + f] > total_[i * n + best] + 1e-9) best = f;
    choice_[i] = best;
  }
}

StrategyBook OnlineStrategy::Book() const {
  const auto& g = g_->grid;
  auto strategy = [&](size_t flat) {
    Strategy s;
    s.sources = g.scales[flat / g.weights.size()];
    s.category_weight = g.weights[flat % g.weights.size()];
    return s;
  };
  StrategyBook b;
  b.classifier = classifier_;
  b.global = strategy(identity_);
  for (size_t i = 0; i < size_t(kIntents); ++i) b.intents[i] = strategy(choice_[i]);
  b.serve_intents = classifier_.trained();
  b.report = {{"online", true}, {"decay", decay_}};
  return b;
}

json OnlineStrategy::State() const {
  return {{"total", total_}, {"choice", std::vector<size_t>(choice_.begin(), choice_.end())}};
}

Status OnlineStrategy::Restore(const json& state) {
  try {
    auto total = state.at("total").get<std::vector<double>>();
    auto choice = state.at("choice").get<std::vector<size_t>>();
    if (total.size() != total_.size() || choice.size() != choice_.size())
      return Status::Corruption("online strategy state: another grid");
    total_ = std::move(total);
    std::copy(choice.begin(), choice.end(), choice_.begin());
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("online strategy state: ") + e.what());
  }
  return Status::OK();
}

}  // namespace m6rec
