// The evaluation protocols, independent of the model: a model supplies scores, these loops pick
// the candidates, mask what the protocol masks, and accumulate per-user metrics (merged across
// workers by adding MetricSums).
//   sampled  target (test item, or validation item) + the protocol's negatives; HR@1/5/10,
//            NDCG@5/10, MRR, AUC, and score histograms from which the confusion counts
//            (accuracy/precision/recall/F1) are taken at a threshold chosen on validation
//   full     every item scored; training items (and items outside the user's domain, ids
//            below first_item) masked; Recall@20 / NDCG@20 against the user's test set
// In a multi-domain dataset every user's metrics are also added to its domain's group, and with
// a cold split to the cold or the warm items' group (kColdItemsGroup).
#pragma once

#include <array>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/dataset.h"
#include "worker/metrics.h"
#include "worker/neighbourhood.h"

namespace m6rec {

// scores->at(c)[k] = score of cands[c][k] for users[c]; with_valid: the validation item may be
// used as history (testing, as the sequential papers do).
using SampledScorer = std::function<Status(
    const std::vector<uint32_t>& users, const std::vector<std::vector<uint32_t>>& cands,
    bool with_valid, std::vector<std::vector<float>>* scores)>;
// scores: users.size() x ds.num_items, row-major.
using FullScorer =
    std::function<Status(const std::vector<uint32_t>& users, std::vector<float>* scores)>;

constexpr int kEvalUsersPerChunk = 256;

// A cold split's groups (Dataset::cold; sampled protocol): the users whose target is a cold
// item, and those whose target is warm. Reported as result.json test.cold_start.<name without
// the "cold:" prefix>.
inline constexpr const char* kColdItemsGroup = "cold:cold_items";
inline constexpr const char* kWarmItemsGroup = "cold:warm_items";
// A user cold split's (Dataset::cold_user; either protocol): the users cut to a few
// interactions, and the others.
inline constexpr const char* kColdUsersGroup = "cold:cold_users";
inline constexpr const char* kWarmUsersGroup = "cold:warm_users";
// A job that trains on a share of a domain's users (DomainSpec::train_users; all are evaluated):
// the users that train, and those read only as context. For the trained users the validation
// item directly follows their last trained item; for the others validation and test stand alike
// to the training data, so settings chosen at a small share can be read on them.
inline constexpr const char* kTrainedUsersGroup = "cold:trained_users";
inline constexpr const char* kContextUsersGroup = "cold:context_users";
// Every sampled-protocol evaluation also splits the users by how often their target item occurs
// in the training lists (Dataset::item_popularity, the trained users' counts): the long tail
// against the head. Buckets 0, 1-3, 4-15, 16-63, 64+ (powers of four), groups "pop:<bucket>",
// reported as result.json test.target_popularity.<bucket>.
inline constexpr std::array<const char*, 5> kTargetPopularityGroups = {
    "pop:0", "pop:1-3", "pop:4-15", "pop:16-63", "pop:64+"};
// The bucket (index into kTargetPopularityGroups) of an item seen `count` times in training.
int TargetPopularityBucket(uint32_t count);

// The scores of an evaluation pass, binned: over all users and per domain (index = domain;
// empty for a single-domain dataset).
struct ScoreHistograms {
  ScoreHistogram all;
  std::vector<ScoreHistogram> domains;
  explicit ScoreHistograms(const Dataset& ds);
  void Merge(const ScoreHistograms& o);
  // Every count in one vector, and back (what ranks allreduce).
  std::vector<double> Pack() const;
  void Unpack(const std::vector<double>& packed);
};

// Decision thresholds chosen on validation: over all users and per domain.
struct Thresholds {
  double all = 0;
  std::vector<double> domains;
  nlohmann::json ToJson(const Dataset& ds) const;
};
// The F1-maximising threshold of each histogram (validation scores of every worker).
Thresholds ChooseThresholds(const ScoreHistograms& valid);
// Adds the confusion counts at `t` ("TP", "FP", "TN", "FN", and each domain's) to `out`.
void AddConfusion(const Dataset& ds, const ScoreHistograms& h, const Thresholds& t,
                  MetricSums* out);

// ---- popularity calibration (train.popularity_calibration; sampled protocol) ----
// How far a model's score of an item can be trusted depends on how often the item trained: the
// rows of items a few training lists hold barely moved, items no trained user touched were only
// ever sampled negatives, and in-batch negatives penalise the popular ones by how often they are
// drawn. The calibration adds to each candidate's score an offset for its item's training-count
// bucket (the kTargetPopularityGroups buckets, the never-trained bucket's fixed at 0), per domain,
// chosen on the validation targets: coordinate ascent on validation NDCG@10, two sweeps over the
// buckets, each on a grid of kCalibrationGrid steps of kCalibrationStep x the standard deviation
// of the domain's validation scores either side of 0. Validation and test are then both ranked
// on the calibrated scores (validation so calibrated is what selects the epoch); the uncalibrated
// ranks stay in the results as HR@10_uncalibrated and NDCG@10_uncalibrated.
inline constexpr int kCalibrationGrid = 40;      // steps either side of 0
inline constexpr double kCalibrationStep = 0.1;  // in standard deviations of the scores
inline constexpr int kCalibrationSweeps = 2;
struct Calibration {
  // offsets[d][b]: the offset of an item in bucket b for a user of domain d (d = 0 without
  // domains). Empty: no calibration.
  std::vector<std::array<double, kTargetPopularityGroups.size()>> offsets;
  bool empty() const { return offsets.empty(); }
  // The offset of `item` for a user of domain `domain` (0 without domains; 0 without a
  // calibration, and for an item the training data does not count: one added at serving time).
  double Offset(const Dataset& ds, size_t domain, uint32_t item) const;
  // {"buckets": [...], "offsets": [...]} without domains, {"buckets", "domains": {name: [...]}}
  // with them (the evaluated domains).
  nlohmann::json ToJson(const Dataset& ds) const;
  // The inverse of ToJson for this data (a run's result.json read back for serving).
  static StatusOr<Calibration> FromJson(const Dataset& ds, const nlohmann::json& j);
};

// A sampled-protocol pass's scores, kept so that its metrics can be taken after a calibration
// is chosen on it.
struct SampledPass {
  bool valid = false;
  std::vector<uint32_t> users;
  std::vector<std::vector<uint32_t>> cands;  // cands[c][0] is the target
  std::vector<std::vector<float>> scores;    // scores[c][k]: of cands[c][k], uncalibrated
  std::vector<int> all_ranks;                // with all_items: the target's rank among all items
};
// Scores `users`' targets and sampled negatives (see EvalSampledProtocol), appended to `pass`.
Status ScoreSampledPass(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                        uint64_t seed, const SampledScorer& score, SampledPass* pass,
                        const FullScorer* all_items = nullptr);
// The pass's metrics (and histograms, when `hists` is not null) on its scores calibrated by
// `cal`, plus HR@10_uncalibrated / NDCG@10_uncalibrated on the raw ones.
void AccumulateSampledPass(const Dataset& ds, const SampledPass& pass, const Calibration& cal,
                           MetricSums* out, ScoreHistograms* hists);
// The calibration chosen on validation passes (each rank's own; `sum` adds a vector over the
// ranks in place, the same bits everywhere, so every rank chooses the same offsets). Empty for
// a cold split (its cold items' quality is what it measures: no prior from the warm ones' counts).
using SumAcrossRanks = std::function<Status(std::vector<double>*)>;
StatusOr<Calibration> FitCalibration(const Dataset& ds,
                                     const std::vector<const SampledPass*>& valid_passes,
                                     const SumAcrossRanks& sum);

// `hists` (may be null) receives every candidate's score, labelled. With `all_items` (a cold
// split's evaluation) the target is also ranked against every item the user could be shown
// (not its training items, the items a cold split took from it, its validation item when that
// is history, nor another domain's): "HR@10_all", "NDCG@10_all". Scores are calibrated by `cal`
// when given.
Status EvalSampledProtocol(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                           uint64_t seed, const SampledScorer& score, MetricSums* out,
                           ScoreHistograms* hists, const FullScorer* all_items = nullptr,
                           const Calibration* cal = nullptr);
Status EvalFullProtocol(const Dataset& ds, const std::vector<uint32_t>& users,
                        const FullScorer& score, MetricSums* out);

// ---- tasks other than retrieval (cfg.train.tasks[1..]) ----
// Their metric sums ride in MetricSums groups "task:<name>" (and "task:<name>:<domain>" in a
// multi-domain job), the group's user count counting examples:
//   rating     SE, AE (squared and absolute errors) -> RMSE, MAE; SE_deep -> RMSE_deep (the
//              deep model's alone, where a neighbourhood model blends in)
//   like       TP, FP, TN, FN at a threshold chosen on validation, AUC (x examples) -> AUC,
//              accuracy, precision, recall, F1; AUC_deep (the like head's own, where a
//              neighbourhood model blends in)
//   attribute  correct, TP#k, FP#k, FN#k per class k -> accuracy, macro-F1
// Examples: rating and like the rated pairs (Dataset::rated_valid / rated_test), attribute the
// users of the attribute's validation / test split (Dataset::AttributeSplit).
std::string TaskGroup(const std::string& task, const std::string& domain = "");

// outputs->at(c): the task's outputs for users[c] (and items[c] for a pair task), as
// ModelPlugin::ScoreTask; with_valid as for SampledScorer.
using TaskScorer = std::function<Status(uint32_t task, const std::vector<uint32_t>& users,
                                        const std::vector<uint32_t>& items, bool with_valid,
                                        std::vector<std::vector<float>>* outputs)>;

// The weights an attribute task's wide logits (model.wide_table) may be added to its deep
// logits with, chosen per task on validation (first best in this order): the deep head and the
// logistic regression on the bag are blended as the data favours, as a like task's threshold.
inline constexpr double kWideWeights[] = {1.0, 0.0, 0.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0};
inline constexpr size_t kNumWideWeights = sizeof(kWideWeights) / sizeof(kWideWeights[0]);

// The weights w a rating task's prediction may blend its neighbourhood model's with,
// (1 - w) x deep + w x neighbourhood (worker/neighbourhood.h), chosen per task on the
// validation ratings (first best in this order: the deep model alone on a tie).
inline constexpr double kNeighbourWeights[] = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5,
                                               0.6, 0.7, 0.8, 0.9, 1.0};
