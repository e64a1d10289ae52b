// The training engine in one process: whole jobs with ranks as threads, an inproc collective
// and local (memory) tables — no sockets, no processes — and a resume from a checkpoint that
// ends bit-identical to the uninterrupted run.
#include "worker/training_engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>
#include <tuple>

#include "common/config.h"
#include "common/util.h"
#include "launch/local_cluster.h"
#include "test_util.h"
#include "worker/checkpoint.h"
#include "worker/collective.h"
#include "worker/evaluator.h"
#include "worker/local_tables.h"
#include "worker/m6_model.h"
#include "worker/strategy.h"
#include "worker/synthetic_data.h"

namespace m6rec {
namespace {

using nlohmann::json;
using testing::TempDir;

// A small synthetic job: the whole M6 model (sequence, content, graph, text, image, audio).
JobConfig SmallJob(JobKind job, int epochs) {
  auto cfg = ParseConfig(
      R"(job: {name: engine-test, seed: 9}
ps: {store: memory, num_slots: 64}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: token, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data:
  synth: {users: 600, items: 300, clusters: 6, interactions_per_user: 24, tokens: 120, image_dim: 8, audio_dim: 4}
model: {seq_len: 6, fanout: 4, hidden: 16, content_tokens: 8}
train: {epochs: 2, batch_size: 128, negatives: 32, loss: softmax, temperature: 0.2, log_every: 1000}
)",
      "engine-test",
      {"train.job=" + std::string(EnumName(job)), "train.epochs=" + std::to_string(epochs)});
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
  return *cfg;
}

struct JobOutput {
  std::vector<WorkerSummary> workers;
  std::vector<Status> status;
};

// The job's memory tables with every row of checkpoint `from` (empty: none), as a server
// restores them.
std::shared_ptr<LocalStores> OpenStores(const JobConfig& cfg, const std::string& from = "") {
  LocalStoresOptions lo;
  lo.tables = cfg.tables;
  lo.ps = cfg.ps;
  lo.restore_from = from;
  auto opened = LocalStores::Open(lo);
  EXPECT_TRUE(opened.ok()) << opened.status().message();
  return opened.ok() ? *opened : nullptr;
}

// The head of a small job on a WriteTasteMovieLens directory (memory tables, dim 16); the
// caller adds model and train.
std::string TasteJob(const std::string& name, int seed, const std::string& data_dir) {
  return "job: {name: " + name + ", seed: " + std::to_string(seed) + R"(}
ps: {store: memory, num_slots: 64}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: token, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data: {source: dir, format: movielens, path: )" +
         data_dir + "}\n";
}

// Rows 0..n-1 of `table` as checkpoint `ckpt` holds them.
std::vector<float> CheckpointRows(const JobConfig& cfg, const std::string& ckpt, TableId table,
                                  uint64_t n) {
  auto tables = MakeLocalTables(OpenStores(cfg, ckpt));
  std::vector<Key> keys;
  for (uint64_t i = 0; i < n; ++i) keys.push_back(MakeKey(table, i));
  std::vector<float> v(n * cfg.tables[table].dim);
  EXPECT_TRUE(tables->Pull(table, keys.data(), n, v.data()).ok());
  return v;
}

// Runs `cfg` with W ranks as threads over one memory LocalStores (or `stores` when given).
JobOutput RunInProcess(const JobConfig& cfg, uint32_t W, const std::string& data_dir,
                       const std::string& run_dir, std::shared_ptr<LocalStores> stores = nullptr,
                       const std::string& resume_from = "") {
  auto data = LoadJobData(cfg, data_dir);
  EXPECT_TRUE(data.ok()) << data.status().message();
  if (!stores) stores = OpenStores(cfg);
  auto hub = MakeInProcessHub(int(W));
  JobOutput out;
  out.workers.resize(W);
  out.status.resize(W);
  std::vector<std::thread> ranks;
  for (uint32_t r = 0; r < W; ++r)
    ranks.emplace_back([&, r] {
      CollectiveOptions co;
      co.backend = W == 1 ? "single" : "inproc";
      co.hub = hub;
      co.rank = int(r);
      auto coll = CreateCollective(co);
      if (!coll.ok()) {
        out.status[r] = coll.status();
        return;
      }
      auto tables = MakeLocalTables(stores);
      EngineContext ctx;
      ctx.cfg = &cfg;
      ctx.rank = r;
      ctx.num_workers = W;
      ctx.tables = tables.get();
      ctx.collective = coll->get();
      ctx.data = *data;
      ctx.run_dir = run_dir;
      ctx.resume_from = resume_from;
      auto s = RunTraining(ctx);
      out.status[r] = s.status();
      if (s.ok())
        out.workers[r] = std::move(*s);
      else
        AbortInProcessHub(*hub);  // the other ranks stop instead of waiting for this one
    });
  for (auto& t : ranks) t.join();
  return out;
}

// A finished in-process run: every rank's summary, and result.json's form of them merged.
struct Merged {
  JobOutput out;
  json result;
  std::string line;  // the result's summary line
};

// RunInProcess, then MergeRunResult; every rank must succeed (call it inside
// ASSERT_NO_FATAL_FAILURE).
void RunAndMerge(const JobConfig& cfg, uint32_t W, const std::string& data_dir,
                 const std::string& run_dir, Merged* m,
                 std::shared_ptr<LocalStores> stores = nullptr) {
  m->out = RunInProcess(cfg, W, data_dir, run_dir, std::move(stores));
  for (const auto& s : m->out.status) ASSERT_TRUE(s.ok()) << s.message();
  auto result = MergeRunResult(m->out.workers, 0, &m->line);
  ASSERT_TRUE(result.ok()) << result.status().message();
  m->result = std::move(*result);
}

// A finished in-process run's best checkpoint opened for scoring (memory tables restored
// from it), as `m6rec eval` / `recommend` open a run.
struct BestModel {
  BestModel(const JobConfig& cfg, const std::string& run_dir, std::shared_ptr<const Dataset> data,
            uint32_t workers) {
    auto best = BestCheckpoint(run_dir);
    if (!best.ok()) {
      status = best.status();
      return;
    }
    LocalStoresOptions lo;
    lo.tables = cfg.tables;
    lo.ps = cfg.ps;
    lo.shard_dirs = {""};
    lo.restore_from = *best;
    auto stores = LocalStores::Open(lo);
    if (!stores.ok()) {
      status = stores.status();
      return;
    }
    tables = MakeLocalTables(*stores);
    sc.cfg = &cfg;
    sc.tables = tables.get();
    sc.data = std::move(data);
    sc.checkpoint = *best;
    sc.num_workers = workers;
  }
  Status status;
  std::unique_ptr<SparseTables> tables;
  ScoringContext sc;
};

// best.json's pointers: the best epoch's and each domain's own are merged as they are written,
// and pruning keeps every checkpoint one of them names, whatever its age.
TEST(Checkpoints, PruningKeepsEveryCheckpointBestJsonNames) {
  TempDir dir;
  const std::string run = dir / "run";
  for (uint64_t step : {10, 20, 30, 40, 50}) {
    const std::string d = CheckpointDir(run, step);
    ASSERT_TRUE(MakeDirs(d).ok());
    ASSERT_TRUE(
        WriteFileAtomic(d + "/manifest.json", json({{"step", step}, {"epoch", step / 10}}).dump())
            .ok());
  }
  ASSERT_TRUE(WriteBestPointer(run, CheckpointDir(run, 10), 1, true, {"shop", "music"}).ok());
  ASSERT_TRUE(WriteBestPointer(run, CheckpointDir(run, 20), 2, true, {"music"}).ok());
  ASSERT_TRUE(WriteBestPointer(run, CheckpointDir(run, 30), 3, false, {"books"}).ok());
  auto at = [&](const std::string& domain) {
    auto c = BestCheckpoint(run, domain);
    return c.ok() ? *c : "error: " + c.status().message();
  };
  EXPECT_EQ(at(""), CheckpointDir(run, 20));
  EXPECT_EQ(at("shop"), CheckpointDir(run, 10));
  EXPECT_EQ(at("music"), CheckpointDir(run, 20));
  EXPECT_EQ(at("books"), CheckpointDir(run, 30));
  EXPECT_EQ(at("toys"), CheckpointDir(run, 20)) << "no pointer: the best epoch";
  ASSERT_TRUE(PruneCheckpoints(run, 1).ok());
  EXPECT_EQ(ValidCheckpoints(run),
            std::vector<std::string>({CheckpointDir(run, 10), CheckpointDir(run, 20),
                                      CheckpointDir(run, 30), CheckpointDir(run, 50)}))
      << "40 is neither named nor the newest";
  // A pointer to a checkpoint that is gone is an error naming it, not a silent fallback.
  ASSERT_TRUE(RemoveTree(CheckpointDir(run, 10)).ok());
  auto gone = BestCheckpoint(run, "shop");
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.status().message().find("step-0000000010"), std::string::npos)
      << gone.status().message();
}

class InProcessJob : public ::testing::TestWithParam<JobKind> {};

TEST_P(InProcessJob, TwoRanksAsThreadsLearnWithIdenticalReplicas) {
  TempDir dir;
  const JobConfig cfg = SmallJob(GetParam(), 3);
  ASSERT_TRUE(WriteSynthetic(cfg.data.synth, cfg.seed, dir / "data").ok());
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, dir / "data", dir / "run", &run));
  const auto& [out, result, line] = run;
  const json& r = result;
  EXPECT_EQ(r["test"]["users"], 600) << "every user is evaluated exactly once";
  EXPECT_GT(r["test"]["HR@10"].get<double>(), r["popularity"]["HR@10"].get<double>() + 0.05)
      << "the model must beat popularity clearly: " << line;
  const WorkerSummary& w0 = out.workers[0];
  const WorkerSummary& w1 = out.workers[1];
  EXPECT_LT(w0.last_loss, 0.95 * w0.first_loss) << "the loss must fall";
  EXPECT_EQ(w0.steps, w1.steps) << "every rank runs the same number of steps";
  EXPECT_EQ(w0.best_epoch, w1.best_epoch) << "the best epoch is chosen on every rank's metrics";
  ASSERT_EQ(w0.epochs.size(), 3u);
  if (GetParam() == JobKind::kM6) {
    EXPECT_GT(w0.dense_params, 0);
    ASSERT_FALSE(w0.param_fingerprints.empty());
    EXPECT_EQ(w0.param_fingerprints, w1.param_fingerprints)
        << "the dense replicas stay bit-identical";
    EXPECT_EQ(w0.final_fingerprint, w1.final_fingerprint);
    EXPECT_EQ(w0.model["user_sources"], json({"id", "sequence", "content", "graph"}));
  } else {
    EXPECT_EQ(w0.dense_params, 0);
  }
  // Checkpoints of every epoch (two kept) and the best one, each complete.
  auto latest = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_EQ(ReadManifest(*latest)->at("epoch"), 3);
  auto best = BestCheckpoint(dir / "run");
  ASSERT_TRUE(best.ok()) << best.status().message();
  EXPECT_EQ(ReadManifest(*best)->at("epoch"), w0.best_epoch);
  EXPECT_LE(ValidCheckpoints(dir / "run").size(), 3u) << "checkpoint.keep: 2 (+ the best)";
}

