// Private to ps/: the concrete store constructors behind OpenTableStore, and shared helpers.
#pragma once

#include "common/initializer.h"
#include "ps/table_store.h"

namespace m6rec {

StatusOr<std::unique_ptr<TableStore>> NewMemoryStore(const StoreOptions& options,
                                                     const std::vector<TableSpec>& tables);
StatusOr<std::unique_ptr<TableStore>> NewRocksDBStore(const StoreOptions& options,
                                                      const std::vector<TableSpec>& tables);

// "name:dim:optimizer:width;" per table: what a store's rows mean. A store (or checkpoint)
// written under one layout refuses to open under another.
std::string TablesLayout(const std::vector<TableSpec>& tables);

// The first `cols` (<= dim) floats of a fresh row.
inline void InitRowPrefix(const TableSpec& spec, Key key, uint32_t cols, float* out) {
  if (cols == spec.dim) {
    InitRow(spec, key, out);
    return;
  }
  std::vector<float> tmp(spec.dim);
  InitRow(spec, key, tmp.data());
  std::copy(tmp.begin(), tmp.begin() + cols, out);
}

}  // namespace m6rec