inline constexpr size_t kNumNeighbourWeights =
    sizeof(kNeighbourWeights) / sizeof(kNeighbourWeights[0]);

// A neighbourhood model's predicted rating as a like logit: 2 x (rating - (like_threshold -
// 0.5)), so that half a star past the threshold reads as a logit of 1 (a like task's blend with
// it weighs (1 - w) x logit + w x this; only the ratio matters to AUC, and the grid of w spans it).
inline float NeighbourLikeLogit(float rating, float like_threshold) {
  return 2.0f * (rating - (like_threshold - 0.5f));
}

// Per like task (index = task; others stay empty), its examples' logits, labelled. Per
// attribute task with a wide part: the examples' predicted class at every wide weight
// (this rank's), and the correct ones per weight (summed over ranks to choose the weight).
// Per rating task with a neighbourhood model: its examples' two predictions (this rank's), and
// the squared errors at every neighbour weight (summed over ranks to choose the weight).
struct TaskHistograms {
  struct Blended {
    uint32_t user;
    int truth;
    std::array<int, kNumWideWeights> predicted;
  };
  struct Rated {
    uint32_t user;
    float truth, deep, neighbourhood;
    float At(double w) const { return float((1 - w) * deep + w * neighbourhood); }
  };
  std::vector<ScoreHistogram> tasks;
  std::vector<std::vector<Blended>> blended;
  // [k]: correct at kWideWeights[k]; [kNumWideWeights]: the examples.
  std::vector<std::array<double, kNumWideWeights + 1>> blended_correct;
  std::vector<std::vector<Rated>> rated;
  // [k]: squared error at kNeighbourWeights[k]; [kNumNeighbourWeights]: the examples.
  std::vector<std::array<double, kNumNeighbourWeights + 1>> rated_se;
  // Per like task, where a neighbourhood model predicts its pairs: the examples' logits blended
  // with the neighbourhood's rating read as a logit (NeighbourLikeLogit) at every
  // kNeighbourWeights[k], [k] (empty counts without one; every like task has them, so that
  // every rank packs the same sizes).
  std::vector<std::vector<ScoreHistogram>> like_blends;
  TaskHistograms(const Dataset& ds, const std::vector<TaskSpec>& specs);
  std::vector<double> Pack() const;
  void Unpack(const std::vector<double>& packed);
  void Merge(const TaskHistograms& o);  // o's counts added (its predictions appended)
};

