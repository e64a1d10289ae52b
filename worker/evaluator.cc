#include "worker/evaluator.h"

#include <algorithm>
#include <sstream>

namespace m6rec {

namespace {

// Adds one user's metric values to the totals and, in a multi-domain dataset, to its domain's.
class UserMetrics {
 public:
  UserMetrics(const Dataset& ds, uint32_t user, MetricSums* out) : out_(out) {
    if (ds.multi_domain()) group_ = &ds.domains[ds.UserDomain(user)].name;
    out_->AddUser();
    if (group_) out_->AddGroupUser(*group_);
  }
  void Add(const char* name, double v) {
    out_->Add(name, v);
    if (group_) out_->AddGroup(*group_, name, v);
  }

 private:
  MetricSums* out_;
  const std::string* group_ = nullptr;
};

}  // namespace

ScoreHistograms::ScoreHistograms(const Dataset& ds)
    : domains(ds.multi_domain() ? ds.domains.size() : 0) {}

void ScoreHistograms::Merge(const ScoreHistograms& o) {
  all.Merge(o.all);
  for (size_t d = 0; d < domains.size() && d < o.domains.size(); ++d)
    domains[d].Merge(o.domains[d]);
}

std::vector<double> ScoreHistograms::Pack() const {
  std::vector<double> out = all.counts();
  for (const auto& h : domains) out.insert(out.end(), h.counts().begin(), h.counts().end());
  return out;
}

void ScoreHistograms::Unpack(const std::vector<double>& packed) {
  size_t off = 0;
  auto take = [&](ScoreHistogram& h) {
    std::copy(packed.begin() + off, packed.begin() + off + h.counts().size(), h.counts().begin());
    off += h.counts().size();
  };
  take(all);
  for (auto& h : domains) take(h);
}

nlohmann::json Thresholds::ToJson(const Dataset& ds) const {
  nlohmann::json j = {{"all", all}};
  for (size_t d = 0; d < domains.size() && d < ds.domains.size(); ++d)
    if (ds.domains[d].evaluate) j["domains"][ds.domains[d].name] = domains[d];
  return j;
}

Thresholds ChooseThresholds(const ScoreHistograms& valid) {
  Thresholds t;
  t.all = valid.all.BestF1Threshold();
  for (const auto& h : valid.domains) t.domains.push_back(h.BestF1Threshold());
  return t;
}

void AddConfusion(const Dataset& ds, const ScoreHistograms& h, const Thresholds& t,
                  MetricSums* out) {
  auto add = [](const BinaryCounts& c, const std::function<void(const char*, double)>& f) {
    f("TP", double(c.tp));
    f("FP", double(c.fp));
    f("TN", double(c.tn));
    f("FN", double(c.fn));
  };
  add(h.all.CountsAt(t.all), [&](const char* n, double v) { out->Add(n, v); });
  for (size_t d = 0; d < h.domains.size() && d < t.domains.size(); ++d)
    if (ds.domains[d].evaluate)
      add(h.domains[d].CountsAt(t.domains[d]),
          [&](const char* n, double v) { out->AddGroup(ds.domains[d].name, n, v); });
}

Status EvalSampledProtocol(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                           uint64_t seed, const SampledScorer& score, MetricSums* out,
                           ScoreHistograms* hists) {
  std::vector<uint32_t> chunk;
  std::vector<std::vector<uint32_t>> cands;
  std::vector<std::vector<float>> scores;
  for (size_t start = 0; start < users.size(); start += kEvalUsersPerChunk) {
    chunk.clear();
    cands.clear();
    for (size_t k = start; k < std::min(users.size(), start + kEvalUsersPerChunk); ++k) {
      const uint32_t u = users[k];
      const int64_t target = valid ? ds.valid_item[u] : ds.test_item[u];
      if (target < 0) continue;
      chunk.push_back(u);
      cands.emplace_back(1, static_cast<uint32_t>(target));
      for (uint32_t n : SampledNegatives(ds, u, seed)) cands.back().push_back(n);
    }
    if (chunk.empty()) continue;
    scores.clear();
    M6_RETURN_IF_ERROR(score(chunk, cands, /*with_valid=*/!valid, &scores));
    if (scores.size() != chunk.size())
      return Status::Internal("scorer returned the wrong number of users");
    for (size_t c = 0; c < chunk.size(); ++c) {
      const auto& s = scores[c];
      if (s.size() != cands[c].size())
        return Status::Internal("scorer returned the wrong number of candidates");
      const int rank = RankOfFirst(s);
      UserMetrics m(ds, chunk[c], out);
      m.Add("HR@1", HitAtK(rank, 1));
      m.Add("HR@5", HitAtK(rank, 5));
      m.Add("HR@10", HitAtK(rank, 10));
      m.Add("NDCG@5", NdcgAtK(rank, 5));
      m.Add("NDCG@10", NdcgAtK(rank, 10));
      m.Add("MRR", 1.0 / (rank + 1));
      std::vector<int> labels(s.size(), 0);
      labels[0] = 1;
      m.Add("AUC", Auc(s, labels));
      if (hists) {
        ScoreHistogram* dom =
            hists->domains.empty() ? nullptr : &hists->domains[ds.UserDomain(chunk[c])];
        for (size_t k = 0; k < s.size(); ++k) {
          hists->all.Add(s[k], k == 0);
          if (dom) dom->Add(s[k], k == 0);
        }
      }
    }
  }
  return Status::OK();
}

Status EvalFullProtocol(const Dataset& ds, const std::vector<uint32_t>& users,
                        const FullScorer& score, MetricSums* out) {
  const uint32_t I = ds.num_items;
  std::vector<uint32_t> chunk;
  std::vector<float> scores, row(I);
  for (size_t start = 0; start < users.size(); start += kEvalUsersPerChunk) {
    chunk.clear();
    for (size_t k = start; k < std::min(users.size(), start + kEvalUsersPerChunk); ++k)
      if (!ds.test_sets[users[k]].empty()) chunk.push_back(users[k]);
    if (chunk.empty()) continue;
    scores.clear();
    M6_RETURN_IF_ERROR(score(chunk, &scores));
    if (scores.size() != chunk.size() * size_t(I))
      return Status::Internal("scorer returned the wrong shape");
    for (size_t c = 0; c < chunk.size(); ++c) {
      const uint32_t u = chunk[c];
      std::copy(scores.begin() + c * I, scores.begin() + (c + 1) * I, row.begin());
      for (uint32_t i : ds.train[u]) row[i] = -1e30f;
      // Only the user's domain's items are candidates (all valid items without domains).
      const auto [begin, end] = ds.CandidateItems(u);
      for (uint32_t i = 0; i < begin; ++i) row[i] = -1e30f;
      for (uint32_t i = end; i < I; ++i) row[i] = -1e30f;
      auto top = TopK(row, 20);
      UserMetrics m(ds, u, out);
      m.Add("Recall@20", RecallAtK(top, ds.test_sets[u], 20));
      m.Add("NDCG@20", FullNdcgAtK(top, ds.test_sets[u], 20));
    }
  }
  return Status::OK();
}

std::map<std::string, double> SummaryMetrics(const MetricSums& m) {
  std::map<std::string, double> out;
  for (const auto& [k, v] : m.sums())
    if (k != "TP" && k != "FP" && k != "TN" && k != "FN" && k.find('/') == std::string::npos)
      out[k] = m.Mean(k);
  auto get = [&](const char* k) {
    auto it = m.sums().find(k);
    return it == m.sums().end() ? 0.0 : it->second;
  };
  const double tp = get("TP"), fp = get("FP"), tn = get("TN"), fn = get("FN");
  if (tp + fp + tn + fn > 0) {
    out["accuracy"] = (tp + tn) / (tp + fp + tn + fn);
    out["precision"] = tp + fp > 0 ? tp / (tp + fp) : 0;
    out["recall"] = tp + fn > 0 ? tp / (tp + fn) : 0;
    const double p = out["precision"], r = out["recall"];
    out["F1"] = p + r > 0 ? 2 * p * r / (p + r) : 0;
  }
  return out;
}

SampledScorer PopularitySampledScorer(const Dataset& ds) {
  return [&ds](const std::vector<uint32_t>&, const std::vector<std::vector<uint32_t>>& cands, bool,
               std::vector<std::vector<float>>* scores) {
    for (const auto& c : cands) {
      scores->emplace_back();
      for (uint32_t i : c) scores->back().push_back(float(ds.item_popularity[i]));
    }
    return Status::OK();
  };
}

FullScorer PopularityFullScorer(const Dataset& ds) {
  return [&ds](const std::vector<uint32_t>& users, std::vector<float>* scores) {
    for (size_t c = 0; c < users.size(); ++c)
      for (uint32_t i = 0; i < ds.num_items; ++i) scores->push_back(float(ds.item_popularity[i]));
    return Status::OK();
  };
}

Status EvalPopularity(const Dataset& ds, const std::vector<uint32_t>& users, uint64_t seed,
                      MetricSums* out) {
  if (ds.protocol == Dataset::Protocol::kFullRanking)
    return EvalFullProtocol(ds, users, PopularityFullScorer(ds), out);
  return EvalSampledProtocol(ds, users, false, seed, PopularitySampledScorer(ds), out, nullptr);
}

std::vector<std::string> ProtocolSumNames(const Dataset& ds) {
  std::vector<std::string> base =
      ds.protocol == Dataset::Protocol::kFullRanking
          ? std::vector<std::string>{"NDCG@20", "Recall@20"}
          : std::vector<std::string>{"AUC", "FN",      "FP",     "HR@1", "HR@10", "HR@5",
                                     "MRR", "NDCG@10", "NDCG@5", "TN",   "TP"};
  if (!ds.multi_domain()) return base;
  std::vector<std::string> out = base;
  for (const auto& d : ds.domains) {
    if (!d.evaluate) continue;  // an adapted job's backbone domains
    out.push_back(d.name + "/users");
    for (const auto& n : base) out.push_back(d.name + "/" + n);
  }
  return out;
}

std::array<const char*, 2> HeadlineMetrics(Dataset::Protocol p) {
  if (p == Dataset::Protocol::kFullRanking) return {"Recall@20", "NDCG@20"};
  return {"HR@10", "NDCG@10"};
}

std::string ProtocolDescription(Dataset::Protocol p, int negatives) {
  if (p == Dataset::Protocol::kFullRanking) return "full ranking";
  return "sampled, " + std::to_string(negatives) + " negatives";
}

std::string EpochSummary(int epoch, double train_loss, Dataset::Protocol p, const MetricSums& test,
                         const MetricSums& valid) {
  const auto heads = HeadlineMetrics(p);
  std::ostringstream o;
  o << "epoch " << epoch << ": train loss " << train_loss << ", test " << heads[0] << " "
    << test.Mean(heads[0]) << " " << heads[1] << " " << test.Mean(heads[1]);
  if (p != Dataset::Protocol::kFullRanking) o << " (valid NDCG@10 " << valid.Mean("NDCG@10") << ")";
  o << " over " << test.users() << " users";
  for (const auto& g : test.Groups()) {
    const MetricSums d = test.Group(g);
    o << "; " << g << " " << d.Mean(heads[0]) << " / " << d.Mean(heads[1]);
  }
  return o.str();
}

}  // namespace m6rec
