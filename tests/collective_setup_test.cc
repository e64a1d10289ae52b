// Choosing and starting a worker's collective (worker/collective_setup.h): the auto rule and
// the zmq bootstrap from the view's endpoints, ranks as threads over loopback.
#include "worker/collective_setup.h"

#include <gtest/gtest.h>

#include <thread>

namespace m6rec {

namespace {
std::vector<NodeAddr> Workers(int n) {
  std::vector<NodeAddr> w(n);
  for (int r = 0; r < n; ++r) {
    w[r].rank = r;
    w[r].host = "127.0.0.1";
    w[r].port = 1000 + r;
  }
  return w;
}
}  // namespace

TEST(CollectiveSetup, AutoPicksSingleNcclOrZmqAndKeepsAnExplicitChoice) {
  WorkerCollectiveOptions o;
  o.workers = Workers(1);
  EXPECT_EQ(ChooseCollectiveBackend(o), CollectiveKind::kSingle)
      << "one worker has nothing to reduce";
  o.workers = Workers(3);
  EXPECT_EQ(ChooseCollectiveBackend(o), CollectiveKind::kZmq) << "cpu model, no MPI communicator";
  o.device = DeviceKind::kCuda;
  EXPECT_EQ(ChooseCollectiveBackend(o), HaveNccl() ? CollectiveKind::kNccl : CollectiveKind::kZmq);
  o.backend = CollectiveKind::kMpi;
  EXPECT_EQ(ChooseCollectiveBackend(o), CollectiveKind::kMpi) << "an explicit choice is kept";
}

TEST(CollectiveSetup, MpiWithoutTheWorkersCommunicatorIsRefusedByName) {
  // (An unknown backend name never gets here: train.collective is an enum, refused by the
  // config parser with the allowed values.)
  WorkerCollectiveOptions o;
  o.workers = Workers(2);
  o.backend = CollectiveKind::kMpi;  // no communicator: not an mpirun launch
  auto c = SetUpWorkerCollective(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().message();
  EXPECT_NE(c.status().message().find(HaveMpi() ? "mpirun" : "no MPI"), std::string::npos)
      << c.status().message();
}

TEST(CollectiveSetup, ZmqWorkersMeetOverTheirEndpointsWithTheJobToken) {
  const int n = 3;
  std::vector<NodeAddr> workers(n);
  std::vector<std::shared_ptr<ZmqCollectiveEndpoint>> eps(n);
  for (int r = 0; r < n; ++r) {
    auto ep = ZmqCollectiveEndpoint::Bind("127.0.0.1");
    ASSERT_TRUE(ep.ok()) << ep.status().message();
    eps[r] = *ep;
    workers[r] = NodeAddr{uint32_t(r), "127.0.0.1", (*ep)->port(), 0};
  }
  std::vector<Status> st(n);
  std::vector<std::string> names(n);
  std::vector<double> sums(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      WorkerCollectiveOptions o;
      o.workers = workers;
      o.rank = r;
      o.token = 99;
      o.timeout_ms = 30000;  // only against hanging: every rank takes part
      o.endpoint = eps[r];
      auto c = SetUpWorkerCollective(o);
      if (!c.ok()) {
        st[r] = c.status();
        return;
      }
      names[r] = (*c)->name();
      double x = 16777216.0 * (r == 0) + (r == 1);
      st[r] = (*c)->AllReduceSum(&x, 1);
      sums[r] = x;
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r].message();
    EXPECT_EQ(names[r], "zmq");
    EXPECT_EQ(sums[r], 16777217.0);
  }
}

TEST(CollectiveSetup, AWorkerWithAnotherJobsTokenNeverJoins) {
  // Rank 1 carries a different token: rank 0 drops its hello, counts it, and gives up at the
  // deadline instead of forming a group with it.
  std::vector<NodeAddr> workers(2);
  std::vector<std::shared_ptr<ZmqCollectiveEndpoint>> eps(2);
  for (int r = 0; r < 2; ++r) {
    eps[r] = *ZmqCollectiveEndpoint::Bind("127.0.0.1");
    workers[r] = NodeAddr{uint32_t(r), "127.0.0.1", eps[r]->port(), 0};
  }
  std::vector<Status> st(2);
  std::vector<std::thread> ts;
  for (int r = 0; r < 2; ++r)
    ts.emplace_back([&, r] {
      WorkerCollectiveOptions o;
      o.workers = workers;
      o.rank = r;
      o.token = r == 0 ? 1 : 2;
      // Rank 0 reads (and counts) rank 1's hello only while it waits, so it waits long enough
      // for the hello to arrive on a busy machine; rank 1 gives up sooner.
      o.timeout_ms = r == 0 ? 3000 : 800;
      o.endpoint = eps[r];
      st[r] = SetUpWorkerCollective(o).status();
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(st[0].code(), StatusCode::kDeadlineExceeded) << st[0].message();
  EXPECT_FALSE(st[1].ok());
  EXPECT_GE(eps[0]->stats().dropped_bad_token, 1u) << "rank 1's hello is counted as foreign";
}

}  // namespace m6rec
