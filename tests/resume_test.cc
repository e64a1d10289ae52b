// Integration: checkpoints and resume. A local job is killed mid-epoch — SIGKILL to every one of
// its processes, the launcher included — and `m6rec train --resume` continues it from its
// newest complete checkpoint. With one worker and staleness 0 nothing depends on timing, so the
// resumed run must end bit-identical to one that was never interrupted; with two workers and
// staleness 1 (pulls overlap the other worker's pushes) it must land within noise.
// Also `m6rec adapt`, which starts a new run from a finished run's checkpoint, and `m6rec
// strategy`, which fits, prints and edits a finished run's serving strategies.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster_util.h"
#include "common/config.h"
#include "common/util.h"
#include "test_util.h"
#include "worker/checkpoint.h"

namespace m6rec {

using nlohmann::json;
using namespace m6rec::testing;

namespace {

// Starts the job in the background, waits for a complete checkpoint in the middle of epoch 2,
// then SIGKILLs every process of the job.
void RunAndKillMidEpoch(TempDir& dir, const std::string& run, const std::vector<std::string>& sets,
                        const std::string& config = M6Config(3)) {
  const std::string cfg = WriteFile(dir / (run + ".yaml"), config);
  std::vector<std::string> args{Binary(), "local", "--config", cfg, "--run-dir", dir / run};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  Background job(args, dir / (run + ".log"));
  ASSERT_TRUE(WaitForCheckpoint(
      dir / run, 240, [](const json& m) { return m["epoch"] == 2 && m["next_step"] != 0; }))
      << "no mid-epoch checkpoint of epoch 2: " << job.Output();
  const std::vector<pid_t> pids = PidsOf(dir / run);
  ASSERT_FALSE(pids.empty());
  job.Kill(SIGKILL);
  for (pid_t p : pids) ::kill(p, SIGKILL);
  ASSERT_TRUE(job.Wait(30));
  for (int i = 0; i < 600 && std::any_of(pids.begin(), pids.end(), ProcessAlive); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (pid_t p : pids) ASSERT_FALSE(ProcessAlive(p)) << "pid " << p << " survived SIGKILL";
  ASSERT_FALSE(ReadFileToString(dir / run + "/result.json").ok())
      << "the job must not have finished";
}

json Resume(TempDir& dir, const std::string& run) {
  auto r = RunCommand({Binary(), "train", "--resume", dir / run}, 300);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return ReadJson(dir / run + "/result.json");
}

}  // namespace

TEST(Resume, AKilledOneWorkerJobResumesBitIdentical) {
  TempDir dir;
  const std::vector<std::string> sets{"cluster.workers=1", "train.staleness=0",
                                      "checkpoint.every_steps=7", "checkpoint.keep=3"};
  // A fractional task weight: every epoch draws its own samples (half of them twice), which
  // the resumed run must draw again exactly.
  std::string config = M6Config(3);
  const std::string tail = "log_every: 10}";
  config.replace(config.find(tail), tail.size(),
                 "log_every: 10, tasks: [{type: retrieval, weight: 1.5}]}");
  json full = RunLocalJob(dir, "full", config, sets, 300);
  ASSERT_TRUE(full.contains("test"));
  RunAndKillMidEpoch(dir, "cut", sets, config);
  if (HasFatalFailure()) return;
  json resumed = Resume(dir, "cut");
  ASSERT_TRUE(resumed.contains("test")) << resumed.dump();
  const json& a = full["workers"][0];
  const json& b = resumed["workers"][0];
  EXPECT_EQ(b["steps"], a["steps"]);
  EXPECT_EQ(b["final_fingerprint"], a["final_fingerprint"]) << "the dense model ends bit-identical";
  EXPECT_EQ(b["param_fingerprints"], a["param_fingerprints"]);
  EXPECT_EQ(resumed["test"], full["test"]) << "the test metrics are identical";
  EXPECT_EQ(resumed["best_epoch"], full["best_epoch"]);
  ASSERT_EQ(resumed["epochs"].size(), 3u);
  for (size_t e = 0; e < 3; ++e)
    EXPECT_EQ(resumed["epochs"][e]["loss"], full["epochs"][e]["loss"]) << e;
  std::vector<int> epochs;
  for (const json& line : ReadJsonLines(dir / "cut/metrics.jsonl"))
    epochs.push_back(line.value("epoch", -1));
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3}))
      << "one metrics line per epoch, in order, none twice";
}

