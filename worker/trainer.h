// The workers' jobs until the M6-Rec model lands: a real sparse-model training loop (matrix
// factorisation with BPR over sampled negatives, every row on the parameter servers) and the
// push-check job the integration tests use to verify exact server-side arithmetic.
// Threading: runs on the worker's main thread; owns nothing but what it is given.
#pragma once

#include <functional>
#include <string>

#include "common/config.h"
#include "common/status.h"
#include "worker/ps_client.h"

namespace m6rec {

class Collective;

struct JobContext {
  const JobConfig* cfg = nullptr;
  PsClient* ps = nullptr;
  uint32_t rank = 0;
  uint32_t num_workers = 1;
  std::string run_dir;
  std::string data_dir;          // where interactions.tsv is
  // Waits at a barrier of all workers.
  std::function<Status(const std::string&)> barrier;
  // Returns true (with a reason) when the job must stop: a node died, the job was cancelled.
  std::function<bool(std::string*)> should_abort;
  // The workers' collective for dense gradients (the m6 job).
  Collective* collective = nullptr;
  // m6 job: "train"; or, from a checkpoint (dense file + the servers' stores), "eval" (the
  // protocol's metrics over this worker's users) or "recommend" (top recommend_k items for
  // recommend_user, seen items excluded). The summary then holds the answer.
  std::string mode = "train";
  std::string checkpoint;          // dense.pt to load ("" = fresh model)
  int64_t recommend_user = -1;
  int recommend_k = 10;
};

// Trains the M6-Rec style model (worker/model.h) on this worker's shard (worker/model_job.cc).
Status RunM6Job(const JobContext& ctx, std::string* summary);

// Trains MF-BPR on this worker's shard of users; fills `summary` (JSON object text).
Status RunMfJob(const JobContext& ctx, std::string* summary);

// Pushes known gradients to overlapping keys; after a barrier, worker 0 pulls them and writes
// run_dir/pushcheck.json for the test to compare with the exact expected values.
Status RunPushCheckJob(const JobContext& ctx, std::string* summary);

// The gradient element the push-check job sends: exact in float (multiples of 1/4).
inline float PushCheckGrad(uint64_t id, uint32_t d, int round, uint32_t worker) {
  return 0.25f * static_cast<float>((id + d + round + worker) % 5 + 1);
}
constexpr int kPushCheckRounds = 4;
constexpr int kPushCheckShared = 64;   // ids 0..63 pushed by every worker, twice per batch
constexpr int kPushCheckPrivate = 16;  // ids 1000 + 100*rank + j pushed by one worker

}  // namespace m6rec
