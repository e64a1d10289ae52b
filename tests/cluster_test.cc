// Multi-process integration tests: the real m6rec binary, real processes, real sockets on
// 127.0.0.1, real RocksDB directories. Every test bounds its own waiting time.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/cluster_view.h"
#include "common/util.h"
#include "ps/optimizer.h"
#include "test_util.h"
#include "worker/ps_client.h"
#include "worker/collective.h"
#include "scheduler/client.h"
#include "worker/checkpoint.h"

namespace m6rec {

using nlohmann::json;
using testing::Background;
using testing::Binary;
using testing::RunCommand;
using testing::TempDir;

namespace {

std::string PushCheckConfig(const std::string& store) {
  return R"(job: {name: pushcheck, seed: 3}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: )" + store + R"(, num_slots: 64, threads: 1}
tables:
  - {name: user, dim: 4}
  - name: item
    dim: 4
    init: {type: constant, value: 1.0}
    optimizer: {type: sgd, lr: 0.5}
)";
}

// The push check: two workers push known gradients to overlapping keys, twice per request for
// the shared ones; the result must be exact in float (every gradient is a multiple of 1/4).
constexpr int kPushCheckRounds = 4;
constexpr int kPushCheckShared = 64;   // ids 0..63 pushed by every worker, twice per request
constexpr int kPushCheckPrivate = 16;  // ids 1000 + 100*rank + j pushed by one worker
float PushCheckGrad(uint64_t id, uint32_t d, int round, uint32_t worker) {
  return 0.25f * static_cast<float>((id + d + round + worker) % 5 + 1);
}

// One worker of the push check, as a thread of the test: registers with the scheduler, pushes
// its rounds, meets the other at a barrier; rank 0 then pulls every row into *rows.
Status PushCheckWorker(const JobConfig& cfg, int sched_port, uint64_t token, std::vector<uint64_t>* ids_out,
                       std::vector<float>* rows) {
  SchedulerClientOptions so;
  so.port = sched_port;
  so.token = token;
  M6_ASSIGN_OR_RETURN(auto sched, SchedulerClient::Connect(so));
  M6_ASSIGN_OR_RETURN(ClusterView view, sched->Register("worker", "127.0.0.1", 0, -1, 20000));
  PsClientOptions po;
  po.view = view;
  po.tables = cfg.tables;
  po.token = token;
  po.sender_rank = view.rank;
  M6_ASSIGN_OR_RETURN(auto ps, PsClient::Create(po));
  const TableSpec& t = cfg.tables[1];
  std::vector<uint64_t> ids;
  for (int rep = 0; rep < 2; ++rep)
    for (int j = 0; j < kPushCheckShared; ++j) ids.push_back(j);
  for (int j = 0; j < kPushCheckPrivate; ++j) ids.push_back(1000 + 100 * view.rank + j);
  std::vector<Key> keys;
  for (uint64_t id : ids) keys.push_back(MakeKey(t.id, id));
  std::vector<float> grads(ids.size() * t.dim);
  for (int round = 0; round < kPushCheckRounds; ++round) {
    for (size_t i = 0; i < ids.size(); ++i)
      for (uint32_t d = 0; d < t.dim; ++d) grads[i * t.dim + d] = PushCheckGrad(ids[i], d, round, view.rank);
    M6_RETURN_IF_ERROR(ps->Push(t.id, keys.data(), keys.size(), grads.data()));
  }
  M6_RETURN_IF_ERROR(sched->Barrier("pushed", "workers", 20000));
  if (view.rank == 0) {
    ids_out->clear();
    for (int j = 0; j < kPushCheckShared; ++j) ids_out->push_back(j);
    for (uint32_t w = 0; w < 2; ++w)
      for (int j = 0; j < kPushCheckPrivate; ++j) ids_out->push_back(1000 + 100 * w + j);
    std::vector<Key> all;
    for (uint64_t id : *ids_out) all.push_back(MakeKey(t.id, id));
    rows->resize(all.size() * t.dim);
    M6_RETURN_IF_ERROR(ps->Pull(t.id, all.data(), all.size(), rows->data()));
  }
  M6_RETURN_IF_ERROR(sched->Finished(true, "", "{}"));
  ShutdownNotice n = sched->WaitShutdown(20000);
  return n.ok ? Status::OK() : Status::Aborted("push check: " + n.reason);
}

std::string MfConfig(int epochs) {
  return R"(job: {name: mf-test, seed: 5}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: rocksdb, num_slots: 256}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data:
  synth: {users: 600, items: 300, clusters: 6, interactions_per_user: 24}
train: {job: mf, epochs: )" + std::to_string(epochs) + R"(, batch_size: 128, negatives: 4, log_every: 10}
)";
}

std::string M6Config(int epochs) {
  return R"(job: {name: m6-test, seed: 5}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: rocksdb, num_slots: 256}
tables:
  - {name: user, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: item, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
  - {name: token, dim: 16, init: {type: normal, std: 0.1}, optimizer: {type: adagrad, lr: 0.1}}
data:
  synth: {users: 600, items: 300, clusters: 6, interactions_per_user: 24, tokens: 120, image_dim: 8, audio_dim: 4}
model: {seq_len: 10, fanout: 5, hidden: 32, content_tokens: 12}
train: {job: m6, epochs: )" + std::to_string(epochs) + R"(, batch_size: 128, negatives: 32, loss: softmax, temperature: 0.2, log_every: 10}
)";
}

