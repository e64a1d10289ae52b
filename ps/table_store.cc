#include "ps/table_store.h"

#include <cmath>

#include "ps/optimizer.h"
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
                 const float* grads) {
  const uint32_t dim = spec.dim;
  for (size_t i = 0; i < n * dim; ++i)
    if (!std::isfinite(grads[i]))
      return Status::InvalidArgument("non-finite gradient for key " +
                                     std::to_string(keys[i / dim]) +
                                     ": push refused, no row changed");
  const OptimizerSpec& opt = spec.optimizer;
  return store.Update(spec.id, keys, n,
                      [&](size_t i, float* row) { ApplyUpdate(opt, dim, row, grads + i * dim); });
}

}  // namespace m6rec
