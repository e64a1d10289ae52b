// Choosing and starting the workers' collective, in one place: the "auto" rule and each
// backend's bootstrap (zmq over the endpoints the workers advertised in the cluster view; NCCL's
// unique id over that zmq group; MPI over the workers' communicator the launcher split off).
// Called once per worker, from its main thread, after every worker registered; a collective
// call, so every worker calls it with the same backend and workers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/cluster_view.h"
#include "common/config.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/mpi_communicator.h"
#include "worker/zmq_collective.h"

namespace m6rec {

struct WorkerCollectiveOptions {
  CollectiveKind backend = CollectiveKind::kAuto;  // train.collective
  // Every worker's collective endpoint (host, port), in rank order: the cluster view's workers.
  std::vector<NodeAddr> workers;
  int rank = 0;                          // this worker's rank
  uint64_t token = 0;                    // the job token; every zmq message carries it
  DeviceKind device = DeviceKind::kCpu;  // where the model's dense tensors live (model.device)
  int cuda_device = 0;                   // nccl: the CUDA device
  int timeout_ms = 600000;  // zmq: how long one collective call may wait for the others
  std::function<bool(std::string*)> should_abort;  // zmq: polled while waiting (a node died)
  // zmq (and nccl's bootstrap): this worker's endpoint, bound before it registered.
  std::shared_ptr<ZmqCollectiveEndpoint> endpoint;
  // mpi: the workers' own communicator (launch/mpi_launch.h MpiSplitWorkers); null when the
  // launch has none (then auto never picks mpi).
  std::shared_ptr<const MpiCommunicator> mpi_workers;
};

// The backend `auto` stands for: single for one worker, nccl for cuda models when this build
// has it, mpi when the workers have their own MPI communicator of exactly their number, else
// zmq. An explicit choice is kept.
CollectiveKind ChooseCollectiveBackend(const WorkerCollectiveOptions& o);

// Creates this worker's collective.
StatusOr<std::unique_ptr<Collective>> SetUpWorkerCollective(const WorkerCollectiveOptions& o);

}  // namespace m6rec
