// Request intents and serving strategies without a model: intents read from categories, the
// classifier on a synthetic case with a known answer, the strategy file and its edits.
#include "worker/strategy.h"

#include <gtest/gtest.h>

#include <random>

namespace m6rec {
namespace {

// Items 0..39, item i in category i % 8.
Dataset Categorised(uint32_t users) {
  Dataset ds;
  ds.num_items = 40;
  ds.num_users = users;
  ds.item_categories.resize(40);
  for (uint32_t i = 0; i < 40; ++i) ds.item_categories[i] = {i % 8};
  ds.item_popularity.assign(40, 1);
  ds.train.resize(users);
  return ds;
}

TEST(Strategy, IntentsAreReadFromTheRecentItemsCategories) {
  Dataset ds = Categorised(1);
  ds.item_categories[5] = {1, 2};               // two categories
  const std::vector<uint32_t> h{3, 9, 17, 10};  // categories 3, 1, 1, 2
  EXPECT_EQ(CategoryOverlap(ds, h, 25), 1.0) << "category 1 is among the last three";
  EXPECT_EQ(IntentOf(ds, h, 25), 0);
  EXPECT_EQ(CategoryOverlap(ds, h, 11), 0.0) << "category 3 only before the window";
  EXPECT_EQ(IntentOf(ds, h, 11), 1);
  EXPECT_EQ(CategoryOverlap(ds, {9, 0, 0}, 5), 0.5) << "half of item 5's categories";
  EXPECT_EQ(IntentOf(ds, {9, 0, 0}, 5), 0);
  EXPECT_EQ(IntentOf(ds, {}, 5), 1) << "no history: everything is new";
}

// Half the users continue (stay in a category for runs of 4-8 items), half explore (each
// item's category new to the last three): the classifier, trained on some users' training
// lists, tells the others' requests apart from their behaviour.
TEST(Strategy, TheClassifierLearnsWhoContinuesAndWhoExplores) {
  Dataset ds = Categorised(400);
  std::mt19937 rng(3);
  std::vector<int> kind(400);
  for (uint32_t u = 0; u < 400; ++u) {
    kind[u] = int(u % 2);
    uint32_t cat = rng() % 8;
    auto& l = ds.train[u];
    for (int n = 0; n < 30; ++n) {
      if (kind[u] == 0) {
        if (n % (4 + int(rng() % 5)) == 0) cat = (cat + 1 + rng() % 7) % 8;
      } else {
        for (bool fresh = false; !fresh;) {
          cat = rng() % 8;
          fresh = true;
          for (size_t k = l.size() > 3 ? l.size() - 3 : 0; k < l.size(); ++k)
            fresh = fresh && l[k] % 8 != cat;
        }
      }
      l.push_back(cat + 8 * uint32_t(rng() % 5));
    }
  }
  std::vector<uint32_t> train_users, test_users;
  for (uint32_t u = 0; u < 400; ++u) (u < 300 ? train_users : test_users).push_back(u);
  const IntentClassifier c = IntentClassifier::Fit(ds, train_users, 7);
  ASSERT_TRUE(c.trained());
  double correct = 0, n = 0;
  for (uint32_t u : test_users) {
    const auto& l = ds.train[u];
    for (size_t p = 10; p < l.size(); ++p) {
      const std::vector<uint32_t> h(l.begin(), l.begin() + long(p));
      correct += c.Predict(ds, h) == IntentOf(ds, h, l[p]);
      n += 1;
    }
  }
  EXPECT_GT(correct / n, 0.8) << "over " << n << " held-out requests";
  // A restored classifier predicts the same.
  auto back = IntentClassifier::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().message();
  const std::vector<uint32_t> h(ds.train[350].begin(), ds.train[350].begin() + 12);
  EXPECT_EQ(back->ProbExplore(ds, h), c.ProbExplore(ds, h));
}

TEST(Strategy, TheBookRoundTripsAndEditsAreChecked) {
  StrategyBook b;
  b.intents[1].sources = {{"sequence", 0.5f}};
  b.intents[1].category_weight = -0.5f;
  ASSERT_TRUE(SetStrategyField(&b, "continue.k=20").ok());
  ASSERT_TRUE(SetStrategyField(&b, "explore.sources.graph=1.5").ok());
  ASSERT_TRUE(SetStrategyField(&b, "global.min_score=0.25").ok());
  EXPECT_EQ(b.intents[0].k, 20);
  EXPECT_EQ(b.intents[1].sources.at("graph"), 1.5f);
  EXPECT_EQ(b.global.min_score, 0.25f);
  ASSERT_TRUE(SetStrategyField(&b, "global.min_score=none").ok());
  EXPECT_FALSE(std::isfinite(b.global.min_score));
  auto back = StrategyBook::FromJson(b.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->ToJson(), b.ToJson());

  for (const auto& [bad, says] : std::vector<std::pair<std::string, std::string>>{
           {"browse.k=3", "'browse' is no intent"},
           {"continue.k=0", ".k: 0 (>= 1)"},
           {"continue.kk=3", "no field 'kk'"},
           {"continue.k=many", "'many' is not a number"},
           {"explore.sources.sequence=-1", "a scale in [0, 100]"},
           {"k=3", "expected INTENT.FIELD=VALUE"}}) {
    const Status s = SetStrategyField(&b, bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find(says), std::string::npos) << bad << ": " << s.message();
  }
  EXPECT_EQ(b.intents[0].k, 20) << "a refused edit changes nothing";
  auto corrupt = StrategyBook::FromJson(nlohmann::json::parse(R"({"global": {}, "intents": {}})"));
  EXPECT_FALSE(corrupt.ok());
}

TEST(Strategy, ACategoryWeightMovesCandidatesByTheirOverlap) {
  Dataset ds = Categorised(1);
  const std::vector<uint32_t> h{1, 2, 3};   // categories 1, 2, 3
  const std::vector<uint32_t> items{9, 4};  // category 1 (recent), 4 (new)
  std::vector<float> s{0.0f, 1.0f};         // spread (population std) 0.5
  ApplyCategoryWeight(ds, h, items, 4.0f, &s);
  EXPECT_FLOAT_EQ(s[0], 2.0f);
  EXPECT_FLOAT_EQ(s[1], 1.0f);
  std::vector<float> t{0.0f, 1.0f};
  ApplyCategoryWeight(ds, h, items, -4.0f, &t);
  EXPECT_FLOAT_EQ(t[0], -2.0f);
}

}  // namespace
}  // namespace m6rec
