#include "ps/table_store.h"

#include <algorithm>
#include <cmath>

#include "common/rows_file.h"
#include "ps/optimizer.h"
#include "ps/row_lifecycle.h"
#include "ps/stores.h"

namespace m6rec {

StatusOr<std::unique_ptr<TableStore>> OpenTableStore(const StoreOptions& options,
                                                     const std::vector<TableSpec>& tables) {
  for (size_t i = 0; i < tables.size(); ++i)
    if (tables[i].id != i) return Status::InvalidArgument("table ids must be 0..n-1 in order");
  if (options.kind == PsConfig::Store::kMemory) return NewMemoryStore(options, tables);
#ifdef M6REC_HAVE_ROCKSDB
  return NewRocksDBStore(options, tables);
#else
  return Status::Unavailable(
      "ps.store: rocksdb, but this build has no RocksDB (configured with M6REC_WITH_ROCKSDB=OFF); "
      "use ps.store: memory");
#endif
}

std::string TablesLayout(const std::vector<TableSpec>& tables) {
  std::string s;
  for (const auto& t : tables)
    s += t.name + ":" + std::to_string(t.dim) + ":" + OptimizerName(t.optimizer.kind) + ":" +
         std::to_string(RowWidth(t)) + ";";
  return s;
}

Status ApplyPush(TableStore& store, const TableSpec& spec, const Key* keys, size_t n,
                 const float* grads, RowLifecycle* lifecycle) {
  const uint32_t dim = spec.dim;
  if (!spec.trainable)
    return Status::PermissionDenied("table '" + spec.name +
                                    "' is not trainable (trainable: false): push refused");
  for (size_t i = 0; i < n * dim; ++i)
    if (!std::isfinite(grads[i]))
      return Status::InvalidArgument("non-finite gradient for key " +
                                     std::to_string(keys[i / dim]) +
                                     ": push refused, no row changed");
  const OptimizerSpec& opt = spec.optimizer;
  if (!lifecycle || !spec.lifecycle())
    return store.Update(spec.id, keys, n,
                        [&](size_t i, float* row) { ApplyUpdate(opt, dim, row, grads + i * dim); });
  return lifecycle->Push(store, spec, keys, n, [&](const std::vector<size_t>& admitted) {
    std::vector<Key> k(admitted.size());
    for (size_t j = 0; j < admitted.size(); ++j) k[j] = keys[admitted[j]];
    return store.Update(spec.id, k.data(), k.size(), [&](size_t j, float* row) {
      ApplyUpdate(opt, dim, row, grads + admitted[j] * dim);
    });
  });
}

Status ImportRows(TableStore& store, const TableSpec& spec, const std::function<bool(Key)>& mine,
                  uint64_t* written) {
  *written = 0;
  if (spec.init.from.empty()) return Status::OK();
  auto rows = ReadRowsFile(spec.init.from, [&](uint64_t id) { return mine(MakeKey(spec.id, id)); });
  if (!rows.ok())
    return Status(rows.status().code(),
                  "table '" + spec.name + "' init.from: " + rows.status().message());
  if (rows->dim != spec.dim)
    return Status::InvalidArgument("table '" + spec.name + "' init.from: '" + spec.init.from +
                                   "' holds rows of dim " + std::to_string(rows->dim) +
                                   ", the table's dim is " + std::to_string(spec.dim));
  constexpr size_t kBatch = 4096;
  std::vector<Key> keys;
  for (size_t b = 0; b < rows->ids.size(); b += kBatch) {
    const size_t n = std::min(kBatch, rows->ids.size() - b);
    keys.resize(n);
    for (size_t i = 0; i < n; ++i) keys[i] = MakeKey(spec.id, rows->ids[b + i]);
    M6_RETURN_IF_ERROR(store.Update(spec.id, keys.data(), n, [&](size_t i, float* row) {
      std::copy_n(&rows->values[(b + i) * spec.dim], spec.dim, row);
      InitOptimizerState(spec.optimizer, spec.dim, row + spec.dim);
    }));
    *written += n;
  }
  return store.Flush();
}

}  // namespace m6rec