TEST(Resume, AKilledTwoWorkerJobResumesWithinNoise) {
  // Staleness 1: a worker's prefetched pull may or may not see the other's last push, so runs
  // differ in the last bits and the trajectories drift apart. Tolerance: 0.05 HR@10 over 600
  // test users (two uninterrupted runs of this job differ by up to ~0.02).
  TempDir dir;
  const std::vector<std::string> sets{"checkpoint.every_steps=5"};
  json full = RunLocalJob(dir, "full", M6Config(3), sets, 300);
  ASSERT_TRUE(full.contains("test"));
  RunAndKillMidEpoch(dir, "cut", sets);
  if (HasFatalFailure()) return;
  json resumed = Resume(dir, "cut");
  ASSERT_TRUE(resumed.contains("test")) << resumed.dump();
  EXPECT_EQ(resumed["test"]["users"], 600);
  EXPECT_NEAR(resumed["test"]["HR@10"].get<double>(), full["test"]["HR@10"].get<double>(), 0.05);
  ASSERT_EQ(resumed["workers"].size(), 2u);
  EXPECT_EQ(resumed["workers"][0]["steps"], full["workers"][0]["steps"]);
  EXPECT_EQ(resumed["workers"][0]["final_fingerprint"], resumed["workers"][1]["final_fingerprint"])
      << "the replicas are still bit-identical after the resume";
}

TEST(Resume, ARunWithoutACheckpointIsRefusedClearly) {
  TempDir dir;
  auto r = RunCommand({Binary(), "train", "--resume", dir / "nothing"}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(dir / "nothing"), std::string::npos) << r.output;
}

