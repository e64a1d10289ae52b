// Integration: what the parameter servers promise — exact arithmetic under overlapping pushes
// from two workers, and every acknowledged push surviving a SIGKILLed server restarted on its
// RocksDB directory. Real server processes, real sockets, real RocksDB.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cluster_util.h"
#include "common/cluster_view.h"
#include "common/util.h"
#include "ps/optimizer.h"
#include "scheduler/client.h"
#include "test_util.h"
#include "worker/ps_client.h"

namespace m6rec {

using nlohmann::json;
using namespace m6rec::testing;

namespace {

std::string PushCheckConfig(const std::string& store) {
  return R"(job: {name: pushcheck, seed: 3}
cluster: {servers: 2, workers: 2, heartbeat_interval_ms: 100, heartbeat_timeout_ms: 5000}
ps: {store: )" +
         store + R"(, num_slots: 64, threads: 1}
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
Status PushCheckWorker(const JobConfig& cfg, int sched_port, uint64_t token,
                       std::vector<uint64_t>* ids_out, std::vector<float>* rows) {
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
      for (uint32_t d = 0; d < t.dim; ++d)
        grads[i * t.dim + d] = PushCheckGrad(ids[i], d, round, view.rank);
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
  Background sched({Binary(), "scheduler", "--config", cfg_path, "--port-file", dir / "sched.port"},
                   dir / "sched.log", env);
  const int port = std::atoi(testing::WaitForFile(dir / "sched.port", 20).c_str());
  ASSERT_GT(port, 0) << sched.Output();
  std::vector<std::unique_ptr<Background>> servers;
  for (int r = 0; r < 2; ++r)
    servers.push_back(std::make_unique<Background>(
        std::vector<std::string>{Binary(), "server", "--config", cfg_path, "--scheduler",
                                 "127.0.0.1:" + std::to_string(port), "--rank", std::to_string(r),
                                 "--data-dir", dir / ("server-" + std::to_string(r))},
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
      ASSERT_EQ(rows[i * t.dim + d], expect[i * RowWidth(t) + d])
          << "key " << i << " lost an acknowledged update";
  second->Kill(SIGTERM);
  ASSERT_TRUE(second->Wait(10));
  EXPECT_EQ(second->exit_code(), 0) << second->Output();
}

}  // namespace m6rec
