// Scheduler: the control plane. One Boost.Asio I/O thread serves
//  - the control port: length-prefixed frames (common/protocol.h) from servers and workers:
//    REGISTER -> CLUSTER_VIEW once everyone is in; HEARTBEAT; BARRIER -> BARRIER_RELEASE;
//    FINISHED; STATUS_REQUEST -> STATUS_REPLY. It pushes NODE_DEAD and SHUTDOWN to everyone.
//  - the HTTP port (Boost.Beast, exact routes): / the live dashboard, /status (cluster state
//    and every node's heartbeat stats as JSON), /metrics (Prometheus text), /healthz
//    (scheduler/dashboard.h).
// Failure policy: a node whose connection drops, or that is silent for heartbeat_timeout_ms,
// is declared dead; every node is told (NODE_DEAD) and the job is shut down with an error, since
// this version has no recovery. A rendezvous that is not complete within connect_timeout_ms
// fails naming the missing nodes. Run() returns OK only when every worker finished OK.
// Threading: Create and Run from one thread; Stop from any thread.
#pragma once

#include <memory>
#include <string>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"

namespace m6rec {

struct SchedulerOptions {
  ClusterConfig cluster;
  uint32_t num_slots = 4096;
  uint64_t token = 0;
  std::string job_name = "m6rec";
  std::string port_file;  // if set, "CONTROL_PORT HTTP_PORT\n" is written there once bound
  // If set, the job's timeline is written there when the scheduler ends: every event it saw
  // (registrations, the cluster formed, each epoch's start, evaluations, checkpoints, deaths,
  // the end) and the nodes' stats histories — what report.html draws over time.
  std::string timeline_path;
  const Clock* clock = nullptr;  // defaults to a SteadyClock
};

class Scheduler {
 public:
  static StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& opts);
  ~Scheduler();

  int port() const;
  int http_port() const;  // -1 when off
  Status Run();
  void Stop(const std::string& reason);

  class Impl;

 private:
  explicit Scheduler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace m6rec
