#include "launch/cluster_launch.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "common/protocol.h"
#include "common/util.h"
#include "test_util.h"

namespace m6rec {

TEST(ClusterLaunch, SequentialPlacement) {
  auto p = PlanRoles(6, 2, Placement::kSequential, {});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(EnumName(r.role) + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "server1", "worker0",
                                             "worker1", "worker2"}));
}

TEST(ClusterLaunch, ServerPerNodePlacement) {
  // Ranks 0-2 on node 0, 3-5 on node 1: node 0's server is rank 1 (rank 0 is the scheduler).
  auto p = PlanRoles(6, 99, Placement::kServerPerNode, {0, 0, 0, 1, 1, 1});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(EnumName(r.role) + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "worker0", "server1",
                                             "worker1", "worker2"}));
}

TEST(ClusterLaunch, TooFewProcessesSaySo) {
  auto p = PlanRoles(3, 2, Placement::kSequential, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("start at least 4"), std::string::npos)
      << p.status().message();
  EXPECT_NE(p.status().message().find("no worker"), std::string::npos) << p.status().message();
  p = PlanRoles(2, 2, Placement::kSequential, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("cannot hold a scheduler, 2 servers and a worker"),
            std::string::npos)
      << p.status().message();
}

TEST(ClusterLaunch, DetectsTheLauncherFromItsEnvironment) {
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("PMI_RANK");
  unsetenv("PMI_SIZE");
  unsetenv("PMIX_RANK");
  unsetenv("PMIX_SIZE");
  EXPECT_EQ(DetectLaunch().kind, LaunchEnv::Kind::kNone);
  setenv("PMI_RANK", "3", 1);
  setenv("PMI_SIZE", "8", 1);
  LaunchEnv e = DetectLaunch();
  EXPECT_EQ(e.kind, LaunchEnv::Kind::kMpi);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.size, 8);
  unsetenv("PMI_RANK");
  unsetenv("PMI_SIZE");
}

TEST(ClusterLaunch, DetectsSrunTasksButNotTheBatchScript) {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
                        "PMIX_RANK", "PMIX_SIZE", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"})
    unsetenv(v);
  // The batch script sees the allocation (SLURM_PROCID=0, SLURM_NTASKS) but is no task of a step.
  setenv("SLURM_PROCID", "0", 1);
  setenv("SLURM_NTASKS", "6", 1);
  EXPECT_EQ(DetectLaunch().kind, LaunchEnv::Kind::kNone);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_PROCID", "4", 1);
  setenv("SLURM_STEP_NUM_TASKS", "5", 1);
  LaunchEnv e = DetectLaunch();
  EXPECT_EQ(e.kind, LaunchEnv::Kind::kSlurm);
  EXPECT_EQ(e.rank, 4);
  EXPECT_EQ(e.size, 5) << "the step's task count, not the allocation's";
  // mpirun inside the allocation: MPI wins over the SLURM_* variables it inherited.
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "6", 1);
  EXPECT_EQ(DetectLaunch().kind, LaunchEnv::Kind::kMpi);
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_ID",
                        "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_NTASKS"})
    unsetenv(v);
}

TEST(ClusterLaunch, SlurmTasksPerNodeGiveEachRanksNode) {
  auto n = SlurmNodeOfRank("2(x3),1", 7);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, (std::vector<int>{0, 0, 1, 1, 2, 2, 3}));
  n = SlurmNodeOfRank("5", 5);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, (std::vector<int>{0, 0, 0, 0, 0}));
  n = SlurmNodeOfRank("", 3);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, (std::vector<int>{0, 0, 0}));
  // Server per node from it: nodes 0..3 each get one server (rank 0 is the scheduler).
  auto plan = PlanRoles(7, 0, Placement::kServerPerNode, *SlurmNodeOfRank("2(x3),1", 7));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ((*plan)[1].role, Role::kServer);
  EXPECT_EQ((*plan)[2].role, Role::kServer);
  EXPECT_EQ((*plan)[3].role, Role::kWorker);
  EXPECT_EQ((*plan)[4].role, Role::kServer);
  EXPECT_EQ((*plan)[6].role, Role::kServer);
  for (const std::string bad : {"2(x", "x3", "2(x0)", "0", "3,abc"}) {
    auto b = SlurmNodeOfRank(bad, 3);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("SLURM_STEP_TASKS_PER_NODE '" + bad + "'"),
              std::string::npos)
        << b.status().message();
  }
  auto mismatch = SlurmNodeOfRank("2(x2)", 5);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("holds 4 tasks, the step has 5"), std::string::npos);
}

TEST(ClusterLaunch, ResolvesHostAuto) {
  EXPECT_EQ(*ResolveHost("10.1.2.3", ""), "10.1.2.3") << "an explicit address is kept";
  auto lo = ResolveHost("auto", "lo");
  ASSERT_TRUE(lo.ok()) << lo.status().message();
  EXPECT_EQ(*lo, "127.0.0.1");
  auto none = ResolveHost("auto", "no-such-if0");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no-such-if0"), std::string::npos);
}

