#include <gtest/gtest.h>

#include <cstdlib>

#include "launch/cluster_launch.h"

namespace m6rec {

TEST(ClusterLaunch, SequentialPlacement) {
  auto p = PlanRoles(6, 2, "sequential", {});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(r.role + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "server1", "worker0", "worker1", "worker2"}));
}

TEST(ClusterLaunch, ServerPerNodePlacement) {
  // Ranks 0-2 on node 0, 3-5 on node 1: node 0's server is rank 1 (rank 0 is the scheduler).
  auto p = PlanRoles(6, 99, "server_per_node", {0, 0, 0, 1, 1, 1});
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string> roles;
  for (const auto& r : *p) roles.push_back(r.role + std::to_string(r.index));
  EXPECT_EQ(roles, (std::vector<std::string>{"scheduler0", "server0", "worker0", "server1", "worker1", "worker2"}));
}

TEST(ClusterLaunch, TooFewProcessesSaySo) {
  auto p = PlanRoles(3, 2, "sequential", {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("start at least 4"), std::string::npos) << p.status().message();
  EXPECT_NE(p.status().message().find("no worker"), std::string::npos) << p.status().message();
  p = PlanRoles(2, 2, "sequential", {});
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
