// What the scheduler's HTTP endpoint serves besides /status (scheduler/scheduler.h):
//   /         the live dashboard: one self-contained page (common/web_assets.h) that polls
//             /status every second and draws the cluster (every node, its heartbeat age, alive
//             or dead), each worker's loss and samples/s over time with its epoch and ETA, the
//             evaluations so far, and each server's pull/push rates and hot-tier hit rate
//   /metrics  the same state in the Prometheus text format (prometheus-cpp), for a scraper
// Both are pure functions of the /status JSON, so they are tested without a cluster.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace m6rec {

std::string DashboardPage(const std::string& job_name);

// Metric names (labels): m6rec_job_info (job, phase), m6rec_job_uptime_seconds,
// m6rec_node_up / m6rec_node_heartbeat_age_seconds (role, rank), m6rec_worker_steps_total,
// m6rec_worker_samples_total, m6rec_worker_loss, m6rec_worker_samples_per_second,
// m6rec_worker_epoch, m6rec_worker_eta_seconds (rank), m6rec_eval_metric (metric),
// m6rec_server_requests_total (rank, op), m6rec_server_rows_total (rank, op),
// m6rec_server_hot_hits_total / m6rec_server_cold_reads_total (rank), m6rec_stream_events_total.
std::string PrometheusText(const nlohmann::json& status);

}  // namespace m6rec
