// `m6rec import`: pretrained vectors into a table's initial rows. Reads word2vec/GloVe/fastText
// text (through the dataset's token names or a vocabulary file), id-keyed text or a .npy matrix
// (worker/pretrained.h), checks them against the job's table (dimension, row range), and writes
// a rows file (common/rows_file.h) that the table's `init.from` names: every server of a fresh
// job then writes the rows it owns before serving. Prints a JSON report on stdout and the
// config lines to add on stderr.
#pragma once

#include <string>
#include <vector>

namespace m6rec {

struct ImportOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string table;
  std::string from;
  std::string out;
  std::string format;  // words | ids | npy ("": npy for *.npy, else words)
  std::string vocab;   // words: a vocabulary file ("": the dataset's token names)
  bool missing_is_error = false;
};

// Returns the process exit code (2: bad arguments or input, with the reason on stderr).
int RunImport(const ImportOptions& o);

}  // namespace m6rec
