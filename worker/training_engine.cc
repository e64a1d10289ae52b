#include "worker/training_engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "common/keys.h"
#include "common/logging.h"
#include "common/util.h"
#include "worker/checkpoint.h"
#include "worker/collective.h"
#include "worker/evaluator.h"
#include "worker/model_plugin.h"
#include "worker/progress.h"
#include "worker/sparse_tables.h"
#include "worker/strategy.h"
#include "worker/stream_source.h"

namespace m6rec {

using nlohmann::json;

uint32_t WeightedCopies(float w, uint64_t sample, uint64_t seed, int epoch) {
  const float whole = std::floor(w);
  const double f = double(w) - double(whole);
  if (f == 0) return uint32_t(whole);
  // The sample's place in cycle c of the unwrapped line: c + a fraction hashed afresh per cycle.
  auto place = [&](uint64_t c) {
    return double(c) + double(Mix64(seed ^ Mix64(c + 0x5bd1e995u) ^ sample) >> 11) * 0x1.0p-53;
  };
  const double lo = double(epoch - 1) * f, hi = double(epoch) * f;  // the epoch's window
  // A window spans at most two cycles; one straddling a cycle's end may hold both of their
  // places (the end of one pass and the start of the next): two copies.
  const uint64_t c0 = uint64_t(std::floor(lo));
  uint32_t extra = 0;
  for (uint64_t c = c0; c <= c0 + 1 && double(c) < hi; ++c) {
    const double p = place(c);
    extra += p >= lo && p < hi;
  }
  return uint32_t(whole) + extra;
}

namespace {

constexpr uint64_t kFingerprintedSteps = 64;  // dense fingerprints of the first steps, for tests

std::string RngToString(const std::mt19937_64& r) {
  std::ostringstream o;
  o << r;
  return o.str();
}

Status RngFromString(const std::string& s, std::mt19937_64* r) {
  std::istringstream in(s);
  in >> *r;
  return in ? Status::OK() : Status::Corruption("bad RNG state in a checkpoint");
}

// Element-wise sum over ranks, in double precision (metric sums count users and hits exactly).
Status AllReduceDoubles(Collective& coll, std::vector<double>* v) {
  return coll.AllReduceSum(v->data(), v->size());
}

// Every rank's metric sums added up (a collective call: every rank, the same names).
StatusOr<MetricSums> GlobalSums(Collective& coll, const MetricSums& m,
                                const std::vector<std::string>& names) {
  std::vector<double> packed{double(m.users())};
  for (const auto& n : names) {
    auto it = m.sums().find(n);
    packed.push_back(it == m.sums().end() ? 0.0 : it->second);
  }
  M6_RETURN_IF_ERROR(AllReduceDoubles(coll, &packed));
  MetricSums out;
  out.AddUsers(static_cast<uint64_t>(std::llround(packed[0])));
  for (size_t k = 0; k < names.size(); ++k) out.Add(names[k], packed[k + 1]);
  return out;
}

// A user as the evaluation protocol presents it: the training items as history (plus the
// validation item when testing under the sampled protocol, as the sequential papers do).
UserQuery EvalQuery(const Dataset& ds, uint32_t u, bool with_valid) {
  UserQuery q;
  q.user = u;
  q.history = ds.train[u];
  if (with_valid && ds.protocol == Dataset::Protocol::kSampled && ds.valid_item[u] >= 0)
    q.history.push_back(static_cast<uint32_t>(ds.valid_item[u]));
  q.neighbours = ds.train[u];
  if (u < ds.train_ratings.size()) q.neighbour_ratings = ds.train_ratings[u];
  return q;
}

// What one evaluation pass bins for the decision thresholds (chosen over every rank): the
// retrieval candidates' scores (sampled protocol) and the like tasks' logits.
struct EvalHistograms {
  EvalHistograms(const Dataset& ds, const JobConfig& cfg)
      : test(ds), valid(ds), task_test(ds, cfg.train.tasks), task_valid(ds, cfg.train.tasks) {}
  ScoreHistograms test, valid;
  TaskHistograms task_test, task_valid;
};

// A ScoreHistogram's counts ([bins positives..., bins negatives...]) as a few display bins over
// the range the scores occupy: {"bins": lower edges, "positives": shares, "negatives": shares}.
json ScoreDistribution(const std::vector<double>& counts) {
  constexpr int kShown = 40;
  const int B = ScoreHistogram::kBins;
  int lo = B, hi = -1;
  double pos = 0, neg = 0;
  for (int b = 0; b < B; ++b) {
    if (counts[size_t(b)] + counts[size_t(B + b)] > 0) lo = std::min(lo, b), hi = std::max(hi, b);
    pos += counts[size_t(b)];
    neg += counts[size_t(B + b)];
  }
  json out = {{"bins", json::array()}, {"positives", json::array()}, {"negatives", json::array()}};
  if (hi < lo) return out;
  const int width = std::max(1, (hi - lo + kShown) / kShown);
  for (int b0 = lo; b0 <= hi; b0 += width) {
    double p = 0, n = 0;
    for (int b = b0; b < std::min(hi + 1, b0 + width); ++b)
      p += counts[size_t(b)], n += counts[size_t(B + b)];
    out["bins"].push_back(b0 == 0 ? ScoreHistogram::Edge(1) : ScoreHistogram::Edge(b0));
    out["positives"].push_back(pos > 0 ? p / pos : 0.0);
    out["negatives"].push_back(neg > 0 ? n / neg : 0.0);
  }
  return out;
}

SampledScorer ModelSampledScorer(ModelPlugin& model, const Dataset& ds) {
  return [&model, &ds](const std::vector<uint32_t>& us,
                       const std::vector<std::vector<uint32_t>>& cands, bool with_valid,
                       std::vector<std::vector<float>>* scores) {
    std::vector<UserQuery> q;
    for (uint32_t u : us) q.push_back(EvalQuery(ds, u, with_valid));
    return model.ScoreCandidates(q, cands, scores);
  };
}

FullScorer ModelFullScorer(ModelPlugin& model, const Dataset& ds, bool with_valid) {
  return [&model, &ds, with_valid](const std::vector<uint32_t>& us, std::vector<float>* scores) {
    std::vector<UserQuery> q;
    for (uint32_t u : us) q.push_back(EvalQuery(ds, u, with_valid));
    return model.ScoreAllItems(q, scores);
  };
}

// Sampled protocol: the validation targets of `users` scored and kept, for the calibration to
// be chosen on before any metric is taken (a no-op under full ranking). Inside
// BeginScoring / EndScoring, as EvaluateUsers.
Status ScoreValidation(ModelPlugin& model, const Dataset& ds, const JobConfig& cfg,
                       const std::vector<uint32_t>& users, SampledPass* pass) {
  if (ds.protocol != Dataset::Protocol::kSampled) return Status::OK();
  // A cold split's targets are also ranked against all items (cold items among everything).
  const FullScorer full = ModelFullScorer(model, ds, false);
  return ScoreSampledPass(ds, users, true, EvalSeed(cfg), ModelSampledScorer(model, ds), pass,
                          ds.cold_split() ? &full : nullptr);
}

// The calibration an evaluation ranks by (train.popularity_calibration): chosen on the
// validation passes, none when switched off.
Status ChooseCalibration(const JobConfig& cfg, const Dataset& ds,
                         const std::vector<const SampledPass*>& passes, const SumAcrossRanks& sum,
                         Calibration* cal) {
  *cal = Calibration{};
  if (!cfg.train.popularity_calibration) return Status::OK();
  M6_ASSIGN_OR_RETURN(*cal, FitCalibration(ds, passes, sum));
  return Status::OK();
}

// The metrics of one evaluation over `users`: retrieval under the dataset's protocol (sampled:
// validation from `vpass`, the test pass scored here, both calibrated by `cal`), then every other
// task.
Status EvaluateUsers(ModelPlugin& model, const Dataset& ds, const JobConfig& cfg,
                     const std::vector<uint32_t>& users, const SampledPass& vpass,
                     const Calibration& cal, const RatingNeighbourhood* neighbours,
                     MetricSums* test, MetricSums* valid, EvalHistograms* h) {
  const uint64_t seed = EvalSeed(cfg);
  if (ds.protocol == Dataset::Protocol::kFullRanking) {
    M6_RETURN_IF_ERROR(EvalFullProtocol(ds, users, ModelFullScorer(model, ds, false), test));
  } else {
    const FullScorer full_test = ModelFullScorer(model, ds, true);
    M6_RETURN_IF_ERROR(EvalSampledProtocol(ds, users, false, seed, ModelSampledScorer(model, ds),
                                           test, &h->test, ds.cold_split() ? &full_test : nullptr,
                                           &cal));
    AccumulateSampledPass(ds, vpass, cal, valid, &h->valid);
  }
  if (cfg.train.tasks.size() > 1) {
    TaskScorer task = [&](uint32_t t, const std::vector<uint32_t>& us,
                          const std::vector<uint32_t>& items, bool with_valid,
                          std::vector<std::vector<float>>* out) {
      std::vector<UserQuery> q;
      for (uint32_t u : us) {
        q.push_back(EvalQuery(ds, u, with_valid));
        q.back().task = t;
      }
      return model.ScoreTask(q, items, out);
    };
    M6_RETURN_IF_ERROR(EvalTasks(ds, cfg.train.tasks, users, false, cfg.seed, task, test,
                                 &h->task_test, neighbours));
    M6_RETURN_IF_ERROR(EvalTasks(ds, cfg.train.tasks, users, true, cfg.seed, task, valid,
                                 &h->task_valid, neighbours));
  }
  return Status::OK();
}

// The rating tasks' neighbourhood model (model.rating_neighbours), where a rating task has
// held-out ratings to predict; null otherwise.
std::unique_ptr<RatingNeighbourhood> FitNeighbourhood(const Dataset& ds, const JobConfig& cfg) {
  const bool rating = std::any_of(cfg.train.tasks.begin(), cfg.train.tasks.end(),
                                  [](const TaskSpec& t) { return t.type == TaskKind::kRating; });
  if (!rating || !ds.has_ratings() || cfg.model.rating_neighbours <= 0) return nullptr;
  NeighbourhoodOptions o;
  o.neighbours = cfg.model.rating_neighbours;
  const int64_t t0 = MonotonicMs();
  auto nb = std::make_unique<RatingNeighbourhood>(ds, o);
  LOG_INFO << "rating neighbourhood: " << nb->size() << " held-out pairs predicted from "
           << o.neighbours << " similar items each in " << MonotonicMs() - t0 << " ms";
  return nb;
}

// A rank's users (u % W == rank, with training items) and samples; every rank runs the steps
// of the largest shard.
struct Shard {
  std::vector<uint32_t> users;  // the ones evaluated (every domain's but those not evaluated)
  std::vector<Sample> samples;
  size_t steps_per_epoch = 0;
};

std::vector<uint32_t> ShardUsers(const Dataset& ds, uint32_t rank, uint32_t W) {
  std::vector<uint32_t> users;
  for (uint32_t u = rank; u < ds.num_users; u += W)
    if (!ds.train[u].empty() && (ds.domains.empty() || ds.domains[ds.UserDomain(u)].evaluate))
      users.push_back(u);
  return users;
}

// How many times sample (u, k) of a task with weight tw is trained in `epoch`: 0 for a user
// outside its domain's train_users share (Dataset::trained); else WeightedCopies of
// w = tw x its domain's weight. `domain_weights`: each domain's weight this epoch where some
// domain stopped training (train.domain_patience; empty: every domain's configured weight).
uint32_t SampleCopies(const Dataset& ds, uint32_t u, uint32_t k, uint32_t task, float tw,
                      const std::vector<float>& domain_weights, uint64_t seed, int epoch) {
  if (!ds.Trained(u)) return 0;
  float dw = 1.0f;
  if (ds.multi_domain()) {
    const uint32_t d = ds.UserDomain(u);
    dw = domain_weights.empty() ? ds.domains[d].weight : domain_weights[d];
  }
  const uint64_t key = task == 0 ? k : k ^ (uint64_t{task} << 56);
  return WeightedCopies(tw * dw, (uint64_t{u} << 24) ^ key, seed, epoch);
}

// Whether some task or domain trains a fractional share of its samples per epoch (then every
// epoch draws its own shard).
bool FractionalWeights(const Dataset& ds, const std::vector<TaskSpec>& tasks) {
  for (const TaskSpec& t : tasks)
    for (size_t d = 0; d < std::max<size_t>(1, ds.domains.size()); ++d) {
      const float w = t.weight * (ds.multi_domain() ? ds.domains[d].weight : 1.0f);
      if (w != std::floor(w)) return true;
    }
  return false;
}

// Every task's samples of rank `rank` (u % W == rank): retrieval and rating/like one per
// training interaction (rated ones for rating/like), attribute one per user of the attribute's
// training split (pos = the length of the user's list: the whole list is its context).
Shard MakeShard(const Dataset& ds, const std::vector<TaskSpec>& tasks, uint32_t rank, uint32_t W,
                size_t batch, uint64_t seed, int epoch,
                const std::vector<float>& domain_weights = {}) {
  Shard s;
  s.users = ShardUsers(ds, rank, W);
  std::vector<uint64_t> per_rank(W, 0);
  for (uint32_t t = 0; t < tasks.size(); ++t) {
    const TaskSpec& task = tasks[t];
    if (task.weight <= 0) continue;
    const Dataset::UserAttribute* attr =
        task.type == TaskKind::kAttribute ? ds.FindAttribute(task.attribute) : nullptr;
    for (uint32_t u = 0; u < ds.num_users; ++u) {
      const uint32_t n = uint32_t(ds.train[u].size());
      auto add = [&](uint32_t k) {
        const uint32_t copies = SampleCopies(ds, u, k, t, task.weight, domain_weights, seed, epoch);
        per_rank[u % W] += copies;
        if (u % W == rank)
          for (uint32_t c = copies; c > 0; --c) s.samples.push_back({u, k, t});
      };
      switch (task.type) {
        case TaskKind::kRetrieval:
          for (uint32_t k = 0; k < n; ++k) add(k);
          break;
        case TaskKind::kLike:
        case TaskKind::kRating:
          if (u < ds.train_ratings.size() && ds.train_ratings[u].size() == n)
            for (uint32_t k = 0; k < n; ++k) add(k);
          break;
        case TaskKind::kAttribute:
          if (attr && n > 0 && attr->label[u] >= 0 && Dataset::AttributeSplit(u, seed) == 0) add(n);
          break;
      }
    }
  }
  s.steps_per_epoch = (*std::max_element(per_rank.begin(), per_rank.end()) + batch - 1) / batch;
  return s;
}

class TrainingEngine {
 public:
  explicit TrainingEngine(const EngineContext& ctx)
      : ctx_(ctx),
        cfg_(*ctx.cfg),
        own_data_(ctx.cfg->stream.enabled() ? std::make_shared<Dataset>(*ctx.data) : nullptr),
        ds_(own_data_ ? *own_data_ : *ctx.data),
        coll_(*ctx.collective),
        prog_(cfg_.train.log_every) {}

