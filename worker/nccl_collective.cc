// The NCCL backend: AllReduce/Broadcast of device buffers on one CUDA stream per communicator.
// Built only when CUDA and NCCL are found (M6REC_HAVE_NCCL). The communicator is bootstrapped
// with an ncclUniqueId that rank 0 creates and CollectiveOptions::share distributes. NCCL's ring
// allreduce gives every rank the same bits. Work::Wait synchronises on an event recorded after
// the operation, so the host can overlap other work with the transfer. Float buffers must be
// device memory (capabilities().device_buffers); the double allreduce also takes host memory,
// which it stages through a temporary device buffer (metric sums live on the host).
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "worker/collective.h"

namespace m6rec {

namespace {

Status CudaError(cudaError_t e, const char* what) {
  return Status::Internal(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}
Status NcclError(ncclResult_t r, const char* what) {
  return Status::Internal(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}

class EventWork final : public Work {
 public:
  explicit EventWork(cudaEvent_t ev) : ev_(ev) {}
  ~EventWork() override { cudaEventDestroy(ev_); }
  Status Wait() override {
    cudaError_t e = cudaEventSynchronize(ev_);
    return e == cudaSuccess ? Status::OK() : CudaError(e, "event synchronize");
  }

 private:
  cudaEvent_t ev_;
};

class NcclCollective final : public Collective {
 public:
  NcclCollective(ncclComm_t comm, cudaStream_t stream, int rank, int size)
      : comm_(comm), stream_(stream), rank_(rank), size_(size) {}
  ~NcclCollective() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.device_buffers = true;
    c.host_buffers = false;
    return c;
  }

  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(float* data, size_t n) override {
    return AllReduceOnDevice(data, n, ncclFloat32);
  }

  // Double sums are host-side numbers (metric sums): a host buffer is staged through a device
  // buffer, synchronously (they are small); a device buffer is reduced where it is.
  StatusOr<std::unique_ptr<Work>> AllReduceSumAsync(double* data, size_t n) override {
    cudaPointerAttributes attr;
    cudaError_t e = cudaPointerGetAttributes(&attr, data);
    if (e != cudaSuccess) return CudaError(e, "pointer attributes");
    if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged)
      return AllReduceOnDevice(data, n, ncclDouble);
    if (n == 0) return std::unique_ptr<Work>(new CompletedWork(Status::OK()));
    double* dev = nullptr;
    e = cudaMalloc(&dev, n * sizeof(double));
    if (e != cudaSuccess) return CudaError(e, "malloc");
    Status s = StagedAllReduce(data, dev, n);
    cudaFree(dev);
    return std::unique_ptr<Work>(new CompletedWork(s));
  }
  Status Broadcast(float* data, size_t n, int root) override {
    if (root < 0 || root >= size_) return Status::InvalidArgument("broadcast root out of range");
    M6_RETURN_IF_ERROR(AfterDefaultStream());
    ncclResult_t r = ncclBroadcast(data, data, n, ncclFloat32, root, comm_, stream_);
    if (r != ncclSuccess) return NcclError(r, "broadcast");
    cudaError_t e = cudaStreamSynchronize(stream_);
    return e == cudaSuccess ? Status::OK() : CudaError(e, "stream synchronize");
  }
  Status Barrier() override {
    float* one = nullptr;
    cudaError_t e = cudaMalloc(&one, sizeof(float));
    if (e != cudaSuccess) return CudaError(e, "malloc");
    Status s = AllReduceSum(one, 1);
    cudaFree(one);
    return s;
  }

 private:
  StatusOr<std::unique_ptr<Work>> AllReduceOnDevice(void* data, size_t n, ncclDataType_t type) {
    M6_RETURN_IF_ERROR(AfterDefaultStream());
    ncclResult_t r = ncclAllReduce(data, data, n, type, ncclSum, comm_, stream_);
    if (r != ncclSuccess) return NcclError(r, "allreduce");
    cudaEvent_t ev;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e != cudaSuccess) return CudaError(e, "event create");
    e = cudaEventRecord(ev, stream_);
    if (e != cudaSuccess) {
      cudaEventDestroy(ev);
      return CudaError(e, "event record");
    }
    return std::unique_ptr<Work>(new EventWork(ev));
  }

  // host -> dev, allreduce on our stream, dev -> host, all finished on return.
  Status StagedAllReduce(double* host, double* dev, size_t n) {
    const size_t bytes = n * sizeof(double);
    cudaError_t e = cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) return CudaError(e, "copy to device");
    ncclResult_t r = ncclAllReduce(dev, dev, n, ncclDouble, ncclSum, comm_, stream_);
    if (r != ncclSuccess) return NcclError(r, "allreduce");
    e = cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream_);
    if (e != cudaSuccess) return CudaError(e, "copy to host");
    e = cudaStreamSynchronize(stream_);
    return e == cudaSuccess ? Status::OK() : CudaError(e, "stream synchronize");
  }

  // Our stream is non-blocking, so it does not wait for the legacy default stream by itself;
  // the buffers were written there (LibTorch's kernels, cudaMemcpy), so order after that work.
  Status AfterDefaultStream() {
    cudaEvent_t ev;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e != cudaSuccess) return CudaError(e, "event create");
    e = cudaEventRecord(ev, cudaStreamLegacy);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(stream_, ev, 0);
    cudaEventDestroy(ev);
    return e == cudaSuccess ? Status::OK() : CudaError(e, "stream wait");
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_, size_;
};

}  // namespace

StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(const CollectiveOptions& opts) {
  int devices = 0;
  cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    return Status::Unavailable(std::string("nccl collective: no CUDA device on this machine (") +
                               (e == cudaSuccess ? "0 devices" : cudaGetErrorString(e)) + ")");
  if (opts.device < 0 || opts.device >= devices)
    return Status::InvalidArgument("nccl collective: device " + std::to_string(opts.device) +
                                   " of " + std::to_string(devices));
  if (opts.nccl_size > 1 && !opts.share)
    return Status::InvalidArgument("nccl collective: several ranks need a `share` bootstrap");
  e = cudaSetDevice(opts.device);
  if (e != cudaSuccess) return CudaError(e, "set device");
  ncclUniqueId id;
  if (opts.nccl_rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return NcclError(r, "get unique id");
  }
  if (opts.nccl_size > 1) {
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof(id));
    M6_RETURN_IF_ERROR(opts.share(&bytes, 0));
    if (bytes.size() != sizeof(id))
      return Status::Internal("nccl collective: bad unique id from the bootstrap");
    std::memcpy(&id, bytes.data(), sizeof(id));
  }
  ncclComm_t comm;
  ncclResult_t r = ncclCommInitRank(&comm, opts.nccl_size, id, opts.nccl_rank);
  if (r != ncclSuccess) return NcclError(r, "communicator init");
  cudaStream_t stream;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    ncclCommDestroy(comm);
    return CudaError(e, "stream create");
  }
  return std::unique_ptr<Collective>(
      new NcclCollective(comm, stream, opts.nccl_rank, opts.nccl_size));
}

}  // namespace m6rec
