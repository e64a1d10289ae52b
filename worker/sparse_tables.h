// SparseTables: the sparse embedding tables as a training job sees them — pull rows by key, push
// gradients that the tables' own optimizers apply, snapshot everything at a cut. Two
// implementations:
//   PsClient     (worker/ps_client.h)   the parameter servers of a cluster, over ZeroMQ
//   LocalTables  (worker/local_tables.h) TableStores in this process (memory, or RocksDB
//                directories such as a finished run's servers' or a checkpoint's), for one-process
//                jobs, tests, and eval/recommend over a run's stores
// The async API (ticket, then wait) lets a job prefetch the next batch while it computes; keys
// come in any order with duplicates, rows come back in the caller's key order, and duplicate
// keys' gradients are summed before the optimizer sees them (one update per unique key).
// Read-your-writes: a pull issued after WaitPush returned sees that push.
// Threading: one SparseTables object per thread (a rank); LocalTables over shared stores may be
// used by several ranks at once, each with its own object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/keys.h"
#include "common/status.h"

namespace m6rec {

class SparseTables {
 public:
  using Ticket = uint64_t;

  virtual ~SparseTables() = default;

  // Starts pulling the rows of keys[0..n) of `table`; the keys are copied.
  virtual StatusOr<Ticket> PullAsync(TableId table, const Key* keys, size_t n) = 0;
  // Waits for a pull and writes n * dim floats to out, row i for keys[i].
  virtual Status WaitPull(Ticket t, float* out) = 0;
  // Starts pushing gradients (n * dim floats, row i for keys[i]); both buffers are copied.
  virtual StatusOr<Ticket> PushAsync(TableId table, const Key* keys, size_t n,
                                     const float* grads) = 0;
  // Waits until the push was applied (and made durable where the store promises it).
  virtual Status WaitPush(Ticket t) = 0;

  // Snapshots every row and its optimizer state: shard s writes dir/server-<s> (a new
  // directory), which StoreOptions::restore_from opens again. Only at a cut: no push of any
  // rank in flight.
  virtual Status Checkpoint(const std::string& dir) = 0;
  // How many shards (servers) a checkpoint has.
  virtual size_t num_shards() const = 0;

  Status Pull(TableId table, const Key* keys, size_t n, float* out) {
    M6_ASSIGN_OR_RETURN(Ticket t, PullAsync(table, keys, n));
    return WaitPull(t, out);
  }
  Status Push(TableId table, const Key* keys, size_t n, const float* grads) {
    M6_ASSIGN_OR_RETURN(Ticket t, PushAsync(table, keys, n, grads));
    return WaitPush(t);
  }
};

}  // namespace m6rec