  Status Init();
  Status Run();
  WorkerSummary Finish();

 private:
  // A batch with its pulls on the wire.
  struct InFlight {
    std::unique_ptr<TrainBatch> batch;
    std::vector<SparseTables::Ticket> tickets;
    std::string rng_before;  // the RNG before the batch was drawn: a checkpoint's cursor
  };

  Status Issue(const std::vector<Sample>& samples, size_t step, InFlight* f);
  Status Complete(InFlight* f);
  Status TrainStep(InFlight& f, int epoch);
  void ReportProgress(bool now);  // ctx_.progress, at most every 500 ms unless `now`
  Status RunEpoch(int epoch, size_t first_step, bool* stop);
  // *best: the epoch is the best so far; *domains: the domains whose own best it is.
  Status EvaluateEpoch(int epoch, double loss, bool* best, std::vector<std::string>* domains);
  Status AppendMetricsLine(const json& line);
  bool MaxStepsReachedAfterThis() const {
    return cfg_.train.max_steps > 0 && prog_.steps() + 1 >= uint64_t(cfg_.train.max_steps);
  }
  Status Checkpoint(int next_epoch, size_t next_step, const std::string& rng_next, bool best,
                    const std::vector<std::string>& best_for_domains = {});
  json WorkerState(int next_epoch, size_t next_step, const std::string& rng_next) const;
  json DomainSelectionState() const {
    json j = json::object();
    for (const auto& [name, sel] : domain_selectors_) j[name] = sel.State();
    return j;
  }
  Status Resume(int* epoch, size_t* step);
  Status Barrier(const std::string& name) {
    return ctx_.barrier ? ctx_.barrier(name) : coll_.Barrier();
  }

  // ---- streaming (cfg.stream) ----
  Status RunStream();
  // The next chunk, the same events on every rank (empty: the stream is over).
  Status NextChunk(std::vector<StreamEvent>* chunk, std::vector<int64_t>* arrived_ms);
  // Prequential: every W-th event of the chunk scored before it is trained on.
  // sums: hits, NDCG, scored (the model as trained), hits, NDCG (the online strategy's).
  Status ScoreChunk(const std::vector<StreamEvent>& chunk, double sums[5]);
  Status TrainChunk(const std::vector<StreamEvent>& chunk, size_t first_sample);
  // The stream so far joins the dataset (and the plugin's view of it).
  Status AppendEvents(const std::vector<StreamEvent>& ev);
  // The periodic-retraining baseline: empty tables, a fresh model, train.epochs over all data.
  Status Retrain();
  // The samples `epoch` trains: where a task's or domain's weight is fractional (or a domain
  // stopped training) the epoch's own (SampleCopies), in their canonical order; else the same
  // samples, whose order each epoch's shuffle carries on from the last.
  void NextEpochShard(int epoch);
  // Each domain's weight in `epoch`: its configured one, 0 once it stopped training before that
  // epoch (train.domain_patience); empty while every domain trains.
  std::vector<float> DomainWeights(int epoch) const;
  // train.backbone_epochs: at the first epoch after them, only each domain's and task's own
  // part trains from then on.
  Status FreezeBackboneFor(int epoch);
  // train.domain_patience after evaluating `epoch`: the domains whose own validation metric has
  // not improved for that many evaluations stop training. True once every evaluated domain has.
  bool StopStaleDomains(int epoch);
  void FinishStreamSummary();
  json StreamState() const;
  Status RestoreStream(const std::string& dir, const json& st);

