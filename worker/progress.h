// Training progress of a job: loss windows for the log, per-epoch loss, sample and step counts,
// timing; saved with checkpoints (State/Restore) so a resumed job continues its counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "common/clock.h"
#include "common/logging.h"
#include "worker/metrics.h"

namespace m6rec {

class TrainProgress {
 public:
  explicit TrainProgress(int log_every) : log_every_(log_every) {}

  // How many steps an epoch has and how many epochs the job (what the ETAs count down).
  void Plan(uint64_t steps_per_epoch, int epochs) {
    steps_per_epoch_ = steps_per_epoch;
    epochs_ = epochs;
  }
  void StartEpoch() {
    epoch_loss_ = 0;
    epoch_n_ = 0;
    epoch_start_steps_ = steps_;
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
    epoch_ = epoch;
    if (steps_ % log_every_ == 0) {
      const int64_t now = MonotonicMs();
      rate_ = double(log_every_) * 1000.0 / double(std::max<int64_t>(1, now - window_t0_));
      sps_ = double(window_n_) * 1000.0 / double(std::max<int64_t>(1, now - window_t0_));
      LOG_INFO << "epoch " << epoch << " step " << steps_ << " loss " << window_loss_ / window_n_
               << " (" << static_cast<int>(sps_) << " samples/s" << Eta() << ")";
      window_loss_ = 0;
      window_n_ = 0;
      window_t0_ = now;
    }
  }
  // Closes the epoch; returns its mean loss.
  double EndEpoch() { return last_loss_ = epoch_loss_ / std::max<uint64_t>(1, epoch_n_); }
  void AddEvalMs(int64_t ms) { eval_ms_ += ms; }
  // Time the training loop blocked on the parameter servers: waiting for a batch's pulled rows
  // (what the prefetch did not hide) and for the step's pushes to be acknowledged.
  void AddPullWait(int64_t us) { pull_wait_us_ += us; }
  void AddPushWait(int64_t us) { push_wait_us_ += us; }

  uint64_t steps() const { return steps_; }
  uint64_t samples() const { return samples_; }
  double first_loss() const { return first_loss_ < 0 ? 0 : first_loss_; }
  double last_loss() const { return last_loss_; }
  double eval_s() const { return eval_ms_ / 1000.0; }
  // Seconds since the job started (across a resume: the time before it plus the time since).
  double elapsed_s() const { return before_s_ + (MonotonicMs() - t0_) / 1000.0; }
  double samples_per_s() const { return samples_ / std::max(1e-9, elapsed_s() - eval_s()); }

  // Where the job is, for the dashboard (SchedulerClient::SetStats): the epoch, steps, mean
  // loss of the epoch so far, samples/s and steps/s of the last log window, and the ETAs of
  // the epoch and of the job at that rate (training steps only: evaluation not counted).
  nlohmann::json Progress() const {
    nlohmann::json j = {{"epoch", epoch_},
                        {"epochs", epochs_},
                        {"steps", steps_},
                        {"samples", samples_},
                        {"step_in_epoch", steps_ - epoch_start_steps_},
                        {"steps_per_epoch", steps_per_epoch_},
                        {"loss", epoch_n_ ? epoch_loss_ / double(epoch_n_) : last_loss_},
                        {"samples_per_s", sps_},
                        {"elapsed_s", elapsed_s()},
                        // Totals since this process started (counters: the dashboard and
                        // /metrics take the per-step means over an interval).
                        {"pull_wait_s", double(pull_wait_us_) / 1e6},
                        {"push_wait_s", double(push_wait_us_) / 1e6}};
    double epoch_s = 0, job_s = 0;
    if (Etas(&epoch_s, &job_s)) j["eta_epoch_s"] = epoch_s, j["eta_job_s"] = job_s;
    return j;
  }

  // Everything but the log window, for a checkpoint.
  nlohmann::json State() const {
    return {{"first_loss", first_loss_}, {"last_loss", last_loss_}, {"epoch_loss", epoch_loss_},
            {"epoch_n", epoch_n_},       {"samples", samples_},     {"steps", steps_},
            {"eval_ms", eval_ms_},       {"elapsed_s", elapsed_s()}};
  }
  void Restore(const nlohmann::json& j) {
    first_loss_ = j.at("first_loss").get<double>();
    last_loss_ = j.at("last_loss").get<double>();
    epoch_loss_ = j.at("epoch_loss").get<double>();
    epoch_n_ = j.at("epoch_n").get<uint64_t>();
    samples_ = j.at("samples").get<uint64_t>();
    steps_ = j.at("steps").get<uint64_t>();
    eval_ms_ = j.at("eval_ms").get<int64_t>();
    before_s_ = j.at("elapsed_s").get<double>();
    t0_ = window_t0_ = MonotonicMs();
    epoch_start_steps_ = steps_;
  }

 private:
  bool Etas(double* epoch_s, double* job_s) const {
    if (rate_ <= 0 || steps_per_epoch_ == 0 || epoch_ < 1) return false;
    const uint64_t done = std::min(steps_per_epoch_, steps_ - epoch_start_steps_);
    const double left_epoch = double(steps_per_epoch_ - done);
    const double left_job = left_epoch + double(steps_per_epoch_) * std::max(0, epochs_ - epoch_);
    *epoch_s = left_epoch / rate_;
    *job_s = left_job / rate_;
    return true;
  }
  static std::string Clock(double s) {
    const long t = long(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", t / 60, t % 60);
    return buf;
  }
  std::string Eta() const {
    double e = 0, j = 0;
    if (!Etas(&e, &j)) return "";
    return ", ETA epoch " + Clock(e) + ", job " + Clock(j);
  }

  int log_every_;
  uint64_t steps_per_epoch_ = 0, epoch_start_steps_ = 0;
  int epochs_ = 0, epoch_ = 0;
  double rate_ = 0, sps_ = 0;  // steps/s and samples/s of the last log window
  double first_loss_ = -1, last_loss_ = 0, window_loss_ = 0, epoch_loss_ = 0;
  uint64_t window_n_ = 0, epoch_n_ = 0, samples_ = 0, steps_ = 0;
  double before_s_ = 0;
  int64_t t0_ = MonotonicMs();
  int64_t window_t0_ = t0_, eval_ms_ = 0;
  int64_t pull_wait_us_ = 0, push_wait_us_ = 0;
};

}  // namespace m6rec
