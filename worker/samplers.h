// Samplers of the m6 job. All are deterministic functions of their seed, so a run replays
// exactly and evaluation sees the same neighbours in every epoch and on any number of workers.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace m6rec {

// Up to `fanout` distinct entries of `pool` (all of them when it is small), never `exclude`
// (pass -1 for none), drawn from `rng`. Order of the result follows the draw.
std::vector<uint32_t> SampleNeighbours(const std::vector<uint32_t>& pool, int fanout,
                                       int64_t exclude, std::mt19937_64& rng);

// The same, seeded by (seed, node) alone: evaluation's neighbours.
std::vector<uint32_t> SampleNeighboursFixed(const std::vector<uint32_t>& pool, int fanout,
                                            int64_t exclude, uint64_t seed, uint64_t node);
// The generator SampleNeighboursFixed draws (seed, node)'s sample from.
std::mt19937_64 NodeRng(uint64_t seed, uint64_t node);

// Negatives over item ids [first, first + weights.size()): uniform, or proportional to
// weights (Walker's alias method, O(1) a draw). Popularity sampling uses count^0.75 (word2vec's
// unigram^0.75), so popular items are hard negatives without drowning out the tail.
class NegativeSampler {
 public:
  // Uniform over [first, end).
  NegativeSampler(uint32_t first, uint32_t end);
  // Proportional to (counts[i] + 1)^power for items i >= first (counts indexed by item id), an
  // item with a zero count weighted by cold_weight besides (0: never drawn; power 0 and
  // cold_weight 0: uniform over the items with training interactions).
  NegativeSampler(const std::vector<uint32_t>& counts, uint32_t first, double power,
                  double cold_weight = 1.0);
  uint32_t Draw(std::mt19937_64& rng) const;
  // Probability of drawing item i (for tests and logQ corrections).
  double Probability(uint32_t item) const;

 private:
  uint32_t first_, span_;
  std::vector<double> prob_;  // alias table (empty = uniform)
  std::vector<uint32_t> alias_;
  std::vector<double> p_;  // normalised weights
};

// The last `len` items before position `pos` of a time-ordered list (causal history), or, when
// the list has no order, the last `len` items other than the one at `pos` (pos < 0: the last
// `len` items). Oldest first.
std::vector<uint32_t> HistoryWindow(const std::vector<uint32_t>& items, int64_t pos, int len,
                                    bool ordered);

}  // namespace m6rec
