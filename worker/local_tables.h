// LocalTables: SparseTables over TableStores in this process, with exactly the servers'
// semantics (slot routing, duplicate gradients summed, the tables' optimizers applied by the
// store, non-finite gradients refused) but no sockets. Used for
//   - a whole job in one process (ranks as threads sharing one LocalStores), in tests;
//   - eval / recommend over a finished run: the run's server-<s> RocksDB directories, or a
//     checkpoint's, opened read-only with the run's slot map, so each key is read from the
//     store that owned it.
// Threading: LocalStores is thread-safe (its stores are); each thread makes its own
// LocalTables with MakeLocalTables.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"
#include "ps/row_lifecycle.h"
#include "ps/table_store.h"
#include "worker/sparse_tables.h"

namespace m6rec {

struct LocalStoresOptions {
  std::vector<TableSpec> tables;
  PsConfig ps;  // store kind, durability, hot rows, num_slots
  // One store per shard, keys routed as the servers' slot map routes them (round robin over
  // slots). RocksDB: each shard's directory (required). Memory: only the number of shards
  // matters; 0 entries = one shard.
  std::vector<std::string> shard_dirs;
  // Start from a checkpoint: shard s restores from restore_from/server-<s> (see StoreOptions).
  std::string restore_from;
  bool read_only = false;
};

class LocalStores {
 public:
  static StatusOr<std::shared_ptr<LocalStores>> Open(const LocalStoresOptions& opts);

  const std::vector<TableSpec>& tables() const { return tables_; }
  size_t num_shards() const { return stores_.size(); }
  TableStore& shard(size_t s) { return *stores_[s]; }
  // The shard that owns `key`.
  uint32_t ShardOf(Key key) const;
  // The row lifecycle of the shard whose store is `st` (tables' admit_after/ttl_s/max_rows, as
  // a server applies them; each shard holds its share of a cap).
  RowLifecycle* LifecycleOf(const TableStore& st);

 private:
  std::vector<TableSpec> tables_;
  std::vector<std::unique_ptr<TableStore>> stores_;
  SteadyClock clock_;
  std::vector<std::unique_ptr<RowLifecycle>> lifecycles_;  // per shard
  std::vector<uint32_t> slot_map_;
};

std::unique_ptr<SparseTables> MakeLocalTables(std::shared_ptr<LocalStores> stores);

}  // namespace m6rec
