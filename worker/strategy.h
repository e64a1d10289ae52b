// Request intents and per-intent serving strategies (docs/architecture.md "Intents and
// strategies"): M6-Rec's task classification and strategy adjustment at request time.
//
// An intent is what a request is after, read from the items' content categories (MovieLens
// genres, S3-Rec attributes, the synthetic data's tokens; Dataset::Categories):
//   continue  most of the next item's categories are among those of the last kRecentItems
//   explore   they are not: the user moves on to something new
// The intent of a request is inferred from its context alone — the behaviour before it — by a
// logistic regression (IntentClassifier) trained on every position of the training lists.
//
// A strategy says how to serve an intent, and changes without retraining anything:
//   sources          a scale per user source of the fusion (sequence = short-term interest,
//                    id / graph = long-term), applied to the source's vector before the fusion
//   category_weight  a candidate's score moves by this x the request's score spread x its
//                    category overlap with the recent items (the candidate pool, softly: > 0
//                    stays with the recent categories, < 0 steers away from them)
//   k, min_score     how many items to recommend, and the score below which none is
// Strategies are fitted on the validation requests (FitStrategies), stored in the run as
// strategy.json, printed and edited by `m6rec strategy`, and applied by `m6rec recommend`.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/dataset.h"

namespace m6rec {

class ModelPlugin;
struct Calibration;
struct JobConfig;

constexpr int kIntents = 2;  // continue, explore
constexpr int kRecentItems = 3;
const char* IntentName(int intent);
// -1 for an unknown name.
int IntentFromName(const std::string& name);

// The share of `item`'s categories among those of the last kRecentItems of `history` (0 when
// the item has none).
double CategoryOverlap(const Dataset& ds, const std::vector<uint32_t>& history, uint32_t item);
// 0 (continue) when CategoryOverlap >= 0.5, else 1 (explore).
int IntentOf(const Dataset& ds, const std::vector<uint32_t>& history, uint32_t target);

// What the classifier reads of a request: its behaviour's recent and long-run share of
// continuations, the recent items' category diversity, the history's length and the recent
// items' popularity.
std::vector<double> IntentFeatures(const Dataset& ds, const std::vector<uint32_t>& history);

class IntentClassifier {
 public:
  // Trained on requests at positions of the users' training lists (up to max_requests of them,
  // drawn from seed), features standardised.
  static IntentClassifier Fit(const Dataset& ds, const std::vector<uint32_t>& users, uint64_t seed,
                              size_t max_requests = 60000);
  // The probability that the request explores.
  double ProbExplore(const Dataset& ds, const std::vector<uint32_t>& history) const;
  // Explore when ProbExplore reaches the decision threshold (0.5 until FitStrategies chooses
  // the one that serves the validation requests best).
  int Predict(const Dataset& ds, const std::vector<uint32_t>& history) const {
    return ProbExplore(ds, history) >= threshold ? 1 : 0;
  }
  double threshold = 0.5;
  nlohmann::json ToJson() const;
  static StatusOr<IntentClassifier> FromJson(const nlohmann::json& j);
  bool trained() const { return !w_.empty(); }

