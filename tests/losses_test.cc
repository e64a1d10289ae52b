// Every loss's analytic gradients against central finite differences, for users, positives and
// shared negatives.
#include "worker/losses.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

namespace m6rec {

namespace {

using LossFn =
    std::function<double(const float*, const float*, const float*, float*, float*, float*)>;

void CheckGradients(const LossFn& f, size_t B, size_t M, uint32_t d, const char* name) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 0.5f);
  std::vector<float> U(B * d), P(B * d), N(M * d);
  for (auto* v : {&U, &P, &N})
    for (auto& x : *v) x = g(rng);
  std::vector<float> gu(B * d, 0), gp(B * d, 0), gn(M * d, 0);
  f(U.data(), P.data(), N.data(), gu.data(), gp.data(), gn.data());
  std::vector<float> su(B * d), sp(B * d), sn(M * d);
  auto loss = [&] {
    std::fill(su.begin(), su.end(), 0.f);
    std::fill(sp.begin(), sp.end(), 0.f);
    std::fill(sn.begin(), sn.end(), 0.f);
    return f(U.data(), P.data(), N.data(), su.data(), sp.data(), sn.data());
  };
  const float eps = 1e-3f;
  int checked = 0;
  for (auto [vec, grad, label] :
       {std::make_tuple(&U, &gu, "user"), std::make_tuple(&P, &gp, "positive"),
        std::make_tuple(&N, &gn, "negative")}) {
    for (size_t i = 0; i < vec->size(); i += 3) {
      const float keep = (*vec)[i];
      (*vec)[i] = keep + eps;
      const double up = loss();
      (*vec)[i] = keep - eps;
      const double down = loss();
      (*vec)[i] = keep;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR((*grad)[i], numeric, 2e-2 * std::max(1.0, std::abs(numeric)))
          << name << ": d loss / d " << label << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

}  // namespace

TEST(Losses, BprGradientsMatchFiniteDifferences) {
  CheckGradients([](auto U, auto P, auto N, auto gu, auto gp,
                    auto gn) { return LossBpr(3, 4, 5, U, P, N, gu, gp, gn); },
                 3, 4, 5, "bpr");
}

TEST(Losses, CclGradientsMatchFiniteDifferences) {
  // margin -1 keeps every negative active (the hinge is not differentiable at the margin).
  CheckGradients([](auto U, auto P, auto N, auto gu, auto gp,
                    auto gn) { return LossCcl(3, 4, 5, U, P, N, -1.0f, 2.0f, gu, gp, gn); },
                 3, 4, 5, "ccl");
}

TEST(Losses, SoftmaxGradientsMatchFiniteDifferences) {
  CheckGradients([](auto U, auto P, auto N, auto gu, auto gp,
                    auto gn) { return LossSoftmax(3, 4, 5, U, P, N, 0.5f, gu, gp, gn); },
                 3, 4, 5, "softmax");
}

TEST(Losses, CclIgnoresNegativesBelowTheMargin) {
  // u = p exactly and a negative orthogonal to u: cos = 0 < margin 0.5 -> no loss, no gradient.
  const float U[2] = {1, 0}, P[2] = {2, 0}, N[2] = {0, 1};
  float gu[2] = {0, 0}, gp[2] = {0, 0}, gn[2] = {0, 0};
  double l = LossCcl(1, 1, 2, U, P, N, 0.5f, 1.0f, gu, gp, gn);
  EXPECT_NEAR(l, 0.0, 1e-6);
  EXPECT_EQ(gn[0], 0.0f);
  EXPECT_EQ(gn[1], 0.0f);
}

}  // namespace m6rec
