#include "scheduler/membership.h"

#include <gtest/gtest.h>

namespace m6rec {

TEST(Membership, AssignsRanksAndCompletes) {
  FakeClock clock;
  Membership m(2, 2, 16, &clock);
  EXPECT_FALSE(m.Complete());
  ASSERT_TRUE(m.Register(Role::kServer, "h", 100, 1, 11, 1).ok());
  auto r = m.Register(Role::kServer, "h", 101, -1, 12, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0u) << "the lowest free rank is taken";
  EXPECT_EQ(m.MissingDescription(), "worker 0, worker 1");
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 13, 3).ok());
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 14, 4).ok());
  EXPECT_TRUE(m.Complete());
  ClusterView v = m.ViewFor(Role::kWorker, 1);
  EXPECT_EQ(v.rank, 1u);
  ASSERT_EQ(v.servers.size(), 2u);
  EXPECT_EQ(v.servers[0].port, 101);
  EXPECT_EQ(v.servers[1].port, 100);
  EXPECT_EQ(v.slot_map.size(), 16u);
  auto back = ClusterView::FromJson(v.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->slot_map, v.slot_map);
}

TEST(Membership, RefusesBadRegistrations) {
  FakeClock clock;
  Membership m(1, 1, 8, &clock);
  ASSERT_TRUE(m.Register(Role::kServer, "h", 1, 0, 1, 1).ok());
  EXPECT_FALSE(m.Register(Role::kServer, "h", 2, 0, 2, 2).ok()) << "rank taken";
  EXPECT_FALSE(m.Register(Role::kWorker, "h", 0, 3, 2, 3).ok()) << "rank out of range";
  EXPECT_FALSE(m.Register(Role::kWorker, "h", 0, -1, 2, 1).ok()) << "same connection twice";
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 2, 4).ok());
  EXPECT_FALSE(m.Register(Role::kWorker, "h", 0, -1, 2, 5).ok()) << "no ranks left";
  Membership m2(1, 1, 8, &clock);
  EXPECT_FALSE(m2.Register(Role::kServer, "h", 0, -1, 1, 1).ok()) << "a server needs a port";
}

TEST(Membership, SilentNodesAreDeclaredDeadOnce) {
  FakeClock clock;
  Membership m(1, 1, 8, &clock);
  ASSERT_TRUE(m.Register(Role::kServer, "h", 1, -1, 1, 1).ok());
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 2, 2).ok());
  clock.Advance(500);
  m.Heartbeat(1);
  clock.Advance(200);
  EXPECT_TRUE(m.CheckTimeouts(1000).empty()) << "nobody silent for over 1 s yet";
  clock.Advance(850);  // worker: 1550 ms silent, server: 1050 ms
  auto dead = m.CheckTimeouts(1000);
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_TRUE(m.CheckTimeouts(1000).empty()) << "a dead node is reported once";
}

TEST(Membership, FinishedWorkersAreNotFailures) {
  FakeClock clock;
  Membership m(1, 2, 8, &clock);
  ASSERT_TRUE(m.Register(Role::kServer, "h", 1, -1, 1, 1).ok());
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 2, 2).ok());
  ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 3, 3).ok());
  m.MarkFinished(2, true, "{}");
  EXPECT_FALSE(m.AllWorkersFinished());
  Member out;
  EXPECT_FALSE(m.MarkDisconnected(2, &out)) << "a finished worker may leave";
  clock.Advance(100000);
  auto dead = m.CheckTimeouts(1000);
  ASSERT_EQ(dead.size(), 2u) << "the unfinished worker and the server time out";
  m.MarkFinished(3, false, "{}");
  EXPECT_TRUE(m.AllWorkersFinished());
  EXPECT_TRUE(m.AnyWorkerFailed());
  EXPECT_TRUE(m.MarkDisconnected(1, &out) || !out.alive);
}

TEST(Membership, BarriersReleaseWhenEveryLiveMemberArrives) {
  FakeClock clock;
  Membership m(1, 3, 8, &clock);
  ASSERT_TRUE(m.Register(Role::kServer, "h", 1, -1, 1, 10).ok());
  for (ConnId c : {1, 2, 3}) ASSERT_TRUE(m.Register(Role::kWorker, "h", 0, -1, 1, c).ok());
  EXPECT_TRUE(m.ArriveBarrier("b", "workers", 1).empty());
  EXPECT_TRUE(m.ArriveBarrier("b", "workers", 2).empty());
  auto rel = m.ArriveBarrier("b", "workers", 3);
  EXPECT_EQ(rel.size(), 3u);
  // The same name can be used again afterwards; group "all" waits for servers too.
  for (ConnId c : {1, 2, 3}) EXPECT_TRUE(m.ArriveBarrier("all", "all", c).empty());
  EXPECT_EQ(m.ArriveBarrier("all", "all", 10).size(), 4u);
}

}  // namespace m6rec
