// The "zmq" collective: dense-gradient allreduce among worker processes over ZeroMQ/TCP, for
// clusters launched without MPI (the local simulated cluster, srun without PMI). Rendezvous goes
// through the scheduler: every worker binds its endpoint *before* registering and advertises
// its port, so the ClusterView hands every rank the address of rank 0.
//
// Algorithm: a star. Ranks 1..W-1 send their buffer to rank 0, which sums the buffers in rank
// order (0, 1, ..., W-1: one fixed order, so the sum does not depend on arrival order) and sends
// the one result back to all; every rank therefore holds the same bits. Traffic at rank 0 is
// 2(W-1)n elements per call, fine for the few-MB dense models of recommenders and small worker
// counts; MPI and NCCL remain the backends for large groups.
//
// Wire format: every message is common/protocol.h's MsgHeader (types kCollective*, the job
// token, sender rank, request_id = sequence number of the call, num_keys = element count,
// dim = ElementType) and, except for hellos, one frame of elements. A message that is not
// m6rec (bad magic, version, frame count or sizes) or carries another job's token is dropped
// and counted (ZmqCollectiveEndpoint::stats()); the receive keeps waiting for the right one until
// its deadline. A well-formed message of this job that does not match the call (another
// operation, sequence number, count or element type) fails the call: the workers called
// different collectives.
// Every receive has a deadline and polls `should_abort`, so a dead peer fails the call instead
// of hanging it. Threading: one thread uses a ZmqCollective; stats() may be read from any thread.
#pragma once

#include <cstdint>
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

  // Messages dropped on this rank's sockets so far.
  struct Stats {
    uint64_t dropped_malformed = 0;  // not an m6rec collective message, or sizes that lie
    uint64_t dropped_bad_token = 0;  // well-formed, but another job's token
  };
  Stats stats() const;

  struct Impl;
  std::unique_ptr<Impl> impl;
};

struct ZmqCollectiveOptions {
  std::shared_ptr<ZmqCollectiveEndpoint> endpoint;  // this rank's (rank 0 serves on it)
  int rank = 0;
  std::vector<std::string> peers;  // "tcp://host:port" of every rank, in rank order
  uint64_t token = 0;              // the job token: sent in every message, required in every one
  int timeout_ms = 600000;         // one collective call may wait this long
  std::function<bool(std::string*)> should_abort;  // polled while waiting
};

StatusOr<std::unique_ptr<Collective>> CreateZmqCollective(const ZmqCollectiveOptions& opts);

}  // namespace m6rec
