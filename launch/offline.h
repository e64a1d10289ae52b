// Serving a finished run from its checkpoint, in one process: the run's parameter servers are
// reopened in-process on their own store directories (run_dir/server-<r>, the same slot map as
// in training), the dense model is loaded from run_dir/checkpoint/dense.pt, and the m6 job's
// evaluation or recommendation path runs against them over loopback, exactly the code training
// used. Needs a run made with ps.store: rocksdb (a memory store keeps nothing).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace m6rec {

struct OfflineOptions {
  std::string run_dir;
  std::string mode;                    // eval | recommend
  int64_t user = -1;                   // recommend
  int k = 10;                          // recommend
  std::vector<std::string> overrides;  // --set on top of the run's config.yaml
};

// Prints the answer (JSON) on stdout; returns the process exit code.
int RunOffline(const OfflineOptions& o);

}  // namespace m6rec
