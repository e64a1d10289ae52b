// SchedulerClient: how a server or worker talks to the scheduler. Connect() retries with
// exponential back-off until connect_timeout_ms and then fails naming the address, so start-up
// does not depend on which process comes up first. A reader thread receives pushed events
// (cluster view, barrier releases, NODE_DEAD, SHUTDOWN); a heartbeat thread keeps the node alive.
// Time: every deadline and interval (connect back-off, heartbeats, the timeouts of Register,
// Barrier, WaitShutdown and QueryStatus) is measured on the options' Clock, so a test can pass a
// deadline by advancing a FakeClock instead of sleeping. Waits block on a condition variable for
// at most kWaitSliceMs of real time before they read the clock again.
// Thread-safe: any thread may call any method; waits return early when the job is shut down
// or the scheduler connection is lost.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/cluster_view.h"
#include "common/protocol.h"
#include "common/status.h"

namespace m6rec {

struct SchedulerClientOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  uint64_t token = 0;
  int connect_timeout_ms = 30000;
  int heartbeat_interval_ms = 500;
  // The clock every deadline and interval is read from; nullptr = a SteadyClock (real time).
  // Not owned: it must outlive the client (its heartbeat thread reads it).
  const Clock* clock = nullptr;
};

// How a wait for the job's end ended, as the client learned it (never parsed from text).
enum class ShutdownCause {
  kShutdownOk,      // SHUTDOWN ok=true: the job completed
  kShutdownFailed,  // SHUTDOWN ok=false: the job failed (the reason says why)
  kNodeDead,        // SHUTDOWN ok=false after a NODE_DEAD: the job failed because a node died
  kConnectionLost,  // the scheduler connection closed or broke before any SHUTDOWN
  kTimeout,         // nothing ended the job within the wait
};
const char* ShutdownCauseName(ShutdownCause c);

struct ShutdownNotice {
  bool ok = false;  // cause == kShutdownOk
  ShutdownCause cause = ShutdownCause::kTimeout;
  std::string reason;  // for people: logs and error messages
};

class SchedulerClient {
 public:
  // The longest a wait blocks (real time) before it reads the clock again: how soon a wait
  // notices a FakeClock advanced past its deadline.
  static constexpr int64_t kWaitSliceMs = 50;

  static StatusOr<std::unique_ptr<SchedulerClient>> Connect(const SchedulerClientOptions& opts);
  ~SchedulerClient();

  // Each timeout_ms below is measured from the call's start on the options' clock.
  // Registers and waits (up to timeout_ms) for the cluster view; starts heartbeats.
  StatusOr<ClusterView> Register(const std::string& role, const std::string& host, int port,
                                 int requested_rank, int timeout_ms);
  // Waits until every live worker (group "workers") or every node ("all") reached `name`.
  Status Barrier(const std::string& name, const std::string& group, int timeout_ms);
  // Reports the worker's end (summary is a JSON object's text).
  Status Finished(bool ok, const std::string& error, const std::string& summary_json);
  // Blocks until the scheduler says SHUTDOWN or the connection is lost (reported as not ok);
  // notice.cause says which (kTimeout when neither happened within timeout_ms).
  ShutdownNotice WaitShutdown(int timeout_ms);
  // Non-blocking: set once SHUTDOWN(ok=false), NODE_DEAD or a lost connection was seen.
  bool failed(std::string* why) const;
  bool shutdown_received() const;
  StatusOr<std::string> QueryStatus(int timeout_ms);
  // What this node reports with every heartbeat from now on (a JSON object: a worker's
  // progress, a server's counters), shown by the scheduler's dashboard, /status and /metrics.
  void SetStats(const nlohmann::json& stats);

  class Impl;

 private:
  explicit SchedulerClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace m6rec
