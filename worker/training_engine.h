// The training engine: the one loop every job runs, with the model as a plug-in
// (worker/model_plugin.h) and the sparse tables behind SparseTables (worker/sparse_tables.h).
//
// One rank of a job (a worker process, or a thread in tests) runs RunTraining:
//   shard      users u with u % W == rank; a sample is (user, position in its training list);
//              every rank runs the same number of steps per epoch (the largest shard sets it,
//              smaller shards wrap around) so collective calls and checkpoint cuts line up
//   each step  MakeBatch -> PullAsync every key list -> (train.staleness 1: the next batch's
//              pulls go out now, overlapping this step) -> Step (forward/backward) ->
//              PushAsync the gradients -> dense: allreduce + optimizer step -> WaitPush
//   epochs     shuffle (from the rank's RNG), steps, then at the evaluation cadence: barrier,
//              evaluate this rank's users under the dataset's protocol, allreduce the metric
//              sums (doubles), rank 0 appends metrics.jsonl, pick the best epoch
//   checkpoints at a cut (every rank between the same two steps, every push acknowledged):
//              periodic (checkpoint.every_epochs / every_steps) and the best epoch's; see
//              worker/checkpoint.h. A job started with resume_from continues from one.
// The engine stops on train.max_steps and when should_abort says so (a node died).
// Threading: RunTraining runs on the calling thread; the context's objects belong to it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/dataset.h"
#include "worker/job_summary.h"