  const EngineContext& ctx_;
  const JobConfig& cfg_;
  std::shared_ptr<Dataset> own_data_;  // a stream job's growing copy of the dataset
  const Dataset& ds_;
  Collective& coll_;
  std::unique_ptr<ModelPlugin> model_;
  DenseModel* dense_ = nullptr;
  Shard shard_;
  std::unique_ptr<RatingNeighbourhood> neighbours_;  // the rating tasks' wide part, if any
  std::mt19937_64 rng_;
  // The RNG at the start of every epoch so far: each epoch shuffles the previous epoch's order,
  // so a resume replays the shuffles to rebuild the permutation.
  std::vector<std::string> rng_epoch_starts_;
  TrainProgress prog_;
  WorkerSummary summary_;
  EpochSelector selector_;  // which evaluated epoch is the best so far
  // A multi-domain job: per evaluated domain, which epoch is best for that domain alone.
  std::vector<std::pair<std::string, EpochSelector>> domain_selectors_;
  std::vector<std::string> metrics_lines_;  // what metrics.jsonl holds (rank 0; for a resume)
  // Streaming: the source, what it delivered beyond the dataset (every rank, all of it), every
  // interaction as a sample (replay draws from them), the chunks so far, the prequential curve.
  std::unique_ptr<StreamSource> source_;
  SourcePosition resume_position_;
  bool stream_resumed_ = false;
  std::vector<StreamEvent> pending_, streamed_;
  std::vector<int64_t> pending_ms_;
  std::vector<Sample> all_samples_;
  uint64_t chunks_ = 0;
  int64_t next_retrain_ts_ = 0;
  json curve_ = json::array();
  std::vector<int32_t> lag_ms_;  // rank 0: per event, arrival to trained (ms)
  bool warned_unscored_ = false;
  int64_t last_progress_ms_ = 0;
  json last_eval_;                // the last evaluation's headline numbers (for the dashboard)
  bool backbone_frozen_ = false;  // train.backbone_epochs passed
  uint64_t checkpoint_step_ = 0;  // the step of the last checkpoint written (for the timeline)
  std::unique_ptr<OnlineStrategy> online_;  // stream.online_strategy
  json online_state_;                       // a resumed job's, applied when the stream starts
};

Status TrainingEngine::Init() {
  const TrainConfig& tc = cfg_.train;
  if (!ctx_.run_dir.empty()) M6_RETURN_IF_ERROR(MakeDirs(ctx_.run_dir));
  shard_ =
      MakeShard(ds_, tc.tasks, ctx_.rank, ctx_.num_workers, size_t(tc.batch_size), cfg_.seed, 1);
  // A stream job may start with no data at all (it trains on what arrives).
  const bool idle_start = cfg_.stream.enabled() && shard_.steps_per_epoch == 0;
  if (shard_.samples.empty() && !idle_start)
    return Status::InvalidArgument("worker " + std::to_string(ctx_.rank) +
                                   " has no training samples");
  M6_ASSIGN_OR_RETURN(model_, MakeModelPlugin({&cfg_, &ds_, ctx_.tables, ctx_.rank}));
  dense_ = model_->dense();
  neighbours_ = FitNeighbourhood(ds_, cfg_);
  if (!cfg_.adapt.from.empty() && ctx_.resume_from.empty()) {
    // The backbone's rows are sharded over its servers: the same count, or rows go missing.
    M6_ASSIGN_OR_RETURN(json manifest, ReadManifest(cfg_.adapt.from));
    if (manifest.value("servers", size_t(0)) != ctx_.tables->num_shards())
      return Status::InvalidArgument(
          "adapt.from '" + cfg_.adapt.from + "' holds the rows of " +
          std::to_string(manifest.value("servers", 0)) + " server(s); this job has " +
          std::to_string(ctx_.tables->num_shards()) + " (an adapted job keeps the backbone's)");
    M6_RETURN_IF_ERROR(model_->InitFromBackbone(cfg_.adapt.from));
    if (ctx_.rank == 0) {
      const json d = model_->Describe();
      const bool tasks = cfg_.adapt.adds_tasks(tc.tasks.size());
      const size_t frozen = tasks ? size_t(cfg_.adapt.frozen_tasks)
                                  : ds_.DomainsOfSpecs(uint32_t(cfg_.adapt.frozen_domains));
      LOG_INFO << "adapting the backbone " << cfg_.adapt.from << " (" << frozen
               << (tasks ? " task(s)) to " : " domain(s)) to ")
               << (tasks ? tc.tasks.size() : ds_.domains.size()) - frozen
               << " new one(s), training " << EnumName(cfg_.adapt.train) << ": "
               << d.value("trained_dense_params", int64_t(0)) << " of "
               << d.value("dense_params", int64_t(0)) << " dense parameters move";
    }
  }
  // The same seed on every rank, then rank 0's parameters broadcast: the replicas start equal.
  if (dense_) M6_RETURN_IF_ERROR(dense_->Broadcast(coll_));
  rng_.seed(Mix64(cfg_.seed ^ (uint64_t{ctx_.rank} << 32)));
  summary_.rank = ctx_.rank;
  summary_.job = model_->name();
  summary_.dataset = ds_.name;
  summary_.protocol = ds_.protocol;
  summary_.negatives = ds_.NegativesPerTarget();
  summary_.dense_params = dense_ ? dense_->numel() : 0;
  summary_.collective = coll_.name();
  summary_.model = model_->Describe();
  prog_.Plan(shard_.steps_per_epoch, tc.epochs);
  M6_RETURN_IF_ERROR(EvalPopularity(ds_, shard_.users, EvalSeed(cfg_), &summary_.popularity));
  M6_RETURN_IF_ERROR(
      EvalTaskBaselines(ds_, tc.tasks, shard_.users, cfg_.seed, &summary_.popularity));
  selector_ =
      EpochSelector(SelectionFor(ds_, summary_.negatives, tc.tasks, tc.select_by, cfg_.seed));
  summary_.model["selected_by"] = selector_.rule().Describe();
  domain_selectors_.clear();
  for (auto& [name, rule] : DomainSelectionRules(ds_))
    domain_selectors_.emplace_back(name, EpochSelector(std::move(rule)));
  if (tc.domain_patience > 0 && domain_selectors_.empty())
    return Status::InvalidArgument(
        "train.domain_patience: stopping a domain's training needs its own validation metric, "
        "which a job has with at least two evaluated domains (data.domains) under the sampled "
        "protocol; this one has not");
  if (tc.backbone_epochs > 0) {
    if (!cfg_.adapt.from.empty())
      return Status::InvalidArgument(
          "train.backbone_epochs: an adapted job trains only its new part already (the "
          "backbone it starts from is frozen)");
    if (!dense_ || (ds_.domains.size() < 2 && tc.tasks.size() < 2))
      return Status::InvalidArgument(
          "train.backbone_epochs: freezing the backbone leaves each domain and task its own part "
          "to train, which a job has with several domains (data.domains) or tasks "
          "(train.tasks); this one has one of each");
  }
  json chance = json::object();
  for (const SelectionTerm& t : selector_.rule().terms)
    chance[t.task.empty() ? "retrieval" : t.task] = {
        {"metric", t.metric}, {"chance", t.sign * t.chance}, {"examples", t.examples}};
  summary_.model["selection_chance"] = chance;
  if (ctx_.rank == 0) LOG_INFO << ds_.Describe();
  LOG_INFO << "worker " << ctx_.rank << ": " << shard_.users.size() << " users, "
           << shard_.samples.size() << " samples, " << shard_.steps_per_epoch
           << " steps per epoch of " << tc.batch_size << "; loss " << EnumName(tc.loss) << ", "
           << tc.negatives << " " << EnumName(tc.negative_sampler) << " negatives, staleness "
           << tc.staleness << ", collective " << coll_.name() << " over " << coll_.size()
           << " worker(s)";
  return Status::OK();
}

Status TrainingEngine::Issue(const std::vector<Sample>& samples, size_t step, InFlight* f) {
  const size_t B = size_t(cfg_.train.batch_size), n = samples.size();
  std::vector<Sample> batch(B);
  for (size_t s = 0; s < B; ++s) batch[s] = samples[(step * B + s) % n];
  f->rng_before = RngToString(rng_);
  M6_ASSIGN_OR_RETURN(f->batch, model_->MakeBatch(batch.data(), batch.size(), rng_));
  f->tickets.clear();
  for (const KeyList& l : f->batch->lists) {
    if (l.keys.empty()) {
      f->tickets.push_back(0);
      continue;
    }
    M6_ASSIGN_OR_RETURN(auto t, ctx_.tables->PullAsync(l.table, l.keys.data(), l.keys.size()));
    f->tickets.push_back(t);
  }
  return Status::OK();
}

Status TrainingEngine::Complete(InFlight* f) {
  const int64_t t0 = MonotonicUs();
  for (size_t i = 0; i < f->batch->lists.size(); ++i) {
    KeyList& l = f->batch->lists[i];
    l.rows.resize(l.keys.size() * l.dim);
    if (f->tickets[i]) M6_RETURN_IF_ERROR(ctx_.tables->WaitPull(f->tickets[i], l.rows.data()));
  }
  prog_.AddPullWait(MonotonicUs() - t0);
  return Status::OK();
}

Status TrainingEngine::TrainStep(InFlight& f, int epoch) {
  M6_ASSIGN_OR_RETURN(StepResult r, model_->Step(*f.batch));
  // Sparse gradients to their tables (the owners apply the optimizer), then the dense part's
  // allreduce and step while the pushes are on the wire.
  std::vector<SparseTables::Ticket> pushes;
  for (const KeyList& l : f.batch->lists) {
    if (l.keys.empty() || l.grads.empty()) continue;
    if (l.table < cfg_.tables.size() && !cfg_.tables[l.table].trainable) continue;  // frozen rows
    if (l.grads.size() != l.keys.size() * l.dim)
      return Status::Internal("a gradient list does not match its keys");
    M6_ASSIGN_OR_RETURN(
        auto t, ctx_.tables->PushAsync(l.table, l.keys.data(), l.keys.size(), l.grads.data()));
    pushes.push_back(t);
  }
  if (dense_) M6_RETURN_IF_ERROR(dense_->AllReduceAndStep(coll_));
  const int64_t t0 = MonotonicUs();
  for (auto t : pushes) M6_RETURN_IF_ERROR(ctx_.tables->WaitPush(t));
  prog_.AddPushWait(MonotonicUs() - t0);
  if (dense_ && prog_.steps() < kFingerprintedSteps)
    summary_.param_fingerprints.push_back(std::to_string(dense_->Fingerprint()));
  prog_.Step(epoch, r.loss_sum, r.examples);
  ReportProgress(false);
  return Status::OK();
}

void TrainingEngine::ReportProgress(bool now) {
  if (!ctx_.progress) return;
  const int64_t t = MonotonicMs();
  if (!now && t - last_progress_ms_ < 500) return;
  last_progress_ms_ = t;
  json p = prog_.Progress();
  p["rank"] = ctx_.rank;
  if (!last_eval_.empty()) p["last_eval"] = last_eval_;
  if (source_) p["stream"] = {{"chunks", chunks_}, {"events", streamed_.size()}};
  if (checkpoint_step_ > 0) p["checkpoint_step"] = checkpoint_step_;
  ctx_.progress(p);
}

Status TrainingEngine::RunEpoch(int epoch, size_t first_step, bool* stop) {
  const TrainConfig& tc = cfg_.train;
  const size_t steps = shard_.steps_per_epoch;
  if (first_step == 0) prog_.StartEpoch();
  InFlight cur, next;
  M6_RETURN_IF_ERROR(Issue(shard_.samples, first_step, &cur));
  for (size_t step = first_step; step < steps; ++step) {
    std::string why;
    if (ctx_.should_abort && ctx_.should_abort(&why)) return Status::Aborted(why);
    M6_RETURN_IF_ERROR(Complete(&cur));
    const bool has_next = step + 1 < steps && !MaxStepsReachedAfterThis();
    // Staleness 1: the next batch's rows are on the wire while this one computes.
    if (has_next && tc.staleness > 0) M6_RETURN_IF_ERROR(Issue(shard_.samples, step + 1, &next));
    M6_RETURN_IF_ERROR(TrainStep(cur, epoch));
    if (!has_next) {
      if (tc.max_steps > 0 && prog_.steps() >= uint64_t(tc.max_steps)) *stop = true;
      break;
    }
    if (tc.staleness == 0) M6_RETURN_IF_ERROR(Issue(shard_.samples, step + 1, &next));
    const int every = cfg_.checkpoint.every_steps;
    if (every > 0 && prog_.steps() % uint64_t(every) == 0)
      M6_RETURN_IF_ERROR(Checkpoint(epoch, step + 1, next.rng_before, false));
    std::swap(cur, next);
  }
  return Status::OK();
}

Status TrainingEngine::AppendMetricsLine(const json& line) {
  metrics_lines_.push_back(line.dump());
  if (ctx_.run_dir.empty()) return Status::OK();
  std::ofstream log(ctx_.run_dir + "/metrics.jsonl", std::ios::app);
  log << metrics_lines_.back() << "\n";
  if (!log) return Status::IOError("cannot append to " + ctx_.run_dir + "/metrics.jsonl");
  return Status::OK();
}

Status TrainingEngine::EvaluateEpoch(int epoch, double loss, bool* best,
                                     std::vector<std::string>* domains) {
  // Every rank finished the epoch's pushes before anyone reads rows for evaluation.
  M6_RETURN_IF_ERROR(Barrier("epoch-" + std::to_string(epoch)));
  const int64_t t0 = MonotonicMs();
  EpochRecord rec;
  rec.epoch = epoch;
  rec.loss = loss;
  EvalHistograms h(ds_, cfg_);
  Calibration cal;
  {
    // Validation first: the calibration is chosen on every rank's validation scores.
    M6_RETURN_IF_ERROR(model_->BeginScoring());
    SampledPass vpass;
    Status s = ScoreValidation(*model_, ds_, cfg_, shard_.users, &vpass);
    if (s.ok())
      s = ChooseCalibration(
          cfg_, ds_, {&vpass},
          [this](std::vector<double>* v) { return AllReduceDoubles(coll_, v); }, &cal);
    if (s.ok())
      s = EvaluateUsers(*model_, ds_, cfg_, shard_.users, vpass, cal, neighbours_.get(), &rec.test,
                        &rec.valid, &h);
    model_->EndScoring();
    M6_RETURN_IF_ERROR(s);
  }
  rec.report = model_->EpochReport();
  if (!cal.empty()) rec.report["calibration"] = cal.ToJson(ds_);
  // Thresholds from every rank's validation scores; each rank then counts its own users at
  // them, so the counts add up across ranks like every other sum.
  if (ds_.protocol == Dataset::Protocol::kSampled) {
    std::vector<double> packed = h.valid.Pack();
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &packed));
    ScoreHistograms all_valid(ds_);
    all_valid.Unpack(packed);
    const Thresholds t = ChooseThresholds(all_valid);
    AddConfusion(ds_, h.test, t, &rec.test);
    AddConfusion(ds_, h.valid, t, &rec.valid);
    rec.report["thresholds"] = t.ToJson(ds_);
    // The test scores of positives and negatives over every rank (the report's distribution).
    std::vector<double> test_counts = h.test.all.counts();
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &test_counts));
    rec.report["score_hist"] = ScoreDistribution(test_counts);
  }
  if (cfg_.train.tasks.size() > 1) {
    TaskHistograms test_all = h.task_test, valid_all = h.task_valid;
    std::vector<double> packed = test_all.Pack(), vpacked = valid_all.Pack();
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &packed));
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &vpacked));
    test_all.Unpack(packed);
    valid_all.Unpack(vpacked);
    json thr = json::object(), wide = json::object();
    AddTaskConfusion(ds_, cfg_.train.tasks, h.task_test, h.task_valid, test_all, valid_all,
                     &rec.test, &rec.valid, &thr, &wide);
    if (!thr.empty()) rec.report["thresholds"]["tasks"] = thr;
    if (!wide.empty()) rec.report["wide_weights"] = wide;
  }
  prog_.AddEvalMs(MonotonicMs() - t0);
  rec.elapsed_s = prog_.elapsed_s();
  // All ranks' metrics (one collective call each), and the mean training loss.
  auto names = ProtocolSumNames(ds_);
  for (auto& n : TaskSumNames(ds_, cfg_.train.tasks)) names.push_back(std::move(n));
  M6_ASSIGN_OR_RETURN(MetricSums test, GlobalSums(coll_, rec.test, names));
  M6_ASSIGN_OR_RETURN(MetricSums valid, GlobalSums(coll_, rec.valid, names));
  std::vector<double> mean_loss{loss / ctx_.num_workers};
  M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &mean_loss));
  summary_.epochs.push_back(rec);
  *best = selector_.Offer(epoch, test, valid);
  if (*best) summary_.best_epoch = epoch;
  for (auto& [name, sel] : domain_selectors_)
    if (sel.Offer(epoch, test, valid)) {
      domains->push_back(name);
      summary_.domain_best_epochs[name] = epoch;
    }
  last_eval_ = {{"epoch", epoch}, {"test", MetricsJson(test)}, {"loss", mean_loss[0]}};
  last_eval_["test"].erase("domains");
  last_eval_["test"].erase("tasks");
  last_eval_["test"].erase("cold_start");
  ReportProgress(true);
  if (ctx_.rank != 0) return Status::OK();
  json shown = rec.report;
  shown.erase("score_hist");  // for the report (metrics.jsonl), not the console
  LOG_INFO << EpochSummary(epoch, mean_loss[0], ds_.protocol, test, valid)
           << (shown.empty() ? "" : "; " + shown.dump());
  json line = {{"epoch", epoch},
               {"steps", prog_.steps()},
               {"loss", mean_loss[0]},
               {"test", MetricsJson(test)},
               {"elapsed_s", rec.elapsed_s}};
  if (ds_.protocol == Dataset::Protocol::kSampled) line["valid"] = MetricsJson(valid);
  for (const auto& [k, v] : rec.report.items()) line[k] = v;
  return AppendMetricsLine(line);
}

