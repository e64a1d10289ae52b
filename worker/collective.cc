#include "worker/collective.h"

#ifdef M6REC_HAVE_MPI
#include <mpi.h>

#include "worker/mpi_communicator_impl.h"
#endif

#include <cstring>
#include <vector>

#include "common/mutex.h"

namespace m6rec {

Status Collective::AllReduceSum(float* data, size_t n) {
  M6_ASSIGN_OR_RETURN(auto work, AllReduceSumAsync(data, n));
  return work->Wait();
}

Status Collective::AllReduceSum(double* data, size_t n) {
  M6_ASSIGN_OR_RETURN(auto work, AllReduceSumAsync(data, n));
  return work->Wait();
}

namespace {

class SingleCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  Capabilities capabilities() const override { return Capabilities{}; }
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float*, size_t) override {
    return std::unique_ptr<Work>(new CompletedWork(Status::OK()));
  }
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double*, size_t) override {
    return std::unique_ptr<Work>(new CompletedWork(Status::OK()));
  }
  Status Broadcast(float*, size_t, int root) override {
    return root == 0 ? Status::OK() : Status::InvalidArgument("broadcast root out of range");
  }
  Status Barrier() override { return Status::OK(); }
};

}  // namespace

// ---- inproc: threads as ranks ------------------------------------------------------------

// The meeting point of an inproc group: each rank's thread calls Exchange for its operations;
// Fail may come from any thread. All state is under mu_.
class InProcessHub {
 public:
  explicit InProcessHub(int size) : size_(size), slots_(size) {}

  // Every rank deposits its buffer; the last one to arrive computes the result in rank order
  // (so it is the same whatever the arrival order) and everyone copies it out. A rank that
  // comes back for the next operation waits until every copy of this one is done.
  template <typename T>
  Status Exchange(int rank, T* data, size_t n, int root, bool reduce) EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    cv_.Wait(&mu_, [&]() REQUIRES(mu_) { return pending_copies_ == 0 || failed_; });
    if (failed_) return Status::Aborted("inproc collective: a peer failed");
    if (n_ == SIZE_MAX) {
      n_ = n;
      elem_ = sizeof(T);
    }
    if (n_ != n || elem_ != sizeof(T)) {
      failed_ = true;
      cv_.NotifyAll();
      return Status::InvalidArgument(
          "inproc collective: ranks passed different sizes or element types");
    }
    slots_[rank] = data;
    const uint64_t gen = generation_;
    if (++arrived_ == size_) {
      std::vector<T> acc(n, T(0));
      if (reduce) {
        for (int r = 0; r < size_; ++r) {
          const T* in = static_cast<const T*>(slots_[r]);
          for (size_t i = 0; i < n; ++i) acc[i] += in[i];
        }
      } else {
        std::memcpy(acc.data(), slots_[root], n * sizeof(T));
      }
      result_.assign(reinterpret_cast<const char*>(acc.data()),
                     reinterpret_cast<const char*>(acc.data()) + n * sizeof(T));
      arrived_ = 0;
      pending_copies_ = size_;
      ++generation_;
      cv_.NotifyAll();
    } else {
      cv_.Wait(&mu_, [&]() REQUIRES(mu_) { return generation_ != gen || failed_; });
      if (generation_ == gen) return Status::Aborted("inproc collective: a peer failed");
    }
    std::memcpy(data, result_.data(), n * sizeof(T));
    if (--pending_copies_ == 0) {
      n_ = SIZE_MAX;
      cv_.NotifyAll();
    }
    return Status::OK();
  }

  void Fail() EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    failed_ = true;
    cv_.NotifyAll();
  }
  int size() const { return size_; }

 private:
  const int size_;
  Mutex mu_;
  CondVar cv_;  // signalled when an operation completes, its last copy is out, or on failure
  // Each rank's buffer, of n_ elements of elem_ bytes.
  std::vector<const void*> slots_ GUARDED_BY(mu_);
  std::vector<char> result_ GUARDED_BY(mu_);
  int arrived_ GUARDED_BY(mu_) = 0;
  int pending_copies_ GUARDED_BY(mu_) = 0;
  size_t n_ GUARDED_BY(mu_) = SIZE_MAX;
  size_t elem_ GUARDED_BY(mu_) = 0;
  uint64_t generation_ GUARDED_BY(mu_) = 0;
  bool failed_ GUARDED_BY(mu_) = false;
};

std::shared_ptr<InProcessHub> MakeInProcessHub(int size) {
  return std::make_shared<InProcessHub>(size);
}
void AbortInProcessHub(InProcessHub& hub) { hub.Fail(); }

namespace {

class InProcessCollective final : public Collective {
 public:
  InProcessCollective(std::shared_ptr<InProcessHub> hub, int rank, int fail_on_call)
      : hub_(std::move(hub)), rank_(rank), fail_on_call_(fail_on_call) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->size(); }
  std::string name() const override { return "inproc"; }
  Capabilities capabilities() const override { return Capabilities{}; }

  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) override {
    M6_RETURN_IF_ERROR(MaybeFail("allreduce"));
    return std::unique_ptr<Work>(new CompletedWork(hub_->Exchange(rank_, data, n, 0, true)));
  }
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double* data, size_t n) override {
    M6_RETURN_IF_ERROR(MaybeFail("allreduce"));
    return std::unique_ptr<Work>(new CompletedWork(hub_->Exchange(rank_, data, n, 0, true)));
  }
  Status Broadcast(float* data, size_t n, int root) override {
    M6_RETURN_IF_ERROR(MaybeFail("broadcast"));
    if (root < 0 || root >= size()) return Status::InvalidArgument("broadcast root out of range");
    return hub_->Exchange(rank_, data, n, root, false);
  }
  Status Barrier() override {
    M6_RETURN_IF_ERROR(MaybeFail("barrier"));
    float dummy = 0;
    return hub_->Exchange(rank_, &dummy, 1, 0, true);
  }

 private:
  Status MaybeFail(const char* op) {
    if (fail_on_call_ > 0 && ++calls_ == fail_on_call_) {
      hub_->Fail();
      return Status::Aborted(std::string("inproc collective: injected failure in ") + op +
                             " on rank " + std::to_string(rank_));
    }
    return Status::OK();
  }
  std::shared_ptr<InProcessHub> hub_;
  int rank_, fail_on_call_, calls_ = 0;
};

