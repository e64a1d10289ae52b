#include "worker/samplers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "worker/m6_batch.h"

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

// Cold start: cold_weight 0 never draws an item without training interactions (power 0: uniform
// over the others).
TEST(Samplers, WarmOnlyNegativesSkipItemsWithoutInteractions) {
  const std::vector<uint32_t> counts{5, 3, 0, 7, 0, 1};
  NegativeSampler s(counts, 1, 0.0, /*cold_weight=*/0.0);
  std::mt19937_64 rng(4);
  std::map<uint32_t, int> n;
  for (int k = 0; k < 30000; ++k) n[s.Draw(rng)]++;
  EXPECT_EQ(n.size(), 3u);
  for (uint32_t cold : {0u, 2u, 4u}) EXPECT_EQ(n.count(cold), 0u) << "item " << cold;
  for (uint32_t warm : {1u, 3u, 5u}) EXPECT_NEAR(n[warm], 10000, 500) << "item " << warm;
  EXPECT_DOUBLE_EQ(s.Probability(2), 0.0);
  NegativeSampler pop(counts, 1, 0.75, 0.0);
  EXPECT_DOUBLE_EQ(pop.Probability(4), 0.0);
  EXPECT_GT(pop.Probability(3), pop.Probability(1));
  // Between the two: a never-trained item drawn a quarter as often as a trained one.
  NegativeSampler some(counts, 1, 0.0, 0.25);
  EXPECT_NEAR(some.Probability(2), 0.25 / 3.5, 1e-12);
  EXPECT_NEAR(some.Probability(3), 1.0 / 3.5, 1e-12);
  std::map<uint32_t, int> m;
  for (int k = 0; k < 35000; ++k) m[some.Draw(rng)]++;
  for (uint32_t cold : {2u, 4u}) EXPECT_NEAR(m[cold], 2500, 300) << "item " << cold;
  for (uint32_t warm : {1u, 3u, 5u}) EXPECT_NEAR(m[warm], 10000, 500) << "item " << warm;
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

// model.rating_messages: a rated sample draws positions as SampleNeighbours draws items (the
// same neighbours) and keeps each one's rating; past the ratings' end a neighbour is unrated.
TEST(Samplers, RatedSamplesAreTheSameDrawsWithTheirRatings) {
  EXPECT_EQ(RatingLevel(0.0f), 0);
  EXPECT_EQ(RatingLevel(-2.0f), 0);
  EXPECT_EQ(RatingLevel(std::nanf("")), 0);
  EXPECT_EQ(RatingLevel(1.0f), 1);
  EXPECT_EQ(RatingLevel(3.6f), 4);
  EXPECT_EQ(RatingLevel(0.3f), 1) << "a positive rating is never unrated";
  EXPECT_EQ(RatingLevel(50.0f), kRatingLevels);
  std::vector<uint32_t> items;
  std::vector<float> ratings;
  for (uint32_t k = 0; k < 40; ++k) {
    items.push_back(100 + k);
    ratings.push_back(float(1 + k % 5));
  }
  std::mt19937_64 a(3), b(3);
  std::vector<float> r;
  const auto got = SampleRated(items, items.size(), &ratings, 10, 7, a, &r);
  EXPECT_EQ(got, SampleNeighbours(items, 10, 107, b)) << "position 7 is item 107";
  ASSERT_EQ(r.size(), got.size());
  for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(r[k], ratings[got[k] - 100]) << got[k];
  EXPECT_EQ(a(), b()) << "the same number of draws";
  // The first 8 items only, ratings known for the first 5.
  const std::vector<float> five(ratings.begin(), ratings.begin() + 5);
  const auto head = SampleRated(items, 8, &five, 20, -1, a, &r);
  ASSERT_EQ(head.size(), 8u);
  for (size_t k = 0; k < head.size(); ++k)
    EXPECT_EQ(r[k], head[k] < 105 ? ratings[head[k] - 100] : 0.0f) << head[k];
  EXPECT_EQ(SampleRated(items, 3, nullptr, 20, -1, a, &r).size(), 3u);
  EXPECT_EQ(r, (std::vector<float>{0, 0, 0})) << "no ratings: every neighbour unrated";
}

// train.cold_negative_weight: set, it is the weight; auto, never-trained items are left out of
// the negatives only for a domain that trains a share of its users under the popularity
// calibration (their items are the context users'), and a cold split or item id dropout
// always leaves them out.
TEST(Samplers, ColdNegativeWeightAutoLeavesOutOnlyAPartlyTrainedCalibratedDomainsItems) {
  Dataset ds;
  ds.domains.resize(2);
  ds.domains[0].item_begin = 1, ds.domains[0].item_end = 10;
  ds.domains[1].item_begin = 10, ds.domains[1].item_end = 20;
  ds.domains[1].train_users = 0.1f;
  JobConfig cfg;
  ASSERT_EQ(cfg.train.cold_negative_weight, TrainConfig::kAutoColdNegativeWeight);
  EXPECT_FALSE(PartlyTrained(ds, 1, 10));
  EXPECT_TRUE(PartlyTrained(ds, 10, 20));
  EXPECT_TRUE(PartlyTrained(ds, 1, 20)) << "the whole catalogue holds the partly trained domain";
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 1, 10), 1.0) << "every user trained: uniform";
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 10, 20), 0.0) << "a tenth trained, calibrated: none";
  cfg.train.popularity_calibration = false;
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 10, 20), 1.0) << "nothing else would place them";
  cfg.train.popularity_calibration = true;
  cfg.stream.source = StreamKind::kReplay;
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 10, 20), 1.0) << "a stream's live scoring is raw";
  cfg.stream.source = StreamKind::kNone;
  ds.protocol = Dataset::Protocol::kFullRanking;
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 10, 20), 1.0) << "full ranking is not calibrated";
  ds.protocol = Dataset::Protocol::kSampled;
  cfg.train.cold_negative_weight = 0.3f;
  EXPECT_FLOAT_EQ(float(ColdNegativeWeight(ds, cfg, 1, 10)), 0.3f) << "a set weight is kept";
  cfg.model.item_id_dropout = 0.2f;
  EXPECT_EQ(ColdNegativeWeight(ds, cfg, 1, 10), 0.0) << "item id dropout: never";
}