Status TrainingEngine::Run() {
  const TrainConfig& tc = cfg_.train;
  int epoch = 1;
  size_t step = 0;
  if (!ctx_.resume_from.empty()) M6_RETURN_IF_ERROR(Resume(&epoch, &step));
  bool stop = false;
  // A stream job's data may hold no targets (data.stream_split): it is evaluated on the stream.
  bool targets = !cfg_.stream.enabled();
  for (uint32_t u = 0; u < ds_.num_users && !targets; ++u)
    targets = (u < ds_.test_item.size() && ds_.test_item[u] >= 0) ||
              (u < ds_.test_sets.size() && !ds_.test_sets[u].empty());
  if (shard_.steps_per_epoch == 0) epoch = tc.epochs + 1;  // a stream job that starts empty
  // Resumed after every domain stopped training (train.domain_patience): nothing left to train.
  if (!domain_selectors_.empty() &&
      summary_.domain_trained_until.size() == domain_selectors_.size())
    epoch = tc.epochs + 1;
  for (; epoch <= tc.epochs && !stop; ++epoch, step = 0) {
    if (step == 0) {
      rng_epoch_starts_.push_back(RngToString(rng_));
      if (epoch > 1) NextEpochShard(epoch);
      std::shuffle(shard_.samples.begin(), shard_.samples.end(), rng_);
    }
    M6_RETURN_IF_ERROR(FreezeBackboneFor(epoch));
    M6_RETURN_IF_ERROR(RunEpoch(epoch, step, &stop));
    const double loss = prog_.EndEpoch();
    bool best = false, evaluated = false, domains_done = false;
    std::vector<std::string> best_for;  // the domains whose own best epoch this is
    if (targets && (epoch % tc.eval_every == 0 || epoch == tc.epochs || stop)) {
      M6_RETURN_IF_ERROR(EvaluateEpoch(epoch, loss, &best, &best_for));
      evaluated = true;
    }
    if (evaluated && tc.domain_patience > 0) domains_done = StopStaleDomains(epoch);
    const auto& ck = cfg_.checkpoint;
    const bool periodic = ck.every_epochs > 0 && epoch % ck.every_epochs == 0;
    if (!ck.best) best_for.clear();
    if (periodic || (best && ck.best) || !best_for.empty())
      M6_RETURN_IF_ERROR(Checkpoint(epoch + 1, 0, RngToString(rng_), best && ck.best, best_for));
    if (domains_done) break;  // a stream, if any, still follows
  }
  if (cfg_.stream.enabled() && !stop) return RunStream();
  return Status::OK();
}

WorkerSummary TrainingEngine::Finish() {
  summary_.steps = prog_.steps();
  summary_.samples = prog_.samples();
  summary_.train_s = prog_.elapsed_s();
  summary_.eval_s = prog_.eval_s();
  summary_.samples_per_s = prog_.samples_per_s();
  summary_.first_loss = prog_.first_loss();
  summary_.last_loss = prog_.last_loss();
  if (dense_) summary_.final_fingerprint = std::to_string(dense_->Fingerprint());
  return summary_;
}

// ---- streaming ------------------------------------------------------------------------------

Status TrainingEngine::AppendEvents(const std::vector<StreamEvent>& ev) {
  if (ev.empty()) return Status::OK();
  AppendInteractions(own_data_.get(), ev.data(), ev.size());
  for (const StreamEvent& e : ev)
    all_samples_.push_back({e.user, uint32_t(ds_.train[e.user].size()), 0});
  // The positions above were taken after the append: each event's is its list's length then,
  // so walk back to where each one landed.
  std::map<uint32_t, uint32_t> seen;
  for (size_t k = ev.size(); k-- > 0;) {
    Sample& s = all_samples_[all_samples_.size() - ev.size() + k];
    s.pos -= 1 + seen[s.user]++;
  }
  streamed_.insert(streamed_.end(), ev.begin(), ev.end());
  return model_->OnInteractions(ev.data(), ev.size());
}

