// `m6rec bench rows`: a stream of distinct ids through a table with a row cap (the row lifecycle
// of ps/row_lifecycle.h), on a real store in this process: ids pushed in batches through the
// servers' own push path (ApplyPush), and at every tenth of the stream the rows held, the
// process's resident memory and the store directory's bytes on disk. The same stream into the
// same table without a cap is measured beside it (what the cap saves).
#pragma once

#include <cstdint>
#include <string>

namespace m6rec {

struct RowsBenchOptions {
  uint64_t ids = 10'000'000;
  uint64_t max_rows = 1'000'000;
  uint32_t dim = 16;
  uint32_t batch = 10'000;
  std::string store = "rocksdb";  // rocksdb | memory
  std::string tmp_dir = "/tmp";
  bool uncapped = true;  // also the uncapped reference run
  bool json = false;
};

int RunRowsBench(const RowsBenchOptions& o);

}  // namespace m6rec
