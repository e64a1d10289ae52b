#include "worker/collective_setup.h"

#include <cstring>

#include "common/transport.h"

namespace m6rec {

CollectiveKind ChooseCollectiveBackend(const WorkerCollectiveOptions& o) {
  if (o.backend != CollectiveKind::kAuto) return o.backend;
  const int W = static_cast<int>(o.workers.size());
  if (W == 1) return CollectiveKind::kSingle;
  if (o.device == DeviceKind::kCuda && HaveNccl()) return CollectiveKind::kNccl;
  if (o.mpi_workers && o.mpi_workers->size() == W) return CollectiveKind::kMpi;
  return CollectiveKind::kZmq;
}

StatusOr<std::unique_ptr<Collective>> SetUpWorkerCollective(const WorkerCollectiveOptions& o) {
  const std::string backend = EnumName(ChooseCollectiveBackend(o));
  const int W = static_cast<int>(o.workers.size());
  if (o.rank < 0 || o.rank >= W)
    return Status::InvalidArgument("collective: rank " + std::to_string(o.rank) + " of " +
                                   std::to_string(W) + " workers");
  // zmq (and NCCL's bootstrap) need the peers' endpoints from the view.
  std::unique_ptr<Collective> zmq;
  if (backend == "zmq" || backend == "nccl") {
    ZmqCollectiveOptions zo;
    zo.endpoint = o.endpoint;
    zo.rank = o.rank;
    zo.token = o.token;
    for (const auto& w : o.workers) {
      if (w.port <= 0)
        return Status::Internal("worker " + std::to_string(w.rank) +
                                " advertised no collective port");
      zo.peers.push_back(TcpEndpoint(w.host, w.port));
    }
    zo.timeout_ms = o.timeout_ms;
    zo.should_abort = o.should_abort;
    M6_ASSIGN_OR_RETURN(zmq, CreateZmqCollective(zo));
    if (backend == "zmq") return zmq;
  }
  CollectiveOptions co;
  co.backend = backend;
  if (backend == "mpi" && HaveMpi()) {  // (without MPI, CreateCollective says so)
    if (!o.mpi_workers)
      return Status::Unavailable(
          "mpi collective: the workers have no MPI communicator (run the job under mpirun)");
    if (o.mpi_workers->size() != W)
      return Status::InvalidArgument("mpi collective: the workers' MPI communicator has " +
                                     std::to_string(o.mpi_workers->size()) + " ranks, the job " +
                                     std::to_string(W) + " workers");
    co.mpi_comm = o.mpi_workers;
  }
  if (backend == "nccl") {
    co.device = o.cuda_device;
    co.nccl_rank = o.rank;
    co.nccl_size = W;
    Collective* boot = zmq.get();
    // The NCCL unique id travels as floats over the zmq collective's broadcast.
    co.share = [boot](std::string* bytes, int root) -> Status {
      std::vector<float> buf((bytes->size() + sizeof(float) - 1) / sizeof(float), 0.0f);
      std::memcpy(buf.data(), bytes->data(), bytes->size());
      M6_RETURN_IF_ERROR(boot->Broadcast(buf.data(), buf.size(), root));
      std::memcpy(bytes->data(), buf.data(), bytes->size());
      return Status::OK();
    };
  }
  return CreateCollective(co);
}

}  // namespace m6rec
