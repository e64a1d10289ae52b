// Integration: failures and bad input — an unreachable scheduler, a killed or silenced server,
// Ctrl-C, a bad config field, a bad data line: each stops the whole cluster with a clear
// message, a non-zero exit and no orphan process.
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
#include "common/util.h"
#include "test_util.h"

namespace m6rec {

using nlohmann::json;
using namespace m6rec::testing;

TEST(Cluster, WorkerThatCannotReachTheSchedulerFailsClearlyWithinTheTimeout) {
  // What a user sees from the real binary on the real clock: a worker pointed at a dead address
  // gives up by itself and says where it tried and for how long. The timeout logic itself is
  // checked on a FakeClock (scheduler_test.cc); the time bounds here are deliberately loose.
  // The lower one is certain (the worker cannot give up before it has retried for 1.5 s); the
  // upper one only tells "gave up" from "hangs", with room for a slow or loaded machine, where
  // starting the binary alone can take seconds; RunCommand's 60 s limit catches a real hang.
  TempDir dir;
  std::string cfg = testing::WriteFile(dir / "job.yaml", MfConfig(1));
  auto r = RunCommand({Binary(), "worker", "--config", cfg, "--scheduler", "127.0.0.1:1", "--rank",
                       "0", "--set", "cluster.connect_timeout_ms=1500"},
                      60, {{"M6REC_TOKEN", "00000000000000ab"}});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.timed_out) << "it must give up by itself, not hang";
  EXPECT_NE(r.output.find("cannot reach the scheduler at 127.0.0.1:1 within 1500 ms"),
            std::string::npos)
      << r.output;
  EXPECT_GE(r.seconds, 1.5) << "it gave up before its connect timeout";
  EXPECT_LT(r.seconds, 30.0) << "it must give up near the timeout, not hang";
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
  EXPECT_NE(out.find("server 1 (pid " + std::to_string(victim) + ") was killed by signal 9"),
            std::string::npos)
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

TEST(Cluster, BadInputIsRefusedWithFileLineAndField) {
  TempDir dir;
  std::string bad =
      testing::WriteFile(dir / "bad.yaml", "job: {name: x}\ncluster:\n  workers: many\n");
  auto r = RunCommand({Binary(), "local", "--config", bad, "--run-dir", dir / "run"}, 30);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.yaml:3: cluster.workers: expected an integer, got 'many'"),
            std::string::npos)
      << r.output;
  auto no_token =
      RunCommand({Binary(), "server", "--config", bad, "--scheduler", "127.0.0.1:5"}, 30);
  EXPECT_EQ(no_token.exit_code, 2);
  auto r2 =
      RunCommand({Binary(), "local", "--set", "tables.0.dim=0", "--run-dir", dir / "run2"}, 30);
  EXPECT_EQ(r2.exit_code, 2);
  EXPECT_NE(r2.output.find("tables[0].dim"), std::string::npos) << r2.output;
  auto r3 = RunCommand({Binary(), "local", "--bogus"}, 30);
  EXPECT_EQ(r3.exit_code, 2);
  EXPECT_NE(r3.output.find("unknown option --bogus"), std::string::npos) << r3.output;
}

TEST(Cluster, BadDataLineStopsTheJobNamingFileAndLine) {
  TempDir dir;
  testing::WriteFile(dir / "interactions.tsv", "0 1\n1 2\n2 oops\n");
  std::string cfg =
      testing::WriteFile(dir / "job.yaml", MfConfig(1) + "\n# data from a directory\n");
  auto r = RunCommand({Binary(), "local", "--config", cfg, "--run-dir", dir / "run", "--set",
                       "data.source=dir", "--set", "data.path=" + dir.path()},
                      60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(dir / "interactions.tsv:3: item id 'oops'"), std::string::npos)
      << r.output;
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
  EXPECT_NE(out.find("server 0 (pid " + std::to_string(victim) +
                     ") is dead: silent for more than 1500 ms"),
            std::string::npos)
      << out;
  for (pid_t p : job.pids) EXPECT_FALSE(testing::ProcessAlive(p)) << "orphan pid " << p;
}

}  // namespace m6rec