INSTANTIATE_TEST_SUITE_P(Models, InProcessJob, ::testing::Values(JobKind::kMf, JobKind::kM6),
                         [](const auto& info) { return std::string(EnumName(info.param)); });

// A fractional weight is a pass split into epochs: over each cycle of 1/f epochs every sample
// trains its extra copy exactly once (never twice before all had one, as sampling with
// replacement would), each epoch trains about a share f, and every cycle splits the samples
// afresh.
TEST(WeightedCopies, AFractionIsAPassSplitIntoEpochsReshuffledEveryCycle) {
  const uint64_t seed = 17;
  const int n = 20000;
  // Whole weights are whole copies.
  for (uint64_t s = 0; s < 100; ++s) {
    EXPECT_EQ(WeightedCopies(1.0f, s, seed, 1), 1u);
    EXPECT_EQ(WeightedCopies(3.0f, s, seed, 7), 3u);
    EXPECT_EQ(WeightedCopies(0.0f, s, seed, 2), 0u);
  }
  // 1/2 and 1.5: every sample once (twice, plus the floor) per two epochs, in every cycle.
  for (float w : {0.5f, 1.5f}) {
    int first_half_same = 0;
    for (uint64_t s = 0; s < n; ++s) {
      for (int cycle = 0; cycle < 3; ++cycle) {
        const uint32_t a = WeightedCopies(w, s, seed, 2 * cycle + 1);
        const uint32_t b = WeightedCopies(w, s, seed, 2 * cycle + 2);
        ASSERT_EQ(a + b, uint32_t(2 * w)) << "w " << w << " sample " << s << " cycle " << cycle;
      }
      first_half_same += WeightedCopies(w, s, seed, 1) == WeightedCopies(w, s, seed, 3);
    }
    // A fresh split every cycle: epoch 3 shares about half its samples with epoch 1.
    EXPECT_NEAR(first_half_same / double(n), 0.5, 0.02) << "w " << w;
  }
  // 0.25: every epoch a quarter; over epochs 1..8 each sample exactly twice.
  int epoch1 = 0;
  for (uint64_t s = 0; s < n; ++s) {
    uint32_t total = 0;
    for (int e = 1; e <= 8; ++e) total += WeightedCopies(0.25f, s, seed, e);
    ASSERT_EQ(total, 2u) << "sample " << s;
    epoch1 += WeightedCopies(0.25f, s, seed, 1);
  }
  EXPECT_NEAR(epoch1 / double(n), 0.25, 0.01);
  // 0.3 (1/f not whole): a window may straddle two cycles and hold both of a sample's places
  // (two copies in one epoch); ten epochs cover three cycles, each sample's three places.
  int three = 0, twice_in_one = 0;
  for (uint64_t s = 0; s < n; ++s) {
    uint32_t total = 0;
    for (int e = 1; e <= 10; ++e) {
      const uint32_t c = WeightedCopies(0.3f, s, seed, e);
      total += c;
      twice_in_one += c == 2;
    }
    three += total == 3;
  }
  EXPECT_GE(three, n - 5) << "ten epochs of 0.3 train each sample three times";
  // Epochs 4 ([0.9, 1.2)) and 7 ([1.8, 2.1)) straddle: 0.1 x 0.2 of the samples each.
  EXPECT_NEAR(twice_in_one / double(n), 2 * 0.1 * 0.2, 0.01);
  // The seed decides the split.
  int same = 0;
  for (uint64_t s = 0; s < n; ++s)
    same += WeightedCopies(0.5f, s, seed, 1) == WeightedCopies(0.5f, s, seed + 1, 1);
  EXPECT_NEAR(same / double(n), 0.5, 0.02);
}

// A small m6 job over two synthetic datasets written under dir: "shop" from a (seed
// data_seed) and "music" from b (seed data_seed + 1), each a domain.
JobConfig ShopAndMusicJob(const std::string& dir, const SynthConfig& a, const SynthConfig& b,
                          uint64_t data_seed, int epochs) {
  EXPECT_TRUE(WriteSynthetic(a, data_seed, dir + "/shop").ok());
  EXPECT_TRUE(WriteSynthetic(b, data_seed + 1, dir + "/music").ok());
  JobConfig cfg = SmallJob(JobKind::kM6, epochs);
  cfg.data.source = DataSource::kDir;
  for (const char* name : {"shop", "music"}) {
    DomainSpec d;
    d.label = name;
    d.path = dir + "/" + name;
    d.format = DataFormat::kTsv;
    cfg.data.domains.push_back(d);
  }
  return cfg;
}

// The run in dir/run copied to dir/<name> and resumed there from (the copy of) its checkpoint
// `from`, on one worker.
JobOutput ResumeACopy(const JobConfig& cfg, const std::string& dir, const std::string& name,
                      const std::string& from) {
  const std::string copy = dir + "/" + name;
  std::filesystem::copy(dir + "/run", copy, std::filesystem::copy_options::recursive);
  const std::string again_from =
      copy + "/checkpoints/" + std::filesystem::path(from).filename().string();
  return RunInProcess(cfg, 1, "", copy, OpenStores(cfg, again_from), again_from);
}

// Why a job with one domain and one task, `set` applied, refuses to run ("" if it runs).
std::string OneDomainRefusal(const std::string& dir, const std::function<void(JobConfig*)>& set) {
  JobConfig single = SmallJob(JobKind::kM6, 1);
  set(&single);
  EXPECT_TRUE(WriteSynthetic(single.data.synth, single.seed, dir + "/single-data").ok());
  JobOutput refused = RunInProcess(single, 1, dir + "/single-data", dir + "/single");
  return refused.status[0].ok() ? std::string() : refused.status[0].message();
}