// `m6rec adapt` end to end, as a person runs it: a backbone trained by a local cluster, a new
// domain added to it by another (its servers start from the backbone's rows), evaluated and
// served like any run; what would change the backbone is refused before anything starts.
TEST(Adapt, ANewDomainTrainsOnABackboneAndIsServedFromTheAdaptedRun) {
  TempDir dir;
  const std::string cfg = WriteFile(dir / "backbone.yaml", M6Config(2));
  auto r = RunCommand({Binary(), "local", "--config", cfg, "--run-dir", dir / "backbone"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand({Binary(), "data", "synth", "--out", dir / "books", "--config", cfg, "--seed",
                  "11", "--set", "data.synth.users=300", "--set", "data.synth.items=200"},
                 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string added = WriteFile(
      dir / "books.yaml", "data: {path: " + dir / "books" + ", format: tsv}\ntrain: {epochs: 2}\n");
  r = RunCommand({Binary(), "adapt", "--from", dir / "backbone", "--config", added, "--run-dir",
                  dir / "adapted"},
                 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json result = ReadJson(dir / "adapted/result.json");
  const json& test = result["test"];
  ASSERT_TRUE(test["domains"].contains("books")) << result.dump();
  EXPECT_EQ(test["domains"].size(), 1u) << "the backbone's domain is not evaluated";
  EXPECT_EQ(test["users"], 300);
  EXPECT_GT(test["HR@10"].get<double>(), result["popularity"]["HR@10"].get<double>()) << r.output;
  const json& model = result["workers"][0];
  EXPECT_LT(model["trained_dense_params"].get<int64_t>(), model["dense_params"].get<int64_t>() / 5)
      << "only the new domain's part trains";
  // The run's config.yaml is complete: the backbone's domain first, then the new one.
  auto written = LoadConfig(dir / "adapted/config.yaml");
  ASSERT_TRUE(written.ok()) << written.status().message();
  ASSERT_EQ(written->data.domains.size(), 2u);
  EXPECT_EQ(written->data.domains[0].weight, 0.0f);
  EXPECT_EQ(written->adapt.frozen_domains, 1);

  // Evaluated and served like any run.
  r = RunCommand({Binary(), "eval", "--run-dir", dir / "adapted"}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadJson(dir / "adapted/eval.json")["test"], test) << "eval reproduces the result";
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "adapted", "--domain", "books",
                  "--user", "3", "-k", "5"},
                 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"domain\":\"books\""), std::string::npos) << r.output;

  // A change to the backbone's model is refused, naming the field, and starts nothing.
  const std::string bad =
      WriteFile(dir / "bad.yaml", "data: {path: " + dir / "books" + "}\nmodel: {hidden: 8}\n");
  r = RunCommand(
      {Binary(), "adapt", "--from", dir / "backbone", "--config", bad, "--run-dir", dir / "bad"},
      60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model.hidden: unknown field"), std::string::npos) << r.output;
}

// A multi-task run on MovieLens-style data, then its strategies: fitted on the trained model
// (classifier accuracy and the test table reported), printed, edited without retraining, and
// used by recommend (the intent named, the strategy's K), unless told not to.
TEST(Strategy, FittedOnARunItIsPrintedEditedAndServed) {
  TempDir dir;
  WriteTasteMovieLens(dir / "ml", 300, 160, 30, 9);
  const std::string cfg = WriteFile(dir / "job.yaml", R"(job: {name: strategy-test, seed: 5}
cluster: {servers: 1, workers: 1}
ps: {store: memory, num_slots: 64}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: token, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data: {source: dir, format: movielens, path: )" + dir / "ml" +
                                                          R"(}
model: {seq_len: 8, fanout: 4, hidden: 16, content_tokens: 8}
train:
  job: m6
  epochs: 2
  batch_size: 128
  negatives: 32
  loss: softmax
  temperature: 0.2
  tasks: [{type: retrieval}, {type: rating}]
)");
  auto r = RunCommand({Binary(), "local", "--config", cfg, "--run-dir", dir / "run"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("task rating: RMSE"), std::string::npos) << r.output;

  r = RunCommand({Binary(), "strategy", "--run-dir", dir / "run"}, 60);
  EXPECT_NE(r.exit_code, 0) << "nothing fitted yet";
  EXPECT_NE(r.output.find("--fit"), std::string::npos) << r.output;

  r = RunCommand({Binary(), "strategy", "--run-dir", dir / "run", "--fit"}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json book = ReadJson(dir / "run/strategy.json");
  for (const char* m : {"as_trained", "global", "oracle", "inferred"})
    EXPECT_GT(book["report"]["test"][m]["HR@10"].get<double>(), 0.0) << m << ": " << r.output;
  const double acc = book["report"]["classifier"]["test_accuracy"];
  EXPECT_GE(acc, book["report"]["classifier"]["test_majority"].get<double>() - 0.05) << r.output;
  // The oracle picks per intent what validation preferred: never below the global choice on
  // validation, and on test within noise of it.
  EXPECT_GE(book["report"]["test"]["oracle"]["NDCG@10"].get<double>(),
            book["report"]["test"]["global"]["NDCG@10"].get<double>() - 0.03)
      << r.output;
  EXPECT_NE(r.output.find("intent classifier: test accuracy"), std::string::npos) << r.output;
  // Fitted on the scores as they are served, with the run's popularity calibration: the model
  // as trained ranks the test requests as the job's evaluation did.
  const json result = ReadJson(dir / "run/result.json");
  ASSERT_TRUE(result.contains("calibration")) << result.dump();
  EXPECT_TRUE(book["report"]["calibrated"].get<bool>());
  EXPECT_NEAR(book["report"]["test"]["as_trained"]["HR@10"].get<double>(),
              result["test"]["HR@10"].get<double>(), 1e-9)
      << "uncalibrated, the job read " << result["test"]["HR@10_uncalibrated"];

  // Whichever strategy serves (an intent's, or the global one when the intents did not help on
  // validation), it recommends 4.
  r = RunCommand({Binary(), "strategy", "--run-dir", dir / "run", "--change", "continue.k=4",
                  "--change", "explore.k=4", "--change", "global.k=4"},
                 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadJson(dir / "run/strategy.json")["intents"]["explore"]["k"], 4);
  r = RunCommand({Binary(), "strategy", "--run-dir", dir / "run", "--change", "browse.k=4"}, 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'browse' is no intent"), std::string::npos) << r.output;

  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7"}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json served = json::parse(r.stdout_text);
  EXPECT_EQ(served["items"].size(), 4u) << r.stdout_text;
  EXPECT_TRUE(served.contains("intent")) << r.stdout_text;
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7", "--no-strategy"},
                 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json plain = json::parse(r.stdout_text);
  EXPECT_EQ(plain["items"].size(), 10u) << r.stdout_text;
  EXPECT_FALSE(plain.contains("intent")) << r.stdout_text;

  // A user the run has never seen: a few movies and a profile; an unknown value is refused.
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--history", "3,8", "--profile",
                  "gender=F,age=25-34", "--no-strategy"},
                 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json fresh = json::parse(r.stdout_text);
  EXPECT_EQ(fresh["user"], "new");
  EXPECT_EQ(fresh["profile_tokens"], 2) << r.stdout_text;
  EXPECT_EQ(fresh["items"].size(), 10u) << r.stdout_text;
  for (const auto& it : fresh["items"]) EXPECT_NE(it["item"], 3) << "its history is not served";
  // --explain: the JSON says why, and a table for people goes to stderr.
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7", "-k", "3",
                  "--explain", "--no-strategy"},
                 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json explained = json::parse(r.stdout_text);
  ASSERT_EQ(explained["items"].size(), 3u) << r.stdout_text;
  for (const auto& it : explained["items"])
    EXPECT_TRUE(it["why"].contains("user_sources")) << r.stdout_text;
  EXPECT_NE(r.output.find("user sources:"), std::string::npos) << r.output;
  // Items the run never saw, given by their content (token names of the data, or ids).
  testing::WriteFile(dir / "new.json",
                     R"([{"name": "new drama", "tokens": ["drama", "1990s"]}, {"name": "bare"}])");
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7", "-k", "100000",
                  "--no-strategy", "--new-items", dir / "new.json"},
                 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json with_new = json::parse(r.stdout_text);
  EXPECT_EQ(with_new["new_items"], 2) << r.stdout_text;
  int named = 0;
  for (const auto& it : with_new["items"]) named += it.contains("new_item");
  EXPECT_EQ(named, 2) << r.stdout_text;
  EXPECT_TRUE(with_new.contains("warning")) << "this run has no id dropout: " << r.stdout_text;
  testing::WriteFile(dir / "bad.json", R"([{"name": "x", "tokens": ["no-such-genre"]}])");
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7", "--new-items",
                  dir / "bad.json"},
                 120);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("token \"no-such-genre\" is not one of the run's tokens"),
            std::string::npos)
      << r.output;
  r = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--profile", "age=30"}, 120);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("its values are <18, 18-24"), std::string::npos) << r.output;
}

}  // namespace m6rec