 private:
  std::vector<double> mean_, std_, w_;  // w_[0] is the bias
};

struct Strategy {
  std::map<std::string, float> sources;  // user source -> scale (absent: 1)
  float category_weight = 0;
  int k = 10;
  float min_score = -std::numeric_limits<float>::infinity();
  nlohmann::json ToJson() const;
  // `where` names it in errors ("strategy.json intents.explore").
  static StatusOr<Strategy> FromJson(const nlohmann::json& j, const std::string& where);
};

// What a run serves with: the classifier, one strategy per intent and the global one (for a
// request whose intent is not inferred), and what fitting measured.
struct StrategyBook {
  IntentClassifier classifier;
  Strategy global;
  std::array<Strategy, kIntents> intents;
  // Whether requests are served by their inferred intent's strategy (else all by the global
  // one): fitting turns it off when the inferred intents serve the validation requests worse
  // than the global strategy (a classifier that cannot tell the intents apart).
  bool serve_intents = true;
  nlohmann::json report = nlohmann::json::object();
  nlohmann::json ToJson() const;
  static StatusOr<StrategyBook> FromJson(const nlohmann::json& j);
  // The strategy of a request with this history: its inferred intent's (intent, p_explore),
  // or the global one (intent -1) when intents are not served.
  const Strategy& For(const Dataset& ds, const std::vector<uint32_t>& history, int* intent,
                      double* p_explore) const;
};

// run_dir/strategy.json.
std::string StrategyPath(const std::string& run_dir);
StatusOr<StrategyBook> ReadStrategyBook(const std::string& run_dir);
Status WriteStrategyBook(const std::string& run_dir, const StrategyBook& book);
// "<continue|explore|global>.<k|min_score|category_weight|sources.NAME>=VALUE".
Status SetStrategyField(StrategyBook* book, const std::string& assignment);
// A table of the strategies (and the fitting report) for people.
std::string DescribeStrategies(const StrategyBook& book);

// Dynamic strategy adjustment on a stream (stream.online_strategy; the third step of task
// adaptation): every strategy of the grid FitStrategies searches (user-source scales x category
// weights) ranks each scored event of a chunk; a request is served by its inferred intent's
// strategy with the most hits on the chunks before (exponentially decayed by `decay` per
// chunk). Full information: the logged choice is ranked under every strategy, so choosing needs
// no exploration, and the choice for a chunk is made before the chunk is seen.
// Per chunk: Scales() -> the model scores the chunk's requests once per scale set -> Observe
// each -> ChunkHits() allreduced over the ranks -> EndChunk().
class OnlineStrategy {
 public:
  OnlineStrategy(const ModelPlugin& model, IntentClassifier classifier, double decay);
  // The grid's user-source scale sets (a request is scored once per set).
  const std::vector<std::map<std::string, float>>& Scales() const;
  // One request: its history, its candidates (target first) and their scores under every scale
  // set. Returns the target's rank under the current choice for its inferred intent
  // (*dynamic) and under the model as trained (*fixed), and counts its hits@10 under every
  // strategy for this chunk.
  void Observe(const Dataset& ds, const std::vector<uint32_t>& history,
               const std::vector<uint32_t>& cands,
               const std::vector<std::vector<float>>& scores_per_scale, int* dynamic, int* fixed);
  // This chunk's hits per (intent, strategy), to be summed over the ranks in place.
  std::vector<double>& ChunkHits() { return chunk_; }
  // Folds the chunk's (summed) hits into the totals and chooses every intent's strategy anew.
  void EndChunk();
  // The chosen strategies as a StrategyBook (strategy.json; `m6rec strategy` prints it).
  StrategyBook Book() const;
  nlohmann::json State() const;  // totals and choices, for a checkpoint
  Status Restore(const nlohmann::json& state);

 private:
  struct Impl;
  std::shared_ptr<Impl> g_;
  IntentClassifier classifier_;
  double decay_;
  std::vector<double> chunk_, total_;      // [intent][c][w]
  std::array<size_t, kIntents> choice_{};  // flat (c, w) index per intent
  size_t identity_ = 0;
};

// Fits the classifier on the training lists and every intent's strategy (and the global one)
// on the validation requests of `users` by grid search, over a model in scoring mode; then
// measures the test requests with the model as trained, the global strategy, the oracle
// intent's and the inferred intent's strategy (book->report). Sampled protocol only.
// `calibration` (the run's popularity calibration, worker/evaluator.h; null: none) is added to
// every candidate's score before the strategies are applied, as serving adds it.
Status FitStrategies(const Dataset& ds, const JobConfig& cfg, ModelPlugin& model,
                     const std::vector<uint32_t>& users, StrategyBook* book,
                     const Calibration* calibration = nullptr);

// A candidate's score under a strategy: score + weight x spread x overlap.
void ApplyCategoryWeight(const Dataset& ds, const std::vector<uint32_t>& history,
                         const std::vector<uint32_t>& items, float weight,
                         std::vector<float>* scores);

}  // namespace m6rec
