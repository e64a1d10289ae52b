#include "worker/samplers.h"

#include <algorithm>
#include <cmath>

#include "common/keys.h"

namespace m6rec {

std::vector<uint32_t> SampleNeighbours(const std::vector<uint32_t>& pool, int fanout,
                                       int64_t exclude, std::mt19937_64& rng) {
  std::vector<uint32_t> out;
  if (pool.empty() || fanout <= 0) return out;
  if (pool.size() <= static_cast<size_t>(fanout)) {
    for (uint32_t x : pool)
      if (static_cast<int64_t>(x) != exclude) out.push_back(x);
    return out;
  }
  // Partial Fisher-Yates over positions; skips `exclude` without biasing the rest.
  std::vector<uint32_t> idx(pool.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<uint32_t>(i);
  for (size_t i = 0; i < idx.size() && out.size() < static_cast<size_t>(fanout); ++i) {
    size_t j = i + rng() % (idx.size() - i);
    std::swap(idx[i], idx[j]);
    uint32_t x = pool[idx[i]];
    if (static_cast<int64_t>(x) != exclude) out.push_back(x);
  }
  return out;
}

std::vector<uint32_t> SampleNeighboursFixed(const std::vector<uint32_t>& pool, int fanout,
                                            int64_t exclude, uint64_t seed, uint64_t node) {
  std::mt19937_64 rng = NodeRng(seed, node);
  return SampleNeighbours(pool, fanout, exclude, rng);
}

std::mt19937_64 NodeRng(uint64_t seed, uint64_t node) {
  return std::mt19937_64(Mix64(seed ^ Mix64(node + 0x9e3779b97f4a7c15ull)));
}

NegativeSampler::NegativeSampler(uint32_t first, uint32_t end)
    : first_(first), span_(end > first ? end - first : 1) {}

NegativeSampler::NegativeSampler(const std::vector<uint32_t>& counts, uint32_t first, double power,
                                 double cold_weight)
    : first_(first),
      span_(counts.size() > first ? static_cast<uint32_t>(counts.size() - first) : 1) {
  p_.resize(span_);
  double total = 0;
  for (uint32_t i = 0; i < span_; ++i) {
    const uint32_t c = first + i < counts.size() ? counts[first + i] : 0;
    // +1: an item never seen in training can still be drawn (it is a valid negative), as often
    // as cold_weight says.
    p_[i] = std::pow(double(c) + 1.0, power) * (c == 0 ? cold_weight : 1.0);
    total += p_[i];
  }
  if (total <= 0) std::fill(p_.begin(), p_.end(), 1.0), total = double(span_);
  for (auto& x : p_) x /= total;
  // Walker's alias table.
  prob_.assign(span_, 0);
  alias_.assign(span_, 0);
  std::vector<double> scaled(span_);
  std::vector<uint32_t> small, large;
  for (uint32_t i = 0; i < span_; ++i) {
    scaled[i] = p_[i] * span_;
    (scaled[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    uint32_t s = small.back(), l = large.back();
    small.pop_back();
    prob_[s] = scaled[s];
    alias_[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  for (uint32_t i : large) prob_[i] = 1.0;
  for (uint32_t i : small) prob_[i] = 1.0;
}

uint32_t NegativeSampler::Draw(std::mt19937_64& rng) const {
  const uint32_t k = static_cast<uint32_t>(rng() % span_);
  if (prob_.empty()) return first_ + k;
  const double u = (rng() >> 11) * (1.0 / 9007199254740992.0);
  return first_ + (u < prob_[k] ? k : alias_[k]);
}

double NegativeSampler::Probability(uint32_t item) const {
  if (item < first_ || item >= first_ + span_) return 0;
  return p_.empty() ? 1.0 / span_ : p_[item - first_];
}

std::vector<uint32_t> HistoryWindow(const std::vector<uint32_t>& items, int64_t pos, int len,
                                    bool ordered) {
  std::vector<uint32_t> out;
  if (len <= 0) return out;
  if (ordered) {
    const int64_t end =
        pos < 0 ? static_cast<int64_t>(items.size()) : std::min<int64_t>(pos, items.size());
    const int64_t begin = std::max<int64_t>(0, end - len);
    out.assign(items.begin() + begin, items.begin() + end);
    return out;
  }
  for (int64_t k = static_cast<int64_t>(items.size()) - 1;
       k >= 0 && static_cast<int>(out.size()) < len; --k)
    if (k != pos) out.push_back(items[k]);
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace m6rec