Status TrainingEngine::NextChunk(std::vector<StreamEvent>* chunk,
                                 std::vector<int64_t>* arrived_ms) {
  const StreamConfig& sc = cfg_.stream;
  const size_t max = size_t(sc.chunk);
  std::string why;
  // Rank 0 fills a chunk: up to stream.chunk events, or what came within wait_ms of the first.
  double decided[2] = {0, 0};  // events, the stream is over
  if (ctx_.rank == 0) {
    const int64_t t0 = MonotonicMs();
    int64_t first = pending_.empty() ? -1 : t0;
    while (pending_.size() < max) {
      const size_t before = pending_.size();
      M6_ASSIGN_OR_RETURN(size_t got, source_->Poll(max - pending_.size(), &pending_));
      const int64_t now = MonotonicMs();
      pending_ms_.resize(pending_.size(), now);
      if (got > 0 && before == 0) first = now;
      if (pending_.size() >= max || source_->finished()) break;
      if (first >= 0 && now - first >= sc.wait_ms) break;
      if (first < 0 && sc.idle_stop_ms > 0 && now - t0 >= sc.idle_stop_ms) break;
      if (ctx_.should_abort && ctx_.should_abort(&why)) return Status::Aborted(why);
      if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    decided[0] = double(pending_.size());
    decided[1] = pending_.empty() ? 1 : 0;
  }
  std::vector<double> packed(decided, decided + 2);
  M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &packed));
  const size_t n = size_t(std::llround(packed[0]));
  // The other ranks read the same events (every rank reads the whole stream, in order).
  const int64_t t0 = MonotonicMs();
  while (pending_.size() < n) {
    M6_ASSIGN_OR_RETURN(size_t got, source_->Poll(n - pending_.size(), &pending_));
    pending_ms_.resize(pending_.size(), MonotonicMs());
    if (got > 0) continue;
    if (ctx_.should_abort && ctx_.should_abort(&why)) return Status::Aborted(why);
    if (source_->finished() || MonotonicMs() - t0 > 120000)
      return Status::Internal("worker " + std::to_string(ctx_.rank) + ": the stream gave " +
                              std::to_string(pending_.size()) + " of the " + std::to_string(n) +
                              " events worker 0 read for chunk " + std::to_string(chunks_ + 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  chunk->assign(pending_.begin(), pending_.begin() + long(n));
  arrived_ms->assign(pending_ms_.begin(), pending_ms_.begin() + long(n));
  pending_.erase(pending_.begin(), pending_.begin() + long(n));
  pending_ms_.erase(pending_ms_.begin(), pending_ms_.begin() + long(n));
  return Status::OK();
}

Status TrainingEngine::ScoreChunk(const std::vector<StreamEvent>& chunk, double sums[3]) {
  const uint32_t W = ctx_.num_workers;
  const int negatives = cfg_.stream.negatives;
  const uint64_t seed = EvalSeed(cfg_);
  // Events earlier in the chunk are known context (a serving system has them) but untrained.
  std::map<uint32_t, std::vector<uint32_t>> fresh;
  std::vector<UserQuery> queries;
  std::vector<std::vector<uint32_t>> cands;
  auto add = [sums](int rank, int at) {
    sums[at] += HitAtK(rank, 10);
    sums[at + 1] += NdcgAtK(rank, 10);
  };
  auto flush = [&]() -> Status {
    if (queries.empty()) return Status::OK();
    if (!online_) {
      std::vector<std::vector<float>> scores;
      M6_RETURN_IF_ERROR(model_->ScoreCandidates(queries, cands, &scores));
      for (const auto& row : scores) {
        const int rank = RankOfFirst(row);
        add(rank, 0);
        add(rank, 3);
        sums[2] += 1;
      }
    } else {
      // Every strategy of the online grid: one scoring pass per scale set.
      const auto& scales = online_->Scales();
      std::vector<std::vector<std::vector<float>>> per(scales.size());
      for (size_t c = 0; c < scales.size(); ++c) {
        for (UserQuery& q : queries) q.source_scale = scales[c];
        M6_RETURN_IF_ERROR(model_->ScoreCandidates(queries, cands, &per[c]));
      }
      for (size_t k = 0; k < queries.size(); ++k) {
        std::vector<std::vector<float>> s(scales.size());
        for (size_t c = 0; c < scales.size(); ++c) s[c] = std::move(per[c][k]);
        int dynamic = 0, fixed = 0;
        online_->Observe(ds_, queries[k].history, cands[k], s, &dynamic, &fixed);
        add(fixed, 0);
        add(dynamic, 3);
        sums[2] += 1;
      }
    }
    queries.clear();
    cands.clear();
    return Status::OK();
  };
  M6_RETURN_IF_ERROR(model_->BeginScoring());
  Status st;
  const uint64_t base = streamed_.size();
  for (size_t k = 0; k < chunk.size() && st.ok(); ++k) {
    const StreamEvent& e = chunk[k];
    std::vector<uint32_t>& extra = fresh[e.user];
    if (k % W == ctx_.rank) {
      UserQuery q;
      q.user = e.user;
      q.history = e.user < ds_.train.size() ? ds_.train[e.user] : std::vector<uint32_t>{};
      q.history.insert(q.history.end(), extra.begin(), extra.end());
      q.neighbours = q.history;  // the training items first: their ratings are known
      if (e.user < ds_.train_ratings.size()) q.neighbour_ratings = ds_.train_ratings[e.user];
      // The chosen item against items the user has not touched, drawn from the event alone.
      std::vector<uint32_t> c{e.item};
      std::vector<uint32_t> seen(q.history.begin(), q.history.end());
      seen.push_back(e.item);
      std::sort(seen.begin(), seen.end());
      std::mt19937_64 r(Mix64(seed ^ (base + k)));
      const uint32_t lo = ds_.first_item, span = ds_.num_items - ds_.first_item;
      for (int tries = 0; int(c.size()) <= negatives && tries < 100 * negatives; ++tries) {
        const uint32_t i = lo + uint32_t(r() % span);
        if (std::binary_search(seen.begin(), seen.end(), i) ||
            std::find(c.begin(), c.end(), i) != c.end())
          continue;
        c.push_back(i);
      }
      if (int(c.size()) == negatives + 1) {
        queries.push_back(std::move(q));
        cands.push_back(std::move(c));
      } else if (!warned_unscored_) {
        warned_unscored_ = true;
        LOG_WARN << "stream: user " << e.user << " has fewer than stream.negatives = " << negatives
                 << " items it has not touched; such events are not scored";
      }
      if (queries.size() >= 256) st = flush();
    }
    extra.push_back(e.item);
  }
  if (st.ok()) st = flush();
  model_->EndScoring();
  return st;
}

Status TrainingEngine::TrainChunk(const std::vector<StreamEvent>& chunk, size_t first_sample) {
  const StreamConfig& sc = cfg_.stream;
  const uint32_t W = ctx_.num_workers;
  const size_t B = size_t(cfg_.train.batch_size);
  // This rank's share of the new samples, and replayed earlier ones (the same count on every
  // rank, so every rank runs the same steps).
  std::vector<Sample> samples;
  for (size_t k = ctx_.rank; k < chunk.size(); k += W)
    samples.push_back(all_samples_[first_sample + k]);
  if (samples.empty())  // fewer events than workers: this rank trains on the chunk's
    for (size_t k = 0; k < chunk.size(); ++k) samples.push_back(all_samples_[first_sample + k]);
  const size_t share = (chunk.size() + W - 1) / W;
  const size_t replay = first_sample == 0 ? 0 : size_t(std::llround(sc.replay * double(share)));
  for (size_t k = 0; k < replay; ++k) samples.push_back(all_samples_[rng_() % first_sample]);
  std::shuffle(samples.begin(), samples.end(), rng_);
  const size_t steps = size_t(sc.passes) * ((share + replay + B - 1) / B);
  const int epoch = cfg_.train.epochs + 1;
  InFlight cur, next;
  M6_RETURN_IF_ERROR(Issue(samples, 0, &cur));
  for (size_t step = 0; step < steps; ++step) {
    std::string why;
    if (ctx_.should_abort && ctx_.should_abort(&why)) return Status::Aborted(why);
    M6_RETURN_IF_ERROR(Complete(&cur));
    const bool has_next = step + 1 < steps;
    if (has_next && cfg_.train.staleness > 0) M6_RETURN_IF_ERROR(Issue(samples, step + 1, &next));
    M6_RETURN_IF_ERROR(TrainStep(cur, epoch));
    if (!has_next) break;
    if (cfg_.train.staleness == 0) M6_RETURN_IF_ERROR(Issue(samples, step + 1, &next));
    std::swap(cur, next);
  }
  return Status::OK();
}

Status TrainingEngine::FreezeBackboneFor(int epoch) {
  const int n = cfg_.train.backbone_epochs;
  if (n <= 0 || epoch <= n || backbone_frozen_) return Status::OK();
  M6_ASSIGN_OR_RETURN(const int64_t own, dense_->FreezeBackbone());
  backbone_frozen_ = true;
  summary_.model["trained_dense_params_after_backbone"] = own;
  if (ctx_.rank == 0)
    LOG_INFO << "the backbone has trained " << n << " epoch(s) and freezes: from epoch " << epoch
             << " each domain and task trains its own part (" << own << " of " << dense_->numel()
             << " dense parameters) and its rows";
  return Status::OK();
}

std::vector<float> TrainingEngine::DomainWeights(int epoch) const {
  std::vector<float> w;
  for (const auto& [name, last] : summary_.domain_trained_until) {
    if (last >= epoch) continue;
    if (w.empty())
      for (const auto& d : ds_.domains) w.push_back(d.weight);
    for (size_t d = 0; d < ds_.domains.size(); ++d)
      if (ds_.domains[d].name == name) w[d] = 0;
  }
  return w;
}

bool TrainingEngine::StopStaleDomains(int epoch) {
  const int patience = cfg_.train.domain_patience;
  size_t stopped = 0;
  for (const auto& [name, sel] : domain_selectors_) {
    if (summary_.domain_trained_until.count(name)) {
      ++stopped;
      continue;
    }
    if (sel.evaluations_since_selected() < patience) continue;
    summary_.domain_trained_until[name] = epoch;
    ++stopped;
    if (ctx_.rank == 0)
      LOG_INFO << "domain " << name << ": its validation metric has not improved for " << patience
               << " evaluation(s) since epoch " << sel.selected_epoch()
               << "; it stops training after epoch " << epoch
               << " (served from its best epoch's checkpoint)";
  }
  const bool all = stopped == domain_selectors_.size();
  if (all && ctx_.rank == 0 && epoch < cfg_.train.epochs)
    LOG_INFO << "every domain has stopped training (train.domain_patience " << patience
             << "): the job ends after epoch " << epoch;
  return all;
}

void TrainingEngine::NextEpochShard(int epoch) {
  const TrainConfig& tc = cfg_.train;
  std::vector<float> domain_weights = DomainWeights(epoch);
  if (!FractionalWeights(ds_, tc.tasks) && domain_weights.empty()) return;
  Shard next = MakeShard(ds_, tc.tasks, ctx_.rank, ctx_.num_workers, size_t(tc.batch_size),
                         cfg_.seed, epoch, domain_weights);
  // A rank the draw left without samples (tiny data) trains its last epoch's again: every rank
  // runs the epoch's steps.
  if (next.samples.empty()) next.samples = std::move(shard_.samples);
  shard_ = std::move(next);
  prog_.Plan(shard_.steps_per_epoch, tc.epochs);  // the ETAs count this epoch's steps
}

Status TrainingEngine::Retrain() {
  if (!ctx_.reset_tables)
    return Status::InvalidArgument(
        "stream.retrain_every_s: periodic retraining empties the tables, which only an "
        "in-process job can (m6rec bench prequential)");
  M6_RETURN_IF_ERROR(Barrier("retrain-" + std::to_string(chunks_)));
  M6_RETURN_IF_ERROR(ctx_.reset_tables());
  model_.reset();
  M6_ASSIGN_OR_RETURN(model_, MakeModelPlugin({&cfg_, &ds_, ctx_.tables, ctx_.rank}));
  dense_ = model_->dense();
  neighbours_ = FitNeighbourhood(ds_, cfg_);
  if (dense_) M6_RETURN_IF_ERROR(dense_->Broadcast(coll_));
  const TrainConfig& tc = cfg_.train;
  shard_ =
      MakeShard(ds_, tc.tasks, ctx_.rank, ctx_.num_workers, size_t(tc.batch_size), cfg_.seed, 1);
  if (shard_.samples.empty()) return Status::OK();
  for (int e = 1; e <= tc.epochs; ++e) {
    if (e > 1) NextEpochShard(e);
    std::shuffle(shard_.samples.begin(), shard_.samples.end(), rng_);
    bool stop = false;
    M6_RETURN_IF_ERROR(RunEpoch(e, 0, &stop));
    prog_.EndEpoch();
  }
  return Barrier("retrained-" + std::to_string(chunks_));
}

json TrainingEngine::StreamState() const {
  return {{"position", source_->position().ToJson()},
          {"chunks", chunks_},
          {"events", streamed_.size()},
          {"next_retrain_ts", next_retrain_ts_},
          {"curve", curve_},
          {"online_strategy", online_ ? online_->State() : json()}};
}

Status TrainingEngine::RestoreStream(const std::string& dir, const json& st) {
  M6_ASSIGN_OR_RETURN(resume_position_, SourcePosition::FromJson(st.at("position")));
  chunks_ = st.at("chunks").get<uint64_t>();
  next_retrain_ts_ = st.at("next_retrain_ts").get<int64_t>();
  curve_ = st.at("curve");
  online_state_ = st.value("online_strategy", json());
  const size_t events = st.at("events").get<size_t>();
  M6_ASSIGN_OR_RETURN(std::vector<StreamEvent> ev, ReadStreamEvents(dir));
  if (ev.size() != events)
    return Status::Corruption(dir + "/stream-events.tsv: " + std::to_string(ev.size()) +
                              " events, the checkpoint's state says " + std::to_string(events));
  stream_resumed_ = true;
  pending_ = std::move(ev);  // appended when the stream starts (RunStream)
  return Status::OK();
}

void TrainingEngine::FinishStreamSummary() {
  // Totals, and the first and second half of the stream's events (chunk granularity).
  uint64_t events = 0;
  for (const auto& c : curve_) events += c.value("events", uint64_t{0});
  double all[5] = {0, 0, 0, 0, 0}, half[2][5] = {{0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
  uint64_t seen = 0;
  for (const auto& c : curve_) {
    const double v[5] = {c.value("hits", 0.0), c.value("ndcg_sum", 0.0), c.value("scored", 0.0),
                         c.value("hits_online", 0.0), c.value("ndcg_online", 0.0)};
    const int h = 2 * seen < events ? 0 : 1;
    for (int k = 0; k < 5; ++k) all[k] += v[k], half[h][k] += v[k];
    seen += c.value("events", uint64_t{0});
  }
  const bool online = cfg_.stream.online_strategy;
  auto metrics = [online](const double* v) {
    json m = {{"HR@10", v[2] > 0 ? v[0] / v[2] : 0.0},
              {"NDCG@10", v[2] > 0 ? v[1] / v[2] : 0.0},
              {"scored", v[2]}};
    if (online) {
      m["HR@10_online"] = v[2] > 0 ? v[3] / v[2] : 0.0;
      m["NDCG@10_online"] = v[2] > 0 ? v[4] / v[2] : 0.0;
    }
    return m;
  };
  json st = metrics(all);
  st["events"] = events;
  st["chunks"] = curve_;
  st["halves"] = {metrics(half[0]), metrics(half[1])};
  if (online_) st["strategy"] = online_->Book().ToJson();
  if (!lag_ms_.empty()) {
    std::vector<int32_t> l = lag_ms_;
    std::sort(l.begin(), l.end());
    st["trained_ms"] = {{"p50", l[l.size() / 2]},
                        {"p99", l[std::min(l.size() - 1, l.size() * 99 / 100)]}};
  }
  summary_.stream = st;
}

Status TrainingEngine::RunStream() {
  const StreamConfig& sc = cfg_.stream;
  // Every interaction of the dataset as a sample replay draws from.
  all_samples_.clear();
  for (uint32_t u = 0; u < ds_.num_users; ++u)
    if (ds_.Trained(u))
      for (uint32_t k = 0; k < ds_.train[u].size(); ++k) all_samples_.push_back({u, k, 0});
  if (sc.online_strategy) {
    // The intent classifier from the data before the stream (every rank fits the same one).
    std::vector<uint32_t> users;
    for (uint32_t u = 0; u < ds_.num_users; ++u)
      if (ds_.train[u].size() > 1) users.push_back(u);
    IntentClassifier classifier;
    if (!users.empty()) classifier = IntentClassifier::Fit(ds_, users, cfg_.seed);
    online_ = std::make_unique<OnlineStrategy>(*model_, classifier, sc.strategy_decay);
    if (!online_state_.is_null()) M6_RETURN_IF_ERROR(online_->Restore(online_state_));
  }
  if (stream_resumed_) {
    std::vector<StreamEvent> done = std::move(pending_);
    pending_.clear();
    streamed_.clear();
    M6_RETURN_IF_ERROR(AppendEvents(done));
  }
  M6_ASSIGN_OR_RETURN(source_, OpenStreamSource(sc, ds_, ctx_.job_token, resume_position_));
  if (ctx_.rank == 0)
    LOG_INFO << "streaming from " << EnumName(sc.source) << (sc.path.empty() ? "" : " " + sc.path)
             << " (position " << source_->position().ToJson().dump() << ", " << streamed_.size()
             << " events so far), chunks of up to " << sc.chunk << " events, "
             << (sc.retrain_every_s > 0
                     ? "retrained every " + std::to_string(sc.retrain_every_s) + " s of stream time"
                 : sc.update ? "trained on each chunk"
                             : "frozen");
  std::vector<StreamEvent> chunk;
  std::vector<int64_t> arrived;
  while (sc.max_chunks == 0 || chunks_ < uint64_t(sc.max_chunks)) {
    M6_RETURN_IF_ERROR(NextChunk(&chunk, &arrived));
    if (chunk.empty()) break;
    ++chunks_;
    if (sc.retrain_every_s > 0) {
      if (next_retrain_ts_ == 0)
        next_retrain_ts_ = chunk.front().ts + int64_t(sc.retrain_every_s);
      else if (chunk.front().ts >= next_retrain_ts_) {
        M6_RETURN_IF_ERROR(Retrain());
        while (next_retrain_ts_ <= chunk.front().ts)
          next_retrain_ts_ += int64_t(sc.retrain_every_s);
      }
    }
    const int64_t t0 = MonotonicMs();
    double sums[5] = {0, 0, 0, 0, 0};
    M6_RETURN_IF_ERROR(ScoreChunk(chunk, sums));
    std::vector<double> packed(sums, sums + 5);
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &packed));
    if (online_) {
      // What every strategy scored on this chunk, over every rank: the next chunk's choice.
      M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &online_->ChunkHits()));
      online_->EndChunk();
    }
    const size_t first_sample = all_samples_.size();
    M6_RETURN_IF_ERROR(AppendEvents(chunk));
    const uint64_t steps_before = prog_.steps();
    prog_.StartEpoch();
    if (sc.update && sc.retrain_every_s <= 0) M6_RETURN_IF_ERROR(TrainChunk(chunk, first_sample));
    // The chunk's mean training loss over the ranks (each rank trained as many samples).
    std::vector<double> loss{prog_.EndEpoch() / ctx_.num_workers};
    M6_RETURN_IF_ERROR(AllReduceDoubles(coll_, &loss));
    const int64_t done = MonotonicMs();
    if (ctx_.rank == 0)
      for (int64_t a : arrived) lag_ms_.push_back(int32_t(std::min<int64_t>(done - a, INT32_MAX)));
    json c = {{"chunk", chunks_},
              {"events", chunk.size()},
              {"ts_first", chunk.front().ts},
              {"ts_last", chunk.back().ts},
              {"hits", packed[0]},
              {"ndcg_sum", packed[1]},
              {"scored", packed[2]},
              {"HR@10", packed[2] > 0 ? packed[0] / packed[2] : 0.0},
              {"NDCG@10", packed[2] > 0 ? packed[1] / packed[2] : 0.0},
              {"steps", prog_.steps() - steps_before},
              {"ms", done - t0}};
    if (prog_.steps() > steps_before) c["loss"] = loss[0];
    if (online_) {
      c["hits_online"] = packed[3];
      c["ndcg_online"] = packed[4];
      c["HR@10_online"] = packed[2] > 0 ? packed[3] / packed[2] : 0.0;
    }
    curve_.push_back(c);
    ReportProgress(true);
    if (ctx_.rank == 0) {
      LOG_INFO << "chunk " << chunks_ << ": " << chunk.size() << " events, prequential HR@10 "
               << c["HR@10"].get<double>() << " NDCG@10 " << c["NDCG@10"].get<double>() << ", "
               << c["steps"].get<uint64_t>() << " steps in " << (done - t0) << " ms";
      M6_RETURN_IF_ERROR(AppendMetricsLine(c));
    }
    if (sc.snapshot_every > 0 && chunks_ % uint64_t(sc.snapshot_every) == 0) {
      M6_RETURN_IF_ERROR(Checkpoint(cfg_.train.epochs + 1, 0, RngToString(rng_), false));
      // The strategies as the stream has adjusted them, for `m6rec strategy` and serving.
      if (online_ && ctx_.rank == 0 && !ctx_.run_dir.empty())
        M6_RETURN_IF_ERROR(WriteStrategyBook(ctx_.run_dir, online_->Book()));
    }
  }
  if (sc.snapshot_every > 0 && chunks_ % uint64_t(sc.snapshot_every) != 0)
    M6_RETURN_IF_ERROR(Checkpoint(cfg_.train.epochs + 1, 0, RngToString(rng_), false));
  FinishStreamSummary();
  return Status::OK();
}

