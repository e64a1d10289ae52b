// Pretrained vectors for a sparse table (`m6rec import`): reading the files people bring, mapping
// them to the table's row ids, and the report of what matched.
//   words  word2vec / GloVe / fastText text: "word v1 v2 ... vd" per line, optionally a first
//          "count dim" header line; mapped to row ids through a vocabulary (the dataset's named
//          tokens, or a vocabulary file). Exact match first, then case-insensitive.
//   ids    "id v1 v2 ... vd" per line (tab- or space-separated): the id is the row id.
//   npy    a float32 [rows x d] .npy matrix: row r is row id r.
// Every bad line is an error naming "file:line"; nothing partial is returned. Pure functions of
// their inputs; thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/rows_file.h"
#include "common/status.h"

namespace m6rec {

enum class VectorFormat { kWords, kIds, kNpy };
bool ParseVectorFormat(const std::string& s, VectorFormat* out);  // words | ids | npy

struct VectorFile {
  uint32_t dim = 0;
  std::vector<std::string> words;  // words format: the kept vectors' words
  std::vector<uint64_t> ids;       // ids / npy formats: the vectors' row ids
  std::vector<uint64_t> lines;     // the line of each kept vector (npy: its row + 1)
  std::vector<float> values;       // kept vectors x dim
  uint64_t vectors = 0;            // vectors in the file (kept or not)
};

// Reads `path`; a words-format vector is kept when keep_word(word) (empty: all). Every line is
// checked, kept or not.
StatusOr<VectorFile> ReadVectorFile(const std::string& path, VectorFormat format,
                                    const std::function<bool(const std::string&)>& keep_word = {});

// A vocabulary: (word, row id) pairs. A file has one entry per line, either "word" (its id is the
// line's 0-based index) or "word id"; one form per file.
using Vocabulary = std::vector<std::pair<std::string, uint64_t>>;
StatusOr<Vocabulary> ReadVocabulary(const std::string& path);

// ASCII lowercase (how words match case-insensitively).
std::string LowerCase(std::string s);

struct ImportReport {
  uint64_t vectors = 0;              // in the file
  uint64_t vocabulary = 0;           // entries to fill (words format)
  uint64_t matched = 0;              // rows written
  uint64_t matched_case = 0;         // of them, matched only case-insensitively
  std::vector<std::string> missing;  // vocabulary words without a vector (first 20)
  uint64_t missing_count = 0;
};

// The rows to import into a table of `dim` and `table_rows` rows (0: unknown, unchecked).
// words: one row per vocabulary entry that has a vector; entries without one keep the table's
// initialiser, or fail the import when missing_is_error. ids / npy: every vector.
StatusOr<Rows> MapVectors(const std::string& path, const VectorFile& file, const Vocabulary* vocab,
                          uint32_t dim, uint64_t table_rows, bool missing_is_error,
                          ImportReport* report);

}  // namespace m6rec
