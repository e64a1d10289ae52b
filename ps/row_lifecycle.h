// RowLifecycle: which rows of a table of open-ended ids (a stream's users, items, tokens) a
// server keeps. Per table (TableSpec::admit_after, ttl_s, max_rows):
//   admission  a key gets a row only once it has been pushed admit_after times, counted in a
//              count-min sketch (4 x 2^20 16-bit counters, 8 MiB per table: fixed memory however
//              many ids pass; it may over-count, admitting a key a little early, never late);
//              until then its gradients are dropped and it reads as its initial value
//   TTL        a row not updated for ttl_s seconds is deleted
//   cap        at most ceil(max_rows / servers) rows per server (keys spread evenly over
//              servers by slot hash); beyond, the least recently *updated* rows are deleted
// Why LRU by update: in a stream the ids that stop arriving are the users who left and the
// items that are gone; a row that is only read (served) but never trained on is not kept alive,
// and the TTL and the cap then agree on what is old. A deleted row that comes back starts again
// from its initialiser (and must be admitted again).
// The index (key -> last update, in recency order) is compact: a KeyIndex plus 24 bytes a row.
// A server restored from a checkpoint rebuilds it from the store (Seed): the restored rows
// count as updated at the restore (their TTL starts again; the cap applies at once).
// Thread-safe: one mutex per table, held across a push's admission, store update and deletions
// (pushes to a lifecycle table are serialised per server; other tables are not affected).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"
#include "ps/table_store.h"

namespace m6rec {

struct LifecycleStats {
  uint64_t rows = 0;          // rows the index holds now
  uint64_t created = 0;       // rows admitted (first update)
  uint64_t updated = 0;       // updates of admitted rows (including the first)
  uint64_t not_admitted = 0;  // pushed keys whose gradients were dropped (not admitted yet)
  uint64_t evicted = 0;       // rows deleted for the cap
  uint64_t expired = 0;       // rows deleted for the TTL
};

class RowLifecycle {
 public:
  // `servers`: how many servers share each table (the cap's share); `clock` must outlive this.
  RowLifecycle(const std::vector<TableSpec>& tables, uint32_t servers, const Clock* clock);
  ~RowLifecycle();

  // One push to a table with a lifecycle: admits what it can, lets `apply` update the admitted
  // keys (indices into keys) in the store, then deletes what the TTL and the cap call for.
  // A table without a lifecycle: apply(all) and nothing else.
  Status Push(TableStore& store, const TableSpec& spec, const Key* keys, size_t n,
              const std::function<Status(const std::vector<size_t>& admitted)>& apply);
  // Deletes every row of every table idle past its TTL (also done on each push of the table).
  Status Expire(TableStore& store);
  // Indexes the rows `store` already holds (a restored server, before it serves), then trims
  // to the caps.
  Status Seed(TableStore& store);

  LifecycleStats Stats(TableId table) const;
  uint64_t cap(TableId table) const;

 private:
  struct Table;
  std::vector<std::unique_ptr<Table>> tables_;
  const Clock* clock_;
};

}  // namespace m6rec