// Two datasets on one backbone: each domain is evaluated on its own (its users, its items'
// negatives), reported in the result and the metrics log, learns past its popularity, and the
// domain weights set how many of its samples an epoch trains.
TEST(InProcessJob, MultiDomainJobTrainsOneBackboneAndReportsEveryDomain) {
  TempDir dir;
  SynthConfig a, b;
  a.users = 500, a.items = 240, a.clusters = 6, a.interactions_per_user = 20, a.tokens = 100;
  a.image_dim = 8, a.audio_dim = 4;
  b = a;
  b.users = 400, b.items = 260, b.interactions_per_user = 24;
  JobConfig cfg = ShopAndMusicJob(dir.path(), a, b, 1, 3);
  cfg.data.domains[0].weight = 0.5f;
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, "", dir / "run", &run));
  const auto& [out, result, line] = run;
  const json& t = result["test"];
  ASSERT_TRUE(t.contains("domains")) << t.dump();
  EXPECT_EQ(t["domains"]["shop"]["users"], 500);
  EXPECT_EQ(t["domains"]["music"]["users"], 400);
  EXPECT_EQ(t["users"], 900);
  for (const char* name : {"shop", "music"}) {
    const double hr = t["domains"][name]["HR@10"],
                 pop = result["popularity"]["domains"][name]["HR@10"];
    EXPECT_GT(hr, pop + 0.05) << name << ": " << line;
    EXPECT_NE(line.find(std::string("\n  ") + name + ": HR@10"), std::string::npos) << line;
  }
  // Accuracy, precision, recall and F1 at the thresholds chosen on validation (one per domain,
  // one for the totals), not at a fixed score of 0 (which read accuracy ~0.6 and precision
  // ~0.02 here). Calling everything positive has F1 2/101 = 0.0198 with 1 positive in 100.
  // The F1-best threshold moves with the run (accuracy 0.936..0.978 over nine runs; a bound of
  // 0.95 failed once in CI), so the bound is what separates it from a threshold of 0.
  ASSERT_TRUE(result.contains("thresholds")) << result.dump();
  EXPECT_TRUE(result["thresholds"]["domains"].contains("music"));
  EXPECT_GT(t["accuracy"].get<double>(), 0.9) << t.dump();
  EXPECT_GT(t["F1"].get<double>(), 0.05) << t.dump();
  for (const char* name : {"shop", "music"})
    EXPECT_GT(t["domains"][name]["F1"].get<double>(), 0.05) << name << " " << t.dump();
  // Totals are the user-weighted mean of the domains.
  const double mixed = (t["domains"]["shop"]["HR@10"].get<double>() * 500 +
                        t["domains"]["music"]["HR@10"].get<double>() * 400) /
                       900;
  EXPECT_NEAR(t["HR@10"].get<double>(), mixed, 1e-9);
  // An epoch trains about half of the shop samples (weight 0.5) and every music one.
  uint64_t samples = 0;
  for (const auto& w : out.workers) samples += w.samples;
  const double per_epoch = double(samples) / 3;
  auto ds = LoadJobData(cfg, "");
  ASSERT_TRUE(ds.ok());
  double shop = 0, music = 0;
  for (uint32_t u = 0; u < (*ds)->num_users; ++u)
    ((*ds)->UserDomain(u) == 0 ? shop : music) += double((*ds)->train[u].size());
  EXPECT_NEAR(per_epoch, 0.5 * shop + music, 0.05 * shop) << "samples per epoch";
  // The metrics log carries every domain, and the fusion's gates per domain.
  std::ifstream log(dir / "run/metrics.jsonl");
  std::string first;
  ASSERT_TRUE(std::getline(log, first));
  const json l = json::parse(first);
  EXPECT_TRUE(l["test"]["domains"].contains("music")) << first;
  EXPECT_TRUE(l["gates"]["domains"].contains("shop")) << first;
  // Each domain also at the epoch its own validation NDCG@10 peaks: result.json reads it, and
  // best.json points at that epoch's checkpoint, which pruning keeps (checkpoint.keep 2).
  ASSERT_TRUE(result.contains("domains_at_own_best")) << result.dump();
  for (const char* name : {"shop", "music"}) {
    const json& own = result["domains_at_own_best"][name];
    int top = 0;
    double best_v = -1;
    for (const auto& e : result["epochs"])
      if (e["valid"]["domains"][name]["NDCG@10"].get<double>() > best_v)
        best_v = e["valid"]["domains"][name]["NDCG@10"], top = e["epoch"];
    EXPECT_EQ(own["epoch"], top) << name << " " << result["epochs"].dump();
    EXPECT_EQ(own["test"]["HR@10"], result["epochs"][top - 1]["test"]["domains"][name]["HR@10"]);
    auto ck = BestCheckpoint(dir / "run", name);
    ASSERT_TRUE(ck.ok()) << ck.status().message();
    EXPECT_EQ(ReadManifest(*ck)->at("epoch"), top) << name;
  }
  auto overall = BestCheckpoint(dir / "run");
  ASSERT_TRUE(overall.ok());
  EXPECT_EQ(ReadManifest(*overall)->at("epoch"), result["best_epoch"]);
  auto unnamed = BestCheckpoint(dir / "run", "books");
  ASSERT_TRUE(unnamed.ok());
  EXPECT_EQ(*unnamed, *overall) << "a domain without its own pointer is served the best epoch";
  // Recommending from the run: a user named by its domain's own id gets that domain's items.
  BestModel m(cfg, dir / "run", *ds, 2);
  ASSERT_TRUE(m.status.ok()) << m.status.message();
  const ScoringContext& sc = m.sc;
  auto rec = RecommendForUser(sc, 3, 5, "music");
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  EXPECT_EQ((*rec)["domain"], "music");
  EXPECT_EQ((*rec)["domain_user"], 3);
  EXPECT_EQ((*rec)["user"], 500 + 3) << "music's users follow shop's 500";
  ASSERT_EQ((*rec)["items"].size(), 5u);
  for (const auto& it : (*rec)["items"]) {
    EXPECT_GE(it["item"].get<int>(), 240) << "music's items follow shop's 240";
    EXPECT_EQ(it["item"].get<int>() - 240, it["domain_item"].get<int>());
  }
  // Served with a popularity calibration (what `m6rec recommend` reads from result.json), the
  // ranking is by the calibrated score: a large offset on one training-count bucket of music's
  // items fills the list with that bucket's items.
  {
    const Dataset& d = **ds;
    std::array<int, kTargetPopularityGroups.size()> per{};
    for (uint32_t i = 240; i < d.num_items; ++i)
      ++per[size_t(TargetPopularityBucket(d.item_popularity[i]))];
    const size_t b = size_t(std::max_element(per.begin(), per.end()) - per.begin());
    ASSERT_GE(per[b], 20);
    Calibration cal;
    cal.offsets.assign(2, {});
    for (auto& o : cal.offsets) o.fill(0.0);
    cal.offsets[1][b] = 1e4;
    ScoringContext calibrated = sc;
    calibrated.calibration = &cal;
    auto boosted = RecommendForUser(calibrated, 3, 5, "music");
    ASSERT_TRUE(boosted.ok()) << boosted.status().message();
    for (const auto& it : (*boosted)["items"]) {
      EXPECT_EQ(size_t(TargetPopularityBucket(d.item_popularity[it["item"].get<size_t>()])), b);
      EXPECT_GT(it["score"].get<double>(), 1e4 - 100);
    }
  }
  // Explanations: every item says why, with the score it was ranked by, the fusion's weights of
  // the model's own sources, and history items, neighbours and tokens the user really has.
  ScoringContext explaining = sc;
  explaining.explain = true;
  auto why = RecommendForUser(explaining, 3, 4, "music");
  ASSERT_TRUE(why.ok()) << why.status().message();
  const uint32_t u3 = 500 + 3;
  std::set<uint32_t> touched((*ds)->train[u3].begin(), (*ds)->train[u3].end());
  for (int64_t extra : {(*ds)->valid_item[u3], (*ds)->test_item[u3]})
    if (extra >= 0) touched.insert(uint32_t(extra));
  ASSERT_EQ((*why)["items"].size(), 4u);
  for (const auto& it : (*why)["items"]) {
    ASSERT_TRUE(it.contains("why")) << it.dump();
    const json& w = it["why"];
    EXPECT_NEAR(w["score"].get<double>(), it["score"].get<double>(), 1e-4);
    EXPECT_EQ(w["user_sources"].size(), out.workers[0].model["user_sources"].size()) << w.dump();
    for (const auto& [name, g] : w["user_sources"].items())
      EXPECT_TRUE(g.get<double>() > 0 && g.get<double>() < 1) << name;
    EXPECT_TRUE(w["item_sources"].contains("text")) << w.dump();
    EXPECT_FALSE(w["history_attention"].empty()) << w.dump();
    for (const char* part : {"history_attention", "graph_neighbours"})
      for (const auto& h : w[part])
        EXPECT_TRUE(touched.count(h["item"].get<uint32_t>())) << part << " " << h.dump();
    const auto& toks = (*ds)->item_tokens[it["item"].get<uint32_t>()];
    for (const auto& t : w["shared_tokens"])
      EXPECT_NE(std::find(toks.begin(), toks.end(), t.get<uint32_t>()), toks.end()) << t;
  }
  // A user the run has never seen, given by what it touched (music's own ids) and a friend:
  // music's items, none of its history, ranked by that history.
  NewUser fresh;
  fresh.history = {1, 2, 3};
  fresh.friends = {7};
  auto cold = RecommendForNewUser(sc, fresh, 10, "music");
  ASSERT_TRUE(cold.ok()) << cold.status().message();
  EXPECT_EQ((*cold)["user"], "new");
  ASSERT_EQ((*cold)["items"].size(), 10u);
  std::set<int> from_first;
  for (const auto& it : (*cold)["items"]) {
    EXPECT_GE(it["item"].get<int>(), 240);
    const int di = it["domain_item"].get<int>();
    EXPECT_TRUE(di != 1 && di != 2 && di != 3) << "its history is not recommended: " << di;
    from_first.insert(it["domain_item"].get<int>());
  }
  NewUser other;
  for (int64_t i = 200; i < 215; ++i) other.history.push_back(i);
  auto cold2 = RecommendForNewUser(sc, other, 10, "music");
  ASSERT_TRUE(cold2.ok()) << cold2.status().message();
  std::set<int> from_other;
  for (const auto& it : (*cold2)["items"]) from_other.insert(it["domain_item"].get<int>());
  EXPECT_NE(from_first, from_other) << "another history, other items";
  // What cannot be read is refused, naming it.
  NewUser bad;
  bad.history = {300};
  EXPECT_NE(RecommendForNewUser(sc, bad, 5, "music").status().message().find("items are 0..259"),
            std::string::npos);
  EXPECT_NE(RecommendForNewUser(sc, fresh, 5, "").status().message().find("shop, music"),
            std::string::npos);
  bad.history.clear();
  bad.profile["age"] = "30";
  EXPECT_NE(RecommendForNewUser(sc, bad, 5, "music").status().message().find("profile 'age'"),
            std::string::npos);
  auto unknown = RecommendForUser(sc, 3, 5, "books");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("the run's domains are shop, music"), std::string::npos)
      << unknown.status().message();
  EXPECT_FALSE(RecommendForUser(sc, 400, 5, "music").ok()) << "music has users 0..399";
}

// `m6rec adapt` at the level of the engine: a backbone trained on one domain (no conditioning),
// on two datasets, or on one dataset of two domains (a domain column) with two tasks, adapted
// to a new domain with its fusion adapters only. The new domain learns past its popularity (and
// its mean rating); only the new domain's part of the dense model moves (the count the job
// reports is exactly that part), and every backbone parameter and backbone sparse row is
// bit-identical afterwards. With a shared vocabulary (the three datasets name their tokens
// alike) the new domain's items read the backbone's token rows, which must stay as they were.
// On two datasets the new domain's items are fused by the plain map (adapt.item_fusion).
enum class Backbone { kOneDomain, kTwoDatasets, kTwoDomainsTwoTasks, kSharedVocabulary };
class AdaptJob : public ::testing::TestWithParam<Backbone> {};

