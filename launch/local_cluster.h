// The local simulated cluster: 1 scheduler + S servers + W workers as real processes on
// 127.0.0.1 (real sockets, one RocksDB directory per server under the run directory).
// It forwards every child's output with a "[role rank]" prefix (and keeps it in
// run_dir/logs/), and tears the whole cluster down on Ctrl-C / SIGTERM, on any child failing
// (showing that child's last lines), and at the end. Children are in their own process groups
// and die with the launcher (PR_SET_PDEATHSIG) even if it is SIGKILLed: no orphans.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace m6rec {

struct LocalClusterOptions {
  std::string config_path;             // empty = the built-in default configuration
  std::vector<std::string> overrides;  // --set path=value
  std::string run_dir;                 // empty = runs/<job>-<time>
  std::string log_level = "info";
  // Continue the run in this directory from its newest complete checkpoint (its own
  // config.yaml, with `overrides` applied on top; config_path must be empty).
  std::string resume_dir;
  // `m6rec adapt`: the backbone run to adapt (config_path then names the new domains' config,
  // see WriteAdaptConfig).
  std::string adapt_from;
  int grace_ms = 3000;  // SIGTERM -> SIGKILL delay at teardown
};

// Runs the job to completion; returns the exit code (0 = every process succeeded).
int RunLocalCluster(const LocalClusterOptions& opts);

// The built-in default configuration (configs/default.yaml, embedded at build time).
const char* DefaultConfigYaml();

}  // namespace m6rec