// ---- checkpoints ----------------------------------------------------------------------------

json TrainingEngine::WorkerState(int next_epoch, size_t next_step,
                                 const std::string& rng_next) const {
  json j = {{"rank", ctx_.rank},
            {"num_workers", ctx_.num_workers},
            {"epoch", next_epoch},
            {"step", next_step},
            {"rng_epoch_starts", rng_epoch_starts_},
            {"rng", rng_next},
            {"progress", prog_.State()},
            {"summary", summary_.ToJson()},
            {"selection", selector_.State()},
            {"domain_selection", DomainSelectionState()},
            {"metrics_lines", metrics_lines_}};
  if (dense_) j["dense_rng"] = dense_->RngState();
  if (source_) j["stream"] = StreamState();
  return j;
}

Status TrainingEngine::Checkpoint(int next_epoch, size_t next_step, const std::string& rng_next,
                                  bool best, const std::vector<std::string>& best_for_domains) {
  if (ctx_.run_dir.empty()) return Status::OK();
  const std::string dir = CheckpointDir(ctx_.run_dir, prog_.steps());
  const std::string tag = "checkpoint-" + std::to_string(prog_.steps());
  // The cut: every rank is between the same two steps with its pushes acknowledged.
  M6_RETURN_IF_ERROR(Barrier(tag + "-cut"));
  if (ctx_.rank == 0) {
    M6_RETURN_IF_ERROR(RemoveTree(dir));  // an incomplete attempt at this step, if any
    M6_RETURN_IF_ERROR(MakeDirs(dir));
    M6_RETURN_IF_ERROR(ctx_.tables->Checkpoint(dir));
    if (dense_) M6_RETURN_IF_ERROR(dense_->Save(dir + "/dense"));
    if (source_) M6_RETURN_IF_ERROR(WriteStreamEvents(dir, streamed_));
  }
  M6_RETURN_IF_ERROR(Barrier(tag + "-tables"));
  json state = WorkerState(next_epoch, next_step, rng_next);
  M6_RETURN_IF_ERROR(
      WriteFileAtomic(dir + "/worker-" + std::to_string(ctx_.rank) + ".json", state.dump() + "\n"));
  M6_RETURN_IF_ERROR(Barrier(tag + "-written"));
  if (ctx_.rank != 0) return Status::OK();
  json manifest = {{"step", prog_.steps()},
                   {"epoch", next_step == 0 ? next_epoch - 1 : next_epoch},
                   {"next_epoch", next_epoch},
                   {"next_step", next_step},
                   {"workers", ctx_.num_workers},
                   {"servers", ctx_.tables->num_shards()},
                   {"job", model_->name()},
                   {"dense_params", summary_.dense_params},
                   {"best", best},
                   {"best_domains", best_for_domains}};
  if (dense_) manifest["dense_fingerprint"] = std::to_string(dense_->Fingerprint());
  if (source_) manifest["stream"] = StreamState();
  M6_RETURN_IF_ERROR(WriteFileAtomic(dir + "/manifest.json", manifest.dump(2) + "\n"));
  if (best || !best_for_domains.empty())
    M6_RETURN_IF_ERROR(
        WriteBestPointer(ctx_.run_dir, dir, manifest["epoch"].get<int>(), best, best_for_domains));
  std::string domains;
  for (const auto& d : best_for_domains) domains += (domains.empty() ? "" : ", ") + d;
  LOG_INFO << "checkpoint " << dir << (best ? " (best epoch so far)" : "")
           << (domains.empty() ? "" : " (best so far for " + domains + ")");
  checkpoint_step_ = prog_.steps();
  ReportProgress(true);
  return PruneCheckpoints(ctx_.run_dir, cfg_.checkpoint.keep);
}

Status TrainingEngine::Resume(int* epoch, size_t* step) {
  const std::string dir = ctx_.resume_from;
  M6_ASSIGN_OR_RETURN(json manifest, ReadManifest(dir));
  const std::string path = dir + "/worker-" + std::to_string(ctx_.rank) + ".json";
  M6_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json st = json::parse(text, nullptr, false);
  if (!st.is_object()) return Status::Corruption(path + ": not JSON");
  try {
    if (st.at("num_workers").get<uint32_t>() != ctx_.num_workers)
      return Status::InvalidArgument(path + ": the checkpoint has " + st["num_workers"].dump() +
                                     " workers, this job " + std::to_string(ctx_.num_workers));
    *epoch = st.at("epoch").get<int>();
    *step = st.at("step").get<size_t>();
    // The samples' order is replayed: every epoch so far shuffled its predecessor's order from
    // the RNG at its start (the current epoch's too, when resuming mid-epoch); then the RNG is
    // set to where the next batch draws from.
    // The summary first: the domains that stopped training (and when) shape the replayed
    // epochs' samples.
    const auto pop = summary_.popularity;
    M6_ASSIGN_OR_RETURN(summary_, WorkerSummary::FromJson(st.at("summary")));
    summary_.popularity = pop;
    rng_epoch_starts_ = st.at("rng_epoch_starts").get<std::vector<std::string>>();
    const size_t shuffled = *step > 0 ? rng_epoch_starts_.size()
                                      : std::min<size_t>(rng_epoch_starts_.size(), *epoch - 1);
    for (size_t e = 0; e < shuffled; ++e) {
      if (e > 0) NextEpochShard(int(e) + 1);
      M6_RETURN_IF_ERROR(RngFromString(rng_epoch_starts_[e], &rng_));
      std::shuffle(shard_.samples.begin(), shard_.samples.end(), rng_);
    }
    M6_RETURN_IF_ERROR(RngFromString(st.at("rng").get<std::string>(), &rng_));
    prog_.Restore(st.at("progress"));
    if (st.contains("domain_selection")) {
      for (auto& [name, sel] : domain_selectors_)
        if (st["domain_selection"].contains(name))
          M6_RETURN_IF_ERROR(sel.Restore(st["domain_selection"][name]));
    } else if (!domain_selectors_.empty()) {
      LOG_WARN << "the checkpoint holds no per-domain epoch selection; each domain's own best "
                  "epoch is chosen among the epochs from here on";
    }
    if (st.contains("selection")) {
      M6_RETURN_IF_ERROR(selector_.Restore(st.at("selection")));
    } else if (st.contains("best_value") && !st.at("best_value").is_null() &&
               selector_.rule().terms.size() == 1) {
      // A checkpoint from before the selection history: its best value is all a one-term rule
      // needs.
      selector_.OfferValues(summary_.best_epoch, {st.at("best_value").get<double>()});
    } else if (summary_.best_epoch > 0) {
      LOG_WARN << "the checkpoint holds no epoch-selection history; the next evaluated epoch "
                  "starts it";
    }
    metrics_lines_ = st.at("metrics_lines").get<std::vector<std::string>>();
    if (dense_) {
      // Written after the backbone froze (train.backbone_epochs): its optimizer holds only the
      // per-condition parameters, so the freeze comes first. (The checkpoint at the end of
      // epoch N, resumed at N + 1 step 0, predates it: the epoch's start freezes.)
      const int n = cfg_.train.backbone_epochs;
      if (n > 0 && (*epoch > n + 1 || (*epoch == n + 1 && *step > 0)))
        M6_RETURN_IF_ERROR(FreezeBackboneFor(*epoch));
      M6_RETURN_IF_ERROR(dense_->Load(dir + "/dense", /*with_optimizer=*/true));
      M6_RETURN_IF_ERROR(dense_->SetRngState(st.at("dense_rng").get<std::string>()));
    }
    if (st.contains("stream")) M6_RETURN_IF_ERROR(RestoreStream(dir, st["stream"]));
  } catch (const json::exception& e) {
    return Status::Corruption(path + ": " + e.what());
  }
  if (ctx_.rank == 0 && !ctx_.run_dir.empty()) {
    std::string lines;
    for (const auto& l : metrics_lines_) lines += l + "\n";
    M6_RETURN_IF_ERROR(WriteFileAtomic(ctx_.run_dir + "/metrics.jsonl", lines));
    // The checkpoint may be a best one (the job's or a domain's) that best.json does not name
    // yet: a crash between its manifest and the pointer. Point at it again (idempotent).
    const bool best = manifest.value("best", false);
    const auto domains = manifest.value("best_domains", std::vector<std::string>{});
    const bool ours = std::filesystem::path(dir).parent_path().lexically_normal() ==
                      std::filesystem::path(CheckpointRoot(ctx_.run_dir)).lexically_normal();
    if (ours && (best || !domains.empty()))
      M6_RETURN_IF_ERROR(
          WriteBestPointer(ctx_.run_dir, dir, manifest.value("epoch", 0), best, domains));
  }
  LOG_INFO << "resumed from " << dir << " at epoch " << *epoch << ", step " << *step << " of "
           << shard_.steps_per_epoch << " (" << prog_.steps() << " steps done)";
  return Status::OK();
}