// `neighbours` (optional): the held-out pairs' neighbourhood predictions a rating task blends
// with (with `hists`; without, the deep prediction is the task's).
Status EvalTasks(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                 const std::vector<uint32_t>& users, bool valid, uint64_t seed,
                 const TaskScorer& score, MetricSums* out, TaskHistograms* hists,
                 const RatingNeighbourhood* neighbours = nullptr);
// From every rank's like histograms (valid_all, test_all: summed over ranks): each like task's
// threshold (F1-best on validation) and AUC. Adds this rank's confusion counts at the thresholds
// and AUC x its examples to test / valid (so that sums over ranks give the global values); the
// thresholds go to `thresholds` by task name. Likewise each attribute task with a wide part:
// its wide weight (most correct on validation over every rank; to `wide_weights` by task name,
// {"weight": w, "valid_accuracy": {"<w>": accuracy at each weight}}) and this rank's class
// counts at it. Likewise each rating task with a neighbourhood model: its neighbour weight
// (least squared error on validation; to `wide_weights`, {"weight": w, "valid_RMSE": {"<w>":
// RMSE at each weight}}) and this rank's errors at it ("SE_deep" keeps the deep model's alone);
// and each like task with one: its weight (highest validation AUC; {"weight": w, "valid_AUC":
// ...}), the threshold and counts read from the blend at it ("AUC_deep": the like head's own).
void AddTaskConfusion(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                      const TaskHistograms& test_mine, const TaskHistograms& valid_mine,
                      const TaskHistograms& test_all, const TaskHistograms& valid_all,
                      MetricSums* test, MetricSums* valid, nlohmann::json* thresholds,
                      nlohmann::json* wide_weights);
