// The zmq collective over real loopback sockets, ranks as threads of this process.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "worker/zmq_collective.h"

namespace m6rec {

namespace {
// Runs fn(rank, collective) on `n` ranks; returns each rank's status.
std::vector<Status> RunRanks(int n, const std::function<Status(int, Collective&)>& fn, int kill_rank = -1) {
  std::vector<std::shared_ptr<ZmqCollectiveEndpoint>> eps;
  std::vector<std::string> peers;
  for (int r = 0; r < n; ++r) {
    auto ep = ZmqCollectiveEndpoint::Bind("127.0.0.1");
    EXPECT_TRUE(ep.ok()) << ep.status().message();
    eps.push_back(*ep);
    peers.push_back("tcp://127.0.0.1:" + std::to_string((*ep)->port()));
  }
  std::vector<Status> out(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ZmqCollectiveOptions o;
      o.endpoint = eps[r];
      o.rank = r;
      o.peers = peers;
      o.timeout_ms = 3000;
      auto c = CreateZmqCollective(o);
      if (!c.ok()) {
        out[r] = c.status();
        return;
      }
      out[r] = r == kill_rank ? Status::OK() : fn(r, **c);
    });
  for (auto& t : threads) t.join();
  return out;
}
}  // namespace

TEST(ZmqCollective, AllReduceIsTheRankOrderSumAndBitIdentical) {
  const int n = 3;
  const size_t len = 50000;
  std::vector<std::vector<float>> results(n);
  auto st = RunRanks(n, [&](int r, Collective& c) -> Status {
    std::vector<float> v(len);
    for (size_t i = 0; i < len; ++i) v[i] = 1.0f / float(1 + i + 7 * r) + 1e6f * float(r == 1);
    if (!c.capabilities().host_buffers || c.capabilities().device_buffers)
      return Status::Internal("the zmq collective must say it takes host buffers");
    for (int round = 0; round < 3; ++round) M6_RETURN_IF_ERROR(c.AllReduceSum(v.data(), len));
    results[r] = v;
    return Status::OK();
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].ok()) << r << ": " << st[r].message();
  // The expected value, summed in rank order, three times over.
  std::vector<float> want(len);
  for (size_t i = 0; i < len; ++i) {
    float x[n];
    for (int r = 0; r < n; ++r) x[r] = 1.0f / float(1 + i + 7 * r) + 1e6f * float(r == 1);
    for (int round = 0; round < 3; ++round) {
      float s = x[0];
      for (int r = 1; r < n; ++r) s += x[r];
      for (int r = 0; r < n; ++r) x[r] = s;
    }
    want[i] = x[0];
  }
  for (int r = 0; r < n; ++r) EXPECT_EQ(0, std::memcmp(results[r].data(), want.data(), len * sizeof(float))) << "rank " << r;
}

TEST(ZmqCollective, BroadcastFromAnyRootAndBarrier) {
  const int n = 3;
  std::vector<std::vector<float>> got(n);
  auto st = RunRanks(n, [&](int r, Collective& c) -> Status {
    std::vector<float> v{float(r), float(r * 10)};
    M6_RETURN_IF_ERROR(c.Broadcast(v.data(), v.size(), 2));
    M6_RETURN_IF_ERROR(c.Barrier());
    got[r] = v;
    return Status::OK();
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << st[r].message();
    EXPECT_EQ(got[r], (std::vector<float>{2.0f, 20.0f}));
  }
}

TEST(ZmqCollective, ADeadPeerFailsTheCallWithinTheDeadline) {
  // Rank 2 joins and then never calls: the others must fail, not hang.
  auto st = RunRanks(3, [&](int, Collective& c) -> Status {
    float x = 1;
    return c.AllReduceSum(&x, 1);
  }, /*kill_rank=*/2);
  EXPECT_FALSE(st[0].ok());
  EXPECT_NE(st[0].message().find("no message"), std::string::npos) << st[0].message();
  EXPECT_FALSE(st[1].ok());
}

TEST(ZmqCollective, MismatchedCallsAreReportedNotMisread) {
  auto st = RunRanks(2, [&](int r, Collective& c) -> Status {
    std::vector<float> v(r == 0 ? 4 : 5, 1.0f);
    return c.AllReduceSum(v.data(), v.size());
  });
  EXPECT_FALSE(st[0].ok());
  EXPECT_NE(st[0].message().find("different collectives"), std::string::npos) << st[0].message();
}

}  // namespace m6rec
