// What the scheduler's HTTP endpoint serves besides /status (scheduler/scheduler.h):
//   /         the live dashboard: one self-contained page (common/web_assets.h) that polls
//             /status every second and draws the cluster (every node, its heartbeat age, alive
//             or dead), each worker's loss and samples/s over time with its epoch and ETA, the
//             evaluations so far, and each server's pull/push rates and hot-tier hit rate,
//             and pull/push latency (workers' blocked time per step, servers' time per request)
//   /metrics  the same state in the Prometheus text format (prometheus-cpp), for a scraper
// Both are pure functions of the /status JSON, so they are tested without a cluster.
#pragma once

#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>

namespace m6rec {

std::string DashboardPage(const std::string& job_name);

// A node's stats over time (points with "t", seconds), bounded at `capacity` points. When full,
// every other point goes and from then on a point is kept only when it comes at least the
// series' mean spacing after the last one, so the whole span stays at one resolution: old and
// recent points alike (halving alone would leave the oldest part exponentially sparse).
class StatsHistory {
 public:
  explicit StatsHistory(size_t capacity = 600) : capacity_(capacity < 4 ? 4 : capacity) {}
  void Append(nlohmann::json point);
  const std::deque<nlohmann::json>& points() const { return points_; }
  bool empty() const { return points_.empty(); }
  const nlohmann::json& back() const { return points_.back(); }

 private:
  size_t capacity_;
  double min_gap_s_ = 0;
  std::deque<nlohmann::json> points_;
};

// Metric names (labels): m6rec_job_info (job, phase), m6rec_job_uptime_seconds,
// m6rec_node_up / m6rec_node_heartbeat_age_seconds (role, rank), m6rec_worker_steps_total,
// m6rec_worker_samples_total, m6rec_worker_loss, m6rec_worker_samples_per_second,
// m6rec_worker_epoch, m6rec_worker_eta_seconds (rank), m6rec_eval_metric (metric),
// m6rec_server_requests_total (rank, op), m6rec_server_rows_total (rank, op),
// m6rec_server_hot_hits_total / m6rec_server_cold_reads_total (rank), m6rec_stream_events_total,
// m6rec_worker_ps_wait_seconds_total / m6rec_server_busy_seconds_total (rank, op).
std::string PrometheusText(const nlohmann::json& status);

}  // namespace m6rec