// The sums EvalTasks and AddTaskConfusion add, in a fixed order (what ranks allreduce).
std::vector<std::string> TaskSumNames(const Dataset& ds, const std::vector<TaskSpec>& tasks);
// Baselines of the tasks on the test examples: the mean training rating (rating), the training
// like rate (like: AUC 0.5 by definition, so only accuracy-style counts are not given), the
// majority class of the attribute's training users and a multinomial logistic regression on
// the user's bag of training items (attribute, groups "task:<name>" and "task:<name>_logreg").
Status EvalTaskBaselines(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                         const std::vector<uint32_t>& users, uint64_t seed, MetricSums* out);

// The validation metric a model that knows nothing reaches on a task other than retrieval
// (what epoch selection measures lift from): AUC 0.5 (like), the RMSE of the training mean
// rating on the validation ratings (rating), the accuracy of the training users' majority class
// on the validation users (attribute; `seed` draws the attribute's splits).
double TaskChance(const Dataset& ds, const TaskSpec& task, uint64_t seed);
// How many independent validation examples a task's selection metric averages over (what its
// noise shrinks with): the validation ratings (rating), the smaller of the liked and not-liked
// validation pairs (like: AUC's), the attribute's validation users (attribute).
double TaskValidationSize(const Dataset& ds, const TaskSpec& task, uint64_t seed);

// Accuracy, precision, recall and F1 from the confusion sums EvalSampledProtocol adds
// ("TP", "FP", "TN", "FN"), as a name -> value map of the means and these.
std::map<std::string, double> SummaryMetrics(const MetricSums& m);

// The metric sums the dataset's protocol adds, in a fixed order (what ranks allreduce): the
// totals and, for a multi-domain dataset, every domain's (MetricSums groups named by domain).
std::vector<std::string> ProtocolSumNames(const Dataset& ds);
// The two metrics a result leads with: HR@10, NDCG@10 (sampled) or Recall@20, NDCG@20 (full).
std::array<const char*, 2> HeadlineMetrics(Dataset::Protocol p);
// "full ranking" or "sampled, N negatives".
std::string ProtocolDescription(Dataset::Protocol p, int negatives);

// The end-of-epoch log line of metric sums (one worker's or all workers').
std::string EpochSummary(int epoch, double train_loss, Dataset::Protocol p, const MetricSums& test,
                         const MetricSums& valid);

// The popularity baseline: items scored by their training count.
SampledScorer PopularitySampledScorer(const Dataset& ds);
FullScorer PopularityFullScorer(const Dataset& ds);
// The popularity baseline under the dataset's protocol (test targets).
Status EvalPopularity(const Dataset& ds, const std::vector<uint32_t>& users, uint64_t seed,
                      MetricSums* out);

}  // namespace m6rec
