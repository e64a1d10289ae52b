#include "worker/collective.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#ifdef M6REC_HAVE_NCCL
#include <cuda_runtime.h>
#endif

namespace m6rec {

namespace {
StatusOr<std::unique_ptr<Collective>> InprocRank(std::shared_ptr<InProcessHub> hub, int rank,
                                                 int fail_on_call = 0) {
  CollectiveOptions o;
  o.backend = "inproc";
  o.hub = std::move(hub);
  o.rank = rank;
  o.fail_on_call = fail_on_call;
  return CreateCollective(o);
}
}  // namespace

TEST(Collective, UnknownBackendIsAnInvalidArgumentByName) {
  CollectiveOptions o;
  o.backend = "carrier-pigeon";
  auto c = CreateCollective(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("carrier-pigeon"), std::string::npos);
}

TEST(Collective, SingleIsTheIdentity) {
  auto c = CreateCollective(CollectiveOptions{});
  ASSERT_TRUE(c.ok());
  std::vector<float> v{1, 2, 3};
  ASSERT_TRUE((*c)->AllReduceSum(v.data(), v.size()).ok());
  EXPECT_EQ(v, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ((*c)->size(), 1);
}

TEST(Collective, HostBackendsSayTheyTakeHostBuffersInPlace) {
  auto single = CreateCollective(CollectiveOptions{});
  auto inproc = InprocRank(MakeInProcessHub(1), 0);
  ASSERT_TRUE(single.ok() && inproc.ok());
  for (Collective* c : {single->get(), inproc->get()}) {
    const Collective::Capabilities caps = c->capabilities();
    EXPECT_TRUE(caps.host_buffers) << c->name() << " takes host memory";
    EXPECT_FALSE(caps.device_buffers) << c->name() << " does not need device memory";
    EXPECT_TRUE(caps.in_place) << c->name();
  }
}

TEST(Collective, InProcessRanksGetBitIdenticalSumsOverManyRounds) {
  const int ranks = 4, rounds = 50;
  const size_t n = 1000;
  auto hub = MakeInProcessHub(ranks);
  std::vector<std::vector<float>> results(ranks);
  std::vector<Status> errors(ranks);
  std::vector<std::thread> ts;
  for (int r = 0; r < ranks; ++r)
    ts.emplace_back([&, r] {
      auto c = InprocRank(hub, r);
      if (!c.ok()) {
        errors[r] = c.status();
        return;
      }
      std::vector<float> v(n);
      for (int round = 0; round < rounds; ++round) {
        // Values whose float sum depends on the order of addition.
        for (size_t i = 0; i < n; ++i)
          v[i] = 1.0f / float(1 + i + 7 * r) + 1e7f * float(r % 2) + round;
        Status s = (*c)->AllReduceSum(v.data(), n);
        if (!s.ok()) {
          errors[r] = s;
          return;
        }
        if (round == rounds - 1) results[r] = v;
      }
      std::vector<float> b(3, float(r));
      errors[r] = (*c)->Broadcast(b.data(), 3, 2);
      if (errors[r].ok() && b != std::vector<float>(3, 2.0f))
        errors[r] = Status::Internal("bad broadcast");
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < ranks; ++r)
    ASSERT_TRUE(errors[r].ok()) << "rank " << r << ": " << errors[r].message();
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(results[r], results[0]) << "rank " << r << " drifted";
  float want = 0;
  for (int r = 0; r < ranks; ++r)
    want += 1.0f / float(1 + 7 * r) + 1e7f * float(r % 2) + (rounds - 1);
  EXPECT_NEAR(results[0][0], want, 1.0f);
}

TEST(Collective, InProcessDoubleSumsStayExactPastFloatPrecision) {
  // 2^24 + 1 and 1e15 + 1 have no float representation; the double allreduce must keep them.
  const int ranks = 3;
  auto hub = MakeInProcessHub(ranks);
  std::vector<std::vector<double>> got(ranks);
  std::vector<Status> errors(ranks);
  std::vector<std::thread> ts;
  for (int r = 0; r < ranks; ++r)
    ts.emplace_back([&, r] {
      auto c = InprocRank(hub, r);
      // rank 0: 2^24, 1e15; rank 1 adds 1 to each; rank 2 adds nothing there.
      std::vector<double> v =
          r == 0 ? std::vector<double>{16777216.0, 1e15, 0.1}
                 : std::vector<double>{r == 1 ? 1.0 : 0.0, r == 1 ? 1.0 : 0.0, 0.2 * r};
      std::vector<float> f(2, 1.0f);  // a float call in between keeps its own type
      errors[r] = (*c)->AllReduceSum(v.data(), v.size());
      if (errors[r].ok()) errors[r] = (*c)->AllReduceSum(f.data(), f.size());
      if (errors[r].ok() && f != std::vector<float>(2, 3.0f))
        errors[r] = Status::Internal("bad float sum");
      got[r] = v;
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < ranks; ++r)
    ASSERT_TRUE(errors[r].ok()) << "rank " << r << ": " << errors[r].message();
  EXPECT_EQ(got[0][0], 16777217.0) << "2^24 + 1 survives";
  EXPECT_EQ(got[0][1], 1e15 + 1) << "1e15 + 1 survives";
  EXPECT_EQ(got[0][2], (0.1 + 0.2) + 0.4) << "summed in rank order";
  for (int r = 1; r < ranks; ++r)
    EXPECT_EQ(0, std::memcmp(got[r].data(), got[0].data(), 3 * sizeof(double)))
        << "rank " << r << " drifted";
}

TEST(Collective, InProcessRanksMixingFloatAndDoubleFailInsteadOfMisreading) {
  auto hub = MakeInProcessHub(2);
  std::vector<Status> errors(2);
  std::thread t([&] {
    auto c = InprocRank(hub, 1);
    std::vector<double> v(4, 1.0);
    errors[1] = (*c)->AllReduceSum(v.data(), v.size());
  });
  auto c = InprocRank(hub, 0);
  std::vector<float> v(4, 1.0f);
  errors[0] = (*c)->AllReduceSum(v.data(), v.size());
  t.join();
  EXPECT_FALSE(errors[0].ok() && errors[1].ok()) << "one rank must see the mismatch";
  for (const Status& s : errors) {
    if (!s.ok()) {
      EXPECT_TRUE(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kAborted)
          << s.message();
    }
  }
}

TEST(Collective, AnInjectedFailureReachesEveryRankInsteadOfHanging) {
  const int ranks = 3;
  auto hub = MakeInProcessHub(ranks);
  std::vector<Status> errors(ranks);
  std::vector<std::thread> ts;
  for (int r = 0; r < ranks; ++r)
    ts.emplace_back([&, r] {
      auto c = InprocRank(hub, r, r == 1 ? 3 : 0);  // rank 1 fails its third call
      std::vector<float> v(10, 1.0f);
      for (int call = 0; call < 5 && errors[r].ok(); ++call)
        errors[r] = (*c)->AllReduceSum(v.data(), 10);
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < ranks; ++r) EXPECT_EQ(errors[r].code(), StatusCode::kAborted) << "rank " << r;
  EXPECT_NE(errors[1].message().find("injected failure"), std::string::npos);
}

TEST(Collective, MpiOutsideMpirunSaysSo) {
  CollectiveOptions o;
  o.backend = "mpi";
  auto c = CreateCollective(o);
  ASSERT_FALSE(c.ok()) << "this test binary never initialises MPI";
  EXPECT_NE(c.status().message().find(HaveMpi() ? "mpirun" : "this build has no MPI"),
            std::string::npos)
      << c.status().message();
}

TEST(Collective, NcclIsBuiltAndReportsTheMissingGpuClearly) {
  CollectiveOptions o;
  o.backend = "nccl";
  auto c = CreateCollective(o);
  if (!HaveNccl()) {
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("no CUDA/NCCL"), std::string::npos) << c.status().message();
    std::fprintf(stderr,
                 "NOTE: this build has no NCCL backend (CUDA/NCCL not found at configure time)\n");
    return;
  }
  if (!c.ok()) {
    // Built with NCCL; on a machine without a GPU creation must say exactly that.
    EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().message();
    EXPECT_NE(c.status().message().find("no CUDA device"), std::string::npos)
        << c.status().message();
    std::fprintf(stderr, "NOTE: NCCL backend built; no GPU here, so no NCCL operation ran\n");
    return;
  }
  EXPECT_EQ((*c)->name(), "nccl");
  EXPECT_TRUE((*c)->capabilities().device_buffers) << "NCCL's float buffers live on the GPU";
  EXPECT_FALSE((*c)->capabilities().host_buffers);
  EXPECT_EQ((*c)->size(), 1);
  EXPECT_TRUE((*c)->Barrier().ok()) << "a one-rank NCCL barrier on the GPU";
#ifdef M6REC_HAVE_NCCL
  // A real allreduce and broadcast of device memory (one rank: the sum is the buffer itself).
  const size_t n = 1 << 20;
  std::vector<float> host(n), back(n);
  for (size_t i = 0; i < n; ++i) host[i] = 1.0f / float(i + 1);
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_TRUE((*c)->AllReduceSum(dev, n).ok());
  EXPECT_TRUE((*c)->Broadcast(dev, n, 0).ok());
  ASSERT_EQ(cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dev);
  EXPECT_EQ(0, std::memcmp(host.data(), back.data(), n * sizeof(float)))
      << "one rank: the buffer is unchanged";
  // Metric sums: doubles in host memory, staged through the GPU.
  std::vector<double> sums{16777217.0, 1e15 + 1};
  EXPECT_TRUE((*c)->AllReduceSum(sums.data(), sums.size()).ok());
  EXPECT_EQ(sums, (std::vector<double>{16777217.0, 1e15 + 1})) << "host doubles come back exact";
  std::fprintf(stderr, "NOTE: NCCL allreduce + broadcast of %zu floats ran on the GPU\n", n);
#endif
}

}  // namespace m6rec