namespace m6rec {

class Collective;
class ModelPlugin;
class SparseTables;
struct StrategyBook;
struct Calibration;

struct EngineContext {
  const JobConfig* cfg = nullptr;
  uint32_t rank = 0;
  uint32_t num_workers = 1;
  SparseTables* tables = nullptr;
  Collective* collective = nullptr;  // every rank has one ("single" for one worker)
  std::shared_ptr<const Dataset> data;
  std::string run_dir;  // metrics.jsonl, checkpoints/; "" = write nothing
  // Waits until every rank reached `name` (a cluster: the scheduler's barrier; default: the
  // collective's).
  std::function<Status(const std::string& name)> barrier;
  // True (with a reason) when the job must stop: a node died, the job was cancelled.
  std::function<bool(std::string* why)> should_abort;
  std::string resume_from;  // a checkpoint directory to continue from ("" = fresh)
  // A stream job (cfg.stream): the token a feed is read with when stream.token is empty (the
  // job's), and, for the periodic-retraining baseline (stream.retrain_every_s), how to empty
  // every table (in-process jobs; a cluster's servers cannot be emptied from a worker).
  uint64_t job_token = 0;
  std::function<Status()> reset_tables;
  // Where the rank is (TrainProgress::Progress, plus "last_eval" after an evaluation and
  // "stream" in a stream job), at most every half second: a worker hands it to its scheduler
  // client (SetStats), whose heartbeats carry it to the dashboard.
  std::function<void(const nlohmann::json&)> progress;
};

// The job's dataset (LoadDataset over cfg.data, with train.eval_negatives applied), read once
// and shared by the ranks of a process.
StatusOr<std::shared_ptr<const Dataset>> LoadJobData(const JobConfig& cfg,
                                                     const std::string& data_dir);

// The seed of evaluation's sampled negatives and fixed neighbour samples.
uint64_t EvalSeed(const JobConfig& cfg);

// How many copies of a sample of weight w (a task's weight x its domain's) epoch `epoch`
// (from 1) trains: floor(w), plus for the fraction f one more in the epochs whose window
// [(epoch - 1) f, epoch f) of the unwrapped line holds one of the sample's places c + h_c, one
// per cycle c with h_c in [0, 1) hashed from (seed, sample, c). Consecutive windows tile the
// line, so each sample gets exactly one extra copy per cycle of 1/f epochs (an epoch whose
// window straddles a cycle's end may hold two of them, when 1/f is not whole), every cycle a fresh
// random share: a weight of 1/2 is a pass split into two epochs, reshuffled every pass. The
// same on every rank (the lockstep step count). History: until 2026-12-03 the fraction was the
// same share every epoch (ML-1M's rating task saw a third of its ratings and overfit them);
// until 2026-12-06 an independent draw per epoch, sampling with replacement across epochs
// (Beauty at weight 1/2 validated 0.0085 NDCG@10 below whole passes after two passes' worth of
// epochs, and fixed shares without the per-cycle reshuffle 0.005; docs/results.md "Fractional
// weights").
uint32_t WeightedCopies(float w, uint64_t sample, uint64_t seed, int epoch);

// Trains this rank's share of the job; returns its summary. A stream job (cfg.stream) trains
// train.epochs over the dataset and then the stream, chunk by chunk (docs/architecture.md
// "Streaming"): every rank reads the whole stream and keeps every user's growing history (the
// dataset is copied and grows: AppendInteractions); rank 0 decides how many events a chunk
// holds and the others take the same ones; each rank scores and trains every W-th event of the
// chunk, plus stream.replay earlier samples per new one.
StatusOr<WorkerSummary> RunTraining(const EngineContext& ctx);

// Serving a trained model: the job's plugin over `ctx.tables`, its dense part (if any) loaded
// from the checkpoint directory `checkpoint`.
struct ScoringContext {
  const JobConfig* cfg = nullptr;
  SparseTables* tables = nullptr;
  std::shared_ptr<const Dataset> data;
  std::string checkpoint;
  uint32_t num_workers = 1;  // evaluation visits users in the shards and chunks training used
  const StrategyBook* strategy = nullptr;  // recommend: serve with the run's strategies
  bool explain = false;  // recommend: every item says why (ModelPlugin::Explain), as "why"
  // Items appended at serving time (AddNewItems): the last new_items.size() item ids, by name.
  std::vector<std::string> new_items;
  // recommend: the run's popularity calibration (result.json, chosen on validation for the kept
  // epoch's model), added to every item's score before the strategy's min_score and the top k.
  const Calibration* calibration = nullptr;
};

// The run's model over ctx.tables, its dense part loaded from ctx.checkpoint.
StatusOr<std::unique_ptr<ModelPlugin>> LoadScoringModel(const ScoringContext& ctx);

// The protocol's test (and validation) metrics over every user, evaluated shard by shard as the
// training job's ranks did, so the numbers reproduce the job's for the same model:
// {"dataset", "protocol", "test": {...}, "valid": {...}}.
StatusOr<nlohmann::json> EvaluateModel(const ScoringContext& ctx);

// The top k items for `user`, everything the user is known to have touched excluded:
// {"user", "k", "seen", "items": [{"item", "score"}...]}. With ctx.strategy, the request's
// intent is inferred from the user's behaviour and its strategy applied (source scales,
// category weight, min_score; k <= 0: the strategy's k), and the answer says which
// ({"intent": {"name", "p_explore"}, "strategy": {...}}); without, k <= 0 means 10.
// In a multi-domain run, `domain` names the user's domain and `user` is its id there (else the
// merged id); the candidates are the user's domain's items, each also given by its own id.
StatusOr<nlohmann::json> RecommendForUser(const ScoringContext& ctx, int64_t user, int k,
                                          const std::string& domain = "");

// A user the run has never seen (cold start), described by what is known of it: items it
// touched (oldest first), profile attributes by name (the data's user attributes, e.g.
// MovieLens gender=F, age=25-34, occupation=writer) and friends. Ids are the domain's own in a
// multi-domain run (`domain` required there), else the dataset's. The user has no id row: the
// model reads its history, profile and friends (the m6 job; the mf job refuses).
struct NewUser {
  std::vector<int64_t> history, friends;
  std::map<std::string, std::string> profile;
};
StatusOr<NewUser> ParseNewUser(const nlohmann::json& j);  // {"history", "profile", "friends"}
StatusOr<nlohmann::json> RecommendForNewUser(const ScoringContext& ctx, const NewUser& user, int k,
                                             const std::string& domain = "");

// A run's model loaded once to answer many requests (RecommendForUser and RecommendForNewUser
// load one per call): the dense part from ctx.checkpoint, in scoring mode for its lifetime, so
// the item vectors are computed on the first request and reused. ForUser / ForNewUser answer
// as RecommendForUser / RecommendForNewUser (explain: with each item's "why").
// Not thread-safe: one request at a time (m6rec serve runs them on one thread).
class Recommender {
 public:
  static StatusOr<std::unique_ptr<Recommender>> Open(const ScoringContext& ctx);
  ~Recommender();
  Recommender(const Recommender&) = delete;
  Recommender& operator=(const Recommender&) = delete;
  StatusOr<nlohmann::json> ForUser(int64_t user, int k, const std::string& domain, bool explain);
  StatusOr<nlohmann::json> ForNewUser(const NewUser& user, int k, const std::string& domain,
                                      bool explain);
  const ScoringContext& context() const { return ctx_; }

 private:
  Recommender() = default;
  ScoringContext ctx_;
  std::unique_ptr<ModelPlugin> model_;
  bool scoring_ = false;
};

// Items the run has never seen, ranked with the catalogue from their content alone:
// [{"name", "tokens": [token name or id, ...], "image": [image_dim floats], "audio": [...]}, ...]
// (or {"items": [...]}). Appends them to a copy of ctx->data (ids num_items, num_items+1, ...;
// no interactions, so a cold-start-capable model reads no id row for them) and names them in
// ctx->new_items; recommendations then carry "new_item": name for them. A single-domain run of
// the m6 job; an unknown token, a vector of the wrong width or a missing name is an error.
Status AddNewItems(ScoringContext* ctx, const nlohmann::json& items);

}  // namespace m6rec
