#include "worker/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace m6rec {

int RankOfFirst(const std::vector<float>& scores) {
  int rank = 0;
  for (size_t i = 1; i < scores.size(); ++i) rank += scores[i] >= scores[0];
  return rank;
}

double HitAtK(int rank, int k) { return rank < k ? 1.0 : 0.0; }
double NdcgAtK(int rank, int k) { return rank < k ? 1.0 / std::log2(rank + 2.0) : 0.0; }

std::vector<uint32_t> TopK(const std::vector<float>& scores, int k) {
  const size_t n = std::min<size_t>(k, scores.size());
  std::vector<uint32_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](uint32_t a, uint32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), better);
  idx.resize(n);
  return idx;
}

double RecallAtK(const std::vector<uint32_t>& ranked, const std::vector<uint32_t>& relevant,
                 int k) {
  if (relevant.empty()) return 0.0;
  std::unordered_set<uint32_t> rel(relevant.begin(), relevant.end());
  size_t hits = 0;
  for (size_t i = 0; i < ranked.size() && i < static_cast<size_t>(k); ++i)
    hits += rel.count(ranked[i]);
  return static_cast<double>(hits) / rel.size();
}

double FullNdcgAtK(const std::vector<uint32_t>& ranked, const std::vector<uint32_t>& relevant,
                   int k) {
  if (relevant.empty()) return 0.0;
  std::unordered_set<uint32_t> rel(relevant.begin(), relevant.end());
  double dcg = 0, idcg = 0;
  for (size_t i = 0; i < ranked.size() && i < static_cast<size_t>(k); ++i)
    if (rel.count(ranked[i])) dcg += 1.0 / std::log2(i + 2.0);
  for (size_t i = 0; i < std::min<size_t>(k, rel.size()); ++i) idcg += 1.0 / std::log2(i + 2.0);
  return dcg / idcg;
}

double Auc(const std::vector<float>& scores, const std::vector<int>& labels) {
  // Mann-Whitney U from average ranks (ties get the mean rank).
  const size_t n = scores.size();
  std::vector<uint32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return scores[a] < scores[b]; });
  double pos = 0, neg = 0, rank_sum = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[idx[j]] == scores[idx[i]]) ++j;
    const double avg_rank = (i + 1 + j) / 2.0;  // ranks i+1..j
    for (size_t t = i; t < j; ++t)
      if (labels[idx[t]]) rank_sum += avg_rank;
    i = j;
  }
  for (int l : labels) (l ? pos : neg) += 1;
  if (pos == 0 || neg == 0) return 0.5;
  return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

void BinaryCounts::Add(float score, int label, float threshold) {
  const bool p = score >= threshold;
  if (p && label)
    ++tp;
  else if (p)
    ++fp;
  else if (label)
    ++fn;
  else
    ++tn;
}
double BinaryCounts::accuracy() const {
  const double n = tp + fp + tn + fn;
  return n ? (tp + tn) / n : 0.0;
}
double BinaryCounts::precision() const { return tp + fp ? double(tp) / (tp + fp) : 0.0; }
double BinaryCounts::recall() const { return tp + fn ? double(tp) / (tp + fn) : 0.0; }
double BinaryCounts::f1() const {
  const double p = precision(), r = recall();
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

void MetricSums::Merge(const MetricSums& o) {
  for (const auto& [k, v] : o.sums_) sums_[k] += v;
  users_ += o.users_;
}

int ScoreHistogram::Bin(float score) {
  const double a = std::asinh(double(score));
  const double x = (a + kRange) / (2 * kRange) * kBins;
  if (!(x > 0)) return 0;  // also NaN
  return x >= kBins ? kBins - 1 : int(x);
}

double ScoreHistogram::Edge(int k) {
  if (k <= 0) return -std::numeric_limits<double>::infinity();
  if (k >= kBins) return std::numeric_limits<double>::infinity();
  return std::sinh(double(k) / kBins * 2 * kRange - kRange);
}

void ScoreHistogram::Add(float score, bool positive) {
  counts_[(positive ? 0 : kBins) + Bin(score)] += 1;
}

void ScoreHistogram::Merge(const ScoreHistogram& o) {
  for (size_t k = 0; k < counts_.size(); ++k) counts_[k] += o.counts_[k];
}

double ScoreHistogram::total() const {
  return std::accumulate(counts_.begin(), counts_.end(), 0.0);
}

double ScoreHistogram::BestF1Threshold() const {
  // Sweep the threshold down from +inf: at edge k, everything in bins >= k is predicted positive.
  double tp = 0, fp = 0, best_f1 = -1, best = std::numeric_limits<double>::infinity();
  double pos = 0;
  for (int k = 0; k < kBins; ++k) pos += counts_[k];
  if (pos == 0) return best;
  for (int k = kBins - 1; k >= 0; --k) {
    tp += counts_[k];
    fp += counts_[kBins + k];
    if (counts_[k] == 0 && counts_[kBins + k] == 0) continue;
    const double f1 = 2 * tp / (tp + fp + pos);  // 2PR/(P+R) = 2TP/(2TP+FP+FN)
    if (f1 > best_f1) {
      best_f1 = f1;
      best = Edge(k);
    }
  }
  return best;
}

double ScoreHistogram::Auc() const {
  double below = 0, pairs = 0, pos = 0, neg = 0;  // negatives in lower bins
  for (int k = 0; k < kBins; ++k) {
    const double p = counts_[k], n = counts_[kBins + k];
    pairs += p * (below + 0.5 * n);
    below += n;
    pos += p;
    neg += n;
  }
  return pos > 0 && neg > 0 ? pairs / (pos * neg) : 0.5;
}

BinaryCounts ScoreHistogram::CountsAt(double threshold) const {
  BinaryCounts c;
  for (int k = 0; k < kBins; ++k) {
    // A bin is on the positive side when its lower edge reaches the threshold.
    const bool on = Edge(k) >= threshold;
    const uint64_t p = uint64_t(counts_[k]), n = uint64_t(counts_[kBins + k]);
    if (on) {
      c.tp += p;
      c.fp += n;
    } else {
      c.fn += p;
      c.tn += n;
    }
  }
  return c;
}

std::vector<std::string> MetricSums::Groups() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : sums_) {
    const size_t slash = k.find('/');
    if (slash == std::string::npos) continue;
    std::string g = k.substr(0, slash);
    if (out.empty() || out.back() != g) out.push_back(std::move(g));
  }
  return out;
}

MetricSums MetricSums::Group(const std::string& group) const {
  MetricSums g;
  const std::string prefix = group + "/";
  for (auto it = sums_.lower_bound(prefix); it != sums_.end() && it->first.rfind(prefix, 0) == 0;
       ++it) {
    const std::string name = it->first.substr(prefix.size());
    if (name == "users")
      g.users_ = static_cast<uint64_t>(std::llround(it->second));
    else
      g.sums_[name] = it->second;
  }
  return g;
}

double MetricSums::Mean(const std::string& name) const {
  auto it = sums_.find(name);
  return it == sums_.end() || users_ == 0 ? 0.0 : it->second / users_;
}

std::vector<double> MetricSums::Pack() const {
  std::vector<double> out{static_cast<double>(users_)};
  for (const auto& [k, v] : sums_) out.push_back(v);
  return out;
}

void MetricSums::Unpack(const std::vector<double>& packed, const std::vector<std::string>& names) {
  sums_.clear();
  users_ = packed.empty() ? 0 : static_cast<uint64_t>(packed[0]);
  for (size_t i = 0; i < names.size() && i + 1 < packed.size(); ++i)
    sums_[names[i]] = packed[i + 1];
}

}  // namespace m6rec