TEST_P(AdaptJob, TrainsOnlyTheNewDomainsPartAndLeavesTheBackboneBitIdentical) {
  const Backbone kind = GetParam();
  const bool tasks = kind == Backbone::kTwoDomainsTwoTasks;
  const int64_t D0 = kind == Backbone::kOneDomain ? 1 : 2, T = tasks ? 2 : 1, D = D0 + 1;
  TempDir dir;
  SynthConfig a;
  a.users = 500, a.items = 240, a.clusters = 6, a.interactions_per_user = 20, a.tokens = 100;
  a.image_dim = 8, a.audio_dim = 4;
  a.domains = tasks ? 2 : 1;
  SynthConfig b = a, c = a;
  b.users = 400, b.items = 260, b.domains = 1;
  c.users = 300, c.items = 200, c.interactions_per_user = 24, c.domains = 1;
  ASSERT_TRUE(WriteSynthetic(a, 1, dir / "shop").ok());
  ASSERT_TRUE(WriteSynthetic(b, 2, dir / "music").ok());
  ASSERT_TRUE(WriteSynthetic(c, 3, dir / "books").ok());
  const bool shared = kind == Backbone::kSharedVocabulary;
  if (shared) {
    std::string names = "# token\tname\n";
    for (int t = 0; t < a.tokens; ++t)
      names += std::to_string(t) + "\tword" + std::to_string(t) + "\n";
    for (const char* name : {"shop", "music", "books"})
      testing::WriteFile(dir / (std::string(name) + "/token_names.tsv"), names);
  }
  JobConfig base = SmallJob(JobKind::kM6, 2);
  base.data.source = DataSource::kDir;
  base.data.shared_vocabulary = shared;
  const size_t datasets = kind == Backbone::kTwoDatasets || shared ? 2 : 1;
  for (const char* name : {"shop", "music"}) {
    if (base.data.domains.size() == datasets) break;
    DomainSpec d;
    d.label = name;
    d.path = dir / name;
    base.data.domains.push_back(d);
  }
  if (tasks) base.train.tasks = {TaskSpec{}, {"rating", TaskKind::kRating, 0.5f, 4, ""}};
  JobOutput bb = RunInProcess(base, 2, "", dir / "backbone");
  for (const auto& s : bb.status) ASSERT_TRUE(s.ok()) << s.message();
  auto backbone = BestCheckpoint(dir / "backbone");
  ASSERT_TRUE(backbone.ok()) << backbone.status().message();

  JobConfig ad = base;
  for (auto& d : ad.data.domains) d.weight = 0, d.evaluate = false;
  DomainSpec books;
  books.label = "books";
  books.path = dir / "books";
  ad.data.domains.push_back(books);
  ad.adapt.from = *backbone;
  ad.adapt.frozen_domains = int(base.data.domains.size());
  ad.adapt.frozen_tasks = int(T);
  ad.model.adapter_rank = 4;
  ad.model.tower_adapters = true;
  // On two datasets the new domain's items go through the fusion's starting map (the others
  // keep the backbone's): the same promises hold, and no tensor is added for it.
  if (kind == Backbone::kTwoDatasets) ad.adapt.item_fusion = AdaptItemFusion::kPlain;
  ad.train.epochs = 3;
  auto stores = OpenStores(ad, *backbone);
  ASSERT_TRUE(stores);
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(ad, 2, "", dir / "adapted", &run, stores));
  const auto& [out, result, line] = run;
  const json& t = result["test"];
  EXPECT_EQ(t["users"], 300) << "only the new domain is evaluated: " << line;
  ASSERT_TRUE(t["domains"].contains("books")) << t.dump();
  EXPECT_EQ(t["domains"].size(), 1u) << t.dump();
  EXPECT_GT(t["domains"]["books"]["HR@10"].get<double>(),
            result["popularity"]["domains"]["books"]["HR@10"].get<double>() + 0.05)
      << line;
  if (tasks) {
    // The backbone's rating head, frozen, serves the new domain through its condition rows.
    EXPECT_LT(t["tasks"]["rating"]["RMSE"].get<double>(),
              0.95 * result["popularity"]["tasks"]["rating"]["RMSE"].get<double>())
        << line;
  }

  // The dense model: every backbone parameter is in the adapted one bit for bit — whole, or as
  // the backbone's rows of a per-condition table (the user fusion's are task x domains +
  // domain, so backbone row t x D0 + d is row t x D + d; the item fusion's are the domain), or
  // as the leading columns of the gates (a one-condition backbone's gates gain their input).
  auto adapted = BestCheckpoint(dir / "adapted");
  ASSERT_TRUE(adapted.ok());
  auto before = ReadDenseParameters(*backbone + "/dense");
  auto after = ReadDenseParameters(*adapted + "/dense");
  ASSERT_TRUE(before.ok()) << before.status().message();
  ASSERT_TRUE(after.ok()) << after.status().message();
  auto backbone_rows = [&](const std::string& name) {
    std::vector<int64_t> rows;
    const bool user = name.rfind("user_", 0) == 0;  // user_fusion, user_seq_adapter
    for (int64_t k = 0; k < (user ? T : 1); ++k)
      for (int64_t d = 0; d < D0; ++d) rows.push_back(k * D + d);
    return rows;
  };
  int64_t moving = 0;
  bool adapters_moved = false;
  for (const auto& [name, n] : *after) {
    const int64_t conditions = name.rfind("user_", 0) == 0 ? T * D : D;
    auto it = before->find(name);
    if (it == before->end()) {
      // Per-condition tensors the backbone lacked: the new domain's rows train.
      ASSERT_EQ(n.shape[0], conditions) << name << " is not in the backbone";
      const size_t row = n.values.size() / size_t(conditions);
      moving += int64_t(row) * (conditions - int64_t(backbone_rows(name).size()));
      if (name.find("adapter_up") != std::string::npos)
        for (size_t k = n.values.size() - row; k < n.values.size(); ++k)
          adapters_moved |= n.values[k] != 0.0f;
      continue;
    }
    const DenseTensor& o = it->second;
    if (o.shape == n.shape) {
      EXPECT_EQ(o.values, n.values) << name << " changed in the frozen backbone";
    } else if (n.shape.size() == 2 && o.shape[0] == n.shape[0]) {
      ASSERT_EQ(D0 * T, 1) << name;
      for (int64_t r = 0; r < n.shape[0]; ++r)
        EXPECT_TRUE(std::equal(o.values.begin() + r * o.shape[1],
                               o.values.begin() + (r + 1) * o.shape[1],
                               n.values.begin() + r * n.shape[1]))
            << name << " row " << r << " changed in the frozen backbone";
      moving += (n.shape[1] - o.shape[1]) * n.shape[0];
    } else {
      const auto rows = backbone_rows(name);
      ASSERT_EQ(o.shape[0], int64_t(rows.size())) << name;
      ASSERT_EQ(n.shape[0], conditions) << name;
      const size_t row = o.values.size() / rows.size();
      for (size_t r = 0; r < rows.size(); ++r)
        EXPECT_TRUE(std::equal(o.values.begin() + r * row, o.values.begin() + (r + 1) * row,
                               n.values.begin() + rows[r] * row))
            << name << " backbone row " << r << " changed in the frozen backbone";
      moving += int64_t(n.values.size() - o.values.size());
      if (name.find("adapter_up") != std::string::npos)
        for (size_t k = n.values.size() - row; k < n.values.size(); ++k)
          adapters_moved |= n.values[k] != 0.0f;
    }
  }
  EXPECT_TRUE(adapters_moved) << "the new domain's adapters trained";
  const json& model = out.workers[0].model;
  EXPECT_EQ(model["trained_dense_params"].get<int64_t>(), moving);
  EXPECT_LT(model["trained_dense_params"].get<int64_t>(), model["dense_params"].get<int64_t>() / 5);

  // The sparse rows of the backbone's users, items and tokens are the backbone's, bit for bit.
  auto base_data = LoadJobData(base, "");
  ASSERT_TRUE(base_data.ok());
  if (shared) {
    // Every one of books' tokens is a backbone row: the new domain adds no token.
    auto ad_data = LoadJobData(ad, "");
    ASSERT_TRUE(ad_data.ok());
    EXPECT_EQ((*ad_data)->num_tokens, (*base_data)->num_tokens);
    EXPECT_FALSE((*ad_data)->item_tokens[(*ad_data)->domains.back().item_begin].empty());
  }
  const uint64_t counts[] = {(*base_data)->num_users, (*base_data)->num_items,
                             (*base_data)->num_tokens};
  for (TableId table = 0; table < 3; ++table)
    EXPECT_EQ(CheckpointRows(ad, *backbone, table, counts[table]),
              CheckpointRows(ad, *adapted, table, counts[table]))
        << "table " << ad.tables[table].name;

  // Started from the adapted run without the tower adapters it trained, a job is refused,
  // naming what it would drop, rather than losing those rows silently.
  JobConfig again = ad;
  again.adapt.from = *adapted;
  again.model.tower_adapters = false;
  JobOutput refused = RunInProcess(again, 1, "", dir / "refused", OpenStores(again, *adapted));
  ASSERT_EQ(refused.status.size(), 1u);
  EXPECT_FALSE(refused.status[0].ok());
  EXPECT_NE(refused.status[0].message().find("_adapter.adapter_"), std::string::npos)
      << refused.status[0].message();
  EXPECT_NE(refused.status[0].message().find("which this model lacks"), std::string::npos)
      << refused.status[0].message();
}

INSTANTIATE_TEST_SUITE_P(Backbones, AdaptJob,
                         ::testing::Values(Backbone::kOneDomain, Backbone::kTwoDatasets,
                                           Backbone::kTwoDomainsTwoTasks,
                                           Backbone::kSharedVocabulary),
                         [](const ::testing::TestParamInfo<Backbone>& p) {
                           switch (p.param) {
                             case Backbone::kOneDomain:
                               return std::string("OneDomain");
                             case Backbone::kTwoDatasets:
                               return std::string("TwoDatasets");
                             case Backbone::kTwoDomainsTwoTasks:
                               return std::string("TwoDomainsTwoTasks");
                             case Backbone::kSharedVocabulary:
                               break;
                           }
                           return std::string("SharedVocabulary");
                         });