// A training batch with rating messages: every graph neighbour's level is the user's rating of
// that item, and a rating row never reads the rating it is trained to predict.
TEST(Samplers, TrainingBatchesGiveEachNeighbourItsRatingButNeverTheTargets) {
  auto cfg = ParseConfig(
      "tables:\n  - {name: user, dim: 4}\n  - {name: item, dim: 4}\n"
      "train:\n  job: m6\n  tasks:\n    - {type: retrieval}\n    - {type: rating}\n"
      "model: {rating_messages: true, fanout: 6, sequence: false, content: false}\n",
      "job.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  Dataset ds;
  ds.num_users = 2;
  ds.num_items = 20;
  ds.ordered = false;
  ds.train = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 5, 7}};
  ds.train_ratings = {{5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4}, {2, 4, 1}};
  ds.item_popularity.assign(20, 1);
  ds.test_item.assign(2, -1);
  ds.valid_item.assign(2, -1);
  M6Inputs in(ds, *cfg);
  std::vector<Sample> s;
  for (uint32_t pos = 0; pos < 12; ++pos) s.push_back({0, pos, 1});
  s.push_back({1, 1, 1});
  std::mt19937_64 rng(9);
  auto batch = BuildTrainBatch(in, *cfg, s.data(), s.size(), rng);
  const BatchBuilder& b = *batch->b;
  const int F = b.fanout();
  ASSERT_EQ(b.nbr_level.size(), b.nbr.size());
  int read = 0;
  for (size_t row = 0; row < s.size(); ++row) {
    const uint32_t u = s[row].user, target = ds.train[u][s[row].pos];
    for (int k = 0; k < F; ++k) {
      const size_t at = row * size_t(F) + size_t(k);
      if (b.nbr[at] == 0) {
        EXPECT_EQ(b.nbr_level[at], 0) << "padding is unrated";
        continue;
      }
      const uint32_t item = b.item_ids[size_t(b.nbr[at] - 1)];
      EXPECT_NE(item, target) << "row " << row << " reads its own target";
      const auto p = std::find(ds.train[u].begin(), ds.train[u].end(), item);
      ASSERT_NE(p, ds.train[u].end());
      EXPECT_EQ(b.nbr_level[at], RatingLevel(ds.train_ratings[u][size_t(p - ds.train[u].begin())]))
          << "row " << row << " item " << item;
      ++read;
    }
  }
  EXPECT_EQ(read, 12 * F + 2) << "user 0's rows read 6 of 11, user 1's row its other two";
}

