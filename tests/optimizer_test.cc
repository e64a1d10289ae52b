#include "ps/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace m6rec {

namespace {
OptimizerSpec Opt(OptimizerSpec::Kind k, float lr, float wd = 0) {
  OptimizerSpec o;
  o.kind = k;
  o.lr = lr;
  o.weight_decay = wd;
  return o;
}
}  // namespace

TEST(Optimizer, SgdMatchesClosedForm) {
  auto o = Opt(OptimizerSpec::Kind::kSgd, 0.5f, 0.1f);
  ASSERT_EQ(OptimizerStateWidth(o, 3), 0u);
  std::vector<float> w{1, -2, 4}, g{0.5f, 1, -1};
  ApplyUpdate(o, 3, w.data(), g.data());
  // w - lr * (g + wd * w)
  EXPECT_FLOAT_EQ(w[0], 1 - 0.5f * (0.5f + 0.1f * 1));
  EXPECT_FLOAT_EQ(w[1], -2 - 0.5f * (1 + 0.1f * -2));
  EXPECT_FLOAT_EQ(w[2], 4 - 0.5f * (-1 + 0.1f * 4));
}

TEST(Optimizer, AdagradMatchesClosedFormOverSteps) {
  auto o = Opt(OptimizerSpec::Kind::kAdagrad, 0.1f);
  o.initial_accumulator = 0.1f;
  o.eps = 1e-10f;
  const uint32_t dim = 2;
  ASSERT_EQ(OptimizerStateWidth(o, dim), dim);
  std::vector<float> row(dim + dim);
  row[0] = 1;
  row[1] = 2;
  InitOptimizerState(o, dim, row.data() + dim);
  EXPECT_FLOAT_EQ(row[2], 0.1f);
  double w0 = 1, a0 = 0.1;
  const float grads[3] = {0.3f, -0.7f, 1.1f};
  for (float gv : grads) {
    float g[2] = {gv, 0};
    ApplyUpdate(o, dim, row.data(), g);
    a0 += double(gv) * gv;
    w0 -= 0.1 * gv / (std::sqrt(a0) + 1e-10);
  }
  EXPECT_NEAR(row[0], w0, 1e-6);
  EXPECT_NEAR(row[2], a0, 1e-6);
  EXPECT_FLOAT_EQ(row[1], 2.0f) << "a zero gradient must leave the weight alone";
}

TEST(Optimizer, AdamMatchesClosedFormWithBiasCorrection) {
  auto o = Opt(OptimizerSpec::Kind::kAdam, 0.01f);
  const uint32_t dim = 1;
  ASSERT_EQ(OptimizerStateWidth(o, dim), 3u);
  std::vector<float> row{0.5f, 0, 0, 0};
  double w = 0.5, m = 0, v = 0;
  const float grads[4] = {0.2f, -0.1f, 0.4f, 0.05f};
  for (int t = 1; t <= 4; ++t) {
    float g = grads[t - 1];
    ApplyUpdate(o, dim, row.data(), &g);
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * double(g) * g;
    double mh = m / (1 - std::pow(0.9, t)), vh = v / (1 - std::pow(0.999, t));
    w -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
  }
  EXPECT_NEAR(row[0], w, 1e-6);
  EXPECT_FLOAT_EQ(row[3], 4.0f) << "Adam counts steps per row";
  // The first Adam step moves every coordinate by about lr, whatever the gradient's scale.
  std::vector<float> r2{0, 0, 0, 0};
  float big = 1000;
  ApplyUpdate(o, 1, r2.data(), &big);
  EXPECT_NEAR(r2[0], -0.01, 1e-5);
}

TEST(Optimizer, FullRowInitialisationIsDeterministic) {
  TableSpec t;
  t.dim = 4;
  t.seed = 3;
  t.optimizer = Opt(OptimizerSpec::Kind::kAdagrad, 0.1f);
  t.optimizer.initial_accumulator = 0.5f;
  std::vector<float> a(RowWidth(t)), b(RowWidth(t));
  InitFullRow(t, 11, a.data());
  InitFullRow(t, 11, b.data());
  EXPECT_EQ(a, b);
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(a[4 + i], 0.5f);
}

}  // namespace m6rec
