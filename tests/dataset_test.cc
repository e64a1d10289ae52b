#include "worker/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>

#include "test_util.h"
#include "worker/evaluator.h"
#include "worker/pca.h"
#include "worker/synthetic_data.h"
#include "worker/training_engine.h"

namespace m6rec {

namespace {
DataConfig Dir(const std::string& path, const std::string& format, const std::string& name = "") {
  DataConfig c;
  c.source = DataSource::kDir;
  c.path = path;
  EXPECT_TRUE(ParseEnum(format, &c.format)) << format;
  c.name = name;
  return c;
}

// A small synthetic dataset without image and audio features, written under dir and loaded.
StatusOr<Dataset> SmallSynthetic(const std::filesystem::path& dir, int users, int items,
                                 uint64_t seed) {
  SynthConfig c;
  c.users = users, c.items = items, c.image_dim = 0, c.audio_dim = 0;
  M6_RETURN_IF_ERROR(WriteSynthetic(c, seed, dir));
  return LoadDataset(Dir(dir, "tsv"), "");
}
}  // namespace

TEST(Datasets, LightGcnSplitIsFullRankingWithTrainAndTestSets) {
  testing::TempDir dir;
  testing::WriteFile(dir / "train.txt", "0 0 1 2\n1 3\n2 1 4\n");
  testing::WriteFile(dir / "test.txt", "0 5\n1 0 2\n2 3\n");
  auto d = LoadDataset(Dir(dir.path(), "lightgcn"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->protocol, Dataset::Protocol::kFullRanking);
  EXPECT_EQ(d->num_users, 3u);
  EXPECT_EQ(d->num_items, 6u);
  EXPECT_EQ(d->train[0], (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(d->test_sets[1], (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(d->item_popularity[1], 2u);
  EXPECT_EQ(d->train_interactions, 6u);
}

TEST(Datasets, S3RecLeavesTheLastTwoOutAndReadsAttributesAndFixedNegatives) {
  testing::TempDir dir;
  testing::WriteFile(dir / "Toy.txt", "1 1 2 3 4\n2 5 6 7\n3 8 9\n");
  testing::WriteFile(dir / "Toy_item2attributes.json", "{\"1\": [10, 11], \"9\": [12]}");
  auto d = LoadDataset(Dir(dir.path(), "s3rec", "Toy"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->first_item, 1u);
  EXPECT_EQ(d->train[1], (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(d->valid_item[1], 3);
  EXPECT_EQ(d->test_item[1], 4);
  EXPECT_EQ(d->test_item[3], -1) << "two items are too few to hold out";
  EXPECT_EQ(d->item_tokens[1], (std::vector<uint32_t>{10, 11}));
  EXPECT_EQ(d->item_tokens[9], (std::vector<uint32_t>{12}));
  // Drawn negatives: never an item the user touched, never item 0, fixed by the seed.
  d->sampled_negatives = 3;
  auto a = SampledNegatives(*d, 1, 7), b = SampledNegatives(*d, 1, 7);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 3u);
  for (uint32_t n : a) {
    EXPECT_GE(n, 1u);
    EXPECT_TRUE(n > 4) << "negative " << n << " was touched by the user";
  }
  // A shipped negatives file must hold 99 per user.
  testing::WriteFile(dir / "Toy_sample.txt", "1 5 6\n2 1 2\n");
  auto bad = LoadDataset(Dir(dir.path(), "s3rec", "Toy"), "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("has 2 negatives, the protocol has 99"), std::string::npos)
      << bad.status().message();
}

TEST(Datasets, DomainsMergeIntoOneIdSpaceAndKeepTheirNegativesApart) {
  testing::TempDir dir;
  // Two S3-Rec style datasets (1-based ids, attributes as tokens): A has 3 users and items
  // 1..9, B has 2 users and items 1..4.
  testing::WriteFile(dir / "A.txt", "1 1 2 3 4\n2 5 6 7\n3 8 9\n");
  testing::WriteFile(dir / "A_item2attributes.json", "{\"1\": [1, 2], \"9\": [3]}");
  testing::WriteFile(dir / "B.txt", "1 1 2 3 4\n2 2 3 4\n");
  testing::WriteFile(dir / "B_item2attributes.json", "{\"2\": [1]}");
  DataConfig cfg;
  for (const char* n : {"A", "B"}) {
    DomainSpec d;
    d.label = std::string("dom") + n;
    d.path = dir.path();
    d.format = DataFormat::kS3Rec;
    d.name = n;
    cfg.domains.push_back(d);
  }
  cfg.domains[1].weight = 2.0f;
  auto m = LoadDataset(cfg, "");
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto a = LoadDataset(Dir(dir.path(), "s3rec", "A"), "");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(m->domains.size(), 2u);
  EXPECT_TRUE(m->multi_domain());
  EXPECT_FALSE(a->multi_domain());
  EXPECT_EQ(m->name, "domA+domB");
  // A: users 0..3 (id 0 unused), items 0..9; B follows at user 4 and item 10.
  EXPECT_EQ(m->num_users, a->num_users + 3);
  EXPECT_EQ(m->num_items, 10u + 5u);
  EXPECT_EQ(m->domains[1].user_begin, 4u);
  EXPECT_EQ(m->domains[1].item_begin, 11u) << "B's first valid item (its id 1)";
  EXPECT_EQ(m->domains[1].item_end, 15u);
  EXPECT_EQ(m->domains[1].weight, 2.0f);
  EXPECT_EQ(m->UserDomain(2), 0u);
  EXPECT_EQ(m->UserDomain(5), 1u);
  EXPECT_EQ(m->ItemDomain(9), 0u);
  EXPECT_EQ(m->ItemDomain(12), 1u);
  // Every list moved with its ids: B's user 1 (merged 5) trained on B's items 1, 2.
  EXPECT_EQ(m->train[5], (std::vector<uint32_t>{11, 12}));
  EXPECT_EQ(m->valid_item[5], 13);
  EXPECT_EQ(m->test_item[5], 14);
  EXPECT_EQ(m->train[1], a->train[1]) << "the first domain keeps its ids";
  // Tokens: A's attributes 1..3 keep their ids, B's attribute 1 follows A's token space.
  EXPECT_EQ(m->item_tokens[1], (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(m->item_tokens[12], (std::vector<uint32_t>{a->num_tokens + 1}));
  EXPECT_EQ(m->item_popularity[12], 2u);
  // Negatives come from the user's own domain only.
  m->sampled_negatives = 2;
  for (uint32_t n : SampledNegatives(*m, 1, 7)) {
    EXPECT_GE(n, 1u);
    EXPECT_LT(n, 10u);
  }
  m->sampled_negatives = 1;
  for (uint32_t u : {5u, 6u})
    for (uint32_t n : SampledNegatives(*m, u, 7)) {
      EXPECT_GE(n, 11u) << "user " << u;
      EXPECT_LT(n, 15u) << "user " << u;
    }
  // Which of a domain's users train (train_users) does not depend on the domains before it.
  {
    auto alone = LoadDataset(Dir(dir.path(), "s3rec", "B"), "");
    auto merged = LoadDataset(cfg, "");
    ASSERT_TRUE(alone.ok() && merged.ok());
    alone->domains[0].train_users = merged->domains[1].train_users = 0.5f;
    uint64_t seen_in = 0, seen_out = 0;
    for (uint64_t seed : {1, 2, 3, 4, 5}) {
      SelectTrainedUsers(&*alone, seed);
      SelectTrainedUsers(&*merged, seed);
      for (uint32_t u = 0; u < alone->num_users; ++u)
        EXPECT_EQ(alone->Trained(u), merged->Trained(merged->domains[1].user_begin + u))
            << "seed " << seed << " user " << u;
      // Evaluation reports the users that train and those read only as context apart.
      std::vector<uint32_t> users(alone->num_users);
      uint64_t trained = 0;
      for (uint32_t u = 0; u < alone->num_users; ++u) {
        users[u] = u;
        trained += alone->Trained(u);
      }
      MetricSums m;
      ASSERT_TRUE(EvalPopularity(*alone, users, seed, &m).ok());
      const uint64_t in = m.Group(kTrainedUsersGroup).users(),
                     out = m.Group(kContextUsersGroup).users();
      EXPECT_EQ(in + out, m.users()) << "seed " << seed;
      EXPECT_LE(in, trained) << "seed " << seed;
      EXPECT_LE(out, alone->num_users - trained) << "seed " << seed;
      seen_in += in, seen_out += out;
      // And apart by how often their target occurs in training (the long tail against the head).
      std::array<uint64_t, kTargetPopularityGroups.size()> expect{};
      for (uint32_t u : users)
        if (alone->test_item[u] >= 0)
          ++expect[size_t(
              TargetPopularityBucket(alone->item_popularity[size_t(alone->test_item[u])]))];
      uint64_t bucketed = 0;
      for (size_t b = 0; b < expect.size(); ++b) {
        EXPECT_EQ(m.Group(kTargetPopularityGroups[b]).users(), expect[b])
            << "seed " << seed << " bucket " << kTargetPopularityGroups[b];
        bucketed += m.Group(kTargetPopularityGroups[b]).users();
      }
      EXPECT_EQ(bucketed, m.users()) << "seed " << seed;
    }
    EXPECT_EQ(TargetPopularityBucket(0), 0);
    EXPECT_EQ(TargetPopularityBucket(1), 1);
    EXPECT_EQ(TargetPopularityBucket(3), 1);
    EXPECT_EQ(TargetPopularityBucket(4), 2);
    EXPECT_EQ(TargetPopularityBucket(15), 2);
    EXPECT_EQ(TargetPopularityBucket(16), 3);
    EXPECT_EQ(TargetPopularityBucket(63), 3);
    EXPECT_EQ(TargetPopularityBucket(64), 4);
    EXPECT_EQ(TargetPopularityBucket(1u << 30), 4);
    EXPECT_GT(seen_in, 0u);
    EXPECT_GT(seen_out, 0u);
    const auto names = ProtocolSumNames(*alone);
    EXPECT_NE(std::find(names.begin(), names.end(), std::string(kContextUsersGroup) + "/HR@10"),
              names.end());
  }
  // What a part holds out (a published split's test ratings) moves with its ids: B's user 2
  // touched items 2..4 and held out 1, so it has no item left to be its negative.
  auto b = LoadDataset(Dir(dir.path(), "s3rec", "B"), "");
  ASSERT_TRUE(b.ok());
  b->held_out.assign(b->num_users, {});
  b->held_out[2] = {1};
  std::vector<Dataset> parts;
  parts.push_back(std::move(*a));
  parts.push_back(std::move(*b));
  auto held = MergeDomains(std::move(parts), cfg.domains);
  ASSERT_TRUE(held.ok()) << held.status().message();
  ASSERT_EQ(held->held_out.size(), held->num_users);
  EXPECT_EQ(held->held_out[6], (std::vector<uint32_t>{11}));
  EXPECT_TRUE(held->held_out[1].empty()) << "the part without held-out items gets empty lists";
  held->sampled_negatives = 1;
  EXPECT_TRUE(SampledNegatives(*held, 6, 7).empty());
  // Mixing protocols is refused with both domains named.
  std::filesystem::create_directories(dir / "g");
  testing::WriteFile(dir / "g/train.txt", "0 0 1\n");
  testing::WriteFile(dir / "g/test.txt", "0 2\n");
  DomainSpec g;
  g.label = "gowalla";
  g.path = dir / "g";
  g.format = DataFormat::kLightGcn;
  cfg.domains.push_back(g);
  auto mixed = LoadDataset(cfg, "");
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("'gowalla' is evaluated by full ranking"),
            std::string::npos)
      << mixed.status().message();
  // A domain that fails to load is named.
  cfg.domains.back().path = dir / "missing";
  auto missing = LoadDataset(cfg, "");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("data.domains 'gowalla'"), std::string::npos)
      << missing.status().message();
}

TEST(Datasets, MovieLensOrdersEachUserByTime) {
  testing::TempDir dir;
  testing::WriteFile(dir / "u.data", "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t200\n2\t10\t1\t5\n");
  auto d = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->train[1], (std::vector<uint32_t>{11}));
  EXPECT_EQ(d->valid_item[1], 12);
  EXPECT_EQ(d->test_item[1], 10);
}

// Ratings follow their items through the split; a published split tests the rating tasks on
// its own file; user attributes are read, and predicting one removes it from the profiles.
// data.vocabulary: shared joins tokens by name across domains (ML-1M and ML-100K name genres,
// decades and title words alike); per_domain keeps every domain's tokens apart.
TEST(Datasets, ASharedVocabularyJoinsNamedTokensAcrossDomains) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir / "m1");
  std::filesystem::create_directories(dir / "m100");
  testing::WriteFile(dir / "m1/users.dat", "1::F::1::10::48067\n");
  testing::WriteFile(dir / "m1/movies.dat",
                     "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                     "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                     "3::Heat (1995)::Action|Crime|Film-Noir\n");
  testing::WriteFile(dir / "m1/ratings.dat", "1::3::4::300\n1::1::5::100\n1::2::3::200\n");
  auto flags = [](std::initializer_list<int> on) {
    std::string f;
    for (int g = 0; g < 19; ++g)
      f += std::string("|") + (std::find(on.begin(), on.end(), g) != on.end() ? "1" : "0");
    return f;
  };
  // ML-100K's Toy Story (animation 3, children 4, comedy 5) and a film ML-1M lacks.
  testing::WriteFile(dir / "m100/u.item",
                     "1|Toy Story (1995)|01-Jan-1995||http://x" + flags({3, 4, 5}) + "\n" +
                         "2|Blue Velvet (1986)|01-Jan-1986||http://x" + flags({10, 16}) + "\n");
  testing::WriteFile(dir / "m100/u.data", "1\t1\t5\t100\n1\t2\t4\t200\n1\t3\t3\t300\n");
  testing::WriteFile(dir / "m100/u.user", "1|30|F|writer|123\n");
  DataConfig cfg;
  for (const char* n : {"m1", "m100"}) {
    DomainSpec d;
    d.label = n;
    d.path = dir / n;
    d.format = DataFormat::kMovieLens;
    d.title_words = true;
    cfg.domains.push_back(d);
  }
  auto apart = LoadDataset(cfg, "");
  ASSERT_TRUE(apart.ok()) << apart.status().message();
  cfg.shared_vocabulary = true;
  auto shared = LoadDataset(cfg, "");
  ASSERT_TRUE(shared.ok()) << shared.status().message();
  const uint32_t toy1 = 1, toy100 = shared->domains[1].item_offset + 1;
  const uint32_t velvet = shared->domains[1].item_offset + 2;
  ASSERT_EQ(shared->tokens_after_spec.size(), 2u);
  const uint32_t ml1m_tokens = shared->tokens_after_spec[0];
  EXPECT_EQ(shared->tokens_after_spec[1], shared->num_tokens);
  EXPECT_EQ(apart->tokens_after_spec[0], ml1m_tokens) << "the first domain's ids never move";
  auto sorted = [](std::vector<uint32_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  // Toy Story reads the same rows in both domains: its genres, its decade, "toy", "story".
  EXPECT_EQ(sorted(shared->item_tokens[toy100]), sorted(shared->item_tokens[toy1]));
  EXPECT_EQ(shared->item_tokens[toy1].size(), 6u);
  for (uint32_t t : shared->item_tokens[toy100]) EXPECT_LT(t, ml1m_tokens);
  // Blue Velvet: noir and thriller are ML-1M's rows (Heat is noir), its decade and words new.
  int old_rows = 0;
  for (uint32_t t : shared->item_tokens[velvet]) {
    EXPECT_LT(t, shared->num_tokens);
    old_rows += t < ml1m_tokens;
    if (t >= ml1m_tokens) {
      EXPECT_FALSE(shared->token_names[t].empty());
    }
  }
  EXPECT_EQ(old_rows, 2) << "noir and thriller";
  for (uint32_t t : shared->item_tokens[toy100])
    EXPECT_EQ(shared->token_names[t], apart->token_names[t]);
  // Apart, the second domain's tokens all follow the first's.
  for (uint32_t t : apart->item_tokens[apart->domains[1].item_offset + 1])
    EXPECT_GE(t, ml1m_tokens);
  EXPECT_EQ(apart->num_tokens, apart->tokens_after_spec[1]);
  EXPECT_GT(apart->num_tokens, shared->num_tokens);
  // Attributes whose classes agree are one (age); occupations differ, so ML-100K's is its own.
  ASSERT_NE(shared->FindAttribute("age"), nullptr);
  EXPECT_EQ(shared->FindAttribute("age")->label[shared->domains[1].user_begin + 1], 2);
  ASSERT_NE(shared->FindAttribute("occupation/m100"), nullptr);
  EXPECT_EQ(shared->FindAttribute("occupation")->label[shared->domains[1].user_begin + 1], -1);
  // Time order is each domain's own: an unordered part (ML-1M without timestamps) leaves the
  // other's histories causal.
  auto m1 = LoadDataset(Dir(dir / "m1", "movielens"), "");
  auto m100 = LoadDataset(Dir(dir / "m100", "movielens"), "");
  ASSERT_TRUE(m1.ok() && m100.ok());
  EXPECT_TRUE(m1->Ordered(0) && m100->Ordered(0));
  m1->ordered = false;
  m1->domains[0].ordered = false;
  std::vector<Dataset> parts;
  parts.push_back(std::move(*m1));
  parts.push_back(std::move(*m100));
  auto mixed = MergeDomains(std::move(parts), cfg.domains, true);
  ASSERT_TRUE(mixed.ok()) << mixed.status().message();
  EXPECT_FALSE(mixed->ordered);
  EXPECT_FALSE(mixed->Ordered(0));
  EXPECT_TRUE(mixed->Ordered(1));
}

TEST(Datasets, MovieLensKeepsRatingsSplitsAndUserAttributes) {
  testing::TempDir dir;
  testing::WriteFile(dir / "u.data",
                     "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t200\n1\t13\t2\t400\n");
  testing::WriteFile(dir / "u1.base", "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t200\n");
  testing::WriteFile(dir / "u1.test", "1\t13\t2\t400\n1\t14\t1\t500\n");
  testing::WriteFile(dir / "u.user", "1|30|F|writer|123\n");
  auto d = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->train[1], (std::vector<uint32_t>{11, 12}));
  EXPECT_EQ(d->train_ratings[1], (std::vector<float>{3, 4}));
  EXPECT_EQ(d->rated_valid[1], (std::vector<std::pair<uint32_t, float>>{{10, 5}}));
  EXPECT_EQ(d->rated_test[1], (std::vector<std::pair<uint32_t, float>>{{13, 2}}));
  DataConfig split = Dir(dir.path(), "movielens");
  split.split = "u1";
  auto u1 = LoadDataset(split, "");
  ASSERT_TRUE(u1.ok()) << u1.status().message();
  EXPECT_EQ(u1->train[1], (std::vector<uint32_t>{11}));
  EXPECT_EQ(u1->test_item[1], 10);
  EXPECT_EQ(u1->rated_test[1], (std::vector<std::pair<uint32_t, float>>{{13, 2}, {14, 1}}));
  EXPECT_EQ(u1->num_items, 15u) << "items only in the test file still get ids";
  // The user rated u1.test's movies: never its sampled negatives (of the 14 candidate ids it
  // touched 5, 13 and 14 among them: asking for more than the rest gets exactly the other 9).
  ASSERT_EQ(u1->held_out.size(), u1->num_users);
  EXPECT_EQ(u1->held_out[1], (std::vector<uint32_t>{13, 14}));
  u1->sampled_negatives = 100;
  const std::vector<uint32_t> negatives = SampledNegatives(*u1, 1, 7);
  EXPECT_EQ(negatives.size(), size_t(u1->num_items - u1->first_item) - 5);
  for (uint32_t n : negatives) EXPECT_TRUE(n != 13 && n != 14) << n;
  EXPECT_TRUE(d->held_out.empty() || d->held_out[1].empty()) << "leave-last-out holds nothing out";
  const Dataset::UserAttribute* gender = d->FindAttribute("gender");
  ASSERT_NE(gender, nullptr);
  EXPECT_EQ(gender->classes[size_t(gender->label[1])], "F");
  EXPECT_EQ(d->FindAttribute("age")->classes[size_t(d->FindAttribute("age")->label[1])], "25-34");
  EXPECT_EQ(d->FindAttribute("occupation")->label[1], 0);
  const size_t profile = d->user_tokens[1].size();
  TaskSpec task{"gender", TaskKind::kAttribute, 1, 4, "gender"};
  ASSERT_TRUE(PrepareTasks({TaskSpec{}, task}, &*d).ok());
  EXPECT_EQ(d->user_tokens[1].size(), profile - 1) << "the gender token is no input any more";
  for (uint32_t t : d->user_tokens[1]) EXPECT_TRUE(t != 50 && t != 51);
  task.attribute = "zip";
  Status bad = PrepareTasks({TaskSpec{}, task}, &*d);
  EXPECT_NE(bad.message().find("predicts 'zip'"), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find("gender, age, occupation"), std::string::npos) << bad.message();
}

// The synthetic data with three domains: users and items in contiguous blocks per domain, so
// the domain column becomes the dataset's domains (named from domains.tsv); ratings and the
// profile's segment come along. One domain stays one domain.
TEST(Datasets, ADomainColumnThatPartitionsUsersAndItemsMakesDomains) {
  testing::TempDir dir;
  SynthConfig c;
  c.users = 90, c.items = 60, c.domains = 3, c.image_dim = 0, c.audio_dim = 0;
  ASSERT_TRUE(WriteSynthetic(c, 4, dir / "three").ok());
  auto d = LoadDataset(Dir(dir / "three", "tsv"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  ASSERT_EQ(d->domains.size(), 3u);
  EXPECT_EQ(d->domains[1].name, "video");
  EXPECT_EQ(d->domains[1].user_begin, 30u);
  EXPECT_EQ(d->domains[1].user_end, 60u);
  EXPECT_EQ(d->domains[1].item_begin, 20u);
  EXPECT_EQ(d->domains[1].item_end, 40u);
  for (uint32_t u = 0; u < 90; ++u) {
    const auto [begin, end] = d->CandidateItems(u);
    for (uint32_t i : d->train[u]) EXPECT_TRUE(i >= begin && i < end) << "user " << u;
    EXPECT_EQ(d->train_ratings[u].size(), d->train[u].size());
  }
  ASSERT_NE(d->FindAttribute("segment"), nullptr);
  EXPECT_GE(d->FindAttribute("segment")->label[7], 0);
  c.domains = 1;
  ASSERT_TRUE(WriteSynthetic(c, 4, dir / "one").ok());
  auto one = LoadDataset(Dir(dir / "one", "tsv"), "");
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(one->domains.size(), 1u);
  // As entries of data.domains: each keeps its own domains (the three after the one), each
  // taking its entry's weight and remembering the entry.
  DataConfig both;
  both.source = DataSource::kDir;
  for (const char* name : {"one", "three"}) {
    DomainSpec s;
    s.label = name;
    s.path = dir / name;
    s.weight = name[0] == 'o' ? 0.0f : 0.5f;
    both.domains.push_back(s);
  }
  auto merged = LoadDataset(both, "");
  ASSERT_TRUE(merged.ok()) << merged.status().message();
  ASSERT_EQ(merged->domains.size(), 4u);
  EXPECT_EQ(merged->domains[0].name, "one");
  EXPECT_EQ(merged->domains[2].name, "video");
  EXPECT_EQ(merged->domains[2].user_begin, 90u + 30u);
  EXPECT_EQ(merged->domains[2].item_begin, 60u + 20u);
  EXPECT_EQ(merged->domains[2].item_offset, 60u + 20u);
  EXPECT_EQ(merged->domains[2].weight, 0.5f);
  EXPECT_EQ(merged->domains[2].spec, 1u);
  EXPECT_EQ(merged->DomainsOfSpecs(1), 1u);
  EXPECT_EQ(merged->DomainsOfSpecs(2), 4u);
  EXPECT_EQ(merged->UserDomain(90 + 65), 3u);
  // A rating on some lines only is an error naming the line.
  std::filesystem::create_directories(dir / "bad");
  testing::WriteFile(dir / "bad/interactions.tsv", "0 1 0 5 4\n1 2 0 6\n");
  auto bad = LoadDataset(Dir(dir / "bad", "tsv"), "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("interactions.tsv:2: no rating"), std::string::npos)
      << bad.status().message();
}

// A cold split removes every training interaction with a drawn share of the items, the same
// items for the same seed; a user's lost cold items are never its sampled negatives.
TEST(Datasets, ColdItemsLoseEveryTrainingInteraction) {
  testing::TempDir dir;
  auto a = SmallSynthetic(dir / "d", 200, 300, 5);
  ASSERT_TRUE(a.ok()) << a.status().message();
  const uint64_t before = a->train_interactions;
  Dataset b = *a;
  MakeColdItems(&*a, 0.2, 3);
  MakeColdItems(&b, 0.2, 3);
  ASSERT_TRUE(a->cold_split());
  EXPECT_EQ(a->cold, b.cold) << "drawn from the seed alone";
  size_t cold = 0, removed = 0;
  for (uint32_t i = 0; i < a->num_items; ++i) cold += a->IsCold(i);
  EXPECT_GT(cold, 40u);
  EXPECT_LT(cold, 80u);
  for (uint32_t u = 0; u < a->num_users; ++u) {
    for (uint32_t i : a->train[u]) EXPECT_FALSE(a->IsCold(i)) << "user " << u;
    for (uint32_t i : a->held_out[u]) EXPECT_TRUE(a->IsCold(i));
    removed += a->held_out[u].size();
    EXPECT_EQ(a->train_ratings[u].size(), a->train[u].size());
    for (uint32_t n : SampledNegatives(*a, u, 11))
      EXPECT_EQ(std::count(a->held_out[u].begin(), a->held_out[u].end(), n), 0)
          << "user " << u << " touched item " << n;
  }
  EXPECT_GT(removed, 0u);
  EXPECT_EQ(a->train_interactions + removed, before);
  for (uint32_t i = 0; i < a->num_items; ++i) {
    if (a->IsCold(i)) {
      EXPECT_EQ(a->item_popularity[i], 0u);
    }
  }
  Dataset other = b;
  MakeColdItems(&other, 0.2, 4);
  EXPECT_NE(other.cold, b.cold) << "another seed, other items";
}

// A user cold split keeps a drawn share of the users' last few training interactions (and
// drops their profile when asked); what they lost is never their sampled negative.
TEST(Datasets, ColdUsersKeepTheirLastInteractionsOnly) {
  testing::TempDir dir;
  auto full = SmallSynthetic(dir / "d", 300, 200, 6);
  ASSERT_TRUE(full.ok()) << full.status().message();
  Dataset d = *full;
  MakeColdUsers(&d, 0.3, 2, /*profile=*/false, 8);
  ASSERT_TRUE(d.cold_user_split());
  size_t cold = 0;
  for (uint32_t u = 0; u < d.num_users; ++u) {
    if (!d.IsColdUser(u)) {
      EXPECT_EQ(d.train[u], full->train[u]);
      EXPECT_EQ(d.user_tokens[u], full->user_tokens[u]);
      continue;
    }
    ++cold;
    const auto& was = full->train[u];
    ASSERT_EQ(d.train[u].size(), 2u);
    EXPECT_TRUE(std::equal(d.train[u].begin(), d.train[u].end(), was.end() - 2)) << "user " << u;
    EXPECT_EQ(d.held_out[u].size(), was.size() - 2);
    EXPECT_EQ(d.train_ratings[u].size(), 2u);
    EXPECT_TRUE(d.user_tokens[u].empty()) << "profile dropped";
    EXPECT_EQ(d.test_item[u], full->test_item[u]) << "targets stay";
    for (uint32_t n : SampledNegatives(d, u, 11))
      EXPECT_EQ(std::count(was.begin(), was.end(), n), 0) << "user " << u << " touched " << n;
  }
  EXPECT_GT(cold, 60u);
  EXPECT_LT(cold, 120u);
}

// Validation ratings: a share of every user's rated training pairs, the same pairs on every
// load, leaves the training lists (ratings with them) for rated_valid; the user touched them,
// so they are never its sampled negatives; every user keeps a training item.
TEST(Datasets, ValidationRatingsLeaveTheTrainingLists) {
  testing::TempDir dir;
  auto full = SmallSynthetic(dir / "d", 300, 200, 6);
  ASSERT_TRUE(full.ok()) << full.status().message();
  ASSERT_TRUE(full->has_ratings());
  Dataset a = *full, b = *full;
  HoldOutValidationRatings(&a, 0.2);
  HoldOutValidationRatings(&b, 0.2);
  size_t held = 0, before = 0;
  for (uint32_t u = 0; u < a.num_users; ++u) {
    EXPECT_EQ(a.train[u], b.train[u]) << "a fixed hash: the same pairs every load";
    const auto& was = full->train[u];
    before += was.size();
    ASSERT_EQ(a.train_ratings[u].size(), a.train[u].size()) << "user " << u;
    if (!was.empty()) {
      EXPECT_GE(a.train[u].size(), 1u) << "user " << u << " keeps an item";
    }
    ASSERT_EQ(a.held_out[u].size() + a.train[u].size(), was.size()) << "user " << u;
    // The validation pairs: the old validation item's first, then the held-out ones with the
    // ratings they had in training (items can repeat in a list: compare the (item, rating)
    // pairs of what is left and what was held out with the list they came from).
    ASSERT_EQ(a.rated_valid[u].size(), full->rated_valid[u].size() + a.held_out[u].size());
    std::vector<std::pair<uint32_t, float>> then, now;
    for (size_t k = 0; k < was.size(); ++k) then.push_back({was[k], full->train_ratings[u][k]});
    for (size_t k = 0; k < a.train[u].size(); ++k)
      now.push_back({a.train[u][k], a.train_ratings[u][k]});
    for (size_t k = 0; k < a.held_out[u].size(); ++k) {
      const auto& pair = a.rated_valid[u][full->rated_valid[u].size() + k];
      EXPECT_EQ(pair.first, a.held_out[u][k]);
      now.push_back(pair);
    }
    std::sort(then.begin(), then.end());
    std::sort(now.begin(), now.end());
    EXPECT_EQ(now, then) << "user " << u;
    held += a.held_out[u].size();
    for (uint32_t n : SampledNegatives(a, u, 11))
      EXPECT_EQ(std::count(was.begin(), was.end(), n), 0) << "user " << u << " touched " << n;
  }
  EXPECT_GT(double(held), 0.15 * double(before));
  EXPECT_LT(double(held), 0.25 * double(before));
  EXPECT_EQ(a.train_interactions + held, full->train_interactions) << "popularity recounted";
  // Data without ratings has nothing to validate on: the job's data load says so.
  std::filesystem::create_directories(dir / "plain");
  testing::WriteFile(dir / "plain/interactions.tsv", "0 1\n0 2\n0 3\n1 2\n1 3\n1 1\n");
  JobConfig cfg;
  cfg.data = Dir(dir / "plain", "tsv");
  cfg.data.valid_ratings = 0.1f;
  auto plain = LoadJobData(cfg, "");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("data.valid_ratings"), std::string::npos)
      << plain.status().message();
}

// PCA on a matrix with known structure: points spread along two orthogonal directions (10 and
// 3 standard deviations) plus small noise in 6 dimensions. The components recover the two
// directions in order, their variances, and the projection keeps the points' coordinates.
TEST(Pca, RecoversKnownDirectionsAndVariances) {
  const int64_t n = 4000, d = 6;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> g(0, 1);
  const double s = 1 / std::sqrt(2.0);
  const double u1[d] = {s, s, 0, 0, 0, 0}, u2[d] = {0, 0, 0, 0, s, -s};
  std::vector<float> x(size_t(n * d));
  std::vector<double> a(n), b(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 10 * g(rng), b[i] = 3 * g(rng);
    for (int64_t j = 0; j < d; ++j)
      x[i * d + j] = float(5 + a[i] * u1[j] + b[i] * u2[j] + 0.1 * g(rng));
  }
  const Pca p = FitPca(x, n, d, 2);
  ASSERT_EQ(p.variance.size(), 2u);
  EXPECT_NEAR(p.variance[0], 100, 6);
  EXPECT_NEAR(p.variance[1], 9, 0.6);
  EXPECT_GT(p.explained(), 0.99);
  double dot1 = 0, dot2 = 0;
  for (int64_t j = 0; j < d; ++j)
    dot1 += p.components[j] * u1[j], dot2 += p.components[d + j] * u2[j];
  EXPECT_NEAR(std::fabs(dot1), 1, 1e-3);
  EXPECT_NEAR(std::fabs(dot2), 1, 1e-3);
  const auto y = ApplyPca(p, x, n);
  ASSERT_EQ(y.size(), size_t(n * 2));
  // The projection: centred coordinates along the components, with their variances.
  double m0 = 0, v0 = 0, abar = 0;
  for (int64_t i = 0; i < n; ++i) m0 += y[i * 2] / double(n), abar += a[i] / double(n);
  for (int64_t i = 0; i < n; ++i) v0 += (y[i * 2] - m0) * (y[i * 2] - m0) / double(n - 1);
  EXPECT_NEAR(m0, 0, 1e-3);
  EXPECT_NEAR(v0, p.variance[0], 1e-3 * p.variance[0]);
  for (int64_t i = 0; i < 20; ++i)
    EXPECT_NEAR(std::fabs(y[i * 2]), std::fabs(a[i] - abar), 0.5) << i;
  // A dataset's features: the image matrix is reduced, the narrower audio one kept.
  Dataset ds;
  ds.item_image = x, ds.image_dim = uint32_t(d);
  ds.item_audio.assign(size_t(n * 2), 1.0f), ds.audio_dim = 2;
  const std::string line = ReduceItemFeatures(&ds, 2);
  EXPECT_EQ(ds.image_dim, 2u);
  EXPECT_EQ(ds.item_image.size(), size_t(n * 2));
  EXPECT_EQ(ds.audio_dim, 2u);
  EXPECT_NE(line.find("image features 6 -> 2 principal components, 100.0% of the variance"),
            std::string::npos)
      << line;
}

TEST(Datasets, BadLinesNameFileAndLine) {
  testing::TempDir dir;
  testing::WriteFile(dir / "train.txt", "0 1 2\n1 3 x\n");
  testing::WriteFile(dir / "test.txt", "0 4\n");
  auto d = LoadDataset(Dir(dir.path(), "lightgcn"), "");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("train.txt:2: item id 'x'"), std::string::npos)
      << d.status().message();
  testing::WriteFile(dir / "train.txt", "0 1\n0 2\n");
  d = LoadDataset(Dir(dir.path(), "lightgcn"), "");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("train.txt:2: user 0 appears twice"), std::string::npos);
  testing::WriteFile(dir / "u.data", "1\t2\t3\n");
  d = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("u.data:1:"), std::string::npos) << d.status().message();
  EXPECT_FALSE(LoadDataset(Dir(dir / "missing", "s3rec", "X"), "").ok());
}

// The real datasets, read in place when ../shared/data (or $M6REC_DATA) has them.
TEST(Datasets, RealDatasetsHaveThePublishedCounts) {
  const std::string root = testing::SharedDataDir();
  auto gw = LoadDataset(Dir(root + "/lightgcn-gowalla", "lightgcn"), "");
  if (!gw.ok() && gw.status().code() == StatusCode::kNotFound) {
    std::fprintf(stderr, "NOTE: real datasets not found under %s: this test checked nothing\n",
                 root.c_str());
    GTEST_SKIP() << "datasets absent at " << root << " (set M6REC_DATA)";
  }
  ASSERT_TRUE(gw.ok()) << gw.status().message();
  EXPECT_EQ(gw->num_users, 29858u);
  EXPECT_EQ(gw->num_items, 40981u);
  EXPECT_EQ(gw->train_interactions, 810128u);
  uint64_t test = 0;
  for (const auto& t : gw->test_sets) test += t.size();
  EXPECT_EQ(test, 217242u);
  auto beauty = LoadDataset(Dir(root + "/s3rec", "s3rec", "Beauty"), "");
  ASSERT_TRUE(beauty.ok()) << beauty.status().message();
  EXPECT_EQ(beauty->num_users - 1, 22363u) << "user ids are 1-based";
  EXPECT_EQ(beauty->num_items - 1, 12101u);
  auto lastfm = LoadDataset(Dir(root + "/s3rec", "s3rec", "LastFM"), "");
  ASSERT_TRUE(lastfm.ok()) << lastfm.status().message();
  EXPECT_FALSE(lastfm->fixed_negatives.empty()) << "LastFM ships its 99 negatives";
  auto ml = LoadDataset(Dir(root + "/ml-100k", "movielens"), "");
  ASSERT_TRUE(ml.ok()) << ml.status().message();
  EXPECT_EQ(ml->num_users - 1, 943u);
  // u.item: Toy Story is Animation (2), Children's (3), Comedy (4), released in the 1990s (29).
  EXPECT_EQ(ml->item_tokens[1], (std::vector<uint32_t>{3, 4, 5, 29}));
  // u.user: user 1 is 24, male, a technician: age band 42, gender 50, an occupation token >= 60.
  ASSERT_EQ(ml->user_tokens[1].size(), 3u);
  EXPECT_EQ(ml->user_tokens[1][0], 42u);
  EXPECT_EQ(ml->user_tokens[1][1], 50u);
  EXPECT_GE(ml->user_tokens[1][2], 60u);
  // MovieLens-1M (its ratings without times): every rating in one of train / valid / test.
  auto m1 = LoadDataset(Dir(root + "/ml-1m", "movielens"), "");
  ASSERT_TRUE(m1.ok()) << m1.status().message();
  EXPECT_EQ(m1->num_users - 1, 6040u);
  EXPECT_EQ(m1->num_items - 1, 3706u);
  uint64_t held = 0;
  for (uint32_t u = 1; u < m1->num_users; ++u)
    held += m1->rated_valid[u].size() + m1->rated_test[u].size();
  EXPECT_EQ(m1->train_interactions + held, 1000209u);
  EXPECT_FALSE(m1->ordered) << "no timestamps: the lists are sets";
  EXPECT_EQ(m1->FindAttribute("occupation")->classes.size(), 21u);
  DataConfig gc = Dir(root + "/ml-1m", "movielens");
  gc.split = "90/10";
  auto m1s = LoadDataset(gc, "");
  ASSERT_TRUE(m1s.ok()) << m1s.status().message();
  uint64_t test_ratings = 0;
  for (const auto& t : m1s->rated_test) test_ratings += t.size();
  EXPECT_NEAR(double(test_ratings) / 1000209.0, 0.10, 0.005) << "GC-MC's 90/10 protocol";
}

// MovieLens-1M's own files: ratings.dat ("::", with times: per-user time order and genres from
// movies.dat by MovieID), or the re-indexed ratings without times (gzip'd TSV: unordered, no
// genres); users.dat's README codes as attributes; bad lines named by file and line.
TEST(Datasets, MovieLens1MReadsItsFilesAndItsAttributeCodes) {
  testing::TempDir dir;
  testing::WriteFile(dir / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n");
  testing::WriteFile(dir / "movies.dat",
                     "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                     "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                     "3::Grumpier Old Men (1995)::Comedy|Romance\n"
                     "4::Waiting to Exhale (1995)::Comedy|Drama\n");
  testing::WriteFile(dir / "ratings.dat",
                     "1::3::4::300\n1::1::5::100\n1::2::3::200\n1::4::1::400\n2::2::2::5\n");
  auto d = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_TRUE(d->ordered);
  EXPECT_EQ(d->train[1], (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(d->valid_item[1], 3);
  EXPECT_EQ(d->test_item[1], 4);
  EXPECT_EQ(d->train_ratings[1], (std::vector<float>{5, 3}));
  EXPECT_EQ(d->rated_test[1], (std::vector<std::pair<uint32_t, float>>{{4, 1}}));
  // Toy Story: animation 3, children 4, comedy 5 (ML-100K's token ids), the 1990s 29.
  EXPECT_EQ(d->item_tokens[1], (std::vector<uint32_t>{3, 4, 5, 29}));
  const auto* age = d->FindAttribute("age");
  ASSERT_NE(age, nullptr);
  EXPECT_EQ(age->classes[size_t(age->label[1])], "<18");
  EXPECT_EQ(age->classes[size_t(age->label[2])], "56+");
  EXPECT_EQ(
      d->FindAttribute("occupation")->classes[size_t(d->FindAttribute("occupation")->label[2])],
      "self-employed");
  EXPECT_EQ(d->FindAttribute("gender")->label[1], 1);
  EXPECT_EQ(d->token_names[60 + 10], "occupation:K-12 student");

  // Without ratings.dat: the gzip'd copy, unordered, no genres (its ids are not MovieIDs).
  std::filesystem::remove(dir / "ratings.dat");
  testing::WriteFile(dir / "r.tsv", "1\t1\t5\n1\t2\t3\n1\t3\t4\n1\t4\t1\n2\t2\t2\n");
  ASSERT_EQ(std::system(("gzip -c " + (dir / "r.tsv") + " > " +
                         (dir / "ratings_svdapprox_user_itemidx_rating.tsv.gz"))
                            .c_str()),
            0);
  auto g = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_FALSE(g->ordered);
  EXPECT_EQ(g->train[1].size() + 2, 4u);
  EXPECT_TRUE(g->item_tokens[1].empty()) << "no genres without MovieIDs";
  EXPECT_EQ(g->user_tokens[1].size(), 3u);
  // The same hash picks the same held-out items every time.
  auto again = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->test_item[1], g->test_item[1]);
  EXPECT_EQ(again->train[1], g->train[1]);

  // Bad input: the file and line.
  testing::WriteFile(dir / "users.dat", "1::F::1::10::48067\n2::M::33::16::70072\n");
  auto bad = LoadDataset(Dir(dir.path(), "movielens"), "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("users.dat:2: age 33"), std::string::npos)
      << bad.status().message();
  DataConfig u1 = Dir(dir.path(), "movielens");
  u1.split = "u1";
  auto wrong = LoadDataset(u1, "");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("90/10"), std::string::npos) << wrong.status().message();
}

TEST(Datasets, SideFilesAreReadNextToTheInteractions) {
  testing::TempDir dir;
  testing::WriteFile(dir / "interactions.tsv", "0\t0\n0\t1\n0\t2\n1\t2\n1\t0\n1\t1\n2\t1\n");
  testing::WriteFile(dir / "social.tsv", "# user friend\n0\t1\n2 1\n");
  testing::WriteFile(dir / "item_tokens.tsv", "0 5 6\n2 7\n");
  ASSERT_TRUE(WriteNpy(dir / "item_image.npy", {1, 2, 3, 4, 5, 6}, 3, 2).ok());
  testing::WriteFile(dir / "item_audio.tsv", "2 0.5\n0 1.5\n1 -2\n");
  auto d = LoadDataset(Dir(dir.path(), "tsv"), "");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->social[1], (std::vector<uint32_t>{0, 2})) << "friendship is symmetric";
  EXPECT_EQ(d->item_tokens[0], (std::vector<uint32_t>{5, 6}));
  EXPECT_TRUE(d->item_tokens[1].empty());
  EXPECT_EQ(d->num_tokens, 8u);
  EXPECT_EQ(d->image_dim, 2u);
  EXPECT_EQ(d->item_image, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(d->audio_dim, 1u);
  EXPECT_EQ(d->item_audio, (std::vector<float>{1.5f, -2.0f, 0.5f}));
  // Training interactions only (leave-last-out keeps the first item of users 0 and 1).
  EXPECT_EQ(d->ItemUsers()[0], (std::vector<uint32_t>{0}));
  EXPECT_EQ(d->ItemUsers()[1], (std::vector<uint32_t>{2}));
}

TEST(Datasets, BadSideFilesNameTheFileAndLine) {
  struct Case {
    const char* file;
    std::string content;
    const char* want;
  };
  const std::vector<Case> cases{
      {"social.tsv", "0 1\n0 x\n", "social.tsv:2: friend 'x'"},
      {"social.tsv", "0 1\n7 1\n", "social.tsv:2: user 7 is out of range"},
      {"item_tokens.tsv", "0 1\n\n-1 2\n", "item_tokens.tsv:3: item id '-1'"},
      {"item_image.tsv", "0 1 2\n1 1\n2 1 2\n",
       "item_image.tsv:2: 1 features, earlier lines have 2"},
      {"item_image.tsv", "0 1\n1 nan\n2 1\n", "item_image.tsv:2: 'nan' is not a finite number"},
      {"item_image.tsv", "0 1\n2 1\n", "no line for item 1"},
      {"item_audio.npy", "not numpy at all", "item_audio.npy: not a .npy file"},
  };
  for (const auto& c : cases) {
    testing::TempDir dir;
    testing::WriteFile(dir / "interactions.tsv", "0\t0\n0\t1\n0\t2\n1\t2\n");
    testing::WriteFile(dir / c.file, c.content);
    auto d = LoadDataset(Dir(dir.path(), "tsv"), "");
    ASSERT_FALSE(d.ok()) << c.file << " should be refused:\n" << c.content;
    EXPECT_NE(d.status().message().find(c.want), std::string::npos) << d.status().message();
  }
  // token_names.tsv names the tokens item_tokens.tsv uses (0..2 here).
  const std::vector<std::pair<std::string, std::string>> names{
      {"0\tred\nx\tblue\n", "token_names.tsv:2: expected 'token<TAB>name'"},
      {"0\tred\n9\tblue\n", "token_names.tsv:2: token 9 is not used by the data (tokens 0..2)"},
      {"0\tred\n1\tred\n", "token_names.tsv:2: the name 'red' is another token's already"},
      {"# token name\n0\tred\n0\tblue\n", "token_names.tsv:3: token 0 named a second time"},
  };
  for (const auto& [content, want] : names) {
    testing::TempDir dir;
    testing::WriteFile(dir / "interactions.tsv", "0\t0\n0\t1\n0\t2\n1\t2\n");
    testing::WriteFile(dir / "item_tokens.tsv", "0 1\n1 2\n");
    testing::WriteFile(dir / "token_names.tsv", content);
    auto d = LoadDataset(Dir(dir.path(), "tsv"), "");
    ASSERT_FALSE(d.ok()) << content;
    EXPECT_NE(d.status().message().find(want), std::string::npos) << d.status().message();
  }
  {
    testing::TempDir dir;
    testing::WriteFile(dir / "interactions.tsv", "0\t0\n0\t1\n0\t2\n1\t2\n");
    testing::WriteFile(dir / "item_tokens.tsv", "0 1\n1 2\n");
    testing::WriteFile(dir / "token_names.tsv", "2\tdark blue\n0\tred\n");
    auto d = LoadDataset(Dir(dir.path(), "tsv"), "");
    ASSERT_TRUE(d.ok()) << d.status().message();
    ASSERT_EQ(d->token_names.size(), 3u);
    EXPECT_EQ(d->token_names[2], "dark blue");
    EXPECT_EQ(d->token_names[0], "red");
    EXPECT_TRUE(d->token_names[1].empty()) << "an unnamed token stays unnamed";
  }
  // A .npy of the wrong shape or type.
  testing::TempDir dir;
  testing::WriteFile(dir / "interactions.tsv", "0\t0\n0\t1\n0\t2\n1\t2\n");
  ASSERT_TRUE(WriteNpy(dir / "item_image.npy", {1, 2}, 2, 1).ok());
  auto d = LoadDataset(Dir(dir.path(), "tsv"), "");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("2 rows, but the interactions have 3 items"),
            std::string::npos)
      << d.status().message();
}

}  // namespace m6rec
