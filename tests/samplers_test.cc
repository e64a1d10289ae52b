#include "worker/samplers.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace m6rec {

TEST(Samplers, NeighboursAreDistinctBoundedAndDeterministicInTheSeed) {
  std::vector<uint32_t> pool;
  for (uint32_t i = 0; i < 50; ++i) pool.push_back(100 + i);
  auto a = SampleNeighboursFixed(pool, 10, 105, 7, 3),
       b = SampleNeighboursFixed(pool, 10, 105, 7, 3);
  EXPECT_EQ(a, b) << "same seed and node, same neighbours";
  EXPECT_NE(a, SampleNeighboursFixed(pool, 10, 105, 8, 3)) << "another seed draws others";
  EXPECT_NE(a, SampleNeighboursFixed(pool, 10, 105, 7, 4)) << "another node draws others";
  EXPECT_LE(a.size(), 10u);
  EXPECT_GE(a.size(), 9u);
  std::set<uint32_t> s(a.begin(), a.end());
  EXPECT_EQ(s.size(), a.size()) << "no neighbour twice";
  EXPECT_EQ(s.count(105), 0u) << "the excluded node never appears";
  // A pool no larger than the fan-out comes back whole, minus the excluded node.
  std::vector<uint32_t> small{1, 2, 3};
  std::mt19937_64 rng(1);
  EXPECT_EQ(SampleNeighbours(small, 5, 2, rng), (std::vector<uint32_t>{1, 3}));
  EXPECT_TRUE(SampleNeighbours({}, 5, -1, rng).empty());
}

TEST(Samplers, UniformNegativesCoverTheRangeOnly) {
  NegativeSampler s(1, 11);
  std::mt19937_64 rng(3);
  std::map<uint32_t, int> n;
  for (int k = 0; k < 20000; ++k) n[s.Draw(rng)]++;
  EXPECT_EQ(n.size(), 10u);
  EXPECT_EQ(n.begin()->first, 1u);
  EXPECT_EQ(n.rbegin()->first, 10u);
  for (auto [i, c] : n) EXPECT_NEAR(c, 2000, 250) << "item " << i;
  EXPECT_DOUBLE_EQ(s.Probability(0), 0.0);
  EXPECT_DOUBLE_EQ(s.Probability(5), 0.1);
}

// Cold start: warm_only never draws an item without training interactions (power 0: uniform
// over the others).
TEST(Samplers, WarmOnlyNegativesSkipItemsWithoutInteractions) {
  const std::vector<uint32_t> counts{5, 3, 0, 7, 0, 1};
  NegativeSampler s(counts, 1, 0.0, /*warm_only=*/true);
  std::mt19937_64 rng(4);
  std::map<uint32_t, int> n;
  for (int k = 0; k < 30000; ++k) n[s.Draw(rng)]++;
  EXPECT_EQ(n.size(), 3u);
  for (uint32_t cold : {0u, 2u, 4u}) EXPECT_EQ(n.count(cold), 0u) << "item " << cold;
  for (uint32_t warm : {1u, 3u, 5u}) EXPECT_NEAR(n[warm], 10000, 500) << "item " << warm;
  EXPECT_DOUBLE_EQ(s.Probability(2), 0.0);
  NegativeSampler pop(counts, 1, 0.75, true);
  EXPECT_DOUBLE_EQ(pop.Probability(4), 0.0);
  EXPECT_GT(pop.Probability(3), pop.Probability(1));
}

TEST(Samplers, PopularityNegativesFollowCountsToThePower) {
  std::vector<uint32_t> counts{0, 99, 0, 15};  // item 0 is below `first`
  NegativeSampler s(counts, 1, 0.75);
  // weights (c + 1)^0.75: 100^0.75 = 31.62, 1, 16^0.75 = 8
  const double total = std::pow(100.0, 0.75) + 1.0 + 8.0;
  EXPECT_NEAR(s.Probability(1), std::pow(100.0, 0.75) / total, 1e-12);
  EXPECT_NEAR(s.Probability(3), 8.0 / total, 1e-12);
  std::mt19937_64 rng(5), rng2(5);
  std::map<uint32_t, int> n;
  const int draws = 200000;
  for (int k = 0; k < draws; ++k) n[s.Draw(rng)]++;
  EXPECT_EQ(n.count(0), 0u);
  for (uint32_t i = 1; i <= 3; ++i)
    EXPECT_NEAR(double(n[i]) / draws, s.Probability(i), 0.01) << "item " << i;
  // Deterministic in the generator's state.
  std::mt19937_64 a(9), b(9);
  for (int k = 0; k < 100; ++k) EXPECT_EQ(s.Draw(a), s.Draw(b));
}

TEST(Samplers, HistoryWindowIsCausalForSequences) {
  std::vector<uint32_t> seq{10, 11, 12, 13, 14};
  EXPECT_EQ(HistoryWindow(seq, 3, 2, true), (std::vector<uint32_t>{11, 12}))
      << "the two items before position 3";
  EXPECT_EQ(HistoryWindow(seq, 0, 4, true), (std::vector<uint32_t>{}));
  EXPECT_EQ(HistoryWindow(seq, -1, 3, true), (std::vector<uint32_t>{12, 13, 14}))
      << "evaluation: the newest items";
  EXPECT_EQ(HistoryWindow(seq, 1, 3, false), (std::vector<uint32_t>{12, 13, 14}))
      << "sets: any items but the target";
  EXPECT_EQ(HistoryWindow(seq, 4, 3, false), (std::vector<uint32_t>{11, 12, 13}));
}

}  // namespace m6rec
