// TableStore: where a parameter server keeps its rows. An abstract batch API over spans of keys
// and floats that names no backend's types; two final implementations (memory, RocksDB with an
// in-memory hot tier) chosen by OpenTableStore from StoreOptions.
//
// Row model: each table has a width = dim + optimizer state floats. A row that was never
// written reads as its deterministic initial value (InitFullRow); reading never creates a row.
// Thread-safe: any number of threads may call Lookup and Update concurrently. Update is atomic
// per row (no reader sees half a row) and, for a store that is durable(), the whole batch is
// durable in the configured mode when Update returns OK; when it fails nothing of it applied.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace m6rec {

struct StoreOptions {
  PsConfig::Store kind = PsConfig::Store::kMemory;
  PsConfig::Durability durability = PsConfig::Durability::kWal;
  std::string path;  // RocksDB directory (created if missing)
  // Start from the rows of a checkpoint (a directory made by TableStore::Checkpoint of the same
  // kind of store): RocksDB replaces `path` with a copy of it; memory loads it.
  std::string restore_from;
  // RocksDB: open `path` (e.g. a checkpoint) for reading only; Update and Flush then fail.
  bool read_only = false;
  uint64_t hot_rows = 1 << 20;  // per table; 0 = no hot tier (every access goes to RocksDB)
  // RocksDB: WAL bytes after which memtables are flushed so old logs can be deleted. In-place
  // row updates never grow the memtable, so without this bound it would never flush and the
  // WAL would grow without limit.
  uint64_t max_wal_bytes = 256ull << 20;
};

struct StoreStats {
  uint64_t rows_cached = 0;   // rows in memory (memory store: all of them; RocksDB: hot tier)
  uint64_t hot_hits = 0;      // lookups/updates served from memory
  uint64_t cold_reads = 0;    // rows read from RocksDB (MultiGet)
  uint64_t initialised = 0;   // rows materialised from the initializer
  uint64_t rows_written = 0;  // rows updated
  uint64_t evictions = 0;
  uint64_t write_batches = 0;
  uint64_t erased = 0;  // rows deleted (Erase)
};

class TableStore {
 public:
  // fn(i, row) updates in place the whole row (width floats) of keys[i].
  using RowFn = std::function<void(size_t i, float* row)>;

  virtual ~TableStore() = default;

  // Copies the first `cols` floats (cols <= width: dim for a pull, width for whole rows) of each
  // key's row to out[i * cols].
  virtual Status Lookup(TableId table, const Key* keys, size_t n, uint32_t cols, float* out) = 0;

  // Read-modify-write of each key's row. Duplicate keys are applied in order.
  virtual Status Update(TableId table, const Key* keys, size_t n, const RowFn& fn) = 0;

  // Deletes the rows of keys[0..n) (a key without a row is fine): they read as their initial
  // value again. Durable like Update. Used by the row lifecycle (ps/row_lifecycle.h).
  virtual Status Erase(TableId table, const Key* keys, size_t n) = 0;

  // Calls fn(key) for every row `table` holds (in no particular order; not concurrently with
  // updates of the table). What a restored server's row lifecycle is rebuilt from.
  virtual Status ForEachKey(TableId table, const std::function<void(Key)>& fn) = 0;

  // Makes everything acknowledged so far durable on disk (memtable flush, WAL sync).
  virtual Status Flush() = 0;

  // Writes a snapshot of every row (weights and optimizer state) to the new directory `dir`,
  // which StoreOptions::restore_from (or, for RocksDB, read_only) can open. The caller holds the
  // cut: no update of the job is in flight (the training engine's checkpoint barriers). RocksDB
  // also excludes concurrent updates; the memory store copies shard by shard.
  virtual Status Checkpoint(const std::string& dir) = 0;

  virtual StoreStats Stats() const = 0;
  virtual bool durable() const = 0;
  virtual std::string name() const = 0;
};

// Opens the configured store for `tables` (their ids must be 0..n-1 in order). A RocksDB
// directory remembers its tables' layout and refuses to open under a config that changed it.
StatusOr<std::unique_ptr<TableStore>> OpenTableStore(const StoreOptions& options,
                                                     const std::vector<TableSpec>& tables);

// Writes the rows of spec.init.from (a rows file, common/rows_file.h) whose keys pass `mine`
// into `store`: the weights as given, the optimizer state fresh. What a fresh job's server does
// before it serves (never on a restore: those rows come from the checkpoint). A file of another
// dimension than the table is refused before any row is written. *written counts the rows.
Status ImportRows(TableStore& store, const TableSpec& spec, const std::function<bool(Key)>& mine,
                  uint64_t* written);

// One push as a server applies it: a table that is not trainable refuses it, every gradient must be
// finite (else nothing changes and the error names the key), then the table's optimizer updates
// each key's row (duplicates in order).
// With `lifecycle` (a server's), a table with a row lifecycle admits, updates and trims through
// it (ps/row_lifecycle.h).
class RowLifecycle;
Status ApplyPush(TableStore& store, const TableSpec& spec, const Key* keys, size_t n,
                 const float* grads, RowLifecycle* lifecycle = nullptr);

}  // namespace m6rec
