// What a worker reports at the end of a job (WorkerSummary, written as run_dir/worker-<r>.json),
// and the run's result made from all of them (result.json). The evaluation protocol decides
// which metrics are headlines and which one selects the best epoch; that rule lives here and in
// evaluator.h only, so the launcher names no metric.
// Value types; thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/dataset.h"
#include "worker/metrics.h"

namespace m6rec {

// One evaluated epoch as one worker saw it (its users' metric sums).
struct EpochRecord {
  int epoch = 0;
  double loss = 0;       // this worker's mean training loss over the epoch
  double elapsed_s = 0;  // since the job started
  MetricSums test, valid;
  nlohmann::json report = nlohmann::json::object();  // the model's EpochReport (e.g. gates)
};

struct WorkerSummary {
  uint32_t rank = 0;
  std::string job;  // the plugin's name
  std::string dataset;
  Dataset::Protocol protocol = Dataset::Protocol::kSampled;
  int negatives = 0;  // sampled protocol: negatives each target is ranked against
  MetricSums popularity;
  std::vector<EpochRecord> epochs;
  int best_epoch = 0;  // chosen during the job on every worker's metrics; 0 = none evaluated
  // A multi-domain job: each domain's own best epoch (DomainSelectionRules), chosen alike.
  std::map<std::string, int> domain_best_epochs;
  // train.domain_patience: the last epoch each domain that stopped training trained in.
  std::map<std::string, int> domain_trained_until;
  uint64_t steps = 0, samples = 0;
  double train_s = 0, eval_s = 0, samples_per_s = 0, first_loss = 0, last_loss = 0;
  int64_t dense_params = 0;
  std::string collective;
  std::vector<std::string> param_fingerprints;  // of the dense part after each of the first steps
  std::string final_fingerprint;
  nlohmann::json model = nlohmann::json::object();  // the plugin's Describe()
  // A stream job's prequential record (the same on every rank: global sums): {"chunks": [{
  // "chunk", "events", "ts_first", "ts_last", "HR@10", "NDCG@10", "scored", ...}], "events",
  // "HR@10", "NDCG@10", "halves": [{...}, {...}]}; empty for other jobs.
  nlohmann::json stream = nlohmann::json::object();

