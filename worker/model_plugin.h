// The contract between the training engine (worker/training_engine.h) and a model. The engine
// owns everything a job shares — data sharding, the pull/prefetch pipeline, the step order,
// dense synchronisation, evaluation, metrics, checkpoints, the summary; a model only says:
//   - how a batch of samples becomes lists of sparse keys (MakeBatch),
//   - how pulled rows become a loss and gradients (Step),
//   - how users are scored against candidates or against every item (Score*),
//   - what its dense part is (DenseModel), if it has one.
// A new model is one new file implementing ModelPlugin plus one line in MakeModelPlugin.
// Threading: a plugin is used by one thread (its rank's); several plugins may run in one process
// (ranks as threads), so a plugin keeps no global state of its own.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/keys.h"
#include "common/status.h"

namespace m6rec {

class Collective;
class SparseTables;
struct Dataset;
struct StreamEvent;

// One training example of task `task` (an index into cfg.train.tasks): user `user` and the
// item at position `pos` of its training list (an attribute task: pos = the list's length).
struct Sample {
  uint32_t user = 0;
  uint32_t pos = 0;
  uint32_t task = 0;
};

// The rows one list of keys needs: the engine pulls `keys` of `table` into `rows` (row i for
// keys[i], dim floats each), and after Step pushes `grads` (same shape; empty = nothing).
struct KeyList {
  TableId table = 0;
  uint32_t dim = 0;
  std::vector<Key> keys;
  std::vector<float> rows;
  std::vector<float> grads;
};

// A training batch as the engine sees it: the key lists, pulled in order. Plugins derive from it
// to keep their own inputs next to the keys.
struct TrainBatch {
  virtual ~TrainBatch() = default;
  std::vector<KeyList> lists;
};

// What a step reports: the summed loss over `examples` examples.
struct StepResult {
  double loss_sum = 0;
  uint64_t examples = 0;
};

// A user as a scoring request sees it: who, the behaviour the sequence part may read (oldest
// first), the user's neighbourhood in the interaction graph and the domain it is scored in.
struct UserQuery {
  uint32_t user = 0;
  std::vector<uint32_t> history;
  std::vector<uint32_t> neighbours;
  // The ratings of the first neighbours (model.rating_messages; shorter or empty: the rest are
  // unrated, e.g. a request's items beyond the training ones).
  std::vector<float> neighbour_ratings;
  int32_t domain = -1;  // the domain the request is in (-1: the user's own)
  uint32_t task = 0;    // the task it is scored for (cfg.train.tasks index)
  // A serving strategy's scale of user sources (by name, e.g. "sequence"; absent: 1): the
  // source's vector is multiplied by it before the fusion (worker/strategy.h).
  std::map<std::string, float> source_scale;
  // A user the run has never seen (m6rec recommend --history/--profile/--friends): no id row
  // (the zero padding row stands in), its profile tokens and friends (user ids) given here;
  // `user` is ignored.
  bool unseen = false;
  std::vector<uint32_t> profile, friends;
};

// The dense part of a model, replicated on every worker: the engine allreduces its gradients
// and steps its optimizer after every batch, so replicas stay bit-identical.
class DenseModel {
 public:
  virtual ~DenseModel() = default;
  virtual int64_t numel() const = 0;
  // Rank 0's parameters to every rank (the replicas start equal).
  virtual Status Broadcast(Collective& coll) = 0;
  // Gradient mean over ranks, then one optimizer step (the same on every rank).
  virtual Status AllReduceAndStep(Collective& coll) = 0;
  // FNV-1a over the parameters' bytes (replicas are compared by it).
  virtual uint64_t Fingerprint() const = 0;
  // train.backbone_epochs: from now on only each domain's and task's own parameters (the
  // per-condition ones and the tasks' heads) train, under a fresh optimizer; the shared ones
  // keep their values.
  // Returns how many parameters still train.
  virtual StatusOr<int64_t> FreezeBackbone() = 0;
  // The parameters and the optimizer state, to/from files under dir.
  virtual Status Save(const std::string& dir) const = 0;
  virtual Status Load(const std::string& dir, bool with_optimizer) = 0;
  // A generator state the model draws from (e.g. dropout), saved with checkpoints.
  virtual std::string RngState() const = 0;
  virtual Status SetRngState(const std::string& state) = 0;
};

class ModelPlugin {
 public:
  virtual ~ModelPlugin() = default;
  virtual const char* name() const = 0;

