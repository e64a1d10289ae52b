// Training progress shared by the workers' jobs: loss windows for the log, per-epoch loss,
// sample and step counts, timing, and the summary fields every job reports.
#pragma once

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/logging.h"
#include "worker/metrics.h"

namespace m6rec {

class TrainProgress {
 public:
  explicit TrainProgress(int log_every) : log_every_(log_every) {}

  void StartEpoch() {
    epoch_loss_ = 0;
    epoch_n_ = 0;
  }
  // One step of `n` samples whose summed loss is `loss_sum`; logs every log_every steps.
  void Step(int epoch, double loss_sum, uint64_t n) {
    if (first_loss_ < 0) first_loss_ = loss_sum / std::max<uint64_t>(1, n);
    window_loss_ += loss_sum;
    window_n_ += n;
    epoch_loss_ += loss_sum;
    epoch_n_ += n;
    samples_ += n;
    ++steps_;
    if (steps_ % log_every_ == 0) {
      const int64_t now = MonotonicMs();
      LOG_INFO << "epoch " << epoch << " step " << steps_ << " loss " << window_loss_ / window_n_ << " ("
               << static_cast<int>(window_n_ * 1000.0 / std::max<int64_t>(1, now - window_t0_)) << " samples/s)";
      window_loss_ = 0;
      window_n_ = 0;
      window_t0_ = now;
    }
  }
  // Closes the epoch; returns its mean loss.
  double EndEpoch() { return last_loss_ = epoch_loss_ / std::max<uint64_t>(1, epoch_n_); }
  void AddEvalMs(int64_t ms) { eval_ms_ += ms; }

  uint64_t steps() const { return steps_; }
  double elapsed_s() const { return (MonotonicMs() - t0_) / 1000.0; }

  // The fields of a worker summary every job reports.
  nlohmann::json Summary() const {
    const double secs = elapsed_s(), eval_s = eval_ms_ / 1000.0;
    return {{"steps", steps_},         {"samples", samples_},
            {"train_s", secs},         {"eval_s", eval_s},
            {"samples_per_s", samples_ / std::max(1e-9, secs - eval_s)},
            {"first_loss", first_loss_}, {"last_loss", last_loss_}};
  }

 private:
  int log_every_;
  double first_loss_ = -1, last_loss_ = 0, window_loss_ = 0, epoch_loss_ = 0;
  uint64_t window_n_ = 0, epoch_n_ = 0, samples_ = 0, steps_ = 0;
  const int64_t t0_ = MonotonicMs();
  int64_t window_t0_ = t0_, eval_ms_ = 0;
};

// Per-user metric sums as JSON ({"users": n, "sums": {...}}), merged by the launcher.
inline nlohmann::json SumsJson(const MetricSums& m) {
  nlohmann::json j = {{"users", m.users()}};
  for (const auto& [k, v] : m.sums()) j["sums"][k] = v;
  return j;
}

}  // namespace m6rec
