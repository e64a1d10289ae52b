// Where a job's checkpoints live and which of them are valid.
//
//   run_dir/checkpoints/step-<0000000123>/   the cut after 123 steps of every rank
//       server-<s>/       shard s's rows and optimizer state (TableStore::Checkpoint)
//       dense/            the dense model and its optimizer (rank 0's; the replicas are equal)
//       worker-<r>.json   rank r's data cursor, RNG states, progress and summary so far
//       manifest.json     written last, by rank 0, once every part is on disk
//   run_dir/checkpoints/best.json   {"checkpoint": "step-...", "epoch": N}: the best epoch's;
//       a multi-domain job adds "domains": {"<label>": {"checkpoint": ..., "epoch": M}}, the
//       checkpoint of the epoch each domain's own validation metric peaks at (what
//       `recommend --domain` serves it from)
//
// A checkpoint is valid iff its manifest exists (it is written atomically after a barrier that
// every rank passes only when its parts are written), so a job killed while checkpointing
// leaves an invalid directory that resume skips and the next prune removes.
// Pure file-system functions; thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/dataset.h"

namespace m6rec {

std::string CheckpointRoot(const std::string& run_dir);
std::string CheckpointDir(const std::string& run_dir, uint64_t step);

// The manifest of a checkpoint directory (NotFound when it is not a valid checkpoint).
StatusOr<nlohmann::json> ReadManifest(const std::string& checkpoint_dir);

// A stream job's checkpoint holds every interaction its stream delivered until then
// (stream-events.tsv, "user item ts" lines): the histories a resumed job, or a model served
// from the checkpoint, rebuilds. Reading a checkpoint without one gives no events.
Status WriteStreamEvents(const std::string& checkpoint_dir, const std::vector<StreamEvent>& ev);
StatusOr<std::vector<StreamEvent>> ReadStreamEvents(const std::string& checkpoint_dir);

// The valid checkpoints under run_dir, oldest first.
std::vector<std::string> ValidCheckpoints(const std::string& run_dir);
// The newest valid checkpoint (NotFound naming run_dir when there is none).
StatusOr<std::string> LatestCheckpoint(const std::string& run_dir);
// The best epoch's checkpoint (NotFound when the job kept none); with a domain that a
// multi-domain job chose an epoch for, that domain's checkpoint (else the best epoch's).
StatusOr<std::string> BestCheckpoint(const std::string& run_dir, const std::string& domain = "");
// Points best.json at checkpoint_dir (of `epoch`): as the best epoch's when `overall`, and as
// each of `domains`' own; the other pointers stay.
Status WriteBestPointer(const std::string& run_dir, const std::string& checkpoint_dir, int epoch,
                        bool overall = true, const std::vector<std::string>& domains = {});

// Deletes all but the newest `keep` valid checkpoints (never one best.json points at) and every
// invalid one older than the newest valid checkpoint.
Status PruneCheckpoints(const std::string& run_dir, int keep);

}  // namespace m6rec
