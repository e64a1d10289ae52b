#include "ps/table_store.h"

#include "ps/stores.h"

namespace m6rec {

StatusOr<std::unique_ptr<TableStore>> OpenTableStore(const StoreOptions& options,
                                                     const std::vector<TableSpec>& tables) {
  for (size_t i = 0; i < tables.size(); ++i)
    if (tables[i].id != i) return Status::InvalidArgument("table ids must be 0..n-1 in order");
  if (options.kind == PsConfig::Store::kMemory) return NewMemoryStore(tables);
#ifdef M6REC_HAVE_ROCKSDB
  return NewRocksDBStore(options, tables);
#else
  return Status::Unavailable("ps.store: rocksdb, but this build has no RocksDB (configured with M6REC_WITH_ROCKSDB=OFF); use ps.store: memory");
#endif
}

}  // namespace m6rec