// train.domain_patience: a domain whose own validation NDCG@10 stops improving leaves the mix
// (the next epochs train the other domains' samples alone), and the job ends once every domain
// has. One worker: the run is deterministic, and a resume from the checkpoint after the first
// stop must end bit-identical (the stopped domains shape the replayed epochs' samples).
TEST(InProcessJob, ADomainThatStopsImprovingLeavesTheMix) {
  TempDir dir;
  SynthConfig a, b;
  // A large shop that peaks early and a small music domain that takes an epoch longer.
  a.users = 400, a.items = 100, a.clusters = 5, a.interactions_per_user = 30, a.tokens = 60;
  a.image_dim = 8, a.audio_dim = 4;
  b = a;
  b.users = 200, b.items = 300, b.interactions_per_user = 10;
  const int kEpochs = 8;
  JobConfig cfg = ShopAndMusicJob(dir.path(), a, b, 3, kEpochs);
  cfg.train.domain_patience = 1;
  cfg.train.staleness = 0;  // nothing depends on timing: the resume below is bit-identical
  cfg.checkpoint.keep = 100;
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 1, "", dir / "run", &run));
  const auto& [out, result, line] = run;
  auto ds = LoadJobData(cfg, "");
  ASSERT_TRUE(ds.ok());
  const std::map<std::string, uint32_t> index = {{"shop", 0}, {"music", 1}};
  std::map<std::string, uint64_t> samples;  // training samples per domain per epoch
  for (uint32_t u = 0; u < (*ds)->num_users; ++u)
    samples[(*ds)->UserDomain(u) == 0 ? "shop" : "music"] += (*ds)->train[u].size();
  // Each domain stops after the first epoch that does not beat its best so far.
  std::map<std::string, int> expected_until;
  for (const auto& [name, d] : index) {
    double best = -1;
    for (const auto& e : result["epochs"]) {
      const double v = e["valid"]["domains"][name]["NDCG@10"];
      if (v <= best) {
        expected_until[name] = e["epoch"];
        break;
      }
      best = v;
    }
  }
  ASSERT_FALSE(expected_until.empty())
      << "no domain stopped improving within " << kEpochs << " epochs of this small job: the "
      << "test no longer checks anything (give it more epochs)\n"
      << result["epochs"].dump();
  for (const auto& [name, d] : index) {
    const json& own = result["domains_at_own_best"][name];
    if (expected_until.count(name))
      EXPECT_EQ(own.value("trained_until", -1), expected_until[name]) << name << "\n" << line;
    else
      EXPECT_FALSE(own.contains("trained_until")) << name << " improved every epoch";
  }
  // The job ends after the last domain stops (or at train.epochs).
  int last = kEpochs;
  if (expected_until.size() == index.size())
    last = std::max(expected_until["shop"], expected_until["music"]);
  ASSERT_EQ(result["epochs"].size(), size_t(last)) << result["epochs"].dump();
  EXPECT_NE(line.find("trained until epoch " + std::to_string(expected_until.begin()->second)),
            std::string::npos)
      << line;
  // Every epoch trained exactly the samples of the domains still training in it.
  std::ifstream log(dir / "run/metrics.jsonl");
  std::string text;
  uint64_t steps_before = 0;
  for (int epoch = 1; std::getline(log, text); ++epoch) {
    const uint64_t steps = json::parse(text)["steps"];
    uint64_t n = 0;
    for (const auto& [name, s] : samples)
      if (!expected_until.count(name) || epoch <= expected_until[name]) n += s;
    EXPECT_EQ(steps - steps_before, (n + 127) / 128) << "epoch " << epoch;
    steps_before = steps;
  }
  // Resumed from the checkpoint written after the first stop: the same run to the last bit.
  const int first_stop =
      std::min_element(expected_until.begin(), expected_until.end(),
                       [](const auto& x, const auto& y) { return x.second < y.second; })
          ->second;
  ASSERT_LT(first_stop, last) << "both domains stopped at once: the test no longer sees one "
                              << "domain train alone (make their sizes differ more)";
  {
    std::string from;
    for (const auto& c : ValidCheckpoints(dir / "run"))
      if (ReadManifest(c)->at("epoch") == first_stop) from = c;
    ASSERT_FALSE(from.empty()) << "the checkpoint after epoch " << first_stop;
    JobOutput resumed = ResumeACopy(cfg, dir.path(), "again", from);
    ASSERT_TRUE(resumed.status[0].ok()) << resumed.status[0].message();
    EXPECT_EQ(resumed.workers[0].steps, out.workers[0].steps);
    EXPECT_EQ(resumed.workers[0].final_fingerprint, out.workers[0].final_fingerprint);
    EXPECT_EQ(resumed.workers[0].domain_trained_until, out.workers[0].domain_trained_until);
  }
  // A single-domain job has no domain's own metric to stop on: a clear error.
  const std::string why =
      OneDomainRefusal(dir.path(), [](JobConfig* c) { c->train.domain_patience = 1; });
  EXPECT_NE(why.find("train.domain_patience"), std::string::npos) << why;
}

// train.backbone_epochs: after them only each domain's own part trains. Every shared dense
// parameter stays bit for bit what the backbone's epochs left, each domain's condition rows and
// adapters keep moving (and so do its sparse rows), and a resume from before the freeze, or from
// the middle of a frozen epoch, ends bit-identical.
TEST(InProcessJob, AFrozenBackboneTrainsOnlyEachDomainsOwnPart) {
  TempDir dir;
  SynthConfig a, b;
  a.users = 300, a.items = 120, a.clusters = 5, a.interactions_per_user = 20, a.tokens = 60;
  a.image_dim = 8, a.audio_dim = 4;
  b = a;
  b.users = 200, b.items = 150;
  JobConfig cfg = ShopAndMusicJob(dir.path(), a, b, 5, 3);
  cfg.train.backbone_epochs = 1;
  cfg.model.adapter_rank = 4;
  cfg.model.tower_adapters = true;
  cfg.train.staleness = 0;  // nothing depends on timing: the resumes below are bit-identical
  cfg.checkpoint.keep = 100;
  cfg.checkpoint.every_steps = 25;
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 1, "", dir / "run", &run));
  const auto& [out, result, line] = run;
  ASSERT_EQ(result["epochs"].size(), 3u) << line;
  std::string end_of_1, end_of_3, inside_2;
  for (const auto& c : ValidCheckpoints(dir / "run")) {
    const json m = *ReadManifest(c);
    if (m["next_step"] == 0 && m["epoch"] == 1) end_of_1 = c;
    if (m["next_step"] == 0 && m["epoch"] == 3) end_of_3 = c;
    if (m["next_step"].get<size_t>() > 0 && m["epoch"] == 2 && inside_2.empty()) inside_2 = c;
  }
  ASSERT_FALSE(end_of_1.empty() || end_of_3.empty() || inside_2.empty())
      << "checkpoints after epochs 1 and 3 and inside epoch 2";
  auto before = ReadDenseParameters(end_of_1 + "/dense");
  auto after = ReadDenseParameters(end_of_3 + "/dense");
  ASSERT_TRUE(before.ok()) << before.status().message();
  ASSERT_TRUE(after.ok()) << after.status().message();
  int64_t own = 0, shared = 0;
  bool adapters_moved = false, film_moved = false;
  for (const auto& [name, n] : *after) {
    const DenseTensor& o = before->at(name);
    ASSERT_EQ(o.shape, n.shape) << name;
    if (!OwnParameter(name)) {
      EXPECT_EQ(o.values, n.values) << name << " is shared and changed after the freeze";
      shared += int64_t(n.values.size());
      continue;
    }
    own += int64_t(n.values.size());
    const bool moved = o.values != n.values;
    if (name.find("adapter_up") != std::string::npos) adapters_moved |= moved;
    if (name.find("film") != std::string::npos) film_moved |= moved;
  }
  EXPECT_TRUE(adapters_moved) << "the domains' adapters trained after the freeze";
  EXPECT_TRUE(film_moved) << "the domains' FiLM heads trained after the freeze";
  const json& model = out.workers[0].model;
  EXPECT_EQ(model["trained_dense_params_after_backbone"].get<int64_t>(), own) << model.dump();
  EXPECT_EQ(model["dense_params"].get<int64_t>(), own + shared);
  EXPECT_LT(own, shared / 2) << "each domain's own part is the smaller one";
  // The sparse rows still train after the freeze.
  auto ds = LoadJobData(cfg, "");
  ASSERT_TRUE(ds.ok());
  EXPECT_NE(CheckpointRows(cfg, end_of_1, 1, (*ds)->num_items),
            CheckpointRows(cfg, end_of_3, 1, (*ds)->num_items));

  // Resumed from the end of epoch 1 (the freeze still ahead) and from inside epoch 2 (after it:
  // its optimizer holds the domains' parameters only): the same run to the last bit.
  for (const std::string& from : {end_of_1, inside_2}) {
    JobOutput resumed = ResumeACopy(
        cfg, dir.path(), "again-" + std::filesystem::path(from).filename().string(), from);
    ASSERT_TRUE(resumed.status[0].ok()) << resumed.status[0].message();
    EXPECT_EQ(resumed.workers[0].steps, out.workers[0].steps) << from;
    EXPECT_EQ(resumed.workers[0].final_fingerprint, out.workers[0].final_fingerprint) << from;
  }

  // A job with one domain and one task has nothing of its own to train: a clear error.
  const std::string why =
      OneDomainRefusal(dir.path(), [](JobConfig* c) { c->train.backbone_epochs = 1; });
  EXPECT_NE(why.find("train.backbone_epochs"), std::string::npos) << why;
}

// A new task on a trained retrieval backbone: only the rating task's condition rows, adapters
// and head train; every backbone parameter and every sparse row stays bit-identical; the new
// task beats its baseline.
TEST(AdaptJob, ANewTaskTrainsOnlyItsHeadAndConditionRows) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 300, 160, 30, 8);
  auto parsed = ParseConfig(TasteJob("adapt-task", 4, dir / "ml") +
                                R"(model: {seq_len: 8, fanout: 4, hidden: 16, content_tokens: 8}
train: {job: m6, epochs: 2, batch_size: 128, negatives: 32, loss: softmax, temperature: 0.2}
)",
                            "adapt-task");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  const JobConfig base = *parsed;
  JobOutput bb = RunInProcess(base, 2, "", dir / "backbone");
  for (const auto& s : bb.status) ASSERT_TRUE(s.ok()) << s.message();
  auto backbone = BestCheckpoint(dir / "backbone");
  ASSERT_TRUE(backbone.ok()) << backbone.status().message();

  JobConfig ad = base;
  ad.train.tasks = {TaskSpec{}, {"rating", TaskKind::kRating, 1, 4, ""}};
  ad.train.tasks[0].weight = 0;
  ad.train.epochs = 3;
  ad.adapt.from = *backbone;
  ad.adapt.frozen_domains = 0;
  ad.adapt.frozen_tasks = 1;
  ad.model.adapter_rank = 4;
  auto stores = OpenStores(ad, *backbone);
  ASSERT_TRUE(stores);
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(ad, 2, "", dir / "adapted", &run, stores));
  const auto& [out, result, line] = run;
  const json& rating = result["test"]["tasks"]["rating"];
  EXPECT_LT(rating["RMSE"].get<double>(),
            0.9 * result["popularity"]["tasks"]["rating"]["RMSE"].get<double>())
      << line;

  // Dense: the backbone's parameters whole, or as the leading rows / columns of what grew.
  auto adapted = BestCheckpoint(dir / "adapted");
  ASSERT_TRUE(adapted.ok());
  auto before = ReadDenseParameters(*backbone + "/dense");
  auto after = ReadDenseParameters(*adapted + "/dense");
  ASSERT_TRUE(before.ok() && after.ok());
  int64_t moving = 0;
  for (const auto& [name, n] : *after) {
    auto it = before->find(name);
    if (it == before->end()) {
      // New: the rating task's head (whole), and the per-condition tables the one-condition
      // backbone lacked (the new task's row of two).
      const bool head = name.rfind("head1.", 0) == 0;
      moving += head ? int64_t(n.values.size()) : int64_t(n.values.size() / 2);
      if (!head) {
        EXPECT_EQ(n.shape[0], 2) << name;
      }
      continue;
    }
    const DenseTensor& o = it->second;
    if (o.shape == n.shape) {
      EXPECT_EQ(o.values, n.values) << name << " changed in the frozen backbone";
    } else {
      // The user gates gain their condition input: the backbone's columns, then new ones.
      ASSERT_EQ(n.shape.size(), 2u) << name;
      for (int64_t r = 0; r < n.shape[0]; ++r)
        EXPECT_TRUE(std::equal(o.values.begin() + r * o.shape[1],
                               o.values.begin() + (r + 1) * o.shape[1],
                               n.values.begin() + r * n.shape[1]))
            << name << " row " << r << " changed in the frozen backbone";
      moving += (n.shape[1] - o.shape[1]) * n.shape[0];
    }
  }
  const json& model = out.workers[0].model;
  EXPECT_EQ(model["trained_dense_params"].get<int64_t>(), moving);
  EXPECT_LT(model["trained_dense_params"].get<int64_t>(), model["dense_params"].get<int64_t>() / 5);
  // Sparse: every row is the backbone's and none moved.
  auto data = LoadJobData(base, "");
  ASSERT_TRUE(data.ok());
  const uint64_t counts[] = {(*data)->num_users, (*data)->num_items, (*data)->num_tokens};
  for (TableId table = 0; table < 3; ++table)
    EXPECT_EQ(CheckpointRows(ad, *backbone, table, counts[table]),
              CheckpointRows(ad, *adapted, table, counts[table]))
        << "table " << ad.tables[table].name;
}

