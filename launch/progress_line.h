// The local launcher's progress display on a terminal: one line, redrawn in place about twice a
// second from the scheduler's /status (the workers' heartbeat stats): epoch, a bar, steps,
// samples/s over all workers, loss, the epoch's and the job's ETA (a stream job: chunks and
// events). The workers' periodic "epoch E step S loss ..." log lines, which the line replaces,
// are not echoed then (they stay in logs/worker-N.log). When stderr is not a terminal (CI,
// Slurm logs, a pipe) nothing changes: the plain log lines, each with its ETA.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace m6rec {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  bool enabled() const { return enabled_; }
  // A child's log line that is a periodic training-progress line.
  static bool IsProgressLogLine(const std::string& line);
  // What the line says for a /status answer ("" when no worker reports yet).
  static std::string Render(const nlohmann::json& status, int width);
  // Erases the line (before a log line is printed) / draws it again.
  void Clear();
  void Redraw();
  // Asks http://host:port/status (at most every 500 ms, 200 ms timeout) and redraws.
  void Update(const std::string& host, int http_port);
  // Leaves the last line on the screen.
  void Finish();

 private:
  bool enabled_;
  bool shown_ = false;
  std::string line_;
  int64_t last_ms_ = 0;
};

}  // namespace m6rec
