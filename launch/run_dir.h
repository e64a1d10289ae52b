// The run directory every launch mode shares: preparing it (effective config) and writing its
// result.json from the workers' summaries at the end.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace m6rec {

// Creates run_dir (default runs/<job>-<time>, or runs/<job>-<default_suffix>) with logs/, writes the effective configuration
// (config + overrides; the built-in default when config_path is empty) to run_dir/config.yaml
// and loads it into *cfg. Returns the run directory.
StatusOr<std::string> PrepareRunDir(const std::string& config_path, const std::vector<std::string>& overrides,
                                    const std::string& run_dir, JobConfig* cfg,
                                    const std::string& default_suffix = "");

// Combines run_dir/worker-<i>.json into run_dir/result.json: the best epoch (by validation
// NDCG@10 under the sampled protocol; by test Recall@20 under full ranking, whose published
// splits have no validation set), its test metrics, every epoch, popularity, samples/s, wall_s.
Status WriteRunResult(const JobConfig& cfg, const std::string& run_dir, double wall_s);

}  // namespace m6rec