  nlohmann::json ToJson() const;
  static StatusOr<WorkerSummary> FromJson(const nlohmann::json& j);
};

// How the best epoch (the checkpoint eval/recommend/adapt read) is chosen: one term per task
// the rule reads, each a metric read from the validation split (test Recall@20 for retrieval
// under full ranking, whose published splits have no validation set, as LightGCN's code
// selects). Retrieval: NDCG@10 (Recall@20); like: AUC; rating: RMSE (lower is better);
// attribute: accuracy.
//   one term    the epoch with the highest value (sign applied);
//   several     (train.select_by: auto with more than one trained task) the epoch with the
//               highest weighted mean, over the tasks, of its share of each task's best lift
//               over chance so far: (v - chance) / (best - chance). A share puts every metric on
//               one scale, and a task still climbing (an attribute head from 0.6 to 0.95)
//               outvotes one that has flattened (retrieval 0.479 -> 0.472). A task weighs
//               1 / (e^2 + kShareTolerance^2), e the noise of its share (TermNoise at its best
//               over the lift): tasks whose validation can tell epochs apart count alike, one
//               whose validation is a hundred users (an attribute on ML-100K: e ~0.4) counts
//               little, so it cannot outvote the others by its noise.
struct SelectionTerm {
  std::string task;    // "" = retrieval (the protocol's metric, over every user)
  std::string domain;  // retrieval over this domain's users only ("": every user's)
  const char* metric = "NDCG@10";
  bool on_validation = true;
  double sign = 1;    // -1: lower is better
  double chance = 0;  // the metric of a model that knows nothing (sign applied)
  // Independent validation examples the metric averages over (users, pairs; 0: unknown, the
  // term counts fully): sets how noisy an epoch's value is (TermNoise).
  double examples = 0;
};
// The standard error of a term's metric at value v (sign applied) over its examples: a mean of
// values in [0, 1] (NDCG, HR, recall, accuracy, AUC over its smaller class) at most
// sqrt(v (1 - v) / n); an RMSE about RMSE / sqrt(2 n). 0 when the examples are unknown.
double TermNoise(const SelectionTerm& t, double v);
// How far a share of lift may be off before a term counts less (EpochSelector): a task whose
// share of lift is measured to within this counts about fully.
constexpr double kShareTolerance = 0.05;
struct SelectionRule {
  std::vector<SelectionTerm> terms = std::vector<SelectionTerm>(1);
  std::string Describe() const;
};
// The rule from the protocol and the tasks alone (chance values 0): with select_by a task's
// name, that task's metric; with "auto", every trained task's (weight > 0; one term when one
// task trains, retrieval's when no tasks are configured).
SelectionRule SelectionFor(Dataset::Protocol p, const std::vector<TaskSpec>& tasks = {},
                           const std::string& select_by = "auto");
// The same with every term's chance value from the data: uniform ranking among the target and
// `negatives` sampled items (retrieval; 0 under full ranking), AUC 0.5 (like), the training
// mean's RMSE on the validation ratings (rating), the training users' majority class on the
// validation users (attribute; `seed` draws the attribute splits).
SelectionRule SelectionFor(const Dataset& ds, int negatives, const std::vector<TaskSpec>& tasks,
                           const std::string& select_by, uint64_t seed);
// A multi-domain job's rule per evaluated domain (label, rule): retrieval's validation metric
// over that domain's users alone, which picks the checkpoint the domain is served from
// (checkpoint.h, best.json's "domains"). Empty for one domain, or where the protocol has no
// validation split to choose on.
std::vector<std::pair<std::string, SelectionRule>> DomainSelectionRules(const Dataset& ds);
// One term's value from an epoch's (all workers') sums, sign applied (-inf when absent).
double SelectionValue(const SelectionTerm& t, const MetricSums& test, const MetricSums& valid);

// Chooses the best epoch as epochs are evaluated, by a SelectionRule; deterministic given the
// same all-worker sums, so every rank agrees. Keeps every evaluated epoch's term values (a
// checkpoint holds them: State/Restore), because a several-term score is relative to each
// task's best so far: a new epoch is selected when its score beats the selected epoch's, both
// read against today's bests.
class EpochSelector {
 public:
  explicit EpochSelector(SelectionRule rule = {}) : rule_(std::move(rule)) {}
  // True when `epoch` becomes the selected one.
  bool Offer(int epoch, const MetricSums& test, const MetricSums& valid);
  bool OfferValues(int epoch, std::vector<double> values);
  int selected_epoch() const { return selected_ < 0 ? 0 : epochs_[size_t(selected_)]; }
  // Evaluations offered after the selected one (all of them while none is selected).
  int evaluations_since_selected() const { return int(epochs_.size()) - 1 - selected_; }
  // Evaluated epoch i's score under the bests of every epoch offered so far.
  double Score(size_t i) const;
  const SelectionRule& rule() const { return rule_; }
  nlohmann::json State() const;
  Status Restore(const nlohmann::json& j);

 private:
  SelectionRule rule_;
  std::vector<int> epochs_;
  std::vector<std::vector<double>> values_;  // per evaluated epoch, per term
  int selected_ = -1;
};

// Protocol metrics as a JSON object of means (accuracy/precision/recall/F1 from the confusion
// counts) with "users".
nlohmann::json MetricsJson(const MetricSums& m);

// result.json from every worker's summary: the best epoch's test metrics over all users, every
// epoch, popularity, samples/s; `line` gets a one-line human summary of it.
StatusOr<nlohmann::json> MergeRunResult(const std::vector<WorkerSummary>& workers, double wall_s,
                                        std::string* line);

}  // namespace m6rec