// The full path of `program` on PATH, or "".
std::string OnPath(const std::string& program) {
  std::string path;
  if (FILE* f = popen(("command -v " + program).c_str(), "r")) {
    char buf[512] = {0};
    if (fgets(buf, sizeof(buf), f)) path = buf;
    pclose(f);
  }
  while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
  return path;
}

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << path;
  return json::parse(text.ok() ? *text : "{}", nullptr, false);
}

// Runs `m6rec local` on `yaml` into dir/run_name with extra --set overrides; returns its
// result.json ({} and a test failure when the job fails or writes no test metrics).
json RunLocalJob(TempDir& dir, const std::string& run_name, const std::string& yaml,
                 const std::vector<std::string>& sets, int timeout_s) {
  const std::string cfg = testing::WriteFile(dir / (run_name + ".yaml"), yaml);
  std::vector<std::string> cmd{Binary(), "local", "--config", cfg, "--run-dir", dir / run_name};
  for (const auto& s : sets) {
    cmd.push_back("--set");
    cmd.push_back(s);
  }
  auto r = RunCommand(cmd, timeout_s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return json::object();
  EXPECT_NE(r.output.find("all processes exited cleanly"), std::string::npos);
  json res = ReadJson(dir / run_name + "/result.json");
  EXPECT_TRUE(res.contains("test")) << res.dump();
  return res.contains("test") ? res : json::object();
}

std::vector<pid_t> PidsOf(const std::string& run_dir) {
  std::vector<pid_t> pids;
  json j = json::parse(testing::WaitForFile(run_dir + "/pids.json", 30), nullptr, false);
  if (j.is_object())
    for (auto& [name, pid] : j.items())
      if (name != "launcher") pids.push_back(pid.get<pid_t>());
  return pids;
}

// Waits until `text` shows up in the background process's output.
bool WaitForOutput(Background& p, const std::string& text, double timeout_s) {
  for (int i = 0; i < timeout_s * 20; ++i) {
    if (p.Output().find(text) != std::string::npos) return true;
    if (!p.running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// A local cluster training a long job in the background, with the pids of its processes once
// training has started (so a test can kill, stop or interrupt one of them).
struct LongJob {
  LongJob(const TempDir& dir, const std::vector<std::string>& extra = {}) {
    std::string cfg = testing::WriteFile(dir / "job.yaml", MfConfig(1000));
    std::vector<std::string> args{Binary(), "local", "--config", cfg, "--run-dir", dir / "run"};
    args.insert(args.end(), extra.begin(), extra.end());
    launcher = std::make_unique<Background>(args, dir / "out.log");
    started = WaitForOutput(*launcher, "step 10 ", 60);
    pids = PidsOf(dir / "run");
    auto text = ReadFileToString(dir / "run/pids.json");
    if (text.ok()) by_name = json::parse(*text, nullptr, false);
  }
  pid_t Pid(const std::string& name) const {
    return by_name.is_object() && by_name.contains(name) ? by_name[name].get<pid_t>() : -1;
  }
  std::unique_ptr<Background> launcher;
  bool started = false;
  std::vector<pid_t> pids;
  json by_name;
};

}  // namespace

class PushCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(PushCheck, OverlappingPushesFromTwoWorkersGiveExactRows) {
  // A real scheduler and two real servers (processes); the two workers are threads of the test.
  TempDir dir;
  std::string cfg_path = testing::WriteFile(dir / "job.yaml", PushCheckConfig(GetParam()));
  auto cfg = LoadConfig(cfg_path);
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const uint64_t token = 0x5eed5eed5eed5eedULL;
  const std::map<std::string, std::string> env{{"M6REC_TOKEN", FormatToken(token)}};
  Background sched({Binary(), "scheduler", "--config", cfg_path, "--port-file", dir / "sched.port"}, dir / "sched.log",
                   env);
  const int port = std::atoi(testing::WaitForFile(dir / "sched.port", 20).c_str());
  ASSERT_GT(port, 0) << sched.Output();
  std::vector<std::unique_ptr<Background>> servers;
  for (int r = 0; r < 2; ++r)
    servers.push_back(std::make_unique<Background>(
        std::vector<std::string>{Binary(), "server", "--config", cfg_path, "--scheduler",
                                 "127.0.0.1:" + std::to_string(port), "--rank", std::to_string(r), "--data-dir",
                                 dir / ("server-" + std::to_string(r))},
        dir / ("server-" + std::to_string(r) + ".log"), env));
  std::vector<uint64_t> ids;
  std::vector<float> rows;
  Status st[2];
  std::thread w1([&] { st[1] = PushCheckWorker(*cfg, port, token, &ids, &rows); });
  st[0] = PushCheckWorker(*cfg, port, token, &ids, &rows);
  w1.join();
  ASSERT_TRUE(st[0].ok() && st[1].ok()) << st[0].message() << " / " << st[1].message();
  for (auto& srv : servers) {
    ASSERT_TRUE(srv->Wait(30)) << "servers stop when the scheduler shuts the job down";
    EXPECT_EQ(srv->exit_code(), 0) << srv->Output();
  }
  ASSERT_TRUE(sched.Wait(30));
  EXPECT_EQ(sched.exit_code(), 0) << sched.Output();

  const uint32_t dim = cfg->tables[1].dim, workers = 2;
  ASSERT_EQ(ids.size(), size_t(kPushCheckShared + 2 * kPushCheckPrivate));
  ASSERT_EQ(rows.size(), ids.size() * dim);
  for (size_t i = 0; i < ids.size(); ++i) {
    for (uint32_t d = 0; d < dim; ++d) {
      // constant init 1.0, SGD lr 0.5; every gradient is a multiple of 1/4, so any order of
      // application gives the same float exactly.
      float want = 1.0f;
      for (uint32_t w = 0; w < workers; ++w) {
        const bool shared = ids[i] < uint64_t(kPushCheckShared);
        const bool mine = ids[i] >= 1000 + 100 * w && ids[i] < 1000 + 100 * w + kPushCheckPrivate;
        if (!shared && !mine) continue;
        for (int round = 0; round < kPushCheckRounds; ++round)
          want -= 0.5f * (shared ? 2 : 1) * PushCheckGrad(ids[i], d, round, w);
      }
      EXPECT_EQ(rows[i * dim + d], want) << "id " << ids[i] << " dim " << d;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, PushCheck, ::testing::Values("memory", "rocksdb"));

TEST(Cluster, ServerRestartedOnItsDirectoryServesEveryAcknowledgedRow) {
  TempDir dir;
  std::string cfg = testing::WriteFile(dir / "job.yaml", PushCheckConfig("rocksdb"));
  auto loaded = LoadConfig(cfg);
  ASSERT_TRUE(loaded.ok());
  const uint64_t token = 0xfeedface12345678ULL;
  const std::map<std::string, std::string> env{{"M6REC_TOKEN", FormatToken(token)}};
  auto start = [&](const std::string& port_file) {
    return std::make_unique<Background>(
        std::vector<std::string>{Binary(), "server", "--standalone", "--config", cfg, "--data-dir",
                                 dir / "db", "--port-file", port_file},
        dir / (port_file.substr(port_file.rfind('/') + 1) + ".log"), env);
  };
  auto client_for = [&](int port) {
    PsClientOptions o;
    o.view = ClusterView::SingleServer("127.0.0.1", port, loaded->ps.num_slots);
    o.tables = loaded->tables;
    o.token = token;
    o.request_timeout_ms = 10000;
    return PsClient::Create(o);
  };
  const TableSpec& t = loaded->tables[1];
  std::vector<Key> keys;
  for (int i = 0; i < 500; ++i) keys.push_back(MakeKey(t.id, i * 7));
  std::vector<float> expect(keys.size() * RowWidth(t));
  for (size_t i = 0; i < keys.size(); ++i) InitFullRow(t, keys[i], &expect[i * RowWidth(t)]);

  auto first = start(dir / "port1");
  int port = std::atoi(testing::WaitForFile(dir / "port1", 20).c_str());
  ASSERT_GT(port, 0) << first->Output();
  {
    auto c = client_for(port);
    ASSERT_TRUE(c.ok());
    for (int round = 0; round < 5; ++round) {
      std::vector<float> g(keys.size() * t.dim);
      for (size_t i = 0; i < g.size(); ++i) g[i] = 0.001f * float((i + round) % 13) - 0.005f;
      ASSERT_TRUE((*c)->Push(t.id, keys.data(), keys.size(), g.data()).ok());  // acknowledged
      for (size_t i = 0; i < keys.size(); ++i)
        ApplyUpdate(t.optimizer, t.dim, &expect[i * RowWidth(t)], &g[i * t.dim]);
    }
  }
  first->Kill(SIGKILL);
  ASSERT_TRUE(first->Wait(10));
  ASSERT_EQ(first->signal(), SIGKILL);

  auto second = start(dir / "port2");
  port = std::atoi(testing::WaitForFile(dir / "port2", 20).c_str());
  ASSERT_GT(port, 0) << second->Output();
  auto c = client_for(port);
  ASSERT_TRUE(c.ok());
  std::vector<float> rows(keys.size() * t.dim);
  ASSERT_TRUE((*c)->Pull(t.id, keys.data(), keys.size(), rows.data()).ok());
  for (size_t i = 0; i < keys.size(); ++i)
    for (uint32_t d = 0; d < t.dim; ++d)
      ASSERT_EQ(rows[i * t.dim + d], expect[i * RowWidth(t) + d]) << "key " << i << " lost an acknowledged update";
  second->Kill(SIGTERM);
  ASSERT_TRUE(second->Wait(10));
  EXPECT_EQ(second->exit_code(), 0) << second->Output();
}

TEST(Cluster, WorkerThatCannotReachTheSchedulerFailsClearlyWithinTheTimeout) {
  TempDir dir;
  std::string cfg = testing::WriteFile(dir / "job.yaml", MfConfig(1));
  auto r = RunCommand({Binary(), "worker", "--config", cfg, "--scheduler", "127.0.0.1:1", "--rank", "0",
                "--set", "cluster.connect_timeout_ms=1500"},
               30, {{"M6REC_TOKEN", "00000000000000ab"}});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_NE(r.output.find("cannot reach the scheduler at 127.0.0.1:1 within 1500 ms"), std::string::npos)
      << r.output;
  EXPECT_GE(r.seconds, 1.0);
  EXPECT_LT(r.seconds, 8.0) << "it must give up at the timeout, not hang";
}

TEST(Cluster, KillingAServerStopsTheClusterWithAClearMessageAndNoOrphans) {
  TempDir dir;
  LongJob job(dir);
  ASSERT_TRUE(job.started) << job.launcher->Output();
  ASSERT_EQ(job.pids.size(), 5u);
  const pid_t victim = job.Pid("server 1");
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  ASSERT_TRUE(job.launcher->Wait(30)) << "the launcher must stop the cluster by itself";
  EXPECT_NE(job.launcher->exit_code(), 0);
  const std::string out = job.launcher->Output();
  EXPECT_NE(out.find("server 1 (pid " + std::to_string(victim) + ") was killed by signal 9"), std::string::npos)
      << out;
  EXPECT_NE(out.find("stopping the cluster"), std::string::npos) << out;
  for (pid_t p : job.pids) EXPECT_FALSE(testing::ProcessAlive(p)) << "orphan pid " << p;
}

TEST(Cluster, CtrlCStopsEveryProcess) {
  TempDir dir;
  LongJob job(dir);
  ASSERT_TRUE(job.started) << job.launcher->Output();
  job.launcher->Kill(SIGINT);
  ASSERT_TRUE(job.launcher->Wait(30));
  EXPECT_EQ(job.launcher->exit_code(), 130) << job.launcher->Output();
  for (pid_t p : job.pids) EXPECT_FALSE(testing::ProcessAlive(p)) << "orphan pid " << p;
}

class MfTraining : public ::testing::TestWithParam<int> {};  // param: history length

TEST_P(MfTraining, OnSyntheticDataLearnsAndBeatsPopularity) {
  TempDir dir;
  json res = RunLocalJob(dir, "run", MfConfig(3), {"train.history=" + std::to_string(GetParam())}, 180);
  ASSERT_TRUE(res.contains("test"));
  const double hr = res["test"]["HR@10"], pop = res["popularity"]["HR@10"];
  EXPECT_GT(hr, pop + 0.05) << "MF must beat the popularity ranking by a clear margin";
  for (const auto& w : res["workers"]) {
    EXPECT_LT(w["last_loss"].get<double>(), 0.8 * w["first_loss"].get<double>()) << w.dump();
  }
  // Each server kept its RocksDB directory.
  EXPECT_TRUE(std::filesystem::exists(dir / "run/server-0/CURRENT"));
  EXPECT_TRUE(std::filesystem::exists(dir / "run/server-1/CURRENT"));
}

// 0: id embeddings only; 5: user vectors mix in their last 5 items (behaviour aggregation).
INSTANTIATE_TEST_SUITE_P(History, MfTraining, ::testing::Values(0, 5));

TEST(Cluster, BadInputIsRefusedWithFileLineAndField) {
  TempDir dir;
  std::string bad = testing::WriteFile(dir / "bad.yaml", "job: {name: x}\ncluster:\n  workers: many\n");
  auto r = RunCommand({Binary(), "local", "--config", bad, "--run-dir", dir / "run"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.yaml:3: cluster.workers: expected an integer, got 'many'"), std::string::npos)
      << r.output;
  auto no_token = RunCommand({Binary(), "server", "--config", bad, "--scheduler", "127.0.0.1:5"}, 30);
  EXPECT_EQ(no_token.exit_code, 2);
  auto r2 = RunCommand({Binary(), "local", "--set", "tables.0.dim=0", "--run-dir", dir / "run2"}, 30);
  EXPECT_EQ(r2.exit_code, 2);
  EXPECT_NE(r2.output.find("tables[0].dim"), std::string::npos) << r2.output;
  auto r3 = RunCommand({Binary(), "local", "--bogus"}, 30);
  EXPECT_EQ(r3.exit_code, 2);
  EXPECT_NE(r3.output.find("unknown option --bogus"), std::string::npos) << r3.output;
}

TEST(Cluster, BadDataLineStopsTheJobNamingFileAndLine) {
  TempDir dir;
  testing::WriteFile(dir / "interactions.tsv", "0 1\n1 2\n2 oops\n");
  std::string cfg = testing::WriteFile(
      dir / "job.yaml", MfConfig(1) + "\n# data from a directory\n");
  auto r = RunCommand({Binary(), "local", "--config", cfg, "--run-dir", dir / "run", "--set", "data.source=dir",
                "--set", "data.path=" + dir.path()},
               60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(dir / "interactions.tsv:3: item id 'oops'"), std::string::npos) << r.output;
}

TEST(Cluster, ASilentServerIsDeclaredDeadAfterTheHeartbeatTimeout) {
  // SIGSTOP keeps the server's sockets open but silences it: only the heartbeat timeout can
  // tell. The scheduler must declare it dead, tell everyone, and the launcher stop the cluster.
  TempDir dir;
  LongJob job(dir, {"--set", "cluster.heartbeat_timeout_ms=1500"});
  ASSERT_TRUE(job.started) << job.launcher->Output();
  const pid_t victim = job.Pid("server 0");
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  ASSERT_TRUE(job.launcher->Wait(40)) << "the cluster must stop by itself";
  const std::string out = job.launcher->Output();
  EXPECT_NE(job.launcher->exit_code(), 0);
  EXPECT_NE(out.find("server 0 (pid " + std::to_string(victim) + ") is dead: silent for more than 1500 ms"),
            std::string::npos)
      << out;
  for (pid_t p : job.pids) EXPECT_FALSE(testing::ProcessAlive(p)) << "orphan pid " << p;
}

}  // namespace m6rec

namespace m6rec {

// Runs the job on 1 and on 2 workers (same data and seed) and returns both runs' test HR@10.
void ExpectOneAndTwoWorkersAgree(const std::string& yaml, double tolerance) {
  TempDir dir;
  double hr[2];
  for (int w = 1; w <= 2; ++w) {
    json res = RunLocalJob(dir, "run" + std::to_string(w), yaml, {"cluster.workers=" + std::to_string(w)}, 240);
    ASSERT_TRUE(res.contains("test"));
    EXPECT_EQ(res["test"]["users"].get<double>(), 600.0) << "every user is evaluated exactly once";
    hr[w - 1] = res["test"]["HR@10"];
  }
  EXPECT_NEAR(hr[0], hr[1], tolerance) << "1 worker: " << hr[0] << ", 2 workers: " << hr[1];
}

TEST(Cluster, OneAndTwoWorkersReachTheSameQuality) { ExpectOneAndTwoWorkersAgree(MfConfig(4), 0.06); }

TEST(Cluster, M6OneAndTwoWorkersReachTheSameQuality) {
  // With the item side of the graph too (its users are sampled per batch on each worker),
  // LightGCN's symmetric weighting and wider neighbourhoods at evaluation.
  std::string yaml = M6Config(3);
  const std::string from = "model: {",
                    to = "model: {item_graph: true, item_fanout: 5, graph_weighting: symmetric, eval_fanout: 12, ";
  yaml.replace(yaml.find(from), from.size(), to);
  ExpectOneAndTwoWorkersAgree(yaml, 0.06);
}

class M6Training : public ::testing::TestWithParam<int> {};  // param: train.staleness

TEST_P(M6Training, TheWholeModelLearnsWithBitIdenticalReplicas) {
  TempDir dir;
  json res = RunLocalJob(dir, "run", M6Config(3), {"train.staleness=" + std::to_string(GetParam())}, 240);
  ASSERT_TRUE(res.contains("test"));
  EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.1)
      << "the model must beat the popularity ranking by a clear margin: " << res["test"].dump();
  ASSERT_EQ(res["workers"].size(), 2u);
  const json& w0 = res["workers"][0];
  const json& w1 = res["workers"][1];
  EXPECT_EQ(w0["user_sources"], json({"id", "sequence", "content", "graph"})) << "the synthetic data feeds every part";
  EXPECT_EQ(w0["item_sources"], json({"id", "text", "image", "audio"}));
  EXPECT_EQ(w0["collective"], "zmq");
  for (const json* w : {&w0, &w1})
    EXPECT_LT((*w)["last_loss"].get<double>(), 0.9 * (*w)["first_loss"].get<double>()) << "loss must fall: " << w->dump();
  // The allreduced dense parameters are bit-identical on both workers after every step.
  ASSERT_GE(w0["param_fingerprints"].size(), 20u);
  EXPECT_EQ(w0["param_fingerprints"], w1["param_fingerprints"]);
  EXPECT_EQ(w0["final_fingerprint"], w1["final_fingerprint"]);
  EXPECT_EQ(w0["steps"], w1["steps"]) << "every worker runs the same number of steps";
  // The run directory: the metrics log (one line per epoch) and the checkpoint.
  auto log = ReadFileToString(dir / "run/metrics.jsonl");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(std::count(log->begin(), log->end(), '\n'), 3);
  json last = json::parse(log->substr(log->rfind('\n', log->size() - 2) + 1));
  EXPECT_EQ(last["epoch"], 3);
  EXPECT_EQ(last["test"]["users"], 600);
  for (const char* k : {"HR@10", "NDCG@10", "AUC", "F1", "accuracy", "precision", "recall"})
    EXPECT_TRUE(last["test"].contains(k)) << k;
  // Checkpoints: one per epoch (the last two kept) and the best epoch's; the newest holds the
  // final dense model.
  auto latest = LatestCheckpoint(dir / "run");
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_TRUE(std::filesystem::exists(*latest + "/dense/dense.pt"));
  json manifest = ReadJson(*latest + "/manifest.json");
  EXPECT_EQ(manifest["dense_fingerprint"], w0["final_fingerprint"]);
  EXPECT_EQ(manifest["epoch"], 3);
  auto best = BestCheckpoint(dir / "run");
  ASSERT_TRUE(best.ok()) << best.status().message();
  EXPECT_EQ(ReadJson(*best + "/manifest.json")["epoch"], res["best_epoch"]);
  if (GetParam() == 0) return;  // serving from the checkpoint once is enough

  // `m6rec eval` from the best epoch's checkpoint reproduces result.json's test metrics exactly.
  auto ev = RunCommand({Binary(), "eval", "--run-dir", dir / "run"}, 120);
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  json e = ReadJson(dir / "run/eval.json");
  EXPECT_EQ(e["test"]["users"], 600);
  EXPECT_EQ(e["test"], res["test"]) << "eval: " << e["test"].dump() << "\nresult: " << res["test"].dump();
  // `m6rec recommend`: k items, best first, none the user has seen.
  auto rc = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "7", "-k", "5"}, 120);
  ASSERT_EQ(rc.exit_code, 0) << rc.output;
  json rec = json::parse(rc.output.substr(rc.output.rfind("{\"items\"")), nullptr, false);
  ASSERT_TRUE(rec.is_object()) << rc.output;
  ASSERT_EQ(rec["items"].size(), 5u);
  std::set<int> seen;
  std::ifstream in(dir / "run/data/interactions.tsv");
  for (std::string line; std::getline(in, line);) {
    int u, i;
    if (line[0] != '#' && std::sscanf(line.c_str(), "%d %d", &u, &i) == 2 && u == 7) seen.insert(i);
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(rec["seen"].get<size_t>(), seen.size()) << "train + validation + test items are all seen";
  double prev = 1e30;
  for (const auto& it : rec["items"]) {
    EXPECT_EQ(seen.count(it["item"].get<int>()), 0u) << "recommended a seen item " << it.dump();
    EXPECT_LE(it["score"].get<double>(), prev);
    prev = it["score"].get<double>();
  }
  // A user that does not exist is a clear error.
  auto bad = RunCommand({Binary(), "recommend", "--run-dir", dir / "run", "--user", "100000"}, 60);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--user 100000"), std::string::npos) << bad.output;
}

INSTANTIATE_TEST_SUITE_P(Staleness, M6Training, ::testing::Values(0, 1));

TEST(Cluster, MpirunRunsTheWholeJobLikeTheLocalLauncher) {
  // mpirun -np 5: rank 0 the scheduler, ranks 1-2 servers, ranks 3-4 workers; MPI carries the
  // rendezvous and the workers' allreduce.
  const std::string mpirun = OnPath("mpirun");
  if (!HaveMpi() || mpirun.empty()) {
    std::fprintf(stderr, "NOTE: no MPI in this build or no mpirun on PATH: this test checked nothing\n");
    GTEST_SKIP() << "MPI not available";
  }
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMPI_MCA_btl", "self,vader,tcp", 1);
  setenv("OMPI_MCA_btl_tcp_if_include", "lo", 1);
  TempDir dir;
  std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(3));
  auto r = RunCommand({mpirun, "--oversubscribe", "-np", "5", Binary(), "train", "--config", cfg, "--run-dir",
                       dir / "mpi"},
                      300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json res = ReadJson(dir / "mpi/result.json");
  ASSERT_TRUE(res.contains("test")) << res.dump();
  ASSERT_EQ(res["workers"].size(), 2u);
  EXPECT_EQ(res["workers"][0]["collective"], "mpi");
  EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
  EXPECT_EQ(res["test"]["users"], 600);
  auto l = RunCommand({Binary(), "train", "--local", "--config", cfg, "--run-dir", dir / "local"}, 240);
  ASSERT_EQ(l.exit_code, 0) << l.output;
  json local = ReadJson(dir / "local/result.json");
  EXPECT_NEAR(res["test"]["HR@10"].get<double>(), local["test"]["HR@10"].get<double>(), 0.06)
      << "mpirun and the local launcher train the same job";
  // Too few processes: every rank stops, with the reason, non-zero.
  auto few = RunCommand({mpirun, "--oversubscribe", "-np", "3", Binary(), "train", "--config", cfg, "--run-dir",
                         dir / "few"},
                        120);
  EXPECT_NE(few.exit_code, 0);
  EXPECT_NE(few.output.find("start at least 4"), std::string::npos) << few.output;
}

TEST(Cluster, MpirunAcrossTwoHostsBindsEachHostsAddress) {
  // Two "hosts" on this machine: network namespaces joined by a veth pair, each with its own
  // address and (through a UTS namespace) its own hostname. mpirun runs in the first and starts
  // the second's ranks through an rsh agent, as it would over ssh. Ranks: 0 scheduler, one server
  // per host (cluster.placement: server_per_node), the rest workers; cluster.host: auto.
  const std::string ip = OnPath("ip"), mpirun = OnPath("mpirun"), unshare = OnPath("unshare");
  if (!HaveMpi() || mpirun.empty() || ip.empty() || unshare.empty()) {
    std::fprintf(stderr, "NOTE: needs MPI, mpirun, ip and unshare: this test checked nothing\n");
    GTEST_SKIP() << "MPI or iproute2 missing";
  }
  const int tag = int(getpid() % 200) + 20;
  const std::string h0 = "m6rec" + std::to_string(getpid()) + "a", h1 = "m6rec" + std::to_string(getpid()) + "b";
  const std::string net = "10.201." + std::to_string(tag) + ".", v0 = "m6v" + std::to_string(tag) + "a",
                    v1 = "m6v" + std::to_string(tag) + "b";
  auto probe = RunCommand({ip, "netns", "add", h0}, 10);
  if (probe.exit_code != 0) {
    std::fprintf(stderr, "NOTE: cannot create network namespaces here (%s): needs root / CAP_SYS_ADMIN; "
                 "this test checked nothing\n", probe.output.c_str());
    GTEST_SKIP() << "no network namespaces";
  }
  struct Namespaces {
    std::string ip, a, b;
    ~Namespaces() {
      for (const auto& n : {a, b}) {
        // Nothing may outlive the test inside a namespace.
        RunCommand({"/bin/sh", "-c", ip + " netns pids " + n + " | xargs -r kill -9"}, 10);
        RunCommand({ip, "netns", "del", n}, 10);
      }
    }
  } cleanup{ip, h0, h1};
  for (const std::vector<std::string>& c : std::vector<std::vector<std::string>>{
           {ip, "netns", "add", h1},
           {ip, "link", "add", v0, "type", "veth", "peer", "name", v1},
           {ip, "link", "set", v0, "netns", h0},
           {ip, "link", "set", v1, "netns", h1},
           {ip, "-n", h0, "addr", "add", net + "1/24", "dev", v0},
           {ip, "-n", h1, "addr", "add", net + "2/24", "dev", v1},
           {ip, "-n", h0, "link", "set", v0, "up"},
           {ip, "-n", h1, "link", "set", v1, "up"},
           {ip, "-n", h0, "link", "set", "lo", "up"},
           {ip, "-n", h1, "link", "set", "lo", "up"}}) {
    auto r = RunCommand(c, 10);
    ASSERT_EQ(r.exit_code, 0) << c[1] << " " << c[2] << ": " << r.output;
  }
  TempDir dir;
  // mpirun's "ssh": run the command in the host's namespace under the host's name.
  const std::string agent = testing::WriteFile(
      dir / "agent.sh", "#!/bin/sh\nhost=$1; shift\nexec " + ip + " netns exec \"$host\" " + unshare +
                            " --uts sh -c 'hostname \"$1\"; shift; eval \"$*\"' sh \"$host\" \"$@\"\n");
  ASSERT_EQ(chmod(agent.c_str(), 0755), 0);
  const std::string hostfile = testing::WriteFile(dir / "hosts", h0 + " slots=3\n" + h1 + " slots=2\n");
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(2));
  const std::map<std::string, std::string> env = {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                                                  {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                                                  {"OMPI_MCA_plm_rsh_agent", agent},
                                                  {"OMPI_MCA_oob_tcp_if_include", net + "0/24"},
                                                  {"OMPI_MCA_btl", "self,vader,tcp"},
                                                  {"OMPI_MCA_btl_tcp_if_include", net + "0/24"}};
  auto launch = [&](const std::string& run, const std::string& host) {
    return RunCommand({ip, "netns", "exec", h0, unshare, "--uts", "/bin/sh", "-c",
                       "hostname " + h0 + "; exec " + mpirun + " --hostfile " + hostfile + " -np 5 " + Binary() +
                           " train --config " + cfg + " --set cluster.host=" + host +
                           " --set cluster.placement=server_per_node --run-dir " + run},
                      300, env);
  };
  auto r = launch(dir / "run", "auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("over 5 processes on 2 host(s)"), std::string::npos) << r.output;
  // Each host's server and worker registered from that host's own address; nobody from loopback.
  for (const std::string who : {"server 0", "server 1", "worker 0", "worker 1"})
    EXPECT_NE(r.output.find(who + " registered from " + net), std::string::npos) << who << "\n" << r.output;
  EXPECT_NE(r.output.find("registered from " + net + "1:"), std::string::npos);
  EXPECT_NE(r.output.find("registered from " + net + "2:"), std::string::npos);
  EXPECT_EQ(r.output.find("registered from 127.0.0.1"), std::string::npos);
  json res = ReadJson(dir / "run/result.json");
  ASSERT_TRUE(res.contains("test")) << res.dump();
  EXPECT_EQ(res["test"]["users"], 600);
  ASSERT_EQ(res["workers"].size(), 2u);
  EXPECT_EQ(res["workers"][0]["collective"], "mpi");
  EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
  EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.1);
  // Loopback cannot span hosts: every rank stops, with the reason.
  auto lo = launch(dir / "lo", "127.0.0.1");
  EXPECT_NE(lo.exit_code, 0);
  EXPECT_NE(lo.output.find("spans 2 hosts but cluster.host is 127.0.0.1"), std::string::npos) << lo.output;
}

TEST(Cluster, SlurmRunsBothSbatchScriptsAndSrun) {
  // A real single-node Slurm (Debian's slurmctld + slurmd, launch/slurm/single-node.sh) runs the
  // sbatch scripts users copy, unchanged but for command-line options: srun.sbatch (roles from
  // SLURM_PROCID, file rendezvous, zmq collective) and mpirun.sbatch (MPI inside the allocation).
  std::map<std::string, std::string> bin;
  for (const char* p : {"slurmctld", "slurmd", "sbatch", "srun", "scontrol"})
    if ((bin[p] = OnPath(p)).empty()) {
      std::fprintf(stderr, "NOTE: '%s' is not installed (launch/install-deps.sh --with-slurm; CI installs it): "
                   "this test checked nothing\n", p);
      GTEST_SKIP() << "no Slurm on this machine";
    }
  TempDir dir;
  const std::string slurm_dir = dir / "slurm";
  auto up = RunCommand({testing::SourceDir() + "/launch/slurm/single-node.sh", "start", slurm_dir}, 60);
  ASSERT_EQ(up.exit_code, 0) << up.output;
  struct StopDaemons {
    std::string dir;
    ~StopDaemons() { RunCommand({testing::SourceDir() + "/launch/slurm/single-node.sh", "stop", dir}, 30); }
  } stop{slurm_dir};
  const std::map<std::string, std::string> env = {
      {"SLURM_CONF", slurm_dir + "/slurm.conf"}, {"OMPI_MCA_btl", "self,vader,tcp"},
      {"OMPI_MCA_btl_tcp_if_include", "lo"}, {"OMPI_MCA_oob_tcp_if_include", "lo"}};
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(2));

  std::map<std::string, std::string> job_of;  // script -> job id
  for (const std::string script : {"srun", "mpirun"}) {
    const std::string run = dir / script;
    auto sub = RunCommand({bin["sbatch"], "--parsable", "--nodes=1", "--ntasks-per-node=5", "--cpus-per-task=1",
                           "--chdir=" + testing::SourceDir(), "--output=" + run + ".out",
                           "--export=ALL,M6REC_BIN=" + Binary() + ",M6REC_CONFIG=" + cfg + ",M6REC_RUN_DIR=" + run,
                           testing::SourceDir() + "/launch/slurm/" + script + ".sbatch"},
                          30, env);
    ASSERT_EQ(sub.exit_code, 0) << sub.output;
    job_of[script] = sub.output.substr(0, sub.output.find_first_of(";\n"));
  }
  for (const auto& [script, id] : job_of) {
    std::string state;
    for (int i = 0; i < 600; ++i) {  // bounded: 5 minutes
      auto show = RunCommand({bin["scontrol"], "show", "job", id}, 10, env);
      const size_t at = show.output.find("JobState=");
      state = at == std::string::npos ? "?" : show.output.substr(at + 9, show.output.find(' ', at) - at - 9);
      if (state != "PENDING" && state != "RUNNING" && state != "CONFIGURING" && state != "COMPLETING") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    const std::string run = dir / script;
    auto out = ReadFileToString(run + ".out");
    EXPECT_EQ(state, "COMPLETED") << script << ".sbatch, job " << id << ":\n" << (out.ok() ? *out : "(no output)");
    json res = ReadJson(run + "/result.json");
    ASSERT_TRUE(res.contains("test")) << script << ": " << res.dump();
    EXPECT_EQ(res["test"]["users"], 600);
    ASSERT_EQ(res["workers"].size(), 2u);
    EXPECT_EQ(res["workers"][0]["collective"], script == "srun" ? "zmq" : "mpi");
    EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
    EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.1) << script;
  }
  // srun with too few tasks: rank 0 says why, the step is torn down, srun exits non-zero.
  auto few = RunCommand({bin["srun"], "--ntasks=3", "--kill-on-bad-exit=1", Binary(), "train", "--config", cfg,
                         "--run-dir", dir / "few"},
                        60, env);
  EXPECT_NE(few.exit_code, 0);
  EXPECT_NE(few.output.find("start at least 4"), std::string::npos) << few.output;
}

TEST(Cluster, TrainsOnRealMovieLensAndBeatsPopularity) {
  const std::string data = testing::SharedDataDir() + "/ml-100k";
  if (!std::filesystem::exists(data + "/u.data")) {
    std::fprintf(stderr, "NOTE: %s/u.data not found (set M6REC_DATA): this test checked nothing\n", data.c_str());
    GTEST_SKIP() << "MovieLens-100K absent at " << data;
  }
  TempDir dir;
  auto r = RunCommand({Binary(), "local", "--config", testing::SourceDir() + "/configs/ml100k.yaml", "--run-dir",
                       dir / "run", "--set", "data.path=" + data, "--set", "train.epochs=4"},
                      240);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json res = ReadJson(dir / "run/result.json");
  ASSERT_TRUE(res.contains("test")) << res.dump();
  EXPECT_EQ(res["protocol"], "sampled");
  EXPECT_EQ(res["test"]["users"].get<double>(), 943.0);
  EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.03) << res.dump();
}

}  // namespace m6rec
