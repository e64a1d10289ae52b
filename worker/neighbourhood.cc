#include "worker/neighbourhood.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace m6rec {

std::vector<float> NeighbourhoodRatings(const Dataset& ds,
                                        const std::vector<std::pair<uint32_t, uint32_t>>& pairs,
                                        const NeighbourhoodOptions& o) {
  const size_t U = std::min(ds.train.size(), ds.train_ratings.size());
  const uint32_t I = ds.num_items;
  // The baseline: mean + user offset + item offset, each offset a shrunk mean of what the
  // others leave (three alternations converge to the third decimal).
  double sum = 0, n = 0;
  float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
  for (size_t u = 0; u < U; ++u)
    for (float r : ds.train_ratings[u])
      sum += r, n += 1, lo = std::min(lo, r), hi = std::max(hi, r);
  const double mu = n > 0 ? sum / n : 0;
  std::vector<double> bu(U, 0), bi(I, 0), acc(std::max<size_t>(U, I));
  std::vector<uint32_t> icount(I, 0);
  for (size_t u = 0; u < U; ++u)
    for (uint32_t i : ds.train[u]) ++icount[i];
  for (int it = 0; it < 3; ++it) {
    std::fill(acc.begin(), acc.begin() + I, 0.0);
    for (size_t u = 0; u < U; ++u)
      for (size_t k = 0; k < ds.train[u].size(); ++k)
        acc[ds.train[u][k]] += ds.train_ratings[u][k] - mu - bu[u];
    for (uint32_t i = 0; i < I; ++i) bi[i] = acc[i] / (icount[i] + o.item_reg);
    for (size_t u = 0; u < U; ++u) {
      double s = 0;
      for (size_t k = 0; k < ds.train[u].size(); ++k)
        s += ds.train_ratings[u][k] - mu - bi[ds.train[u][k]];
      bu[u] = s / (double(ds.train[u].size()) + o.user_reg);
    }
  }
  // Residuals by user and, transposed, by item.
  std::vector<std::vector<std::pair<uint32_t, float>>> by_user(U), by_item(I);
  for (size_t u = 0; u < U; ++u)
    for (size_t k = 0; k < ds.train[u].size(); ++k) {
      const uint32_t i = ds.train[u][k];
      const float res = float(ds.train_ratings[u][k] - mu - bu[u] - bi[i]);
      by_user[u].emplace_back(i, res);
      by_item[i].emplace_back(uint32_t(u), res);
    }
  auto baseline = [&](uint32_t u, uint32_t i) {
    return mu + (u < U ? bu[u] : 0.0) + (i < I ? bi[i] : 0.0);
  };

  std::vector<float> out(pairs.size());
  std::vector<size_t> order(pairs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return pairs[a].second < pairs[b].second; });
  // One item's co-rating sums with every other item: sum of products, the two items' sums of
  // squares over the co-raters, the co-raters.
  std::vector<float> dot(I, 0), sii(I, 0), sjj(I, 0);
  std::vector<uint32_t> cnt(I, 0), touched;
  std::vector<std::pair<float, float>> cand;  // (similarity, the user's residual)
  for (size_t q = 0; q < order.size();) {
    const uint32_t i = pairs[order[q]].second;
    size_t qend = q;
    while (qend < order.size() && pairs[order[qend]].second == i) ++qend;
    if (i < I)
      for (const auto& [v, ri] : by_item[i])
        for (const auto& [j, rj] : by_user[v]) {
          if (cnt[j] == 0) touched.push_back(j);
          dot[j] += ri * rj;
          sii[j] += ri * ri;
          sjj[j] += rj * rj;
          ++cnt[j];
        }
    for (; q < qend; ++q) {
      const auto [u, item] = pairs[order[q]];
      double pred = baseline(u, item);
      cand.clear();
      if (i < I && u < U)
        for (const auto& [j, ruj] : by_user[u]) {
          if (j == i || cnt[j] == 0) continue;
          const double den = std::sqrt(double(sii[j]) * double(sjj[j]));
          if (den <= 0) continue;
          const double s = dot[j] / den * cnt[j] / (cnt[j] + o.shrink);
          if (s > 0) cand.emplace_back(float(s), ruj);
        }
      if (!cand.empty()) {
        const size_t k = std::min(cand.size(), size_t(std::max(1, o.neighbours)));
        std::nth_element(cand.begin(), cand.begin() + std::ptrdiff_t(k - 1), cand.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        double num = 0, wsum = 0;
        for (size_t c = 0; c < k; ++c) {
          const double w = double(cand[c].first) * cand[c].first;
          num += w * cand[c].second;
          wsum += w;
        }
        pred += num / (wsum + o.weight_prior);
      }
      // In the training ratings' range, as the deep prediction is scored.
      out[order[q]] = n > 0 ? std::clamp(float(pred), lo, hi) : float(pred);
    }
    for (uint32_t j : touched) dot[j] = sii[j] = sjj[j] = 0, cnt[j] = 0;
    touched.clear();
  }
  return out;
}

namespace {
uint64_t PairKey(uint32_t user, uint32_t item) { return (uint64_t(user) << 32) | item; }
}  // namespace

RatingNeighbourhood::RatingNeighbourhood(const Dataset& ds, const NeighbourhoodOptions& o) {
  std::vector<std::pair<uint32_t, uint32_t>> pairs;
  for (const auto* rated : {&ds.rated_valid, &ds.rated_test})
    for (uint32_t u = 0; u < rated->size(); ++u)
      for (const auto& [item, r] : (*rated)[u]) pairs.emplace_back(u, item);
  const std::vector<float> p = NeighbourhoodRatings(ds, pairs, o);
  pred_.reserve(pairs.size());
  for (size_t k = 0; k < pairs.size(); ++k) pred_[PairKey(pairs[k].first, pairs[k].second)] = p[k];
}

const float* RatingNeighbourhood::Find(uint32_t user, uint32_t item) const {
  const auto it = pred_.find(PairKey(user, item));
  return it == pred_.end() ? nullptr : &it->second;
}

}  // namespace m6rec
