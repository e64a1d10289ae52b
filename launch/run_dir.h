// The run directory every launch mode shares: preparing it (effective config) and writing its
// result.json from the workers' summaries at the end.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "launch/local_cluster.h"

namespace m6rec {

// Creates run_dir (default runs/<job>-<time>, or runs/<job>-<default_suffix>) with logs/, writes
// the effective configuration (config + overrides; the built-in default when config_path is empty)
// to run_dir/config.yaml and loads it into *cfg. Returns the run directory.
StatusOr<std::string> PrepareRunDir(const std::string& config_path,
                                    const std::vector<std::string>& overrides,
                                    const std::string& run_dir, JobConfig* cfg,
                                    const std::string& default_suffix = "");

// A run to continue (o.resume_dir): applies o.overrides to its config.yaml (rewriting it),
// loads it into *cfg and returns its newest complete checkpoint. Fails naming the directory
// when it is not a run or has no complete checkpoint, and when o.config_path is set.
StatusOr<std::string> PrepareResume(const LocalClusterOptions& o, JobConfig* cfg);

// The checkpoint an adapted job starts from: `run_dir`'s best epoch's, else its newest, as an
// absolute path (the adapted run's config.yaml is read from wherever the job runs).
StatusOr<std::string> BackboneCheckpoint(const std::string& run_dir);

// An adapted job (o.adapt_from: a finished or running backbone run): creates the run directory
// (default runs/<backbone>-adapt-<time>), writes the adapted configuration (WriteAdaptConfig over
// the backbone's config.yaml and o.config_path with o.overrides, starting from the backbone's
// best checkpoint, else its newest) to run_dir/config.yaml and loads it into *cfg.
StatusOr<std::string> PrepareAdaptRun(const LocalClusterOptions& o, JobConfig* cfg);

// Combines run_dir/worker-<i>.json into run_dir/result.json (worker/job_summary.h decides
// what it holds: the best epoch's test metrics, every epoch, popularity, samples/s) with the
// job's name, config, run directory and wall time.
Status WriteRunResult(const JobConfig& cfg, const std::string& run_dir, double wall_s);

}  // namespace m6rec