  // ---- training ----
  // Builds the batch of samples s[0..n); every random choice comes from rng.
  virtual StatusOr<std::unique_ptr<TrainBatch>> MakeBatch(const Sample* s, size_t n,
                                                          std::mt19937_64& rng) = 0;
  // Forward and backward over a pulled batch: fills each list's grads.
  virtual StatusOr<StepResult> Step(TrainBatch& batch) = 0;
  // The dense part (nullptr when the model has none).
  virtual DenseModel* dense() = 0;

  // ---- scoring (evaluation, recommendation) ----
  // Between BeginScoring and EndScoring the model is in evaluation mode and may cache what
  // every query shares (e.g. every item's vector).
  virtual Status BeginScoring() = 0;
  virtual void EndScoring() = 0;
  // scores[q][c]: query q against its candidates cands[q][c] (equal-length lists).
  virtual Status ScoreCandidates(const std::vector<UserQuery>& queries,
                                 const std::vector<std::vector<uint32_t>>& cands,
                                 std::vector<std::vector<float>>* scores) = 0;
  // scores: queries.size() x num_items, row-major, against every item id.
  virtual Status ScoreAllItems(const std::vector<UserQuery>& queries,
                               std::vector<float>* scores) = 0;
  // Tasks other than retrieval (UserQuery::task): per query, the task's outputs — rating: the
  // predicted rating of items[q]; like: the like logit of items[q]; attribute (items empty):
  // every class's logit, and with a wide part (model.wide_table) the wide part's logits after
  // them (2 x classes values; EvalTasks blends the two with a weight chosen on validation).
  virtual Status ScoreTask(const std::vector<UserQuery>& queries,
                           const std::vector<uint32_t>& items,
                           std::vector<std::vector<float>>* out) {
    (void)queries, (void)items, (void)out;
    return Status::InvalidArgument(std::string("the ") + name() + " job has no task heads");
  }

  // Why the query's user gets each of `items` (m6rec recommend --explain), one JSON object per
  // item: the weight each user source and each of the item's sources carried in the fusion (the
  // gates of this user's and this item's rows), the history items the sequence attended to
  // most, the graph neighbours whose vectors agree most with the item's, and the content tokens
  // the user and the item share.
  virtual Status Explain(const UserQuery& query, const std::vector<uint32_t>& items,
                         nlohmann::json* out) {
    (void)query, (void)items, (void)out;
    return Status::InvalidArgument(std::string("the ") + name() + " job has no explanations");
  }

  // ---- adapting (cfg.adapt) ----
  // Before the first step of a fresh adapted job: the backbone's dense parameters from its
  // checkpoint directory (the new domains' parts keep their initial values).
  virtual Status InitFromBackbone(const std::string& checkpoint) {
    return Status::InvalidArgument(std::string("the ") + name() + " job cannot adapt '" +
                                   checkpoint + "' (adapting needs the m6 job)");
  }

  // ---- streaming ----
  // The dataset the plugin was built over grew by these interactions (AppendInteractions, at
  // a point where no batch or scoring is in progress): what the plugin derived from the data
  // (negative samplers, the item graph, which rows are trained) follows.
  virtual Status OnInteractions(const StreamEvent* ev, size_t n) {
    (void)ev, (void)n;
    return Status::OK();
  }

  // ---- reporting ----
  // Per evaluated epoch, what the model wants in the metrics log (e.g. the fusion gates).
  virtual nlohmann::json EpochReport() const { return nlohmann::json::object(); }
  // Once, what the model is made of (e.g. its towers' sources), for the summary.
  virtual nlohmann::json Describe() const { return nlohmann::json::object(); }
};

// What a plugin is built from. The dataset and tables outlive the plugin.
struct PluginContext {
  const JobConfig* cfg = nullptr;
  const Dataset* data = nullptr;
  SparseTables* tables = nullptr;
  uint32_t rank = 0;
};

// The plugin for cfg.train.job.
StatusOr<std::unique_ptr<ModelPlugin>> MakeModelPlugin(const PluginContext& ctx);

}  // namespace m6rec
