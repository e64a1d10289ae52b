// Datasets the workers read, and the generator of the embedded synthetic default.
//
// Files (tab-separated, '#' comments allowed, one record per line):
//   interactions.tsv   user  item  [domain]  [timestamp]   ids are dense 0-based integers
//   social.tsv         user  user                          (synthetic data; used by the model issue)
//   item_tokens.tsv    item  tok tok tok ...
//   item_image.npy, item_audio.npy   float32 [items x d] feature matrices
// Readers reject a bad line with "file:line: what is wrong" and never return partial data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace m6rec {

struct Interactions {
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  // Per user, items in time order (the file's order breaks timestamp ties).
  std::vector<std::vector<uint32_t>> by_user;
  uint64_t count = 0;
};

StatusOr<Interactions> ReadInteractions(const std::string& path);

// Leave-last-out: each user's last item (users with >= 3 items) becomes the test item.
struct Split {
  std::vector<std::vector<uint32_t>> train;  // per user
  std::vector<int64_t> test;                 // per user; -1 when none
  std::vector<uint32_t> item_popularity;     // train counts
};
Split LeaveLastOut(const Interactions& data);

// Writes the synthetic open-domain dataset (all files above) under `dir`. Deterministic in
// (cfg, seed): users and items belong to latent interest clusters; interactions, friendships,
// item tokens and feature vectors all follow the clusters, so every signal carries information.
Status WriteSynthetic(const SynthConfig& cfg, uint64_t seed, const std::string& dir);

// Writes a float32 row-major matrix as a .npy (version 1.0) file.
Status WriteNpy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols);

}  // namespace m6rec
