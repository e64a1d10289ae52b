// Ranking and classification metrics, and their accumulation across users and workers.
//
// Definitions (each matches the protocol of the papers whose numbers we compare with):
//  - Sampled-negative protocol (NCF, SASRec, S3-Rec): one held-out positive ranked against N
//    negatives. rank = number of negatives scoring >= the positive (ties count against it).
//    HR@K = [rank < K]; NDCG@K = 1 / log2(rank + 2) if rank < K else 0.
//  - Full ranking (NGCF, LightGCN): all items not seen in training ranked; with the user's test
//    set T and the top-K list L: Recall@K = |L ∩ T| / |T|;
//    NDCG@K = sum_{i<K, L_i in T} 1/log2(i+2) / sum_{i<min(K,|T|)} 1/log2(i+2).
//  - AUC: probability that a random positive scores above a random negative (ties count 1/2).
//  - Accuracy / precision / recall / F1 at a score threshold (score >= threshold = positive),
//    the threshold chosen on the validation split (the one that maximises F1 there), never a
//    fixed score: dot products are not calibrated, and with 1 positive per 99 negatives a
//    threshold at 0 reads "accuracy 0.73, precision 0.03".
// Pure functions and value types; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace m6rec {

// Number of candidates (other than the positive at index 0) scoring >= scores[0].
int RankOfFirst(const std::vector<float>& scores);
double HitAtK(int rank, int k);
double NdcgAtK(int rank, int k);

// Indices of the k highest scores, best first (ties broken by lower index).
std::vector<uint32_t> TopK(const std::vector<float>& scores, int k);
double RecallAtK(const std::vector<uint32_t>& ranked, const std::vector<uint32_t>& relevant, int k);
double FullNdcgAtK(const std::vector<uint32_t>& ranked, const std::vector<uint32_t>& relevant,
                   int k);

double Auc(const std::vector<float>& scores, const std::vector<int>& labels);

struct BinaryCounts {
  uint64_t tp = 0, fp = 0, tn = 0, fn = 0;
  void Add(float score, int label, float threshold);
  double accuracy() const;
  double precision() const;
  double recall() const;
  double f1() const;
};

// Positive and negative counts of scores in fixed bins (uniform in asinh(score): fine near 0,
// still covering scores in the thousands), so that a threshold can be chosen over every
// worker's scores by adding histograms (an allreduce of 2 * kBins doubles), and the confusion
// counts at a bin edge are exact.
class ScoreHistogram {
 public:
  static constexpr int kBins = 2048;
  static constexpr double kRange = 10.0;  // asinh(score) in [-kRange, kRange] (|s| < 11000)
  ScoreHistogram() : counts_(2 * kBins, 0.0) {}
  void Add(float score, bool positive);
  void Merge(const ScoreHistogram& o);
  // Raw counts: [kBins positives..., kBins negatives...] (what ranks allreduce).
  std::vector<double>& counts() { return counts_; }
  const std::vector<double>& counts() const { return counts_; }
  double total() const;
  // The lower edge of bin k (score >= edge(k) <=> the score's bin >= k; edge(0) = -inf).
  static double Edge(int k);
  // The bin edge that maximises F1 over these scores: the lower edge of the lowest bin called
  // positive (of equal F1s, the one calling fewer positive); with no positives, +inf.
  double BestF1Threshold() const;
  // Confusion counts at a threshold (exact when it is a bin edge).
  BinaryCounts CountsAt(double threshold) const;
  // The AUC of these scores, ties within a bin counted 1/2 (0.5 without both labels).
  double Auc() const;

 private:
  static int Bin(float score);
  std::vector<double> counts_;
};

// Sums of per-user metric values with a user count; merged across workers by adding.
class MetricSums {
 public:
  void Add(const std::string& name, double value) { sums_[name] += value; }
  void AddUser() { ++users_; }
  void AddUsers(uint64_t n) { users_ += n; }
  void Merge(const MetricSums& o);
  double Mean(const std::string& name) const;
  uint64_t users() const { return users_; }
  const std::map<std::string, double>& sums() const { return sums_; }
  // Flattens to [users, sum_1, sum_2, ...] in name order (for an allreduce) and back.
  std::vector<double> Pack() const;
  void Unpack(const std::vector<double>& packed, const std::vector<std::string>& names);

  // Groups (e.g. domains) ride in the same sums: "<group>/<name>" per metric and
  // "<group>/users" for the group's user count, so merging and allreducing need nothing new.
  void AddGroupUser(const std::string& group) { sums_[group + "/users"] += 1; }
  void AddGroup(const std::string& group, const std::string& name, double value) {
    sums_[group + "/" + name] += value;
  }
  // The groups present, in name order, and one group's sums as a MetricSums of its own.
  std::vector<std::string> Groups() const;
  MetricSums Group(const std::string& group) const;

 private:
  std::map<std::string, double> sums_;
  uint64_t users_ = 0;
};

}  // namespace m6rec
