// The "zmq" collective: dense-gradient allreduce among worker processes over ZeroMQ/TCP, for
// clusters launched without MPI (the local simulated cluster, srun without PMI). Rendezvous goes
// through the scheduler: every worker binds its endpoint *before* registering and advertises
// its port, so the ClusterView hands every rank the address of rank 0.
//
// Algorithm: a star. Ranks 1..W-1 send their buffer to rank 0, which sums the buffers in rank
// order (0, 1, ..., W-1: one fixed order, so the sum does not depend on arrival order) and sends
// the one result back to all; every rank therefore holds the same bits. Traffic at rank 0 is
// 2(W-1)n floats per call, fine for the few-MB dense models of recommenders and small worker
// counts; MPI and NCCL remain the backends for large groups.
// Every receive has a deadline and polls `should_abort`, so a dead peer fails the call instead
// of hanging it. Threading: one thread uses a ZmqCollective.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/collective.h"

namespace m6rec {

// A bound-but-unused endpoint: make it before registering, advertise port().
class ZmqCollectiveEndpoint {
 public:
  static StatusOr<std::shared_ptr<ZmqCollectiveEndpoint>> Bind(const std::string& host);
  ~ZmqCollectiveEndpoint();
  int port() const;

  struct Impl;
  std::unique_ptr<Impl> impl;
};

struct ZmqCollectiveOptions {
  std::shared_ptr<ZmqCollectiveEndpoint> endpoint;  // this rank's (rank 0 serves on it)
  int rank = 0;
  std::vector<std::string> peers;                   // "tcp://host:port" of every rank, in rank order
  int timeout_ms = 600000;                          // one collective call may wait this long
  std::function<bool(std::string*)> should_abort;   // polled while waiting
};

StatusOr<std::unique_ptr<Collective>> CreateZmqCollective(const ZmqCollectiveOptions& opts);

}  // namespace m6rec
