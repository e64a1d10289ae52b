#include <gtest/gtest.h>

#include <cstdlib>

#include "launch/cluster_launch.h"

namespace m6rec {

TEST(ClusterLaunch, SequentialPlacement) {
  auto p = PlanRoles(6, 2, Placement::kSequential, {});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(EnumName(r.role) + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "server1", "worker0", "worker1", "worker2"}));
}

TEST(ClusterLaunch, ServerPerNodePlacement) {
  // Ranks 0-2 on node 0, 3-5 on node 1: node 0's server is rank 1 (rank 0 is the scheduler).
  auto p = PlanRoles(6, 99, Placement::kServerPerNode, {0, 0, 0, 1, 1, 1});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(EnumName(r.role) + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "worker0", "server1", "worker1", "worker2"}));
}

TEST(ClusterLaunch, TooFewProcessesSaySo) {
  auto p = PlanRoles(3, 2, Placement::kSequential, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("start at least 4"), std::string::npos) << p.status().message();
  EXPECT_NE(p.status().message().find("no worker"), std::string::npos) << p.status().message();
  p = PlanRoles(2, 2, Placement::kSequential, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("cannot hold a scheduler, 2 servers and a worker"), std::string::npos)
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
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
                        "PMIX_SIZE", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"})
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
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS",
                        "SLURM_PROCID", "SLURM_NTASKS"})
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
    EXPECT_NE(b.status().message().find("SLURM_STEP_TASKS_PER_NODE '" + bad + "'"), std::string::npos)
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

}  // namespace m6rec
