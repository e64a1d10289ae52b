// Collectives for the workers' dense gradients: one interface, a backend per device kind,
// chosen by name with a plain options struct (an unknown name is InvalidArgument).
//   "single"  one process, nothing to reduce (size 1): tests and single-worker jobs
//   "inproc"  ranks are threads of one process sharing a hub: tests of multi-worker logic,
//             with failure injection (a double that is real code)
//   "mpi"     CPU buffers over MPI (the process must be an MPI rank; under mpirun), over the
//             communicator in the options
//   "zmq"     worker processes over ZeroMQ: CreateZmqCollective (worker/zmq_collective.h)
//   "nccl"    GPU buffers over NCCL (built when CUDA and NCCL are found; needs a GPU)
// Every backend's AllReduceSum (float or double) leaves bit-identical results on every rank
// (each reduces in one fixed order and shares that one result), so replicas of the dense model
// never drift. Where buffers may live is capabilities(), not name().
// Threading: one Collective per rank, used from one thread; Work objects from that thread.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace m6rec {

// An operation in flight (c10d's Work): Wait() completes it and reports its error.
class Work {
 public:
  virtual ~Work() = default;
  virtual Status Wait() = 0;
};

// A Work that finished when it was created (synchronous backends).
class CompletedWork final : public Work {
 public:
  explicit CompletedWork(Status s) : s_(std::move(s)) {}
  Status Wait() override { return s_; }

 private:
  Status s_;
};

class Collective {
 public:
  // What a backend's buffers may be. Callers decide where to put a tensor from these, never
  // from name(). They describe the float operations (dense tensors).
  struct Capabilities {
    bool device_buffers = false;  // buffers must be device (GPU) memory
    bool host_buffers = true;     // host memory is accepted
    bool in_place = true;         // results replace the input in the caller's buffer
  };

  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // for logs and result files only
  virtual Capabilities capabilities() const = 0;

  // In-place sum over all ranks of data[0..n). The buffer must not be touched until Wait().
  virtual StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) = 0;
  // The same in double precision, for sums that must stay exact past float's 2^24 (metric
  // sums, user counts): an overload rather than a dtype argument, so the element type is
  // checked by the compiler and float callers do not change. Host memory is accepted on every
  // backend (NCCL stages host buffers through the GPU); device memory where device_buffers.
  // Same guarantee: one reduction order, bit-identical on every rank.
  virtual StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double* data, size_t n) = 0;
  // In-place: every rank ends with root's data[0..n).
  virtual Status Broadcast(float* data, size_t n, int root) = 0;
  virtual Status Barrier() = 0;

  // AllReduceSumAsync, then Wait().
  Status AllReduceSum(float* data, size_t n);
  Status AllReduceSum(double* data, size_t n);
};

class InProcessHub;     // shared by the ranks of an "inproc" group
class MpiCommunicator;  // worker/mpi_communicator.h

struct CollectiveOptions {
  std::string backend = "single";  // single | inproc | mpi | nccl
  // inproc: the group's hub (MakeInProcessHub) and this thread's rank.
  std::shared_ptr<InProcessHub> hub;
  int rank = 0;
  // inproc: make the fail_on_call-th collective call (1-based) of this rank fail (0 = never).
  int fail_on_call = 0;
  // nccl: the CUDA device, and how ranks agree on the NCCL id: `share(bytes, root)` must make
  // root's bytes known to every rank (e.g. an MPI broadcast or the scheduler).
  int device = 0;
  int nccl_rank = 0, nccl_size = 1;
  std::function<Status(std::string* bytes, int root)> share;
  // mpi: the ranks of the group (launch/mpi_launch.h's MpiSplitWorkers for the workers of a
  // cluster launch); null = MPI_COMM_WORLD (tests run under mpirun). MPI must be initialised.
  std::shared_ptr<const MpiCommunicator> mpi_comm;
};

std::shared_ptr<InProcessHub> MakeInProcessHub(int size);
// Fails every pending and future call of the group (a rank that stops early, as a real peer's
// death would fail them).
void AbortInProcessHub(InProcessHub& hub);

StatusOr<std::unique_ptr<Collective>> CreateCollective(const CollectiveOptions& opts);

// Whether this build has the NCCL backend.
bool HaveNccl();
// Whether this build has the MPI backend.
bool HaveMpi();

}  // namespace m6rec
