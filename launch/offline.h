// Serving a finished run in one process: the run's checkpoint (the best epoch's by default, the
// newest otherwise) is opened directly — each server's rows from <checkpoint>/server-<s>
// (RocksDB read-only, or a memory store's dump) behind LocalTables with the run's slot map, the
// dense model from <checkpoint>/dense — and the training engine's own evaluation or top-K path
// runs over it. No servers, no sockets; MF and M6 runs alike.
// `strategy` prints the run's per-intent strategies (strategy.json), edits them (--set), or
// fits them on the model (--fit; worker/strategy.h). `export` writes a table's rows as vectors
// (what `m6rec import` reads back).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/evaluator.h"
#include "worker/local_tables.h"
#include "worker/strategy.h"
#include "worker/training_engine.h"

namespace m6rec {

struct OfflineOptions {
  std::string run_dir;
  std::string mode;        // eval | recommend | strategy | export
  std::string checkpoint;  // "" = the best epoch's, else the newest
  int64_t user = -1;       // recommend
  // recommend a user the run has never seen: its items (comma-separated ids), profile
  // (NAME=VALUE,...), friends, or all three as JSON (a file; "-": stdin)
  std::string history, profile, friends, user_json;
  std::string new_items;  // recommend: items never seen, ranked from their content (JSON file)
  std::string domain;     // recommend: `user` is this domain's own id
  int k = 0;              // recommend (0: the strategy's, else 10)
  std::vector<std::string> overrides;      // --set on top of the run's config.yaml
  bool use_strategy = true;                // recommend: serve with the run's strategy.json
  bool explain = false;                    // recommend: say why each item (JSON + a table)
  bool fit = false;                        // strategy: fit the classifier and the strategies
  std::vector<std::string> strategy_sets;  // strategy: INTENT.FIELD=VALUE edits
  std::string table, out;                  // export: which table, to which file
  std::string format = "ids";              // export: words | ids
};

// Prints the answer (JSON) on stdout; returns the process exit code.
int RunOffline(const OfflineOptions& o);

// A finished run opened for scoring: its config (with overrides), the checkpoint (the given one,
// else the best epoch's, else the newest), its stores (RocksDB read-only, or a memory dump) as
// LocalTables, its data, and (with_strategy) its strategy.json when it has one. sc points into
// the object: keep it alive while sc is used.
struct OpenedRun {
  JobConfig cfg;
  std::string checkpoint;
  std::shared_ptr<LocalStores> stores;
  std::unique_ptr<SparseTables> tables;
  StrategyBook strategies;
  Calibration calibration;  // the run's (result.json), when it has one
  ScoringContext sc;
  // The run's dataset as read (before a stream checkpoint's events grow sc.data): another
  // checkpoint of the run opened with it does not read it again.
  std::shared_ptr<const Dataset> base_data;
};
// The popularity calibration (result.json's) of the epoch a checkpoint (its manifest) ends:
// that epoch's entry's `calibration`; null for a checkpoint taken within an epoch or of an
// epoch the result does not list.
const nlohmann::json* EpochCalibration(const nlohmann::json& result,
                                       const nlohmann::json& manifest);

// Opens a run's checkpoint: `checkpoint`, else the one best.json names for `domain` (a
// multi-domain run's domain at its own best epoch), else the best epoch's, else the newest.
// `data`: the run's dataset when another OpenedRun of it has it (its base_data), else read.
StatusOr<std::unique_ptr<OpenedRun>> OpenRun(const std::string& run_dir,
                                             const std::string& checkpoint,
                                             const std::vector<std::string>& overrides,
                                             bool with_strategy, const std::string& domain = "",
                                             std::shared_ptr<const Dataset> data = nullptr);

}  // namespace m6rec