// The item side (item_graph with rating messages): every user a scored item reads comes with the
// rating that user gave the item, and an item never reads the users it is a target of.
TEST(Samplers, TrainingBatchesGiveEachItemsRaterItsRatingButNeverTheTargets) {
  auto cfg = ParseConfig(
      "tables:\n  - {name: user, dim: 4}\n  - {name: item, dim: 4}\n"
      "train:\n  job: m6\n  negatives: 4\n  tasks:\n    - {type: retrieval}\n"
      "    - {type: rating}\n"
      "model: {rating_messages: true, item_graph: true, item_fanout: 3, sequence: false,\n"
      "        content: false}\n",
      "job.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  Dataset ds;
  ds.num_users = 6;
  ds.num_items = 5;
  ds.ordered = false;
  for (uint32_t u = 0; u < 6; ++u) {
    ds.train.push_back({0, 1, 2, 3, 4});
    std::vector<float> r;
    for (uint32_t i = 0; i < 5; ++i) r.push_back(float(1 + (u + 2 * i) % 5));
    ds.train_ratings.push_back(r);
  }
  ds.item_popularity.assign(5, 6);
  ds.test_item.assign(6, -1);
  ds.valid_item.assign(6, -1);
  EXPECT_EQ(TrainRating(ds, 3, 2), float(1 + (3 + 4) % 5));
  EXPECT_EQ(TrainRating(ds, 3, 9), 0.0f) << "not in the user's list";
  EXPECT_EQ(TrainRating(ds, 7, 2), 0.0f) << "no such user";
  M6Inputs in(ds, *cfg);
  // The training ratings' range, what a rating head's predictions are clipped to.
  EXPECT_EQ(in.shape.rating_min, 1.0);
  EXPECT_EQ(in.shape.rating_max, 5.0);
  std::vector<Sample> s{{0, 1, 1}, {1, 1, 1}, {2, 3, 0}};  // item 1 is users 0 and 1's target
  std::mt19937_64 rng(4);
  auto batch = BuildTrainBatch(in, *cfg, s.data(), s.size(), rng);
  const BatchBuilder& b = *batch->b;
  const auto& nbr = b.item_neighbours();
  const auto& lv = b.item_neighbour_levels();
  ASSERT_EQ(lv.size(), nbr.size());
  int read = 0;
  for (size_t k = 0; k < nbr.size(); ++k) {
    ASSERT_EQ(lv[k].size(), nbr[k].size()) << "item " << b.item_ids[k];
    const uint32_t item = b.item_ids[k];
    for (size_t j = 0; j < nbr[k].size(); ++j) {
      const uint32_t v = b.user_ids[size_t(nbr[k][j] - 1)];
      EXPECT_EQ(lv[k][j], RatingLevel(ds.train_ratings[v][item]))
          << "item " << item << " user " << v;
      if (item == 1) EXPECT_GT(v, 1u) << "item 1 reads a user it is the target of";
      ++read;
    }
  }
  EXPECT_GE(read, 3 * 3) << "the positives and negatives read their users";
}

}  // namespace m6rec