std::unique_ptr<ModelPlugin> LoadedPlugin(const ScoringContext& ctx, Status* status) {
  auto model = MakeModelPlugin({ctx.cfg, ctx.data.get(), ctx.tables, 0});
  if (!model.ok()) {
    *status = model.status();
    return nullptr;
  }
  if (DenseModel* d = (*model)->dense()) {
    *status = d->Load(ctx.checkpoint + "/dense", /*with_optimizer=*/false);
    if (!status->ok()) return nullptr;
  }
  return std::move(*model);
}

}  // namespace

uint64_t EvalSeed(const JobConfig& cfg) { return Mix64(cfg.seed ^ 0xe7a1); }

StatusOr<std::unique_ptr<ModelPlugin>> LoadScoringModel(const ScoringContext& ctx) {
  Status s;
  auto model = LoadedPlugin(ctx, &s);
  if (!model) return s;
  return model;
}

StatusOr<std::shared_ptr<const Dataset>> LoadJobData(const JobConfig& cfg,
                                                     const std::string& data_dir) {
  M6_ASSIGN_OR_RETURN(Dataset ds, LoadDataset(cfg.data, data_dir));
  ds.sampled_negatives = cfg.train.eval_negatives;
  const DataConfig& dc = cfg.data;
  if (dc.valid_ratings > 0 && !ds.has_ratings())
    return Status::InvalidArgument("data.valid_ratings: " + ds.name +
                                   " has no ratings to validate on (data.format movielens, or a "
                                   "tsv interactions file with a rating column, has them)");
  HoldOutValidationRatings(&ds, dc.valid_ratings);
  MakeColdItems(&ds, dc.cold_items, dc.cold_seed);
  MakeColdUsers(&ds, dc.cold_users, dc.cold_user_interactions, dc.cold_user_profile, dc.cold_seed);
  const std::string reduced = ReduceItemFeatures(&ds, cfg.model.feature_pca);
  if (!reduced.empty()) LOG_INFO << ds.name << ": " << reduced;
  M6_RETURN_IF_ERROR(PrepareTasks(cfg.train.tasks, &ds));
  SelectTrainedUsers(&ds, cfg.seed);
  return std::shared_ptr<const Dataset>(std::make_shared<Dataset>(std::move(ds)));
}

StatusOr<WorkerSummary> RunTraining(const EngineContext& ctx) {
  if (!ctx.cfg || !ctx.tables || !ctx.collective || !ctx.data)
    return Status::InvalidArgument(
        "RunTraining: the context needs a config, tables, a collective and data");
  TrainingEngine engine(ctx);
  M6_RETURN_IF_ERROR(engine.Init());
  M6_RETURN_IF_ERROR(engine.Run());
  return engine.Finish();
}

StatusOr<json> EvaluateModel(const ScoringContext& ctx) {
  Status s;
  auto model = LoadedPlugin(ctx, &s);
  if (!model) return s;
  const Dataset& ds = *ctx.data;
  // Each shard's sums on their own, then added in rank order: the same additions, in the same
  // order, as the job's result makes of its workers' sums.
  // Thresholds come from every shard's validation scores, as the job chose them.
  const JobConfig& cfg = *ctx.cfg;
  const uint32_t W = ctx.num_workers;
  std::vector<MetricSums> t(W), v(W);
  std::vector<EvalHistograms> h(W, EvalHistograms(ds, cfg));
  ScoreHistograms all_valid(ds);
  TaskHistograms task_test(ds, cfg.train.tasks), task_valid(ds, cfg.train.tasks);
  // Every shard's validation scores first, the calibration chosen on them all as the job's
  // ranks chose it, then each shard's metrics.
  std::vector<SampledPass> vpass(W);
  Calibration cal;
  const std::unique_ptr<RatingNeighbourhood> neighbours = FitNeighbourhood(ds, cfg);
  M6_RETURN_IF_ERROR(model->BeginScoring());
  for (uint32_t r = 0; r < W && s.ok(); ++r)
    s = ScoreValidation(*model, ds, cfg, ShardUsers(ds, r, W), &vpass[r]);
  if (s.ok()) {
    std::vector<const SampledPass*> passes;
    for (const auto& p : vpass) passes.push_back(&p);
    s = ChooseCalibration(
        cfg, ds, passes, [](std::vector<double>*) { return Status::OK(); }, &cal);
  }
  for (uint32_t r = 0; r < W && s.ok(); ++r)
    s = EvaluateUsers(*model, ds, cfg, ShardUsers(ds, r, W), vpass[r], cal, neighbours.get(), &t[r],
                      &v[r], &h[r]);
  model->EndScoring();
  M6_RETURN_IF_ERROR(s);
  for (uint32_t r = 0; r < W; ++r) {
    all_valid.Merge(h[r].valid);
    task_test.Merge(h[r].task_test);
    task_valid.Merge(h[r].task_valid);
  }
  const bool sampled = ds.protocol == Dataset::Protocol::kSampled;
  const Thresholds thr = ChooseThresholds(all_valid);
  json task_thr = json::object(), wide = json::object();
  MetricSums test, valid;
  for (uint32_t r = 0; r < W; ++r) {
    if (sampled) {
      AddConfusion(ds, h[r].test, thr, &t[r]);
      AddConfusion(ds, h[r].valid, thr, &v[r]);
    }
    AddTaskConfusion(ds, cfg.train.tasks, h[r].task_test, h[r].task_valid, task_test, task_valid,
                     &t[r], &v[r], &task_thr, &wide);
    test.Merge(t[r]);
    valid.Merge(v[r]);
  }
  json j = {{"dataset", ds.name},
            {"protocol", sampled ? "sampled" : "full_ranking"},
            {"checkpoint", ctx.checkpoint},
            {"test", MetricsJson(test)}};
  if (sampled) {
    j["valid"] = MetricsJson(valid);
    j["thresholds"] = thr.ToJson(ds);
    if (!cal.empty()) j["calibration"] = cal.ToJson(ds);
  }
  if (!task_thr.empty()) j["thresholds"]["tasks"] = task_thr;
  if (!wide.empty()) j["wide_weights"] = wide;
  return j;
}

namespace {

// The top k of the query's domain's items not in `seen`, under the run's strategy when it has
// one (the intent inferred from `seen`): {"k", "seen", "items": [{"item", "score",
// ["domain_item"]}], ["intent", "strategy"], ["domain"]}.
StatusOr<json> RankForQuery(const ScoringContext& ctx, ModelPlugin* model, UserQuery query,
                            std::vector<uint32_t> seen, uint32_t domain, int k, bool explain,
                            const std::vector<uint32_t>& also_exclude = {}) {
  const Dataset& ds = *ctx.data;
  // The request's intent, from its behaviour, and that intent's strategy.
  const Strategy* strategy = nullptr;
  int intent = 0;
  double p_explore = 0;
  if (ctx.strategy) {
    strategy = &ctx.strategy->For(ds, seen, &intent, &p_explore);
    query.source_scale = strategy->sources;
    if (k <= 0) k = strategy->k;
  }
  if (k <= 0) k = 10;
  std::vector<float> scores;
  M6_RETURN_IF_ERROR(model->ScoreAllItems({query}, &scores));
  // Candidates: the domain's items (every valid item without domains) not yet seen.
  const Dataset::Domain* dom = ds.multi_domain() ? &ds.domains[domain] : nullptr;
  const uint32_t begin = dom ? dom->item_begin : ds.first_item,
                 end = dom ? dom->item_end : ds.num_items;
  if (ctx.calibration)
    for (uint32_t i = begin; i < end; ++i)
      scores[i] += float(ctx.calibration->Offset(ds, dom ? domain : 0, i));
  if (strategy && strategy->category_weight != 0) {
    std::vector<bool> was_seen(ds.num_items, false);
    for (uint32_t i : seen) was_seen[i] = true;
    std::vector<uint32_t> cand;
    std::vector<float> cs;
    for (uint32_t i = begin; i < end; ++i)
      if (!was_seen[i]) {
        cand.push_back(i);
        cs.push_back(scores[i]);
      }
    ApplyCategoryWeight(ds, seen, cand, strategy->category_weight, &cs);
    for (size_t c = 0; c < cand.size(); ++c) scores[cand[c]] = cs[c];
  }
  for (uint32_t i : seen) scores[i] = -1e30f;
  for (uint32_t i : also_exclude) scores[i] = -1e30f;
  for (uint32_t i = 0; i < begin; ++i) scores[i] = -1e30f;
  for (uint32_t i = end; i < ds.num_items; ++i) scores[i] = -1e30f;
  if (strategy)
    for (float& x : scores)
      if (x < strategy->min_score) x = -1e30f;
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  // In a multi-domain run ids are the merged ones; each item also carries its domain's own id.
  json items = json::array();
  std::vector<uint32_t> top;
  for (uint32_t i : TopK(scores, k)) {
    if (scores[i] <= -1e29f) continue;
    top.push_back(i);
    json it = {{"item", i}, {"score", scores[i]}};
    if (dom) it["domain_item"] = i - dom->item_offset;
    if (const size_t first_new = ds.num_items - ctx.new_items.size(); i >= first_new)
      it["new_item"] = ctx.new_items[i - first_new];
    items.push_back(it);
  }
  if (explain && !top.empty()) {
    json why;
    M6_RETURN_IF_ERROR(model->Explain(query, top, &why));
    for (size_t c = 0; c < top.size() && c < why.size(); ++c) items[c]["why"] = why[c];
  }
  json out = {{"k", k}, {"seen", seen.size()}, {"items", items}};
  if (strategy) {
    out["intent"] = {{"name", intent < 0 ? "any" : IntentName(intent)}, {"p_explore", p_explore}};
    out["strategy"] = strategy->ToJson();
  }
  if (dom) out["domain"] = dom->name;
  return out;
}

}  // namespace

StatusOr<std::unique_ptr<Recommender>> Recommender::Open(const ScoringContext& ctx) {
  std::unique_ptr<Recommender> r(new Recommender());
  r->ctx_ = ctx;
  Status s;
  r->model_ = LoadedPlugin(r->ctx_, &s);
  if (!r->model_) return s;
  M6_RETURN_IF_ERROR(r->model_->BeginScoring());
  r->scoring_ = true;
  return r;
}

Recommender::~Recommender() {
  if (scoring_) model_->EndScoring();
}

StatusOr<json> RecommendForUser(const ScoringContext& ctx, int64_t user, int k,
                                const std::string& domain) {
  M6_ASSIGN_OR_RETURN(auto r, Recommender::Open(ctx));
  return r->ForUser(user, k, domain, ctx.explain);
}

StatusOr<json> RecommendForNewUser(const ScoringContext& ctx, const NewUser& user, int k,
                                   const std::string& domain) {
  M6_ASSIGN_OR_RETURN(auto r, Recommender::Open(ctx));
  return r->ForNewUser(user, k, domain, ctx.explain);
}

