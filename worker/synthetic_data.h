// The generator of the embedded synthetic default dataset (what the quick start trains on).
// It writes, under one directory, the files dataset.h's tsv/synth loader reads:
//   interactions.tsv   user  item  domain  timestamp
//   social.tsv         user  friend
//   item_tokens.tsv    item  tok tok tok ...
//   item_image.npy, item_audio.npy   float32 [items x d] feature matrices
//   meta.json          what was generated
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace m6rec {

// Deterministic in (cfg, seed): users and items belong to latent interest clusters;
// interactions, friendships, item tokens and feature vectors all follow the clusters, so every
// signal carries information.
Status WriteSynthetic(const SynthConfig& cfg, uint64_t seed, const std::string& dir);

// Writes a float32 row-major matrix as a .npy (version 1.0) file.
Status WriteNpy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols);

}  // namespace m6rec
