// Runs under mpirun (ctest starts it with -np 3): every rank runs the same tests against the
// MPI collective, and a failure on any rank fails the run.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <vector>

#include "launch/mpi_launch.h"
#include "worker/collective.h"
#include "worker/collective_setup.h"

namespace m6rec {

std::unique_ptr<Collective> Mpi() {
  CollectiveOptions o;
  o.backend = "mpi";
  auto c = CreateCollective(o);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(MpiCollective, AllReduceSumIsExactAndBitIdenticalOnEveryRank) {
  auto c = Mpi();
  ASSERT_NE(c, nullptr);
  ASSERT_GE(c->size(), 2) << "run me under mpirun -np N with N >= 2";
  const size_t n = 100000;
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = 1.0f / float(1 + i + 13 * c->rank()) + 3e6f * float(c->rank() % 2);
  std::vector<float> mine = v;
  ASSERT_TRUE(c->AllReduceSum(v.data(), n).ok());
  // The same bits everywhere: compare with rank 0's result.
  std::vector<float> root = v;
  ASSERT_TRUE(c->Broadcast(root.data(), n, 0).ok());
  EXPECT_EQ(v, root) << "rank " << c->rank() << " holds different bits than rank 0";
  // And it is the sum: gather every rank's input and add in double.
  std::vector<float> all(n * c->size());
  MPI_Allgather(mine.data(), static_cast<int>(n), MPI_FLOAT, all.data(), static_cast<int>(n),
                MPI_FLOAT, MPI_COMM_WORLD);
  for (size_t i = 0; i < n; i += 997) {
    double want = 0;
    for (int r = 0; r < c->size(); ++r) want += all[r * n + i];
    EXPECT_NEAR(v[i], want, 1e-6 * std::abs(want) + 1e-6) << "element " << i;
  }
}

TEST(MpiCollective, DoubleSumsStayExactPastFloatPrecisionAndBitIdentical) {
  auto c = Mpi();
  ASSERT_NE(c, nullptr);
  // Rank 0 holds 2^24 and 1e15; every other rank adds 1: exact in double, not in float.
  std::vector<double> v = c->rank() == 0 ? std::vector<double>{16777216.0, 1e15, 0.1}
                                         : std::vector<double>{1.0, 1.0, 0.2 * c->rank()};
  auto work = c->AllReduceSumAsync(v.data(), v.size());
  ASSERT_TRUE(work.ok()) << work.status().message();
  ASSERT_TRUE((*work)->Wait().ok());
  EXPECT_EQ(v[0], 16777216.0 + (c->size() - 1)) << "rank " << c->rank();
  EXPECT_EQ(v[1], 1e15 + (c->size() - 1)) << "rank " << c->rank();
  // The same bits everywhere: compare with rank 0's result.
  std::vector<double> root = v;
  MPI_Bcast(root.data(), 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  EXPECT_EQ(0, std::memcmp(v.data(), root.data(), 3 * sizeof(double)))
      << "rank " << c->rank() << " holds different bits than rank 0";
}

TEST(MpiCollective, AsyncAllReduceOverlapsAndBroadcastAndBarrierWork) {
  auto c = Mpi();
  ASSERT_NE(c, nullptr);
  std::vector<float> v(1000, float(c->rank() + 1));
  auto work = c->AllReduceSumAsync(v.data(), v.size());
  ASSERT_TRUE(work.ok());
  ASSERT_TRUE((*work)->Wait().ok());
  const float want = float(c->size() * (c->size() + 1) / 2);
  for (float x : v) ASSERT_EQ(x, want);
  std::vector<float> b(5, float(c->rank()));
  ASSERT_TRUE(c->Broadcast(b.data(), 5, c->size() - 1).ok());
  for (float x : b) EXPECT_EQ(x, float(c->size() - 1));
  EXPECT_TRUE(c->Barrier().ok());
  EXPECT_EQ(c->Broadcast(b.data(), 5, c->size()).code(), StatusCode::kInvalidArgument);
}

TEST(MpiCollective, SplitWorkersGiveTheMpiBackendTheirOwnCommunicator) {
  // Rank 0 plays the scheduler; the others are the workers, with their own communicator.
  int world_rank = 0, world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ASSERT_GE(world, 3) << "run me under mpirun -np N with N >= 3";
  const bool worker = world_rank != 0;
  auto comm = MpiSplitWorkers(worker, world_rank);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  if (!worker) {
    EXPECT_EQ(*comm, nullptr) << "a non-worker gets no communicator";
    return;
  }
  ASSERT_NE(*comm, nullptr);
  EXPECT_EQ((*comm)->size(), world - 1);
  EXPECT_EQ((*comm)->rank(), world_rank - 1) << "ordered by the key";
  WorkerCollectiveOptions o;
  o.workers.resize(world - 1);
  o.rank = (*comm)->rank();
  o.mpi_workers = *comm;
  EXPECT_EQ(ChooseCollectiveBackend(o), CollectiveKind::kMpi)
      << "auto picks mpi when the workers have their own";
  auto c = SetUpWorkerCollective(o);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ((*c)->name(), "mpi");
  EXPECT_EQ((*c)->size(), world - 1);
  std::vector<double> v{double(world_rank)};  // 1 + 2 + ... + (world - 1): rank 0 is left out
  ASSERT_TRUE((*c)->AllReduceSum(v.data(), 1).ok());
  EXPECT_EQ(v[0], double(world * (world - 1) / 2));
}

}  // namespace m6rec

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    // Only rank 0 prints the usual report; other ranks report failures only.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&rc, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