TEST(ClusterLaunch, FileRendezvousCarriesTheTokenAndJsonFromRankZero) {
  testing::TempDir dir;
  auto r0 = MakeFileRendezvous(dir.path(), "7.0", 0, 2000);
  auto r1 = MakeFileRendezvous(dir.path(), "7.0", 1, 2000);
  uint64_t token = 0xfeedULL;
  nlohmann::json body = {{"run_dir", "/shared/run"}};
  ASSERT_TRUE(r0->Share(&token, &body).ok());
  body = {{"host", "10.0.0.1"}, {"port", 4242}};
  ASSERT_TRUE(r0->Share(&token, &body).ok());
  uint64_t got = 0;
  nlohmann::json in;
  std::string where;
  ASSERT_TRUE(r1->Share(&got, &in, &where).ok());
  EXPECT_EQ(got, 0xfeedULL) << "the job token travels in the header";
  EXPECT_EQ(in["run_dir"], "/shared/run");
  EXPECT_EQ(where, dir / ".rendezvous-7.0-0");
  Status s = r1->Share(&got, &in);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(in["port"], 4242);
  r0->Finish();
  EXPECT_FALSE(ReadFileToString(dir / ".rendezvous-7.0-0").ok()) << "rank 0 removes its files";
}

TEST(ClusterLaunch, ForeignOrDamagedRendezvousFilesAreClearErrorsNamingTheFile) {
  const std::string good = EncodeRendezvousMessage(5, 0, {{"run_dir", "/r"}});
  MsgHeader future;
  future.version = kProtocolVersion + 1;
  future.type = static_cast<uint16_t>(MsgType::kRendezvous);
  struct Case {
    const char* what;
    std::string bytes;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"truncated", good.substr(0, good.size() - 5), "truncated"},
      {"the old text format", "127.0.0.1:5000 123", "not one from an m6rec rank 0"},
      {"empty", "", "not one from an m6rec rank 0"},
      {"another protocol version", EncodeControlFrame(future, "{}"), "version"},
      {"message 1 where message 0 belongs", EncodeRendezvousMessage(5, 1, {{"run_dir", "/r"}}),
       "not rank 0's message 0"},
      {"a JSON array", EncodeRendezvousMessage(5, 0, nlohmann::json::array()), "not a JSON object"},
  };
  for (const Case& c : cases) {
    testing::TempDir dir;
    ASSERT_TRUE(WriteFileAtomic(dir / ".rendezvous-9.1-0", c.bytes).ok());
    auto r1 = MakeFileRendezvous(dir.path(), "9.1", 1, 2000);
    uint64_t token = 0;
    nlohmann::json body;
    Status s = r1->Share(&token, &body);
    ASSERT_FALSE(s.ok()) << c.what << " must be refused";
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << c.what << ": " << s.message();
    EXPECT_NE(s.message().find(dir / ".rendezvous-9.1-0"), std::string::npos)
        << c.what << ": the error names the file: " << s.message();
    EXPECT_NE(s.message().find(c.says), std::string::npos) << c.what << ": " << s.message();
    EXPECT_EQ(token, 0u) << c.what << ": nothing is taken from a refused message";
  }
}

TEST(ClusterLaunch, ARendezvousMessageWithAnotherJobsTokenIsRefused) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir / ".rendezvous-3.0-0",
                              EncodeRendezvousMessage(11, 0, {{"run_dir", "/r"}}))
                  .ok());
  ASSERT_TRUE(WriteFileAtomic(dir / ".rendezvous-3.0-1",
                              EncodeRendezvousMessage(12, 1, {{"host", "h"}, {"port", 1}}))
                  .ok());
  auto r1 = MakeFileRendezvous(dir.path(), "3.0", 1, 2000);
  uint64_t token = 0;
  nlohmann::json body;
  ASSERT_TRUE(r1->Share(&token, &body).ok());
  EXPECT_EQ(token, 11u);
  Status s = r1->Share(&token, &body);
  ASSERT_FALSE(s.ok()) << "message 1 carries token 12, message 0 carried 11";
  EXPECT_NE(s.message().find("another job's token"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(".rendezvous-3.0-1"), std::string::npos) << s.message();
}

TEST(ClusterLaunch, AMissingRendezvousFileTimesOutNamingIt) {
  testing::TempDir dir;
  auto r1 = MakeFileRendezvous(dir.path(), "4.0", 2, 200);
  uint64_t token = 0;
  nlohmann::json body;
  Status s = r1->Share(&token, &body);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.message();
  EXPECT_NE(s.message().find(".rendezvous-4.0-0"), std::string::npos) << s.message();
}

}  // namespace m6rec