// ---- MPI ---------------------------------------------------------------------------------
#ifdef M6REC_HAVE_MPI

Status MpiError(int code, const char* what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  return Status::Internal(std::string("MPI ") + what + ": " + std::string(msg, len));
}

class MpiCollective final : public Collective {
 public:
  // Works on its own duplicate of `group`, so its messages never mix with other users' of it.
  explicit MpiCollective(MPI_Comm group) {
    MPI_Comm_dup(group, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCollective() override { MPI_Comm_free(&comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  Capabilities capabilities() const override { return Capabilities{}; }

  // Reduce to rank 0 in MPI's fixed order, then broadcast that one result: every rank holds
  // the same bits (a plain MPI_Allreduce does not promise that for floating point).
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) override {
    return AllReduce(data, n, MPI_FLOAT);
  }
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double* data, size_t n) override {
    return AllReduce(data, n, MPI_DOUBLE);
  }
  Status Broadcast(float* data, size_t n, int root) override {
    if (root < 0 || root >= size_) return Status::InvalidArgument("broadcast root out of range");
    int rc = MPI_Bcast(data, static_cast<int>(n), MPI_FLOAT, root, comm_);
    return rc == MPI_SUCCESS ? Status::OK() : MpiError(rc, "broadcast");
  }
  Status Barrier() override {
    int rc = MPI_Barrier(comm_);
    return rc == MPI_SUCCESS ? Status::OK() : MpiError(rc, "barrier");
  }

 private:
  StatusOr<std::unique_ptr<Work>> AllReduce(void* data, size_t n, MPI_Datatype type) {
    if (n > static_cast<size_t>(INT32_MAX))
      return Status::InvalidArgument("MPI allreduce: buffer too large");
    const int count = static_cast<int>(n);
    int rc = rank_ == 0 ? MPI_Reduce(MPI_IN_PLACE, data, count, type, MPI_SUM, 0, comm_)
                        : MPI_Reduce(data, nullptr, count, type, MPI_SUM, 0, comm_);
    if (rc != MPI_SUCCESS) return MpiError(rc, "reduce");
    return std::unique_ptr<Work>(new BcastWork(data, count, type, comm_));
  }

  // The broadcast half runs non-blocking, so compute can overlap it until Wait().
  class BcastWork final : public Work {
   public:
    BcastWork(void* data, int n, MPI_Datatype type, MPI_Comm comm) {
      rc_ = MPI_Ibcast(data, n, type, 0, comm, &req_);
    }
    Status Wait() override {
      if (rc_ != MPI_SUCCESS) return MpiError(rc_, "broadcast");
      int rc = MPI_Wait(&req_, MPI_STATUS_IGNORE);
      return rc == MPI_SUCCESS ? Status::OK() : MpiError(rc, "wait");
    }

   private:
    MPI_Request req_ = MPI_REQUEST_NULL;
    int rc_ = MPI_SUCCESS;
  };

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};
#endif  // M6REC_HAVE_MPI

}  // namespace

#ifdef M6REC_HAVE_NCCL
StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(const CollectiveOptions& opts);
bool HaveNccl() { return true; }
#else
bool HaveNccl() { return false; }
#endif

#ifdef M6REC_HAVE_MPI
bool HaveMpi() { return true; }
#else
bool HaveMpi() { return false; }
#endif

StatusOr<std::unique_ptr<Collective>> CreateCollective(const CollectiveOptions& opts) {
  if (opts.backend == "single") return std::unique_ptr<Collective>(new SingleCollective());
  if (opts.backend == "inproc") {
    if (!opts.hub) return Status::InvalidArgument("inproc collective: no hub (MakeInProcessHub)");
    if (opts.rank < 0 || opts.rank >= opts.hub->size())
      return Status::InvalidArgument("inproc collective: rank out of range");
    return std::unique_ptr<Collective>(
        new InProcessCollective(opts.hub, opts.rank, opts.fail_on_call));
  }
  if (opts.backend == "mpi") {
#ifdef M6REC_HAVE_MPI
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
      return Status::Unavailable(
          "mpi collective: MPI is not initialised in this process (run the workers under mpirun)");
    return std::unique_ptr<Collective>(
        new MpiCollective(opts.mpi_comm ? opts.mpi_comm->impl().comm : MPI_COMM_WORLD));
#else
    return Status::Unavailable(
        "mpi collective: this build has no MPI (configure with an MPI installed)");
#endif
  }
  if (opts.backend == "nccl") {
#ifdef M6REC_HAVE_NCCL
    return CreateNcclCollective(opts);
#else
    return Status::Unavailable(
        "nccl collective: this build has no CUDA/NCCL (configure with CUDA and NCCL present)");
#endif
  }
  return Status::InvalidArgument("unknown collective backend '" + opts.backend +
                                 "' (single, inproc, mpi, nccl; zmq through CreateZmqCollective)");
}

}  // namespace m6rec
