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

// The metric an epoch is selected by, and which split it is read from: validation NDCG@10 under
// the sampled protocol; test Recall@20 under full ranking, whose published splits have no
// validation set (as LightGCN's code selects).
// With several tasks and retrieval not trained (weight 0), the first trained task's validation
// metric selects: AUC (like), accuracy (attribute), RMSE (rating, lower is better).
struct SelectionRule {
  bool on_validation = true;
  const char* metric = "NDCG@10";
  std::string task;  // "" = retrieval
  double sign = 1;   // -1: lower is better
  std::string Describe() const;
};
SelectionRule SelectionFor(Dataset::Protocol p, const std::vector<TaskSpec>& tasks = {});
// The value the rule reads from an epoch's (all workers') test and validation sums (higher is
// better).
double SelectionValue(const SelectionRule& r, const MetricSums& test, const MetricSums& valid);

// Protocol metrics as a JSON object of means (accuracy/precision/recall/F1 from the confusion
// counts) with "users".
nlohmann::json MetricsJson(const MetricSums& m);

// result.json from every worker's summary: the best epoch's test metrics over all users, every
// epoch, popularity, samples/s; `line` gets a one-line human summary of it.
StatusOr<nlohmann::json> MergeRunResult(const std::vector<WorkerSummary>& workers, double wall_s,
                                        std::string* line);

}  // namespace m6rec
