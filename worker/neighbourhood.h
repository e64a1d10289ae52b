// An item-based neighbourhood model of explicit ratings, the rating tasks' wide part. The deep
// model reads a movie through its id row and a sample of its raters; what it does not do is
// read, for a (user, movie) pair, how the user rated the movies that the same people rate alike.
// That is the classic neighbourhood predictor (a baseline of global, user and item offsets, plus
// the user's residuals on the K training items most similar to the movie, similarity being the
// shrunk cosine of two items' residual columns over their co-raters). It needs no training
// (one pass over the co-rating counts) and it errs differently from a factor model, so a blend
// of the two, its weight chosen on the validation ratings, beats either (docs/results.md).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "worker/dataset.h"

namespace m6rec {

struct NeighbourhoodOptions {
  int neighbours = 20;        // K: the most similar training items of the user read
  double shrink = 100;        // similarity x co-raters / (co-raters + shrink)
  double item_reg = 25;       // the item offsets' shrinkage towards 0 (pseudo-ratings)
  double user_reg = 10;       // the user offsets'
  double weight_prior = 0.1;  // added to the weights' sum: few similar items lean on the baseline
};

// Neighbourhood predictions of (user, item) pairs from ds.train / ds.train_ratings alone, in
// the order given, clipped to the training ratings' range. A pair whose user or item has no
// training rating gets the baseline.
std::vector<float> NeighbourhoodRatings(const Dataset& ds,
                                        const std::vector<std::pair<uint32_t, uint32_t>>& pairs,
                                        const NeighbourhoodOptions& o = {});

// The predictions of every held-out rated pair (ds.rated_valid and ds.rated_test), fitted once
// per process, looked up when the rating tasks are evaluated.
class RatingNeighbourhood {
 public:
  RatingNeighbourhood(const Dataset& ds, const NeighbourhoodOptions& o = {});
  // The prediction for a held-out pair, or nullptr where the pair is not one.
  const float* Find(uint32_t user, uint32_t item) const;
  size_t size() const { return pred_.size(); }

 private:
  std::unordered_map<uint64_t, float> pred_;
};

}  // namespace m6rec