TEST(InProcessJob, EvaluatingTheBestCheckpointReproducesTheResult) {
  TempDir dir;
  const JobConfig cfg = SmallJob(JobKind::kM6, 2);
  ASSERT_TRUE(WriteSynthetic(cfg.data.synth, cfg.seed, dir / "data").ok());
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, dir / "data", dir / "run", &run));
  const auto& [out, result, line] = run;
  BestModel m(cfg, dir / "run", *LoadJobData(cfg, dir / "data"), 2);
  ASSERT_TRUE(m.status.ok()) << m.status.message();
  auto ev = EvaluateModel(m.sc);
  ASSERT_TRUE(ev.ok()) << ev.status().message();
  EXPECT_EQ((*ev)["test"], result["test"])
      << "eval " << (*ev)["test"].dump() << "\nresult " << result["test"].dump();
  // The popularity calibration too: chosen on every shard's validation scores as the ranks chose
  // it, and the uncalibrated ranks reported beside.
  ASSERT_TRUE(result.contains("calibration")) << result.dump();
  EXPECT_EQ((*ev)["calibration"], result["calibration"]);
  EXPECT_TRUE(result["test"].contains("HR@10_uncalibrated"));
}

// A blend weight in result.json's `wide_weights` ({"weight": w, by_weight: {"<w>": metric}}):
// every weight of the grid has its validation metric, and the chosen one's is the best (sign 1:
// higher is better, -1: lower).
void ExpectChosenWeightIsBest(const json& entry, const char* by_weight, size_t weights,
                              double sign) {
  ASSERT_EQ(entry[by_weight].size(), weights) << entry.dump();
  char chosen[16];
  std::snprintf(chosen, sizeof(chosen), "%g", entry.value("weight", -1.0));
  ASSERT_TRUE(entry[by_weight].contains(chosen)) << entry.dump();
  for (const auto& [w, v] : entry[by_weight].items())
    EXPECT_LE(sign * v.get<double>(), sign * entry[by_weight][chosen].get<double>()) << w;
}

// Retrieval, rating, like and gender prediction on one backbone, on MovieLens-style data where
// gender decides the genre a user watches and rates high: every task beats its baseline by a
// set margin, every task is reported, and `m6rec eval` of the best checkpoint reproduces them.
TEST(InProcessJob, TasksTrainOnOneBackboneAndBeatTheirBaselines) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 400, 200, 30, 5);
  // With the attributes' wide part (a table of a column per gender, model.wide_table) and the
  // graphs' rating-valued messages on both sides (model.rating_messages with item_graph: eval
  // must read the same ratings).
  std::string job = TasteJob("tasks-test", 3, dir / "ml");
  job.insert(job.find("data:"),
             "  - {name: wide, dim: 2, init: {type: zeros}, optimizer: "
             "{type: adagrad, lr: 0.1}}\n");
  auto parsed = ParseConfig(
      job +
          R"(model: {seq_len: 8, fanout: 4, hidden: 16, content_tokens: 8, dense_lr: 0.005,
        wide_table: wide, rating_messages: true, item_graph: true}
train:
  job: m6
  epochs: 4
  batch_size: 128
  negatives: 32
  loss: softmax
  temperature: 0.2
  log_every: 1000
  tasks:
    - {type: retrieval}
    - {type: rating}
    - {type: like}
    - {type: attribute, attribute: gender, weight: 4}
)",
      "tasks-test");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  const JobConfig& cfg = *parsed;
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, "", dir / "run", &run));
  const auto& [out, result, line] = run;
  const json& t = result["test"];
  const json& base = result["popularity"];
  ASSERT_TRUE(t.contains("tasks")) << t.dump();
  // Items are uniform within a genre: ranking can only find the genre (HR@10 <= ~0.2).
  EXPECT_GT(t["HR@10"].get<double>(), base["HR@10"].get<double>() + 0.02) << line;
  // Leave-last-out: one rated test pair per user; the test users of gender are ~10% of 400.
  EXPECT_EQ(t["tasks"]["rating"]["examples"], 400);
  EXPECT_LT(t["tasks"]["rating"]["RMSE"].get<double>(),
            0.8 * base["tasks"]["rating"]["RMSE"].get<double>())
      << line;
  // The deep model on its own as well (the neighbourhood part, model.rating_neighbours, blends
  // in at a weight chosen on the validation ratings, which is reported with each weight's RMSE).
  EXPECT_LT(t["tasks"]["rating"]["RMSE_deep"].get<double>(),
            0.8 * base["tasks"]["rating"]["RMSE"].get<double>())
      << line;
  ASSERT_TRUE(result.contains("wide_weights") && result["wide_weights"].contains("rating"))
      << result.dump();
  ASSERT_NO_FATAL_FAILURE(ExpectChosenWeightIsBest(result["wide_weights"]["rating"], "valid_RMSE",
                                                   kNumNeighbourWeights, -1));
  EXPECT_NE(line.find("neighbourhood weighted"), std::string::npos) << line;
  // The like task's blend with the neighbourhood, likewise chosen (on validation AUC).
  ASSERT_TRUE(result["wide_weights"].contains("like")) << result.dump();
  EXPECT_EQ(result["wide_weights"]["like"]["valid_AUC"].size(), kNumNeighbourWeights);
  EXPECT_GT(t["tasks"]["like"]["AUC_deep"].get<double>(), 0.75) << line;
  EXPECT_GT(t["tasks"]["like"]["AUC"].get<double>(), 0.75) << line;
  EXPECT_GT(t["tasks"]["like"]["F1"].get<double>(), 0.7) << line;
  EXPECT_TRUE(result["thresholds"]["tasks"].contains("like")) << result.dump();
  // The wide part's weight, chosen on validation (and read again by eval, below).
  ASSERT_TRUE(result.contains("wide_weights")) << result.dump();
  const json& ww = result["wide_weights"]["gender"];
  EXPECT_GE(ww.value("weight", -1.0), 0.0) << result.dump();
  ASSERT_NO_FATAL_FAILURE(ExpectChosenWeightIsBest(ww, "valid_accuracy", kNumWideWeights, 1));
  const json& g = t["tasks"]["gender"];
  EXPECT_GT(g["examples"].get<int>(), 20);
  EXPECT_GT(g["accuracy"].get<double>(), base["tasks"]["gender"]["accuracy"].get<double>() + 0.2)
      << line;
  EXPECT_GT(g["macro_F1"].get<double>(), 0.7) << line;
  for (const char* name : {"rating", "like", "gender"})
    EXPECT_NE(line.find(std::string("\n  task ") + name + ":"), std::string::npos) << line;
  // Each task also at the epoch its own validation metric peaks: that epoch's test numbers.
  const json& own = result["tasks_at_own_best"];
  for (const auto& [name, metric, sign] :
       {std::tuple{"rating", "RMSE", -1.0}, {"like", "AUC", 1.0}, {"gender", "accuracy", 1.0}}) {
    ASSERT_TRUE(own.contains(name)) << result.dump();
    const int at = own[name]["epoch"].get<int>();
    double best = -1e9;
    for (const json& e : result["epochs"])
      best = std::max(best, sign * e["valid"]["tasks"][name][metric].get<double>());
    for (const json& e : result["epochs"])
      if (e["epoch"] == at) {
        EXPECT_EQ(sign * e["valid"]["tasks"][name][metric].get<double>(), best) << name;
        EXPECT_EQ(own[name]["test"], e["test"]["tasks"][name]) << name;
      }
  }
  // The kept epoch is chosen on every trained task's validation metric (train.select_by:
  // auto): the rule replayed on the epochs' validation numbers picks it too.
  auto data = LoadJobData(cfg, "");
  ASSERT_TRUE(data.ok()) << data.status().message();
  EXPECT_EQ(result["selected_by"].get<std::string>().rfind("mean share of best lift", 0), 0u)
      << result["selected_by"];
  EpochSelector replay(
      SelectionFor(**data, result["negatives"].get<int>(), cfg.train.tasks, "auto", cfg.seed));
  ASSERT_EQ(replay.rule().terms.size(), 4u);
  for (const json& e : result["epochs"]) {
    const json& v = e["valid"];
    replay.OfferValues(
        e["epoch"].get<int>(),
        {v["NDCG@10"].get<double>(), -v["tasks"]["rating"]["RMSE"].get<double>(),
         v["tasks"]["like"]["AUC"].get<double>(), v["tasks"]["gender"]["accuracy"].get<double>()});
  }
  EXPECT_EQ(replay.selected_epoch(), result["best_epoch"].get<int>()) << result["epochs"].dump();
  BestModel m(cfg, dir / "run", *data, 2);
  ASSERT_TRUE(m.status.ok()) << m.status.message();
  auto ev = EvaluateModel(m.sc);
  ASSERT_TRUE(ev.ok()) << ev.status().message();
  EXPECT_EQ((*ev)["test"], t) << "eval " << (*ev)["test"].dump() << "\nresult " << t.dump();
}

