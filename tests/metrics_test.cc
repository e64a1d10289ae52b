#include "worker/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "launch/offline.h"
#include "worker/evaluator.h"
#include "worker/job_summary.h"
#include "worker/neighbourhood.h"

namespace m6rec {

TEST(Metrics, SampledProtocolHitAndNdcg) {
  // Positive first; two negatives above it, one tie (counts against), one below.
  std::vector<float> s{0.5f, 0.9f, 0.7f, 0.5f, 0.1f};
  int rank = RankOfFirst(s);
  EXPECT_EQ(rank, 3);
  EXPECT_EQ(HitAtK(rank, 3), 0.0);
  EXPECT_EQ(HitAtK(rank, 4), 1.0);
  EXPECT_DOUBLE_EQ(NdcgAtK(rank, 10), 1.0 / std::log2(5.0));
  EXPECT_DOUBLE_EQ(NdcgAtK(0, 10), 1.0);
  EXPECT_EQ(NdcgAtK(10, 10), 0.0);
}

TEST(Metrics, FullRankingRecallAndNdcgByHand) {
  std::vector<float> scores{0.1f, 0.9f, 0.3f, 0.8f, 0.2f, 0.7f};
  auto top = TopK(scores, 3);
  ASSERT_EQ(top, (std::vector<uint32_t>{1, 3, 5}));
  std::vector<uint32_t> rel{3, 4};
  EXPECT_DOUBLE_EQ(RecallAtK(top, rel, 3), 0.5);
  // One hit at position 1 (0-based): DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
  EXPECT_DOUBLE_EQ(FullNdcgAtK(top, rel, 3), (1 / std::log2(3.0)) / (1 + 1 / std::log2(3.0)));
  EXPECT_DOUBLE_EQ(FullNdcgAtK(top, {1}, 3), 1.0);
  EXPECT_EQ(RecallAtK(top, {}, 3), 0.0);
  // Ties break by lower index.
  EXPECT_EQ(TopK({1, 2, 2, 0}, 2), (std::vector<uint32_t>{1, 2}));
}

TEST(Metrics, AucWithTies) {
  EXPECT_DOUBLE_EQ(Auc({0.9f, 0.8f, 0.1f, 0.2f}, {1, 1, 0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(Auc({0.1f, 0.2f, 0.9f, 0.8f}, {1, 1, 0, 0}), 0.0);
  // pos {0.5, 0.3}, neg {0.5, 0.1}: pairs (0.5>0.1)=1, (0.5=0.5)=0.5, (0.3<0.5)=0, (0.3>0.1)=1.
  EXPECT_DOUBLE_EQ(Auc({0.5f, 0.3f, 0.5f, 0.1f}, {1, 1, 0, 0}), 2.5 / 4);
  EXPECT_DOUBLE_EQ(Auc({0.5f, 0.3f}, {1, 1}), 0.5) << "undefined without negatives";
}

TEST(Metrics, ThresholdCounts) {
  BinaryCounts c;
  const float s[] = {0.9f, 0.6f, 0.4f, 0.2f, 0.7f};
  const int l[] = {1, 0, 1, 0, 1};
  for (int i = 0; i < 5; ++i) c.Add(s[i], l[i], 0.5f);
  EXPECT_EQ(c.tp, 2u);
  EXPECT_EQ(c.fp, 1u);
  EXPECT_EQ(c.fn, 1u);
  EXPECT_EQ(c.tn, 1u);
  EXPECT_DOUBLE_EQ(c.accuracy(), 0.6);
  EXPECT_DOUBLE_EQ(c.precision(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(c.recall(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(c.f1(), 2.0 / 3);
}

TEST(Metrics, SumsMergeAndPackRoundTrip) {
  MetricSums a, b;
  a.AddUser();
  a.Add("HR@10", 1);
  b.AddUser();
  b.AddUser();
  b.Add("HR@10", 1);
  b.Add("NDCG@10", 0.5);
  a.Merge(b);
  EXPECT_EQ(a.users(), 3u);
  EXPECT_DOUBLE_EQ(a.Mean("HR@10"), 2.0 / 3);
  MetricSums c;
  c.Unpack(a.Pack(), {"HR@10", "NDCG@10"});
  EXPECT_EQ(c.users(), 3u);
  EXPECT_DOUBLE_EQ(c.Mean("NDCG@10"), 0.5 / 3);
}

TEST(Metrics, ThresholdIsChosenOnValidationToMaximiseF1) {
  // Positives 2.0 and 1.5, negatives 1.6, 1.0, 0.5, -1. Calling {2.0, 1.6, 1.5} positive gives
  // TP 2, FP 1, FN 0: F1 0.8, the best ({2.0} alone: 0.667; adding 1.0: 0.667).
  ScoreHistogram valid;
  for (float s : {2.0f, 1.5f}) valid.Add(s, true);
  for (float s : {1.6f, 1.0f, 0.5f, -1.0f}) valid.Add(s, false);
  const double t = valid.BestF1Threshold();
  EXPECT_GT(t, 1.0);
  EXPECT_LE(t, 1.5);
  BinaryCounts c = valid.CountsAt(t);
  EXPECT_EQ(c.tp, 2u);
  EXPECT_EQ(c.fp, 1u);
  EXPECT_EQ(c.tn, 3u);
  EXPECT_EQ(c.fn, 0u);
  EXPECT_NEAR(c.f1(), 0.8, 1e-12);
  // Applied to other (test) scores, the counts are exact: score >= t.
  ScoreHistogram test;
  std::vector<std::pair<float, bool>> pts{{1.45f, true}, {1.2f, true},  {0.9f, true},
                                          {3.0f, false}, {1.3f, false}, {-4.f, false},
                                          {0.0f, false}, {250.f, true}};
  BinaryCounts brute;
  for (auto [s, pos] : pts) {
    test.Add(s, pos);
    brute.Add(s, pos, float(t));
  }
  BinaryCounts h = test.CountsAt(t);
  EXPECT_EQ(h.tp, brute.tp);
  EXPECT_EQ(h.fp, brute.fp);
  EXPECT_EQ(h.tn, brute.tn);
  EXPECT_EQ(h.fn, brute.fn);
  // Histograms add up (an allreduce), and no positives at all means "never positive".
  ScoreHistogram sum = valid;
  sum.Merge(test);
  EXPECT_EQ(sum.total(), 14.0);
  ScoreHistogram none;
  none.Add(0.3f, false);
  EXPECT_TRUE(std::isinf(none.BestF1Threshold()));
  EXPECT_EQ(none.CountsAt(none.BestF1Threshold()).tn, 1u);
  // Bins resolve small score differences near 0 and still order huge scores.
  EXPECT_LT(ScoreHistogram::Edge(ScoreHistogram::kBins / 2 + 1), 0.02);
  EXPECT_GT(ScoreHistogram::Edge(ScoreHistogram::kBins - 1), 1000.0);
}

// The popularity calibration on a hand-made case with a known answer: every validation target is
// a popular item (bucket 64+) that the model scores 0.3 below five never-trained negatives, so
// the only offset that helps is the popular bucket's, by more than 0.3; buckets without any
// candidate stay at 0. Fitted on two ranks' passes it chooses what one pass of them all does.
// What a checkpoint is served with: the calibration its epoch's evaluation chose (result.json
// keeps every epoch's), not the best epoch's; none within an epoch or for an unlisted epoch.
TEST(Metrics, ACheckpointIsServedWithItsEpochsCalibration) {
  const nlohmann::json result = nlohmann::json::parse(R"({
    "best_epoch": 2, "calibration": {"offsets": [0, 0.2, 0.2, 0.2, 0.2]},
    "epochs": [{"epoch": 1, "calibration": {"offsets": [0, 0.1, 0.1, 0.1, 0.1]}},
               {"epoch": 2, "calibration": {"offsets": [0, 0.2, 0.2, 0.2, 0.2]}},
               {"epoch": 3}]})");
  auto at = [&](int epoch, int next_step) {
    return EpochCalibration(result, {{"epoch", epoch}, {"next_step", next_step}});
  };
  ASSERT_NE(at(1, 0), nullptr);
  EXPECT_EQ((*at(1, 0))["offsets"][1], 0.1) << "epoch 1's own offsets";
  ASSERT_NE(at(2, 0), nullptr);
  EXPECT_EQ((*at(2, 0))["offsets"][1], 0.2);
  EXPECT_EQ(at(2, 17), nullptr) << "a checkpoint within epoch 2 was not evaluated";
  EXPECT_EQ(at(3, 0), nullptr) << "an epoch without a calibration";
  EXPECT_EQ(at(4, 0), nullptr) << "an epoch the result does not list (a job still running)";
  EXPECT_EQ(EpochCalibration(nlohmann::json::object(), {{"epoch", 1}, {"next_step", 0}}), nullptr);
}

TEST(Metrics, PopularityCalibrationIsChosenOnValidation) {
  Dataset ds;
  ds.protocol = Dataset::Protocol::kSampled;
  ds.num_users = 40;
  ds.num_items = 10;
  ds.item_popularity = {0, 0, 0, 0, 0, 100, 100, 100, 100, 100};
  auto pass_of = [](uint32_t first, uint32_t last) {
    SampledPass p;
    p.valid = true;
    for (uint32_t u = first; u < last; ++u) {
      p.users.push_back(u);
      p.cands.push_back({5 + u % 5, 0, 1, 2, 3, 4});
      p.scores.push_back({0.0f, 0.3f, 0.25f, 0.2f, 0.1f, 0.05f});
    }
    return p;
  };
  const SampledPass all = pass_of(0, 40), rank0 = pass_of(0, 20), rank1 = pass_of(20, 40);
  int sums = 0;
  auto local = [&](std::vector<double>*) {
    ++sums;
    return Status::OK();
  };
  auto one = FitCalibration(ds, {&all}, local);
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(sums, 1 + kCalibrationSweeps * 4) << "the scale, then one sum per coordinate step";
  ASSERT_EQ(one->offsets.size(), 1u);
  const auto& o = one->offsets[0];
  EXPECT_EQ(o[0], 0.0) << "the never-trained bucket is the reference";
  EXPECT_EQ(o[1], 0.0);
  EXPECT_EQ(o[2], 0.0);
  EXPECT_EQ(o[3], 0.0);
  EXPECT_GT(o[4], 0.3);
  // The smallest grid value that puts the targets first: within one step of the gap.
  double mean = 0, sq = 0;
  for (float x : all.scores[0]) mean += x / 6, sq += double(x) * x / 6;
  const double step = kCalibrationStep * std::sqrt(sq - mean * mean);
  EXPECT_LE(o[4], 0.3 + step + 1e-9);
  auto two = FitCalibration(ds, {&rank0, &rank1}, local);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->offsets.size(), 1u);
  for (size_t b = 0; b < o.size(); ++b)
    EXPECT_NEAR(two->offsets[0][b], o[b], 1e-12) << "bucket " << b << " (sums added by pass)";
  // Ranked on the calibrated scores every target is first; the raw ranks stay beside.
  MetricSums m;
  AccumulateSampledPass(ds, all, *one, &m, nullptr);
  EXPECT_DOUBLE_EQ(m.Mean("HR@1"), 1.0);
  EXPECT_DOUBLE_EQ(m.Mean("NDCG@10"), 1.0);
  EXPECT_DOUBLE_EQ(m.Mean("NDCG@10_uncalibrated"), 1.0 / std::log2(7.0));
  MetricSums raw;
  AccumulateSampledPass(ds, all, Calibration{}, &raw, nullptr);
  EXPECT_DOUBLE_EQ(raw.Mean("NDCG@10"), 1.0 / std::log2(7.0));
  // What serving reads back from result.json is what was chosen.
  auto back = Calibration::FromJson(ds, one->ToJson(ds));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->offsets, one->offsets);
  EXPECT_EQ(one->ToJson(ds)["buckets"][4], "64+");
  EXPECT_FALSE(Calibration::FromJson(ds, {{"offsets", {0.0, 1.0}}}).ok())
      << "a wrong number of offsets is refused";
  // Targets already first: no move improves, nothing moves.
  SampledPass first = pass_of(0, 40);
  for (auto& sc : first.scores) sc[0] = 1.0f;
  auto none = FitCalibration(ds, {&first}, local);
  ASSERT_TRUE(none.ok());
  for (double x : none->offsets[0]) EXPECT_EQ(x, 0.0);
}

// The histogram's AUC (what the like task reports across ranks) on a hand-made case, and the
// task metrics SummaryMetrics derives: RMSE / MAE from error sums, accuracy and macro-F1 from
// per-class counts.
TEST(Metrics, TaskMetricsFromSumsAndHistograms) {
  ScoreHistogram h;
  for (float s : {2.0f, 3.0f, 0.5f}) h.Add(s, true);
  for (float s : {-1.0f, 1.0f, 2.5f, -3.0f}) h.Add(s, false);
  // Positives 2, 3, 0.5 against negatives -1, 1, 2.5, -3: 3 + 4 + 2 = 9 of 12 pairs.
  EXPECT_NEAR(h.Auc(), 9.0 / 12.0, 1e-12);
  ScoreHistogram one_label;
  one_label.Add(1.0f, true);
  EXPECT_EQ(one_label.Auc(), 0.5);

  MetricSums rating;
  rating.Add("SE", 4.0 + 1.0);  // errors 2 and -1
  rating.Add("AE", 3.0);
  rating.AddUsers(2);
  auto r = SummaryMetrics(rating);
  EXPECT_NEAR(r["RMSE"], std::sqrt(2.5), 1e-12);
  EXPECT_NEAR(r["MAE"], 1.5, 1e-12);
  EXPECT_EQ(r.count("SE"), 0u);

  // 4 users, classes 0 / 1 / 2: truth 0 0 1 2, predicted 0 1 1 1.
  MetricSums attr;
  attr.AddUsers(4);
  attr.Add("correct", 2);
  attr.Add("TP#0", 1), attr.Add("FN#0", 1), attr.Add("FP#1", 2), attr.Add("TP#1", 1);
  attr.Add("FN#2", 1);
  auto a = SummaryMetrics(attr);
  EXPECT_NEAR(a["accuracy"], 0.5, 1e-12);
  // F1: class 0 2/3, class 1 2/4, class 2 0 -> macro 7/18.
  EXPECT_NEAR(a["macro_F1"], (2.0 / 3 + 0.5 + 0.0) / 3, 1e-12);
  EXPECT_EQ(a.count("TP#0"), 0u);
}

// An attribute task whose scorer returns deep and wide logits (model.wide_table): the wide
// weight is the one most correct on validation, and the class counts are read at it. Hand-made:
// the deep head always says class 0; the wide logits lean to the truth by 0.8, which takes a
// weight of 2 to overturn the deep head's margin of 1 for a class-1 user.
TEST(Metrics, WideWeightIsChosenOnValidationPerAttributeTask) {
  Dataset ds;
  ds.num_users = 400;
  ds.num_items = 3;
  ds.train.assign(ds.num_users, std::vector<uint32_t>{1});
  Dataset::UserAttribute a;
  a.name = "age";
  a.classes = {"young", "old"};
  for (uint32_t u = 0; u < ds.num_users; ++u) a.label.push_back(int32_t(u % 2));
  ds.user_attributes.push_back(a);
  std::vector<TaskSpec> tasks(2);
  tasks[1].name = "age";
  tasks[1].type = TaskKind::kAttribute;
  tasks[1].attribute = "age";
  std::vector<uint32_t> users(ds.num_users);
  for (uint32_t u = 0; u < ds.num_users; ++u) users[u] = u;
  const uint64_t seed = 3;
  auto scorer = [&](bool wide) -> TaskScorer {
    return [&, wide](uint32_t, const std::vector<uint32_t>& us, const std::vector<uint32_t>&, bool,
                     std::vector<std::vector<float>>* out) {
      for (uint32_t u : us) {
        std::vector<float> o{1.0f, 0.0f};
        if (wide) {
          o.push_back(u % 2 == 0 ? 0.8f : 0.0f);
          o.push_back(u % 2 == 1 ? 0.8f : 0.0f);
        }
        out->push_back(o);
      }
      return Status::OK();
    };
  };
  for (bool wide : {false, true}) {
    MetricSums test, valid;
    TaskHistograms ht(ds, tasks), hv(ds, tasks);
    ASSERT_TRUE(EvalTasks(ds, tasks, users, false, seed, scorer(wide), &test, &ht).ok());
    ASSERT_TRUE(EvalTasks(ds, tasks, users, true, seed, scorer(wide), &valid, &hv).ok());
    nlohmann::json thr = nlohmann::json::object(), weights = nlohmann::json::object();
    AddTaskConfusion(ds, tasks, ht, hv, ht, hv, &test, &valid, &thr, &weights);
    const auto t = SummaryMetrics(test.Group(TaskGroup("age")));
    const auto v = SummaryMetrics(valid.Group(TaskGroup("age")));
    ASSERT_GT(test.Group(TaskGroup("age")).users(), 10u);
    if (!wide) {
      EXPECT_TRUE(weights.empty()) << "no wide part, no weight";
      EXPECT_LT(t.at("accuracy"), 0.7) << "the deep head alone: class 0 for everyone";
    } else {
      EXPECT_EQ(weights["age"].value("weight", -1.0), 2.0) << weights.dump();
      // The deep head alone gets the class-0 half of the validation users right.
      const nlohmann::json& acc = weights["age"]["valid_accuracy"];
      EXPECT_EQ(acc.value("2", -1.0), 1.0) << acc.dump();
      EXPECT_GT(acc.value("0", -1.0), 0.2) << acc.dump();
      EXPECT_LT(acc.value("0", -1.0), 0.8) << acc.dump();
      EXPECT_EQ(t.at("accuracy"), 1.0);
      EXPECT_EQ(v.at("accuracy"), 1.0);
      EXPECT_EQ(t.at("macro_F1"), 1.0);
    }
  }
}

namespace {

// Ratings of items 0, 1, 2 by two kinds of user: kind A rates 5 / 5 / 1, kind B 1 / 1 / 5 (item 1
// rated as item 0, item 2 the opposite; everything symmetric, so every item offset is 0 and the
// mean is 3). Users [0, trained) rate all three in training; users from `trained` on rate items
// 0 and 2 in training and item 1 is held out (rated_valid for u % 4 < 2, else rated_test).
Dataset TwoKindsOfRater(uint32_t trained, uint32_t held_out) {
  Dataset ds;
  ds.num_users = trained + held_out;
  ds.num_items = 4;  // item 3: never rated
  ds.train.resize(ds.num_users);
  ds.train_ratings.resize(ds.num_users);
  ds.rated_valid.resize(ds.num_users);
  ds.rated_test.resize(ds.num_users);
  for (uint32_t u = 0; u < ds.num_users; ++u) {
    const float hi = u % 2 == 0 ? 5.0f : 1.0f, lo = 6.0f - hi;
    ds.train[u] = {0, 2};
    ds.train_ratings[u] = {hi, lo};
    if (u < trained) {
      ds.train[u].push_back(1);
      ds.train_ratings[u].push_back(hi);
    } else {
      (u % 4 < 2 ? ds.rated_valid : ds.rated_test)[u].emplace_back(1, hi);
    }
  }
  return ds;
}

}  // namespace

// The neighbourhood model on a case with a known answer: item 1's only positively similar item
// is item 0 (their residual columns agree: cosine 1), item 2's similarity is negative and is
// not read. Unshrunk, one neighbour's prediction is the user's rating of it plus the items'
// offset difference (0 here): exactly the rating the user gave item 0.
TEST(Metrics, NeighbourhoodPredictsFromTheUsersRatingsOfSimilarItems) {
  const Dataset ds = TwoKindsOfRater(40, 4);
  NeighbourhoodOptions exact;
  exact.shrink = 0;
  exact.weight_prior = 0;
  // (40, 1): kind A; (41, 1): kind B; (40, 3) and (41, 3): an item nobody rated (the baseline).
  const std::vector<std::pair<uint32_t, uint32_t>> pairs{
      {40, 1}, {41, 1}, {40, 3}, {41, 3}, {99, 1}};
  const std::vector<float> p = NeighbourhoodRatings(ds, pairs, exact);
  ASSERT_EQ(p.size(), pairs.size());
  EXPECT_NEAR(p[0], 5.0, 1e-4) << "kind A rated item 0 a 5";
  EXPECT_NEAR(p[1], 1.0, 1e-4) << "kind B rated item 0 a 1";
  // The baseline: the mean 3 + the user's offset (0: its training ratings 5 and 1 cancel) + the
  // item's (0: never rated).
  EXPECT_NEAR(p[2], 3.0, 1e-4);
  EXPECT_NEAR(p[3], 3.0, 1e-4);
  EXPECT_NEAR(p[4], 3.0, 1e-4) << "an unknown user: the mean plus the item's offset";
  // Shrunk (the defaults): between the baseline and the neighbour's rating.
  const std::vector<float> q = NeighbourhoodRatings(ds, pairs);
  EXPECT_GT(q[0], 3.5);
  EXPECT_LT(q[0], 5.0 - 1e-3);
  EXPECT_LT(q[1], 2.5);
  EXPECT_GT(q[1], 1.0 + 1e-3);
  // The held-out pairs' predictions, looked up.
  const RatingNeighbourhood nb(ds, exact);
  EXPECT_EQ(nb.size(), 4u);
  ASSERT_NE(nb.Find(40, 1), nullptr);
  EXPECT_NEAR(*nb.Find(40, 1), 5.0, 1e-4);
  EXPECT_EQ(nb.Find(40, 0), nullptr) << "a training pair is not held out";
}

// A rating task blends the deep prediction with the neighbourhood's at the weight least wrong
// on validation, reports the deep model's own error beside it, and keeps the deep prediction
// where the neighbourhood is worse.
TEST(Metrics, NeighbourWeightIsChosenOnTheValidationRatings) {
  const Dataset ds = TwoKindsOfRater(40, 40);
  std::vector<TaskSpec> tasks(2);
  tasks[1].name = "rating";
  tasks[1].type = TaskKind::kRating;
  std::vector<uint32_t> users(ds.num_users);
  for (uint32_t u = 0; u < ds.num_users; ++u) users[u] = u;
  NeighbourhoodOptions exact;
  exact.shrink = 0;
  exact.weight_prior = 0;
  const RatingNeighbourhood right(ds, exact), shrunk(ds);
  // The deep model: 3 for everyone (wrong by 2), or the truth.
  auto scorer = [&](bool truth) -> TaskScorer {
    return [&, truth](uint32_t, const std::vector<uint32_t>& us, const std::vector<uint32_t>& items,
                      bool, std::vector<std::vector<float>>* out) {
      for (size_t c = 0; c < us.size(); ++c) {
        float y = 3.0f;
        for (const auto* rated : {&ds.rated_valid, &ds.rated_test})
          for (const auto& [item, r] : (*rated)[us[c]])
            if (truth && item == items[c]) y = r;
        out->push_back({y});
      }
      return Status::OK();
    };
  };
  for (bool truth : {false, true}) {
    const RatingNeighbourhood& nb = truth ? shrunk : right;
    MetricSums test, valid;
    TaskHistograms ht(ds, tasks), hv(ds, tasks);
    ASSERT_TRUE(EvalTasks(ds, tasks, users, false, 1, scorer(truth), &test, &ht, &nb).ok());
    ASSERT_TRUE(EvalTasks(ds, tasks, users, true, 1, scorer(truth), &valid, &hv, &nb).ok());
    nlohmann::json thr = nlohmann::json::object(), weights = nlohmann::json::object();
    AddTaskConfusion(ds, tasks, ht, hv, ht, hv, &test, &valid, &thr, &weights);
    const auto t = SummaryMetrics(test.Group(TaskGroup("rating")));
    ASSERT_EQ(test.Group(TaskGroup("rating")).users(), 20u);
    ASSERT_TRUE(weights.contains("rating")) << weights.dump();
    const nlohmann::json& rmse = weights["rating"]["valid_RMSE"];
    if (!truth) {
      EXPECT_EQ(weights["rating"].value("weight", -1.0), 1.0) << weights.dump();
      EXPECT_NEAR(rmse.value("0", -1.0), 2.0, 1e-6) << rmse.dump();
      EXPECT_NEAR(rmse.value("0.5", -1.0), 1.0, 1e-4) << rmse.dump();
      EXPECT_NEAR(t.at("RMSE"), 0.0, 1e-4);
      EXPECT_NEAR(t.at("RMSE_deep"), 2.0, 1e-6);
    } else {
      EXPECT_EQ(weights["rating"].value("weight", -1.0), 0.0) << weights.dump();
      EXPECT_GT(rmse.value("1", -1.0), 0.1) << "the shrunk neighbourhood is off " << rmse.dump();
      EXPECT_NEAR(t.at("RMSE"), 0.0, 1e-6);
      EXPECT_NEAR(t.at("RMSE_deep"), 0.0, 1e-6);
    }
  }
}

// A like task (rating >= 4) blends its logit with the neighbourhood's rating read as a logit
// at the weight of the highest validation AUC: a head that knows nothing (logit 0 for every
// pair) is rescued by an exact neighbourhood; a head that already separates keeps weight 0.
TEST(Metrics, LikeBlendsWithTheNeighbourhoodWhereValidationAucSaysSo) {
  const Dataset ds = TwoKindsOfRater(40, 40);
  std::vector<TaskSpec> tasks(2);
  tasks[1].name = "like";
  tasks[1].type = TaskKind::kLike;
  tasks[1].like_threshold = 4;
  std::vector<uint32_t> users(ds.num_users);
  for (uint32_t u = 0; u < ds.num_users; ++u) users[u] = u;
  NeighbourhoodOptions exact;
  exact.shrink = 0;
  exact.weight_prior = 0;
  const RatingNeighbourhood nb(ds, exact);
  for (bool knows : {false, true}) {
    // Kind A (even users) rated item 1 a 5 (liked), kind B a 1.
    const TaskScorer head = [&](uint32_t, const std::vector<uint32_t>& us,
                                const std::vector<uint32_t>&, bool,
                                std::vector<std::vector<float>>* out) {
      for (uint32_t u : us) out->push_back({knows ? (u % 2 == 0 ? 3.0f : -3.0f) : 0.0f});
      return Status::OK();
    };
    MetricSums test, valid;
    TaskHistograms ht(ds, tasks), hv(ds, tasks);
    ASSERT_TRUE(EvalTasks(ds, tasks, users, false, 1, head, &test, &ht, &nb).ok());
    ASSERT_TRUE(EvalTasks(ds, tasks, users, true, 1, head, &valid, &hv, &nb).ok());
    nlohmann::json thr = nlohmann::json::object(), weights = nlohmann::json::object();
    AddTaskConfusion(ds, tasks, ht, hv, ht, hv, &test, &valid, &thr, &weights);
    const auto t = SummaryMetrics(test.Group(TaskGroup("like")));
    ASSERT_TRUE(weights.contains("like")) << weights.dump();
    ASSERT_EQ(weights["like"]["valid_AUC"].size(), kNumNeighbourWeights) << weights.dump();
    EXPECT_DOUBLE_EQ(t.at("AUC"), 1.0);
    EXPECT_DOUBLE_EQ(t.at("F1"), 1.0) << "the threshold is read on the blend";
    if (!knows) {
      EXPECT_EQ(weights["like"].value("weight", -1.0), 0.1) << weights.dump();
      EXPECT_DOUBLE_EQ(weights["like"]["valid_AUC"].value("0", -1.0), 0.5);
      EXPECT_DOUBLE_EQ(t.at("AUC_deep"), 0.5);
    } else {
      EXPECT_EQ(weights["like"].value("weight", -1.0), 0.0) << weights.dump();
      EXPECT_DOUBLE_EQ(t.at("AUC_deep"), 1.0);
    }
  }
  // Without a neighbourhood model: the head alone, and no weight.
  MetricSums test, valid;
  TaskHistograms ht(ds, tasks), hv(ds, tasks);
  const TaskScorer zero = [&](uint32_t, const std::vector<uint32_t>& us,
                              const std::vector<uint32_t>&, bool,
                              std::vector<std::vector<float>>* out) {
    for (size_t c = 0; c < us.size(); ++c) out->push_back({0.0f});
    return Status::OK();
  };
  ASSERT_TRUE(EvalTasks(ds, tasks, users, false, 1, zero, &test, &ht).ok());
  ASSERT_TRUE(EvalTasks(ds, tasks, users, true, 1, zero, &valid, &hv).ok());
  nlohmann::json thr = nlohmann::json::object(), weights = nlohmann::json::object();
  AddTaskConfusion(ds, tasks, ht, hv, ht, hv, &test, &valid, &thr, &weights);
  EXPECT_TRUE(weights.empty()) << weights.dump();
  EXPECT_DOUBLE_EQ(SummaryMetrics(test.Group(TaskGroup("like"))).at("AUC"), 0.5);
}

TEST(Metrics, GroupsRideInTheSumsAndSplitBack) {
  MetricSums m;
  for (auto [group, hit] : {std::make_pair("Beauty", 1.0), std::make_pair("Beauty", 0.0),
                            std::make_pair("Toys", 1.0)}) {
    m.AddUser();
    m.Add("HR@10", hit);
    m.AddGroupUser(group);
    m.AddGroup(group, "HR@10", hit);
  }
  EXPECT_EQ(m.Groups(), (std::vector<std::string>{"Beauty", "Toys"}));
  EXPECT_DOUBLE_EQ(m.Mean("HR@10"), 2.0 / 3);
  const MetricSums beauty = m.Group("Beauty");
  EXPECT_EQ(beauty.users(), 2u);
  EXPECT_DOUBLE_EQ(beauty.Mean("HR@10"), 0.5);
  EXPECT_EQ(beauty.sums().size(), 1u) << "only the group's own metrics";
  EXPECT_DOUBLE_EQ(m.Group("Toys").Mean("HR@10"), 1.0);
  EXPECT_EQ(m.Group("Sports").users(), 0u);
  // Groups survive the allreduce's pack/unpack with the names listed.
  MetricSums back;
  back.Unpack(m.Pack(), {"Beauty/HR@10", "Beauty/users", "HR@10", "Toys/HR@10", "Toys/users"});
  EXPECT_DOUBLE_EQ(back.Group("Beauty").Mean("HR@10"), 0.5);
}

// The quick start's shape by hand: retrieval flattens after epoch 1 while the attribute head and
// the rating climb. Retrieval alone keeps epoch 1; every task's share of its best lift over
// chance moves to epoch 2, then 3.
TEST(EpochSelection, SeveralTasksChooseTheEpochWithTheMostOfEveryTasksLift) {
  std::vector<TaskSpec> tasks(3);
  tasks[1].name = "segment", tasks[1].type = TaskKind::kAttribute, tasks[1].attribute = "segment";
  tasks[2].name = "rating", tasks[2].type = TaskKind::kRating;
  SelectionRule rule = SelectionFor(Dataset::Protocol::kSampled, tasks, "auto");
  ASSERT_EQ(rule.terms.size(), 3u);
  EXPECT_EQ(rule.terms[0].task, "");
  EXPECT_STREQ(rule.terms[1].metric, "accuracy");
  EXPECT_STREQ(rule.terms[2].metric, "RMSE");
  EXPECT_EQ(rule.terms[2].sign, -1);
  EXPECT_EQ(rule.Describe(),
            "mean share of best lift over chance, weighted by precision: valid NDCG@10, valid "
            "segment accuracy, valid rating RMSE");
  rule.terms[0].chance = 0.05, rule.terms[1].chance = 0.3, rule.terms[2].chance = -0.94;
  const std::vector<std::vector<double>> epochs = {
      {0.48, 0.62, -0.855}, {0.475, 0.80, -0.842}, {0.472, 0.96, -0.845}, {0.40, 0.96, -0.90}};
  EpochSelector all(rule);
  EpochSelector retrieval(SelectionFor(Dataset::Protocol::kSampled, tasks, "retrieval"));
  std::vector<bool> picked;
  for (size_t e = 0; e < epochs.size(); ++e) {
    picked.push_back(all.OfferValues(int(e) + 1, epochs[e]));
    EXPECT_EQ(retrieval.OfferValues(int(e) + 1, {epochs[e][0]}), e == 0);
  }
  EXPECT_EQ(picked, (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(all.selected_epoch(), 3);
  EXPECT_EQ(retrieval.selected_epoch(), 1);
  // Epoch 2 against the final bests (0.48, 0.96, -0.842): 0.425/0.43, 0.5/0.66, 1.
  EXPECT_NEAR(all.Score(1), (0.425 / 0.43 + 0.5 / 0.66 + 1.0) / 3, 1e-12);

  // A checkpoint's state carries the history: the restored selector decides the same.
  EpochSelector first_two(rule), restored(rule);
  first_two.OfferValues(1, epochs[0]);
  first_two.OfferValues(2, epochs[1]);
  ASSERT_TRUE(restored.Restore(nlohmann::json::parse(first_two.State().dump())).ok());
  EXPECT_EQ(restored.selected_epoch(), 2);
  EXPECT_TRUE(restored.OfferValues(3, epochs[2]));
  EXPECT_FALSE(restored.Restore(nlohmann::json{{"epochs", {1}}}).ok());
  // A metric not measured (-inf) cannot tell epochs apart; a task never above chance neither.
  EpochSelector unmeasured(rule);
  const double none = -std::numeric_limits<double>::infinity();
  EXPECT_TRUE(unmeasured.OfferValues(1, {0.40, none, -0.99}));
  EXPECT_TRUE(unmeasured.OfferValues(2, {0.45, none, -0.995}));
  EXPECT_NEAR(unmeasured.Score(0), (0.35 / 0.4) / 3, 1e-12);
}

TEST(EpochSelection, RuleFollowsTheTrainedTasksAndSelectBy) {
  EXPECT_EQ(SelectionFor(Dataset::Protocol::kSampled).Describe(), "valid NDCG@10");
  EXPECT_EQ(SelectionFor(Dataset::Protocol::kFullRanking).Describe(), "test Recall@20");
  std::vector<TaskSpec> tasks(3);
  tasks[1].name = "rating", tasks[1].type = TaskKind::kRating;
  tasks[2].name = "like", tasks[2].type = TaskKind::kLike, tasks[2].weight = 0;
  EXPECT_EQ(SelectionFor(Dataset::Protocol::kSampled, tasks).terms.size(), 2u)
      << "a task of weight 0 does not vote";
  EXPECT_EQ(SelectionFor(Dataset::Protocol::kSampled, tasks, "rating").Describe(),
            "valid rating RMSE");
  tasks[0].weight = 0;
  EXPECT_EQ(SelectionFor(Dataset::Protocol::kSampled, tasks).Describe(), "valid rating RMSE")
      << "one trained task: its own metric";
}

// Chance levels from the data: uniform ranking among 1 + 99 candidates, the training mean's
// RMSE on the validation ratings, the training majority's accuracy on the validation users.
TEST(EpochSelection, ChanceLevelsComeFromTheData) {
  Dataset ds;
  ds.num_users = 300;
  ds.num_items = 3;
  ds.train.assign(ds.num_users, std::vector<uint32_t>{1});
  ds.train_ratings.assign(ds.num_users, std::vector<float>{});
  ds.train_ratings[0] = {2, 4};  // mean 3
  ds.rated_valid.assign(ds.num_users, {});
  ds.rated_valid[5] = {{1, 5.0f}, {2, 3.0f}};  // errors 2 and 0
  Dataset::UserAttribute a;
  a.name = "age";
  a.classes = {"young", "old"};
  // Class 1 for three users in four: the training majority.
  for (uint32_t u = 0; u < ds.num_users; ++u) a.label.push_back(u % 4 == 0 ? 0 : 1);
  ds.user_attributes.push_back(a);
  std::vector<TaskSpec> tasks(4);
  tasks[1].name = "rating", tasks[1].type = TaskKind::kRating;
  tasks[2].name = "like", tasks[2].type = TaskKind::kLike;
  tasks[3].name = "age", tasks[3].type = TaskKind::kAttribute, tasks[3].attribute = "age";
  ds.valid_item.assign(ds.num_users, -1);
  ds.test_item.assign(ds.num_users, -1);
  for (uint32_t u = 0; u < 7; ++u) ds.valid_item[u] = ds.test_item[u] = 2;
  const uint64_t seed = 11;
  double valid = 0, old = 0;
  for (uint32_t u = 0; u < ds.num_users; ++u)
    if (Dataset::AttributeSplit(u, seed) == 1) valid += 1, old += u % 4 == 0 ? 0 : 1;
  ASSERT_GT(valid, 10);
  const SelectionRule r = SelectionFor(ds, 99, tasks, "auto", seed);
  ASSERT_EQ(r.terms.size(), 4u);
  double ndcg = 0;
  for (int rank = 1; rank <= 10; ++rank) ndcg += 1 / std::log2(rank + 1.0);
  EXPECT_NEAR(r.terms[0].chance, ndcg / 100, 1e-12);
  EXPECT_NEAR(r.terms[1].chance, -std::sqrt(2.0), 1e-12) << "sign applied: lower RMSE is better";
  EXPECT_EQ(r.terms[2].chance, 0.5);
  EXPECT_NEAR(r.terms[3].chance, old / valid, 1e-12);
  // What each term's noise shrinks with: the users with a validation item, the validation
  // ratings, the smaller of the liked and not-liked pairs (one each), the attribute's users.
  EXPECT_EQ(r.terms[0].examples, 7);
  EXPECT_EQ(r.terms[1].examples, 2);
  EXPECT_EQ(r.terms[2].examples, 1);
  EXPECT_EQ(r.terms[3].examples, valid);
}

// Noise by hand: an accuracy of 0.8 over 100 users is known to +-0.04, an RMSE of 0.9 over 50
// ratings to +-0.09; unknown examples, no noise.
TEST(EpochSelection, TermNoiseFollowsTheExamples) {
  SelectionTerm acc;
  acc.metric = "accuracy", acc.examples = 100;
  EXPECT_NEAR(TermNoise(acc, 0.8), 0.04, 1e-12);
  SelectionTerm rmse;
  rmse.metric = "RMSE", rmse.sign = -1, rmse.examples = 50;
  EXPECT_NEAR(TermNoise(rmse, -0.9), 0.09, 1e-12);
  acc.examples = 0;
  EXPECT_EQ(TermNoise(acc, 0.8), 0);
}

// ML-100K's shape by hand: retrieval (6,000 users) and rating (50,000 ratings) peak at epoch 1;
// three attributes measured on 90 users each move up by about their noise at epoch 2. Counted
// alike (examples unknown) the attributes outvote the two tasks and keep epoch 2; weighted by
// how precisely each is measured, epoch 1 is kept.
TEST(EpochSelection, ATaskTooNoisyToTellEpochsApartCannotOutvoteTheOthers) {
  std::vector<TaskSpec> tasks(5);
  tasks[1].name = "rating", tasks[1].type = TaskKind::kRating;
  for (int k = 2; k < 5; ++k) {
    tasks[size_t(k)].name = "attribute" + std::to_string(k);
    tasks[size_t(k)].type = TaskKind::kAttribute;
  }
  SelectionRule rule = SelectionFor(Dataset::Protocol::kSampled, tasks, "auto");
  ASSERT_EQ(rule.terms.size(), 5u);
  const double chance[] = {0.05, -1.1, 0.70, 0.30, 0.13};
  const double examples[] = {6000, 50000, 90, 90, 90};
  for (size_t k = 0; k < 5; ++k) rule.terms[k].chance = chance[k];
  const std::vector<std::vector<double>> epochs = {{0.40, -0.90, 0.76, 0.36, 0.16},
                                                   {0.395, -0.905, 0.80, 0.40, 0.19}};
  EpochSelector alike(rule);
  for (size_t k = 0; k < 5; ++k) rule.terms[k].examples = examples[k];
  EpochSelector weighted(rule);
  for (size_t e = 0; e < epochs.size(); ++e) {
    EXPECT_TRUE(alike.OfferValues(int(e) + 1, epochs[e])) << "epoch " << e + 1;
    EXPECT_EQ(weighted.OfferValues(int(e) + 1, epochs[e]), e == 0) << "epoch " << e + 1;
  }
  EXPECT_EQ(alike.selected_epoch(), 2);
  EXPECT_EQ(weighted.selected_epoch(), 1);
  // Alike: epoch 2 holds 0.345/0.35, 0.195/0.2 and every attribute's best.
  EXPECT_NEAR(alike.Score(1), (0.345 / 0.35 + 0.195 / 0.2 + 3) / 5, 1e-12);
}

}  // namespace m6rec
