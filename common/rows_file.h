// Rows files: embedding rows keyed by row id, the form `m6rec import` writes and a table's
// `init.from` names (a fresh job's servers write the rows they own before serving).
//
// Layout (little-endian): the 8 bytes "M6ROWS01", uint32 dim, uint32 0, uint64 count, then
// count uint64 row ids (strictly increasing), then count x dim float32 values, row by row.
// Binary and pre-mapped so that a server start reads a few megabytes instead of parsing a
// multi-gigabyte word-vector text, and every server reads only the rows it owns.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace m6rec {

struct Rows {
  uint32_t dim = 0;
  std::vector<uint64_t> ids;  // strictly increasing
  std::vector<float> values;  // ids.size() x dim
};

// Writes rows (ids strictly increasing, values finite) through a temporary file and rename.
Status WriteRowsFile(const std::string& path, const Rows& rows);

// Reads the rows whose id passes `keep` (every row when keep is empty). Errors name the file
// and what is wrong with it (not a rows file, truncated, ids out of order, non-finite value).
StatusOr<Rows> ReadRowsFile(const std::string& path,
                            const std::function<bool(uint64_t id)>& keep = {});

}  // namespace m6rec