// The synthetic open-domain data with three real domains (each user lives in one) and the
// quick start's four tasks: every domain and every task beats its baseline by a set margin, and
// every task is reported per domain too.
TEST(InProcessJob, SyntheticDomainsAndTasksTrainOnOneBackbone) {
  TempDir dir;
  JobConfig cfg = SmallJob(JobKind::kM6, 3);
  cfg.data.synth.domains = 3;
  cfg.data.synth.users = 900;
  cfg.train.tasks = {TaskSpec{},
                     {"rating", TaskKind::kRating, 0.5f, 4, ""},
                     {"like", TaskKind::kLike, 0.5f, 4, ""},
                     {"segment", TaskKind::kAttribute, 10, 4, "segment"}};
  ASSERT_TRUE(WriteSynthetic(cfg.data.synth, cfg.seed, dir / "data").ok());
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, dir / "data", dir / "run", &run));
  const auto& [out, result, line] = run;
  const json& t = result["test"];
  const json& base = result["popularity"];
  ASSERT_EQ(t["domains"].size(), 3u) << t.dump();
  for (const char* d : {"shopping", "video", "music"}) {
    EXPECT_EQ(t["domains"][d]["users"], 300) << d;
    EXPECT_GT(t["domains"][d]["HR@10"].get<double>(),
              base["domains"][d]["HR@10"].get<double>() + 0.1)
        << d << ": " << line;
    for (const char* task : {"rating", "like", "segment"})
      EXPECT_TRUE(t["tasks"][task]["domains"].contains(d)) << task << " in " << d;
  }
  EXPECT_LT(t["tasks"]["rating"]["RMSE"].get<double>(),
            0.95 * base["tasks"]["rating"]["RMSE"].get<double>())
      << line;
  EXPECT_GT(t["tasks"]["like"]["AUC"].get<double>(), 0.55) << line;
  // ~95 test users: one standard error of an accuracy is ~0.05.
  EXPECT_GT(t["tasks"]["segment"]["accuracy"].get<double>(),
            base["tasks"]["segment"]["accuracy"].get<double>() + 0.2)
      << line;
}

// Item cold start on the synthetic data, whose item tokens and vectors carry the item's
// interest cluster: a fifth of the items lose every training interaction, the model trains with
// half of the items' id rows left out (model.item_id_dropout), and the users whose target is a
// cold item rank it from its content alone: above random (10 of 100 candidates; 0.28 measured)
// and above popularity, which cannot rank an item without interactions.
TEST(InProcessJob, ColdItemsAreRankedFromTheirContent) {
  TempDir dir;
  JobConfig cfg = SmallJob(JobKind::kM6, 4);
  cfg.data.synth.tokens_per_item = 16, cfg.data.synth.image_dim = 16;
  cfg.data.cold_items = 0.2f;
  cfg.model.item_id_dropout = 0.5f;
  ASSERT_TRUE(WriteSynthetic(cfg.data.synth, cfg.seed, dir / "data").ok());
  Merged run;
  ASSERT_NO_FATAL_FAILURE(RunAndMerge(cfg, 2, dir / "data", dir / "run", &run));
  const auto& [out, result, line] = run;
  const json& cold = result["test"]["cold_start"]["cold_items"];
  const json& warm = result["test"]["cold_start"]["warm_items"];
  ASSERT_GT(cold["users"].get<double>(), 50) << line;
  EXPECT_EQ(cold["users"].get<double>() + warm["users"].get<double>(),
            result["test"]["users"].get<double>());
  // ~190 cold users: one standard error of an HR@10 near 0.28 is ~0.03.
  const double random = 10.0 / (1 + result["negatives"].get<double>());
  EXPECT_GT(cold["HR@10"].get<double>(), 1.5 * random) << line;
  EXPECT_GT(cold["HR@10"].get<double>(),
            result["popularity"]["cold_start"]["cold_items"]["HR@10"].get<double>() + 0.1)
      << line;
  EXPECT_NE(line.find("cold_items: HR@10"), std::string::npos) << line;
  // Against all items too: popularity cannot place a cold item in any top 10, the content path
  // does (for ~190 cold users at HR@10 0.03..0.07 all-items, no hit at all has p < 0.3%; the
  // cold items' all-items HR@10 is near random here: their id-less scores run below the warm
  // items' (docs/results.md measures the same gap on Beauty)).
  EXPECT_GT(cold["HR@10_all"].get<double>(), 0) << line;
  EXPECT_EQ(result["popularity"]["cold_start"]["cold_items"]["HR@10_all"].get<double>(), 0) << line;
  EXPECT_GT(warm["NDCG@10_all"].get<double>(), 0) << line;
  EXPECT_NE(line.find("among all items HR@10"), std::string::npos) << line;
  // Serving a user of the split: what it lost to the split is not recommended back.
  auto data = LoadJobData(cfg, dir / "data");
  ASSERT_TRUE(data.ok());
  BestModel m(cfg, dir / "run", *data, 2);
  ASSERT_TRUE(m.status.ok()) << m.status.message();
  uint32_t u = 0;
  while (u < (*data)->num_users && (*data)->held_out[u].empty()) ++u;
  ASSERT_LT(u, (*data)->num_users);
  auto rec = RecommendForUser(m.sc, u, 200);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  const auto& lost = (*data)->held_out[u];
  for (const auto& it : (*rec)["items"])
    EXPECT_EQ(std::count(lost.begin(), lost.end(), it["item"].get<uint32_t>()), 0) << it.dump();

  // An item given at serving time as content is scored as a never-trained item of the same
  // content: the twin of a cold item u could be shown scores what that item scores.
  const Dataset& ds = **data;
  uint32_t c = ds.first_item;
  auto touched = [&](uint32_t i) {
    return std::count(ds.train[u].begin(), ds.train[u].end(), i) ||
           std::count(lost.begin(), lost.end(), i) || int64_t(i) == ds.test_item[u] ||
           int64_t(i) == ds.valid_item[u];
  };
  while (c < ds.num_items && (!ds.IsCold(c) || touched(c))) ++c;
  ASSERT_LT(c, ds.num_items);
  json twin = {{"name", "twin"}, {"tokens", ds.item_tokens[c]}};
  twin["image"] = std::vector<float>(ds.item_image.begin() + long(c * ds.image_dim),
                                     ds.item_image.begin() + long((c + 1) * ds.image_dim));
  twin["audio"] = std::vector<float>(ds.item_audio.begin() + long(c * ds.audio_dim),
                                     ds.item_audio.begin() + long((c + 1) * ds.audio_dim));
  ScoringContext with_new = m.sc;
  ASSERT_TRUE(AddNewItems(&with_new, json::array({twin, {{"name", "blank"}}})).ok());
  ASSERT_EQ(with_new.data->num_items, ds.num_items + 2);
  auto all = RecommendForUser(with_new, u, int(ds.num_items) + 2);
  ASSERT_TRUE(all.ok()) << all.status().message();
  std::map<std::string, double> score;
  for (const auto& it : (*all)["items"]) {
    const std::string key =
        it.contains("new_item") ? it["new_item"].get<std::string>() : it["item"].dump();
    score[key] = it["score"].get<double>();
  }
  ASSERT_TRUE(score.count("twin") && score.count("blank") && score.count(std::to_string(c)))
      << all->dump();
  EXPECT_NEAR(score["twin"], score[std::to_string(c)], 1e-4);
  EXPECT_EQ((*all)["items"][0].value("new_item", ""), "") << "a blank item leads nothing";
  auto bad = AddNewItems(&with_new, json::array({{{"name", "x"}, {"image", {1, 2}}}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("image: " + std::to_string(ds.image_dim) + " numbers"),
            std::string::npos)
      << bad.message();
  auto unknown = AddNewItems(&with_new, json::array({{{"name", "x"}, {"tokens", {"zzz"}}}}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.message().find("token \"zzz\" is not one of the run's tokens"),
            std::string::npos)
      << unknown.message();
}

// Kill-and-resume at the level of the engine: a run that stops after a mid-epoch checkpoint and
// is resumed from it ends with the same dense bits, metrics and rows as one that never stopped
// (one rank, staleness 0: nothing depends on timing).
TEST(InProcessJob, ResumingFromAMidEpochCheckpointIsBitIdentical) {
  TempDir dir;
  JobConfig cfg = SmallJob(JobKind::kM6, 3);
  cfg.train.staleness = 0;
  cfg.checkpoint.every_steps = 5;
  cfg.checkpoint.keep = 100;
  ASSERT_TRUE(WriteSynthetic(cfg.data.synth, cfg.seed, dir / "data").ok());
  JobOutput full = RunInProcess(cfg, 1, dir / "data", dir / "full");
  ASSERT_TRUE(full.status[0].ok()) << full.status[0].message();

  // The interrupted run: the same job stopped by max_steps in the middle of epoch 2, after a
  // step checkpoint.
  JobConfig cut = cfg;
  const uint64_t steps_per_epoch = full.workers[0].steps / 3;
  ASSERT_GT(steps_per_epoch, 10u);
  cut.train.max_steps = int(steps_per_epoch + 7);
  JobOutput first = RunInProcess(cut, 1, dir / "data", dir / "cut");
  ASSERT_TRUE(first.status[0].ok()) << first.status[0].message();
  // Resume from the newest checkpoint at or before the stop (step 15 of epoch 2 or earlier).
  std::string from;
  for (const auto& c : ValidCheckpoints(dir / "cut"))
    if (ReadManifest(c)->at("step").get<uint64_t>() <= steps_per_epoch + 7 &&
        ReadManifest(c)->at("next_step") != 0)
      from = c;
  ASSERT_FALSE(from.empty()) << "a mid-epoch checkpoint of the interrupted run";
  auto stores = OpenStores(cfg, from);
  ASSERT_TRUE(stores);
  std::filesystem::remove(dir / "cut/metrics.jsonl");
  JobOutput resumed = RunInProcess(cfg, 1, dir / "data", dir / "cut", stores, from);
  ASSERT_TRUE(resumed.status[0].ok()) << resumed.status[0].message();

  const WorkerSummary& a = full.workers[0];
  const WorkerSummary& b = resumed.workers[0];
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.final_fingerprint, b.final_fingerprint) << "the dense model ends bit-identical";
  EXPECT_EQ(a.param_fingerprints, b.param_fingerprints);
  ASSERT_EQ(a.epochs.size(), b.epochs.size());
  for (size_t e = 0; e < a.epochs.size(); ++e) {
    EXPECT_EQ(a.epochs[e].loss, b.epochs[e].loss) << "epoch " << e + 1;
    EXPECT_EQ(a.epochs[e].test.sums(), b.epochs[e].test.sums()) << "epoch " << e + 1;
  }
  // metrics.jsonl was rebuilt from the checkpoint and continued: one line per epoch.
  auto log = ReadFileToString(dir / "cut/metrics.jsonl");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(std::count(log->begin(), log->end(), '\n'), 3);
}

}  // namespace
}  // namespace m6rec

