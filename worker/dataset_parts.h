// Helpers shared by the dataset readers (worker/dataset.cc, worker/movielens.cc): not part of
// the dataset API (worker/dataset.h). Only those two files include it, so it also brings the
// helpers into namespace m6rec for them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/dataset.h"

namespace m6rec::dataset_parts {

// A non-negative decimal id below 2^31 ("" and anything else: false).
bool ParseId(const std::string& s, uint32_t* out);
// "path:line: ", the prefix of every error about a line of a file.
std::string Where(const std::string& path, uint64_t line);
// Popularity and interaction counts from the training lists; the lists sized to num_users.
void Finish(Dataset* d);
// Leave-last-out on time-ordered per-user lists: last = test, second last = valid (>= 3 items).
void LeaveLastOut(const std::vector<std::vector<uint32_t>>& seqs, Dataset* d);
// Ratings parallel to the sequences LeaveLastOut split: the training ones, and the validation
// (and, with test_too, the test) items' as rated pairs.
void SplitRatings(const std::vector<std::vector<float>>& ratings, bool test_too, Dataset* d);
uint32_t MaxItem(const std::vector<std::vector<uint32_t>>& lists);
// Token t's name in the dataset's vocabulary.
void NameToken(Dataset* d, uint32_t t, std::string s);
// num_tokens from the item and user token lists (both sized to the dataset).
void CountTokens(Dataset* d);

}  // namespace m6rec::dataset_parts

namespace m6rec {
using dataset_parts::CountTokens;
using dataset_parts::Finish;
using dataset_parts::LeaveLastOut;
using dataset_parts::MaxItem;
using dataset_parts::NameToken;
using dataset_parts::ParseId;
using dataset_parts::SplitRatings;
using dataset_parts::Where;
}  // namespace m6rec