StatusOr<json> Recommender::ForUser(int64_t user, int k, const std::string& domain, bool explain) {
  const ScoringContext& ctx = ctx_;
  const Dataset& ds = *ctx.data;
  if (!domain.empty()) {
    std::string names;
    for (const auto& d : ds.domains) {
      if (d.name == domain && ds.multi_domain()) {
        if (user < 0 || user >= int64_t(d.user_end - d.user_begin))
          return Status::InvalidArgument("user " + std::to_string(user) + ": domain '" + domain +
                                         "' has users 0.." +
                                         std::to_string(d.user_end - d.user_begin - 1));
        return ForUser(user + d.user_begin, k, "", explain);
      }
      names += (names.empty() ? "" : ", ") + d.name;
    }
    return Status::InvalidArgument("--domain '" + domain + "': " +
                                   (ds.multi_domain() ? "the run's domains are " + names
                                                      : std::string("the run has one domain")));
  }
  if (user < 0 || user >= int64_t(ds.num_users))
    return Status::InvalidArgument("user " + std::to_string(user) + ": the data has users 0.." +
                                   std::to_string(ds.num_users - 1));
  const uint32_t u = static_cast<uint32_t>(user);
  // Everything the user is known to have touched is history, and is excluded from the list.
  std::vector<uint32_t> seen = ds.train[u];
  if (ds.protocol == Dataset::Protocol::kSampled) {
    for (int64_t extra : {ds.valid_item[u], ds.test_item[u]})
      if (extra >= 0) seen.push_back(uint32_t(extra));
  } else {
    seen.insert(seen.end(), ds.test_sets[u].begin(), ds.test_sets[u].end());
  }
  UserQuery query;
  query.user = u;
  query.history = seen;
  query.neighbours = seen;  // the training items first: their ratings are known
  if (u < ds.train_ratings.size()) query.neighbour_ratings = ds.train_ratings[u];
  // A cold split's lost items were touched too: not history the model was trained with, but
  // not recommended either.
  static const std::vector<uint32_t> kNone;
  const auto& lost = u < ds.held_out.size() ? ds.held_out[u] : kNone;
  M6_ASSIGN_OR_RETURN(
      json out, RankForQuery(ctx, model_.get(), query, seen, ds.UserDomain(u), k, explain, lost));
  out["user"] = user;
  if (ds.multi_domain()) out["domain_user"] = u - ds.domains[ds.UserDomain(u)].user_begin;
  return out;
}

StatusOr<NewUser> ParseNewUser(const json& j) {
  if (!j.is_object()) return Status::InvalidArgument("a new user is a JSON object");
  NewUser n;
  for (const auto& [key, v] : j.items()) {
    if (key == "history" || key == "friends") {
      if (!v.is_array()) return Status::InvalidArgument("'" + key + "': a list of ids");
      for (const auto& x : v) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0)
          return Status::InvalidArgument("'" + key + "': " + x.dump() + " is not an id");
        (key == "history" ? n.history : n.friends).push_back(x.get<int64_t>());
      }
    } else if (key == "profile") {
      if (!v.is_object()) return Status::InvalidArgument("'profile': {attribute: value, ...}");
      for (const auto& [a, x] : v.items())
        n.profile[a] = x.is_string() ? x.get<std::string>() : x.dump();
    } else {
      return Status::InvalidArgument("'" + key + "': unknown field (history, profile, friends)");
    }
  }
  return n;
}

namespace {

// A new user's profile (attribute name -> value) as the profile tokens the model reads; what
// the model does not read (an attribute the run predicts, or one with no profile tokens in this
// data) goes to `ignored`, with why. An unknown attribute or value is an error listing the known.
Status ProfileTokens(const ScoringContext& ctx, const std::map<std::string, std::string>& profile,
                     std::vector<uint32_t>* tokens, json* ignored) {
  const Dataset& ds = *ctx.data;
  for (const auto& [name, value] : profile) {
    const Dataset::UserAttribute* a = ds.FindAttribute(name);
    std::string have;
    for (const auto& x : ds.user_attributes) have += (have.empty() ? "" : ", ") + x.name;
    if (!a)
      return Status::InvalidArgument("profile '" + name + "': the data's user attributes are " +
                                     (have.empty() ? std::string("none") : have));
    auto c = std::find(a->classes.begin(), a->classes.end(), value);
    if (c == a->classes.end()) {
      std::string classes;
      for (const auto& x : a->classes) classes += (classes.empty() ? "" : ", ") + x;
      return Status::InvalidArgument("profile " + name + "='" + value + "': its values are " +
                                     classes);
    }
    // Read only where the model reads it: as a profile token the run did not predict.
    const auto predicted = std::find_if(
        ctx.cfg->train.tasks.begin(), ctx.cfg->train.tasks.end(),
        [&](const TaskSpec& t) { return t.type == TaskKind::kAttribute && t.attribute == name; });
    if (predicted != ctx.cfg->train.tasks.end())
      ignored->push_back(
          {{"name", name}, {"why", "the run predicts it (task " + predicted->name + ")"}});
    else if (const size_t k = size_t(c - a->classes.begin());
             k >= a->class_tokens.size() || a->class_tokens[k] < 0)
      ignored->push_back(
          {{"name", name}, {"why", "not a model input in this data (no profile tokens)"}});
    else
      tokens->push_back(uint32_t(a->class_tokens[k]));
  }
  return Status::OK();
}

}  // namespace

StatusOr<json> Recommender::ForNewUser(const NewUser& user, int k, const std::string& domain,
                                       bool explain) {
  const ScoringContext& ctx = ctx_;
  const Dataset& ds = *ctx.data;
  uint32_t dom = 0;
  if (ds.multi_domain()) {
    std::string names;
    for (const auto& d : ds.domains) names += (names.empty() ? "" : ", ") + d.name;
    auto it = std::find_if(ds.domains.begin(), ds.domains.end(),
                           [&](const Dataset::Domain& d) { return d.name == domain; });
    if (it == ds.domains.end())
      return Status::InvalidArgument("--domain '" + domain + "': a new user of a multi-domain " +
                                     "run needs its domain; the run's domains are " + names);
    dom = uint32_t(it - ds.domains.begin());
  } else if (!domain.empty()) {
    return Status::InvalidArgument("--domain '" + domain + "': the run has one domain");
  }
  const bool multi = ds.multi_domain();
  const uint32_t ibegin = multi ? ds.domains[dom].item_begin : ds.first_item,
                 iend = multi ? ds.domains[dom].item_end : ds.num_items,
                 ioff = multi ? ds.domains[dom].item_offset : 0,
                 ubegin = multi ? ds.domains[dom].user_begin : 0,
                 uend = multi ? ds.domains[dom].user_end : ds.num_users;
  UserQuery q;
  q.unseen = true;
  q.domain = int32_t(dom);
  for (int64_t i : user.history) {
    if (i + ioff < ibegin || i + ioff >= iend)
      return Status::InvalidArgument(
          "history item " + std::to_string(i) + ": the " + (multi ? "domain's" : "data's") +
          " items are " + std::to_string(ibegin - ioff) + ".." + std::to_string(iend - ioff - 1));
    q.history.push_back(uint32_t(i + ioff));
  }
  for (int64_t v : user.friends) {
    if (v + ubegin >= uend)
      return Status::InvalidArgument("friend " + std::to_string(v) + ": the " +
                                     (multi ? "domain's" : "data's") + " users are 0.." +
                                     std::to_string(uend - ubegin - 1));
    q.friends.push_back(uint32_t(v + ubegin));
  }
  json ignored = json::array();
  M6_RETURN_IF_ERROR(ProfileTokens(ctx, user.profile, &q.profile, &ignored));
  q.neighbours = q.history;
  M6_ASSIGN_OR_RETURN(json out, RankForQuery(ctx, model_.get(), q, q.history, dom, k, explain));
  out["user"] = "new";
  out["profile_tokens"] = q.profile.size();
  if (!ignored.empty()) out["profile_ignored"] = ignored;
  return out;
}

Status AddNewItems(ScoringContext* ctx, const json& items) {
  const json& list = items.is_object() && items.contains("items") ? items["items"] : items;
  if (!list.is_array() || list.empty())
    return Status::InvalidArgument(
        "new items: a non-empty JSON list of {name, tokens, image, audio}");
  if (ctx->cfg->train.job != JobKind::kM6)
    return Status::InvalidArgument("new items: the " + std::string(EnumName(ctx->cfg->train.job)) +
                                   " job has no content to score an item without interactions");
  auto ds = std::make_shared<Dataset>(*ctx->data);
  if (ds->multi_domain())
    return Status::InvalidArgument(
        "new items: not in a multi-domain run yet (each domain's items are one id range)");
  std::map<std::string, uint32_t> by_name;
  for (uint32_t t = 0; t < ds->token_names.size(); ++t)
    if (!ds->token_names[t].empty()) by_name.emplace(ds->token_names[t], t);
  for (size_t n = 0; n < list.size(); ++n) {
    const json& it = list[n];
    const std::string at = "new item " + std::to_string(n);
    if (!it.is_object() || !it.contains("name") || !it["name"].is_string())
      return Status::InvalidArgument(at + ": an object with a \"name\"");
    const std::string name = it["name"].get<std::string>();
    std::vector<uint32_t> tokens;
    std::vector<float> image(ds->image_dim, 0.0f), audio(ds->audio_dim, 0.0f);
    for (const auto& [key, v] : it.items()) {
      if (key == "name") continue;
      if (key == "tokens") {
        if (!v.is_array()) return Status::InvalidArgument(at + " '" + name + "': tokens: a list");
        for (const auto& t : v) {
          if (t.is_number_unsigned() && t.get<uint64_t>() < ds->num_tokens) {
            tokens.push_back(uint32_t(t.get<uint64_t>()));
          } else if (t.is_string() && by_name.count(t.get<std::string>())) {
            tokens.push_back(by_name[t.get<std::string>()]);
          } else {
            return Status::InvalidArgument(at + " '" + name + "': token " + t.dump() +
                                           " is not one of the run's tokens (ids 0.." +
                                           std::to_string(int64_t(ds->num_tokens) - 1) +
                                           (by_name.empty() ? "" : ", or their names") + ")");
          }
        }
      } else if (key == "image" || key == "audio") {
        std::vector<float>& dst = key == "image" ? image : audio;
        if (!v.is_array() || v.size() != dst.size() ||
            !std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number(); }))
          return Status::InvalidArgument(at + " '" + name + "': " + key + ": " +
                                         std::to_string(dst.size()) + " numbers (the run's " + key +
                                         " width)");
        for (size_t d = 0; d < dst.size(); ++d) dst[d] = v[d].get<float>();
      } else {
        return Status::InvalidArgument(at + " '" + name + "': unknown field '" + key +
                                       "' (name, tokens, image, audio)");
      }
    }
    ds->item_tokens.resize(ds->num_items);
    ds->item_tokens.push_back(tokens);
    if (!ds->item_categories.empty()) {
      ds->item_categories.resize(ds->num_items);
      ds->item_categories.push_back(tokens);
    }
    if (ds->image_dim) ds->item_image.insert(ds->item_image.end(), image.begin(), image.end());
    if (ds->audio_dim) ds->item_audio.insert(ds->item_audio.end(), audio.begin(), audio.end());
    ds->item_popularity.resize(ds->num_items);
    ds->item_popularity.push_back(0);
    if (!ds->cold.empty()) ds->cold.push_back(0);
    ++ds->num_items;
    ctx->new_items.push_back(name);
  }
  for (auto& d : ds->domains) d.item_end = ds->num_items;
  ctx->data = ds;
  return Status::OK();
}

}  // namespace m6rec