// ---- streaming (cfg.stream) -----------------------------------------------------------------

namespace m6rec {
namespace {

// A taste dataset (WriteTasteMovieLens: timestamps by position, so the held-back half is every
// user's later half) streamed back by a replay source.
JobConfig StreamJob(const std::string& data_dir, const std::string& stream) {
  auto cfg = ParseConfig(TasteJob("stream-test", 5, data_dir) + R"(
model: {seq_len: 8, fanout: 4, hidden: 16}
train: {job: m6, epochs: 2, batch_size: 64, negatives: 32, loss: softmax, temperature: 0.2,
        log_every: 100000, staleness: 0}
checkpoint: {every_epochs: 0, best: false, keep: 100}
)" + stream,
                         "stream-test", {"data.stream_split=0.5"});
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
  return cfg.ok() ? *cfg : JobConfig{};
}

TEST(StreamJob, EveryEventIsScoredThenTrainedAndReplicasStayEqual) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 120, 60, 20, 3);
  const JobConfig cfg =
      StreamJob(dir / "ml", "stream: {source: replay, chunk: 150, negatives: 20}\n");
  JobOutput out = RunInProcess(cfg, 2, "", dir / "run");
  for (const auto& s : out.status) ASSERT_TRUE(s.ok()) << s.message();
  const json& st = out.workers[0].stream;
  ASSERT_FALSE(st.empty()) << "a stream job reports its stream";
  EXPECT_EQ(st["events"], 1200) << "half of 120 users x 20 ratings";
  EXPECT_EQ(st["chunks"].size(), 8u) << "1200 events in chunks of 150";
  EXPECT_EQ(st["scored"].get<double>(), 1200) << "every event is scored once, by one rank";
  // Random ranking among 21 would hit the top 10 about half of the time; the users' genre is
  // learnable from their first half and from the stream.
  EXPECT_GT(st["HR@10"].get<double>(), 0.6) << st.dump();
  auto global = [](json s) {  // without the timings, which are each rank's own
    s.erase("trained_ms");
    for (auto& c : s["chunks"]) c.erase("ms");
    return s;
  };
  EXPECT_EQ(global(out.workers[0].stream), global(out.workers[1].stream))
      << "the curve is global on every rank";
  EXPECT_EQ(out.workers[0].final_fingerprint, out.workers[1].final_fingerprint)
      << "the dense replicas stay bit-identical through the stream";
  EXPECT_GT(out.workers[0].steps, 0u);
  std::string line;
  auto merged = MergeRunResult(out.workers, 0, &line);
  ASSERT_TRUE(merged.ok()) << merged.status().message();
  EXPECT_NE(line.find("stream: 1200 events in 8 chunks"), std::string::npos) << line;
  auto log = ReadFileToString(dir / "run/metrics.jsonl");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(std::count(log->begin(), log->end(), '\n'), 8) << "one metrics line per chunk";
}

TEST(StreamJob, AFrozenModelIsScoredButNeverTrainsOnTheStream) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 60, 40, 10, 4);
  JobConfig cfg = StreamJob(dir / "ml", "stream: {source: replay, chunk: 100, update: false}\n");
  JobOutput out = RunInProcess(cfg, 1, "", "");
  ASSERT_TRUE(out.status[0].ok()) << out.status[0].message();
  const WorkerSummary& w = out.workers[0];
  EXPECT_EQ(w.stream["events"], 300);
  for (const auto& c : w.stream["chunks"]) EXPECT_EQ(c["steps"], 0) << c.dump();
  // Periodic retraining empties the tables: a cluster's workers cannot, and say so.
  cfg.stream.retrain_every_s = 1;
  out = RunInProcess(cfg, 1, "", "");
  EXPECT_EQ(out.status[0].code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status[0].message().find("in-process"), std::string::npos)
      << out.status[0].message();
}

// Files arriving in a directory: new users and items grow the dataset; the last snapshot holds
// every event the stream delivered (what a resumed job and a served model read back).
TEST(StreamJob, ADirectoryStreamGrowsTheDataAndSnapshotsItsEvents) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 40, 30, 10, 5);
  std::filesystem::create_directories(dir / "in");
  std::string a, b;
  for (int u = 1; u <= 40; ++u) a += std::to_string(u) + "\t" + std::to_string(1 + u % 30) + "\n";
  for (int k = 0; k < 5; ++k)
    b += "41\t" + std::to_string(31 + k) + "\t" + std::to_string(k) + "\n";
  testing::WriteFile(dir / "in/0001.tsv", a);
  testing::WriteFile(dir / "in/0002.tsv", b);
  auto parsed = ParseConfig(TasteJob("dir-stream", 5, dir / "ml") + R"(
model: {seq_len: 8, fanout: 4, hidden: 16}
train: {job: m6, epochs: 1, batch_size: 32, negatives: 16, loss: softmax, log_every: 100000}
checkpoint: {every_epochs: 0, best: false}
stream: {source: directory, path: )" +
                                (dir / "in") + R"(, chunk: 20, wait_ms: 0,
         idle_stop_ms: 300, snapshot_every: 100}
)",
                            "dir-stream");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  JobOutput out = RunInProcess(*parsed, 2, "", dir / "run");
  for (const auto& s : out.status) ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(out.workers[0].stream["events"], 45);
  auto latest = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  auto ev = ReadStreamEvents(*latest);
  ASSERT_TRUE(ev.ok()) << ev.status().message();
  ASSERT_EQ(ev->size(), 45u);
  EXPECT_EQ(ev->back().user, 41u);
  EXPECT_EQ(ev->back().item, 35u);
  const json manifest = *ReadManifest(*latest);
  EXPECT_EQ(manifest["stream"]["position"]["file"], "0002.tsv") << manifest.dump();
  // The data as a served model reads it back: user 41 and items 31..35 exist now.
  auto data = LoadJobData(*parsed, "");
  ASSERT_TRUE(data.ok());
  Dataset grown = **data;
  AppendInteractions(&grown, ev->data(), ev->size());
  EXPECT_EQ(grown.num_users, 42u);
  EXPECT_EQ(grown.num_items, 36u);
  EXPECT_EQ(grown.train[41].size(), 5u);
  EXPECT_EQ(grown.item_popularity[35], 1u);
}

TEST(StreamJob, ResumingFromASnapshotContinuesTheStreamBitIdentical) {
  TempDir dir;
  testing::WriteTasteMovieLens(dir / "ml", 60, 40, 12, 6);
  const JobConfig cfg = StreamJob(dir / "ml",
                                  "stream: {source: replay, chunk: 60, snapshot_every: 2, "
                                  "negatives: 20, online_strategy: true}\n");
  JobOutput full = RunInProcess(cfg, 1, "", dir / "full");
  ASSERT_TRUE(full.status[0].ok()) << full.status[0].message();
  // The interrupted run stops after 3 of the 6 chunks (its last snapshot is at chunk 3).
  JobConfig cut = cfg;
  cut.stream.max_chunks = 3;
  JobOutput first = RunInProcess(cut, 1, "", dir / "cut");
  ASSERT_TRUE(first.status[0].ok()) << first.status[0].message();
  std::string from;
  for (const auto& c : ValidCheckpoints(dir / "cut"))
    if (ReadManifest(c)->at("stream").at("chunks") == 2) from = c;
  ASSERT_FALSE(from.empty()) << "the snapshot after chunk 2";
  auto stores = OpenStores(cfg, from);
  ASSERT_TRUE(stores);
  JobOutput resumed = RunInProcess(cfg, 1, "", dir / "cut", stores, from);
  ASSERT_TRUE(resumed.status[0].ok()) << resumed.status[0].message();
  const WorkerSummary& a = full.workers[0];
  const WorkerSummary& b = resumed.workers[0];
  EXPECT_EQ(a.stream["events"], 360);
  EXPECT_EQ(a.stream["strategy"], b.stream["strategy"]) << "the online strategy resumes too";
  EXPECT_TRUE(a.stream.contains("HR@10_online")) << a.stream.dump();
  // The strategies the stream chose are the run's strategy.json (what serving reads).
  auto book = ReadStrategyBook(dir / "cut");
  ASSERT_TRUE(book.ok()) << book.status().message();
  EXPECT_EQ(book->ToJson()["intents"], b.stream["strategy"]["intents"]);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.final_fingerprint, b.final_fingerprint) << "the dense model ends bit-identical";
  ASSERT_EQ(a.stream["chunks"].size(), b.stream["chunks"].size());
  for (size_t c = 0; c < a.stream["chunks"].size(); ++c) {
    json x = a.stream["chunks"][c], y = b.stream["chunks"][c];
    x.erase("ms");
    y.erase("ms");
    EXPECT_EQ(x, y) << "chunk " << c + 1 << ": each event once, scored and trained alike";
  }
}

}  // namespace
}  // namespace m6rec
