#include "worker/evaluator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

namespace m6rec {

namespace {

// Adds one user's metric values to the totals and to its groups: its domain's (multi-domain),
// its target's cold or warm items' and its own cold or warm users' (cold splits), and whether it
// trains or is only context (a train_users share below 1).
class UserMetrics {
 public:
  // target: the user's target item (sampled protocol; -1: none), which puts the user in the
  // cold or the warm items' group of an item cold split.
  UserMetrics(const Dataset& ds, uint32_t user, MetricSums* out, int64_t target = -1) : out_(out) {
    if (ds.multi_domain()) groups_[0] = &ds.domains[ds.UserDomain(user)].name;
    if (ds.cold_split() && target >= 0)
      groups_[1] = ds.IsCold(uint32_t(target)) ? &kColdItems : &kWarmItems;
    if (ds.cold_user_split()) groups_[2] = ds.IsColdUser(user) ? &kColdUsers : &kWarmUsers;
    if (ds.partial_training()) groups_[3] = ds.Trained(user) ? &kTrainedUsers : &kContextUsers;
    if (target >= 0 && size_t(target) < ds.item_popularity.size())
      groups_[4] = &kPopularity[TargetPopularityBucket(ds.item_popularity[size_t(target)])];
    out_->AddUser();
    for (const std::string* g : groups_)
      if (g) out_->AddGroupUser(*g);
  }
  void Add(const char* name, double v) {
    out_->Add(name, v);
    for (const std::string* g : groups_)
      if (g) out_->AddGroup(*g, name, v);
  }

 private:
  static inline const std::string kColdItems = kColdItemsGroup, kWarmItems = kWarmItemsGroup,
                                  kColdUsers = kColdUsersGroup, kWarmUsers = kWarmUsersGroup,
                                  kTrainedUsers = kTrainedUsersGroup,
                                  kContextUsers = kContextUsersGroup;
  static inline const auto kPopularity = [] {
    std::array<std::string, kTargetPopularityGroups.size()> names;
    for (size_t b = 0; b < names.size(); ++b) names[b] = kTargetPopularityGroups[b];
    return names;
  }();
  MetricSums* out_;
  // Its domain's group, its target's cold/warm group, its own cold/warm group, trained/context,
  // its target's training count.
  std::array<const std::string*, 5> groups_{};
};

}  // namespace

int TargetPopularityBucket(uint32_t count) {
  int b = 0;
  for (uint64_t edge = 1; b + 1 < int(kTargetPopularityGroups.size()) && count >= edge; edge *= 4)
    ++b;
  return b;
}

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

namespace {

// The target's rank among every item user u could be shown (ties count against it, as in
// RankOfFirst); `row` holds the user's scores of all items.
int RankAmongAllItems(const Dataset& ds, uint32_t u, uint32_t target, bool valid_is_history,
                      std::vector<float>& row) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  const float t = row[target];  // a target the user touched before (a repeat) stays rankable
  for (uint32_t i : ds.train[u]) row[i] = kMasked;
  if (u < ds.held_out.size())
    for (uint32_t i : ds.held_out[u]) row[i] = kMasked;
  if (valid_is_history && ds.valid_item[u] >= 0) row[size_t(ds.valid_item[u])] = kMasked;
  const auto [begin, end] = ds.CandidateItems(u);
  int rank = 0;
  for (uint32_t i = begin; i < end; ++i) rank += i != target && row[i] != kMasked && row[i] >= t;
  return rank;
}

}  // namespace

Status ScoreSampledPass(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                        uint64_t seed, const SampledScorer& score, SampledPass* pass,
                        const FullScorer* all_items) {
  pass->valid = valid;
  std::vector<uint32_t> chunk;
  std::vector<std::vector<uint32_t>> cands;
  std::vector<std::vector<float>> scores;
  std::vector<float> full, row;
  const size_t I = ds.num_items;
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
    for (size_t c = 0; c < chunk.size(); ++c)
      if (scores[c].size() != cands[c].size())
        return Status::Internal("scorer returned the wrong number of candidates");
    if (all_items) {
      full.clear();
      M6_RETURN_IF_ERROR((*all_items)(chunk, &full));
      if (full.size() != chunk.size() * I)
        return Status::Internal("scorer returned the wrong shape");
      for (size_t c = 0; c < chunk.size(); ++c) {
        row.assign(full.begin() + long(c * I), full.begin() + long((c + 1) * I));
        pass->all_ranks.push_back(RankAmongAllItems(ds, chunk[c], cands[c][0], !valid, row));
      }
    }
    pass->users.insert(pass->users.end(), chunk.begin(), chunk.end());
    for (size_t c = 0; c < chunk.size(); ++c) {
      pass->cands.push_back(std::move(cands[c]));
      pass->scores.push_back(std::move(scores[c]));
    }
  }
  return Status::OK();
}

void AccumulateSampledPass(const Dataset& ds, const SampledPass& pass, const Calibration& cal,
                           MetricSums* out, ScoreHistograms* hists) {
  std::vector<float> s;
  std::vector<int> labels;
  for (size_t c = 0; c < pass.users.size(); ++c) {
    const uint32_t u = pass.users[c];
    const auto& cands = pass.cands[c];
    s = pass.scores[c];
    const int raw_rank = RankOfFirst(s);
    if (!cal.empty()) {
      const size_t d = ds.multi_domain() ? ds.UserDomain(u) : 0;
      for (size_t k = 0; k < s.size(); ++k) s[k] += float(cal.Offset(ds, d, cands[k]));
    }
    const int rank = RankOfFirst(s);
    UserMetrics m(ds, u, out, int64_t(cands[0]));
    m.Add("HR@1", HitAtK(rank, 1));
    m.Add("HR@5", HitAtK(rank, 5));
    m.Add("HR@10", HitAtK(rank, 10));
    m.Add("NDCG@5", NdcgAtK(rank, 5));
    m.Add("NDCG@10", NdcgAtK(rank, 10));
    m.Add("HR@10_uncalibrated", HitAtK(raw_rank, 10));
    m.Add("NDCG@10_uncalibrated", NdcgAtK(raw_rank, 10));
    m.Add("MRR", 1.0 / (rank + 1));
    labels.assign(s.size(), 0);
    labels[0] = 1;
    m.Add("AUC", Auc(s, labels));
    if (c < pass.all_ranks.size()) {
      m.Add("HR@10_all", HitAtK(pass.all_ranks[c], 10));
      m.Add("NDCG@10_all", NdcgAtK(pass.all_ranks[c], 10));
    }
    if (hists) {
      ScoreHistogram* dom = hists->domains.empty() ? nullptr : &hists->domains[ds.UserDomain(u)];
      for (size_t k = 0; k < s.size(); ++k) {
        hists->all.Add(s[k], k == 0);
        if (dom) dom->Add(s[k], k == 0);
      }
    }
  }
}

Status EvalSampledProtocol(const Dataset& ds, const std::vector<uint32_t>& users, bool valid,
                           uint64_t seed, const SampledScorer& score, MetricSums* out,
                           ScoreHistograms* hists, const FullScorer* all_items,
                           const Calibration* cal) {
  static const Calibration kNone;
  std::vector<uint32_t> block;
  // A block of chunks at a time: the scores are not all kept.
  constexpr size_t kBlock = 16 * kEvalUsersPerChunk;
  for (size_t start = 0; start < users.size(); start += kBlock) {
    block.assign(users.begin() + long(start),
                 users.begin() + long(std::min(users.size(), start + kBlock)));
    SampledPass pass;
    M6_RETURN_IF_ERROR(ScoreSampledPass(ds, block, valid, seed, score, &pass, all_items));
    AccumulateSampledPass(ds, pass, cal ? *cal : kNone, out, hists);
  }
  return Status::OK();
}

double Calibration::Offset(const Dataset& ds, size_t domain, uint32_t item) const {
  if (domain >= offsets.size() || item >= ds.item_popularity.size()) return 0;
  return offsets[domain][size_t(TargetPopularityBucket(ds.item_popularity[item]))];
}

nlohmann::json Calibration::ToJson(const Dataset& ds) const {
  nlohmann::json j = {{"buckets", kTargetPopularityGroups}};
  for (auto& b : j["buckets"]) b = b.get<std::string>().substr(4);  // "pop:1-3" -> "1-3"
  if (offsets.empty()) return j;
  if (!ds.multi_domain()) {
    j["offsets"] = offsets[0];
    return j;
  }
  for (size_t d = 0; d < offsets.size() && d < ds.domains.size(); ++d)
    if (ds.domains[d].evaluate) j["domains"][ds.domains[d].name] = offsets[d];
  return j;
}

StatusOr<Calibration> Calibration::FromJson(const Dataset& ds, const nlohmann::json& j) {
  Calibration c;
  constexpr size_t B = kTargetPopularityGroups.size();
  auto read = [&](const nlohmann::json& v, const std::string& what) -> Status {
    if (!v.is_array() || v.size() != B)
      return Status::InvalidArgument("calibration " + what + ": " + std::to_string(B) +
                                     " offsets expected, got " + v.dump());
    auto& o = c.offsets.emplace_back();
    for (size_t b = 0; b < B; ++b) {
      if (!v[b].is_number())
        return Status::InvalidArgument("calibration " + what + ": " + v.dump());
      o[b] = v[b].get<double>();
    }
    return Status::OK();
  };
  if (!j.is_object()) return c;
  if (j.contains("offsets")) {
    M6_RETURN_IF_ERROR(read(j["offsets"], "offsets"));
  } else if (j.contains("domains") && ds.multi_domain()) {
    for (const auto& d : ds.domains) {
      if (j["domains"].contains(d.name)) {
        M6_RETURN_IF_ERROR(read(j["domains"][d.name], "of domain " + d.name));
      } else {
        c.offsets.emplace_back();  // a domain not evaluated: no offsets
        c.offsets.back().fill(0.0);
      }
    }
  }
  return c;
}

namespace {

// One validation user's NDCG@10 with bucket k's offset at every grid value (the other buckets at
// `o`), added to ndcg[0 .. 2 * kCalibrationGrid]: the exact rank at each value from one sorted
// sweep. With the target in bucket k the target and k's negatives move together and the other
// negatives fall behind as the offset grows; otherwise k's negatives overtake the target one by
// one. `others` and `mine` are scratch space.
void AddNdcgOverGrid(const std::vector<uint32_t>& cands, const std::vector<float>& s,
                     const std::vector<uint8_t>& bucket,
                     const std::array<double, kTargetPopularityGroups.size()>& o, size_t k,
                     double step, double* ndcg, std::vector<float>* others,
                     std::vector<float>* mine) {
  const bool target_in_k = bucket[cands[0]] == k;
  const double t0 = s[0] + (target_in_k ? 0.0 : o[bucket[cands[0]]]);
  others->clear();
  mine->clear();
  for (size_t j = 1; j < s.size(); ++j) {
    if (bucket[cands[j]] == k)
      mine->push_back(s[j]);
    else
      others->push_back(float(s[j] + o[bucket[cands[j]]]));
  }
  int fixed = 0;  // the scores that do not move against the target
  if (target_in_k) {
    for (float x : *mine) fixed += x >= s[0];
  } else {
    for (float x : *others) fixed += x >= float(t0);
  }
  if (fixed >= 10) return;  // out of the top 10 at every offset
  std::vector<float>& moving = target_in_k ? *others : *mine;
  std::sort(moving.begin(), moving.end(), std::greater<float>());
  size_t n = target_in_k ? moving.size() : 0;  // moving scores at or above the target
  for (int g = 0; g <= 2 * kCalibrationGrid; ++g) {
    const double off = (g - kCalibrationGrid) * step;
    if (target_in_k) {
      const float t = float(t0 + off);
      while (n > 0 && moving[n - 1] < t) --n;
    } else {
      const float tk = float(t0 - off);
      while (n < moving.size() && moving[n] >= tk) ++n;
    }
    ndcg[g] += NdcgAtK(fixed + int(n), 10);
  }
}

}  // namespace

StatusOr<Calibration> FitCalibration(const Dataset& ds,
                                     const std::vector<const SampledPass*>& valid_passes,
                                     const SumAcrossRanks& sum) {
  Calibration cal;
  if (ds.cold_split() || ds.protocol != Dataset::Protocol::kSampled) return cal;
  constexpr size_t B = kTargetPopularityGroups.size();
  const size_t D = ds.multi_domain() ? ds.domains.size() : 1;
  auto domain = [&](uint32_t u) -> size_t { return ds.multi_domain() ? ds.UserDomain(u) : 0; };
  std::vector<uint8_t> bucket(ds.num_items, 0);
  for (size_t i = 0; i < ds.num_items && i < ds.item_popularity.size(); ++i)
    bucket[i] = uint8_t(TargetPopularityBucket(ds.item_popularity[i]));
  // Each domain's scale: the standard deviation of its validation scores over every rank.
  // Each pass's sums on their own, added in order: the additions the ranks' sum makes of one
  // pass each (so that `m6rec eval`, with every shard's pass here, chooses as the job did).
  auto add = [](std::vector<double>* total, const std::vector<double>& part) {
    for (size_t i = 0; i < total->size(); ++i) (*total)[i] += part[i];
  };
  std::vector<double> moments(3 * D, 0.0), part;
  for (const SampledPass* p : valid_passes) {
    part.assign(moments.size(), 0.0);
    for (size_t c = 0; c < p->users.size(); ++c) {
      double* m = &part[3 * domain(p->users[c])];
      for (float x : p->scores[c]) m[0] += 1, m[1] += x, m[2] += double(x) * x;
    }
    add(&moments, part);
  }
  M6_RETURN_IF_ERROR(sum(&moments));
  std::vector<double> step(D, 0.0);
  for (size_t d = 0; d < D; ++d) {
    const double n = moments[3 * d];
    if (n < 2) continue;
    const double mean = moments[3 * d + 1] / n;
    step[d] = kCalibrationStep * std::sqrt(std::max(0.0, moments[3 * d + 2] / n - mean * mean));
  }
  cal.offsets.assign(D, {});
  for (auto& o : cal.offsets) o.fill(0.0);
  std::vector<int> at(D * B, 0);  // each offset's grid index (0 = no offset)
  constexpr int G = 2 * kCalibrationGrid + 1;
  std::vector<float> others;
  std::vector<float> mine;
  for (int sweep = 0; sweep < kCalibrationSweeps; ++sweep)
    for (size_t k = 1; k < B; ++k) {
      // NDCG@10 over each domain's validation users with bucket k's offset at every grid value.
      std::vector<double> ndcg(D * G, 0.0);
      for (const SampledPass* p : valid_passes) {
        part.assign(ndcg.size(), 0.0);
        for (size_t c = 0; c < p->users.size(); ++c) {
          const size_t d = domain(p->users[c]);
          if (step[d] <= 0) continue;
          AddNdcgOverGrid(p->cands[c], p->scores[c], bucket, cal.offsets[d], k, step[d],
                          &part[d * G], &others, &mine);
        }
        add(&ndcg, part);
      }
      M6_RETURN_IF_ERROR(sum(&ndcg));
      for (size_t d = 0; d < D; ++d) {
        if (step[d] <= 0) continue;
        int& cur = at[d * B + k];
        int best = cur + kCalibrationGrid;  // a move must improve on where the offset is
        for (int g = 0; g < G; ++g)
          if (ndcg[d * G + size_t(g)] > ndcg[d * G + size_t(best)]) best = g;
        cur = best - kCalibrationGrid;
        cal.offsets[d][k] = cur * step[d];
      }
    }
  return cal;
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
      if (u < ds.held_out.size())
        for (uint32_t i : ds.held_out[u]) row[i] = -1e30f;
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
    if (k != "TP" && k != "FP" && k != "TN" && k != "FN" && k.find('/') == std::string::npos &&
        k.find('#') == std::string::npos)
      out[k] = m.Mean(k);
  // Tasks: rating errors, attribute classes (see TaskGroup).
  if (out.count("SE_deep")) {
    out["RMSE_deep"] = std::sqrt(out["SE_deep"]);
    out.erase("SE_deep");
  }
  if (out.count("SE")) {
    out["RMSE"] = std::sqrt(out["SE"]);
    out["MAE"] = out["AE"];
    out.erase("SE");
    out.erase("AE");
  }
  if (out.count("correct")) {
    out["accuracy"] = out["correct"];
    out.erase("correct");
    std::map<std::string, std::array<double, 3>> per_class;  // TP, FP, FN
    for (const auto& [k, v] : m.sums()) {
      const size_t hash = k.find('#');
      if (hash == std::string::npos || k.find('/') != std::string::npos) continue;
      const std::string kind = k.substr(0, hash);
      per_class[k.substr(hash + 1)][kind == "TP" ? 0 : kind == "FP" ? 1 : 2] += v;
    }
    double f1 = 0;
    int classes = 0;
    for (const auto& [c, n] : per_class) {
      if (n[0] + n[1] + n[2] == 0) continue;
      f1 += 2 * n[0] / (2 * n[0] + n[1] + n[2]);
      ++classes;
    }
    out["macro_F1"] = classes > 0 ? f1 / classes : 0;
  }
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
  const FullScorer all = PopularityFullScorer(ds);
  return EvalSampledProtocol(ds, users, false, seed, PopularitySampledScorer(ds), out, nullptr,
                             ds.cold_split() ? &all : nullptr);
}

std::vector<std::string> ProtocolSumNames(const Dataset& ds) {
  std::vector<std::string> base = ds.protocol == Dataset::Protocol::kFullRanking
                                      ? std::vector<std::string>{"NDCG@20", "Recall@20"}
                                      : std::vector<std::string>{"AUC",     "FN",
                                                                 "FP",      "HR@1",
                                                                 "HR@10",   "HR@10_uncalibrated",
                                                                 "HR@5",    "MRR",
                                                                 "NDCG@10", "NDCG@10_uncalibrated",
                                                                 "NDCG@5",  "TN",
                                                                 "TP"};
  if (ds.cold_split() && ds.protocol == Dataset::Protocol::kSampled)
    base.insert(base.end(), {"HR@10_all", "NDCG@10_all"});
  std::vector<std::string> out = base;
  auto group = [&](const std::string& g) {
    out.push_back(g + "/users");
    for (const auto& n : base) out.push_back(g + "/" + n);
  };
  if (ds.multi_domain())
    for (const auto& d : ds.domains)
      if (d.evaluate) group(d.name);  // not an adapted job's backbone domains
  if (ds.cold_split() && ds.protocol == Dataset::Protocol::kSampled) {
    group(kColdItemsGroup);
    group(kWarmItemsGroup);
  }
  if (ds.cold_user_split()) {
    group(kColdUsersGroup);
    group(kWarmUsersGroup);
  }
  if (ds.partial_training()) {
    group(kTrainedUsersGroup);
    group(kContextUsersGroup);
  }
  if (ds.protocol == Dataset::Protocol::kSampled)
    for (const char* g : kTargetPopularityGroups) group(g);
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
    if (g.rfind("pop:", 0) == 0) continue;  // the long-tail split: result.json only
    const MetricSums d = test.Group(g);
    if (g.rfind("task:", 0) != 0) {
      o << "; " << (g.rfind("cold:", 0) == 0 ? g.substr(5) : g) << " " << d.Mean(heads[0]) << " / "
        << d.Mean(heads[1]);
      continue;
    }
    if (g.find(':', 5) != std::string::npos) continue;  // a task in one domain
    const auto m = SummaryMetrics(d);
    o << "; " << g.substr(5);
    for (const char* k : {"RMSE", "AUC", "accuracy", "macro_F1"})
      if (m.count(k)) o << " " << k << " " << m.at(k);
  }
  return o.str();
}

}  // namespace m6rec

// ---- tasks ----------------------------------------------------------------------------------

namespace m6rec {

namespace {

// The task's metric groups a user's examples are added to: the task's and, in a multi-domain
// dataset, the task in the user's domain.
class TaskMetrics {
 public:
  TaskMetrics(const Dataset& ds, const std::string& task, uint32_t user, MetricSums* out)
      : out_(out), all_(TaskGroup(task)) {
    if (ds.multi_domain()) dom_ = TaskGroup(task, ds.domains[ds.UserDomain(user)].name);
  }
  void Example() {
    out_->AddGroupUser(all_);
    if (!dom_.empty()) out_->AddGroupUser(dom_);
  }
  void Add(const std::string& name, double v) {
    out_->AddGroup(all_, name, v);
    if (!dom_.empty()) out_->AddGroup(dom_, name, v);
  }

 private:
  MetricSums* out_;
  std::string all_, dom_;
};

// The users of an attribute's split (0 train, 1 valid, 2 test) that have a label and a history.
bool InAttributeSplit(const Dataset& ds, const Dataset::UserAttribute& a, uint32_t u, int split,
                      uint64_t seed) {
  return a.label[u] >= 0 && !ds.train[u].empty() && Dataset::AttributeSplit(u, seed) == split;
}

// A blend weight as result.json's key ("%g": 0, 0.5, 64).
std::string WeightKey(double w) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", w);
  return buf;
}

void AddClassCounts(TaskMetrics& m, int truth, int predicted) {
  m.Add("correct", truth == predicted ? 1.0 : 0.0);
  if (truth == predicted) {
    m.Add("TP#" + std::to_string(truth), 1);
  } else {
    m.Add("FN#" + std::to_string(truth), 1);
    m.Add("FP#" + std::to_string(predicted), 1);
  }
}

}  // namespace

std::string TaskGroup(const std::string& task, const std::string& domain) {
  return "task:" + task + (domain.empty() ? "" : ":" + domain);
}

TaskHistograms::TaskHistograms(const Dataset&, const std::vector<TaskSpec>& specs) {
  tasks.resize(specs.size());
  blended.resize(specs.size());
  blended_correct.assign(specs.size(), {});
  rated.resize(specs.size());
  rated_se.assign(specs.size(), {});
  like_blends.resize(specs.size());
  for (size_t t = 0; t < specs.size(); ++t)
    if (specs[t].type == TaskKind::kLike) like_blends[t].resize(kNumNeighbourWeights);
}

std::vector<double> TaskHistograms::Pack() const {
  std::vector<double> out;
  for (const auto& h : tasks) out.insert(out.end(), h.counts().begin(), h.counts().end());
  for (const auto& c : blended_correct) out.insert(out.end(), c.begin(), c.end());
  for (const auto& c : rated_se) out.insert(out.end(), c.begin(), c.end());
  for (const auto& hs : like_blends)
    for (const auto& h : hs) out.insert(out.end(), h.counts().begin(), h.counts().end());
  return out;
}

void TaskHistograms::Unpack(const std::vector<double>& packed) {
  size_t off = 0;
  for (auto& h : tasks) {
    std::copy(packed.begin() + off, packed.begin() + off + h.counts().size(), h.counts().begin());
    off += h.counts().size();
  }
  for (auto& c : blended_correct) {
    std::copy(packed.begin() + off, packed.begin() + off + c.size(), c.begin());
    off += c.size();
  }
  for (auto& c : rated_se) {
    std::copy(packed.begin() + off, packed.begin() + off + c.size(), c.begin());
    off += c.size();
  }
  for (auto& hs : like_blends)
    for (auto& h : hs) {
      std::copy(packed.begin() + off, packed.begin() + off + h.counts().size(), h.counts().begin());
      off += h.counts().size();
    }
}

void TaskHistograms::Merge(const TaskHistograms& o) {
  for (size_t t = 0; t < tasks.size() && t < o.tasks.size(); ++t) {
    tasks[t].Merge(o.tasks[t]);
    blended[t].insert(blended[t].end(), o.blended[t].begin(), o.blended[t].end());
    for (size_t k = 0; k <= kNumWideWeights; ++k) blended_correct[t][k] += o.blended_correct[t][k];
    rated[t].insert(rated[t].end(), o.rated[t].begin(), o.rated[t].end());
    for (size_t k = 0; k <= kNumNeighbourWeights; ++k) rated_se[t][k] += o.rated_se[t][k];
    for (size_t k = 0; k < like_blends[t].size() && k < o.like_blends[t].size(); ++k)
      like_blends[t][k].Merge(o.like_blends[t][k]);
  }
}

Status EvalTasks(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                 const std::vector<uint32_t>& users, bool valid, uint64_t seed,
                 const TaskScorer& score, MetricSums* out, TaskHistograms* hists,
                 const RatingNeighbourhood* neighbours) {
  std::vector<std::vector<float>> outputs;
  for (uint32_t t = 1; t < tasks.size(); ++t) {
    const TaskSpec& task = tasks[t];
    std::vector<uint32_t> qu, qi;
    std::vector<float> truth;
    if (task.type == TaskKind::kAttribute) {
      const Dataset::UserAttribute* a = ds.FindAttribute(task.attribute);
      if (!a) return Status::InvalidArgument("no user attribute '" + task.attribute + "'");
      for (uint32_t u : users)
        if (InAttributeSplit(ds, *a, u, valid ? 1 : 2, seed)) {
          qu.push_back(u);
          truth.push_back(float(a->label[u]));
        }
    } else {
      const auto& rated = valid ? ds.rated_valid : ds.rated_test;
      for (uint32_t u : users)
        if (u < rated.size())
          for (const auto& [item, r] : rated[u]) {
            qu.push_back(u);
            qi.push_back(item);
            truth.push_back(r);
          }
    }
    for (size_t start = 0; start < qu.size(); start += kEvalUsersPerChunk) {
      const size_t end = std::min(qu.size(), start + kEvalUsersPerChunk);
      const std::vector<uint32_t> cu(qu.begin() + start, qu.begin() + end);
      const std::vector<uint32_t> ci =
          qi.empty() ? std::vector<uint32_t>{}
                     : std::vector<uint32_t>(qi.begin() + start, qi.begin() + end);
      outputs.clear();
      M6_RETURN_IF_ERROR(score(t, cu, ci, /*with_valid=*/!valid, &outputs));
      if (outputs.size() != cu.size())
        return Status::Internal("task scorer returned the wrong number of outputs");
      for (size_t c = 0; c < cu.size(); ++c) {
        const float y = truth[start + c];
        const auto& o = outputs[c];
        TaskMetrics m(ds, task.name, cu[c], out);
        m.Example();
        switch (task.type) {
          case TaskKind::kRating: {
            const double se = double(o[0] - y) * double(o[0] - y);
            m.Add("SE_deep", se);
            // A neighbourhood prediction's blend waits for the weight validation chooses
            // (AddTaskConfusion).
            const float* nb = neighbours && hists ? neighbours->Find(cu[c], ci[c]) : nullptr;
            if (nb) {
              const TaskHistograms::Rated r{cu[c], y, o[0], *nb};
              for (size_t k = 0; k < kNumNeighbourWeights; ++k) {
                const double e = double(r.At(kNeighbourWeights[k])) - y;
                hists->rated_se[t][k] += e * e;
              }
              hists->rated_se[t][kNumNeighbourWeights] += 1;
              hists->rated[t].push_back(r);
            } else {
              m.Add("SE", se);
              m.Add("AE", std::fabs(double(o[0] - y)));
            }
            break;
          }
          case TaskKind::kLike: {
            if (!hists) break;
            const bool liked = y >= task.like_threshold;
            hists->tasks[t].Add(o[0], liked);
            // With a neighbourhood model every example joins the blends (one it does not
            // predict at its own logit), read at the weight validation chooses.
            if (!neighbours) break;
            const float* nb = neighbours->Find(cu[c], ci[c]);
            const float z = nb ? NeighbourLikeLogit(*nb, task.like_threshold) : o[0];
            for (size_t k = 0; k < kNumNeighbourWeights; ++k)
              hists->like_blends[t][k].Add(
                  float((1 - kNeighbourWeights[k]) * o[0] + kNeighbourWeights[k] * z), liked);
            break;
          }
          case TaskKind::kAttribute: {
            // A wide part's logits follow the deep head's (ModelPlugin::ScoreTask): their
            // blend's class counts wait for the weight validation chooses (AddTaskConfusion).
            const size_t C = ds.FindAttribute(task.attribute)->classes.size();
            if (o.size() == 2 * C && hists) {
              TaskHistograms::Blended b{cu[c], int(y), {}};
              for (size_t k = 0; k < kNumWideWeights; ++k) {
                int best = 0;
                for (size_t j = 1; j < C; ++j)
                  if (o[j] + kWideWeights[k] * o[C + j] > o[best] + kWideWeights[k] * o[C + best])
                    best = int(j);
                b.predicted[k] = best;
                hists->blended_correct[t][k] += best == int(y) ? 1 : 0;
              }
              hists->blended[t].push_back(b);
              hists->blended_correct[t][kNumWideWeights] += 1;
            } else {
              const auto end = o.begin() + std::ptrdiff_t(std::min(C, o.size()));
              AddClassCounts(m, int(y), int(std::max_element(o.begin(), end) - o.begin()));
            }
            break;
          }
          case TaskKind::kRetrieval:
            break;
        }
      }
    }
  }
  return Status::OK();
}

void AddTaskConfusion(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                      const TaskHistograms& test_mine, const TaskHistograms& valid_mine,
                      const TaskHistograms& test_all, const TaskHistograms& valid_all,
                      MetricSums* test, MetricSums* valid, nlohmann::json* thresholds,
                      nlohmann::json* wide_weights) {
  for (size_t t = 1; t < tasks.size(); ++t) {
    // An attribute task with a wide part (examples blended on some rank).
    if (tasks[t].type == TaskKind::kAttribute &&
        valid_all.blended_correct[t][kNumWideWeights] +
                test_all.blended_correct[t][kNumWideWeights] >
            0) {
      const auto& correct = valid_all.blended_correct[t];
      const size_t k = size_t(std::max_element(correct.begin(), correct.begin() + kNumWideWeights) -
                              correct.begin());
      // The weight, and the validation accuracy at every weight (0: the deep head alone).
      nlohmann::json acc = nlohmann::json::object();
      const double n = std::max(1.0, correct[kNumWideWeights]);
      for (size_t j = 0; j < kNumWideWeights; ++j) {
        acc[WeightKey(kWideWeights[j])] = correct[j] / n;
      }
      (*wide_weights)[tasks[t].name] = {{"weight", kWideWeights[k]}, {"valid_accuracy", acc}};
      for (auto [mine, out] : {std::pair{&test_mine, test}, std::pair{&valid_mine, valid}})
        for (const auto& b : mine->blended[t]) {
          TaskMetrics m(ds, tasks[t].name, b.user, out);
          AddClassCounts(m, b.truth, b.predicted[k]);
        }
      continue;
    }
    // A rating task with a neighbourhood model.
    if (tasks[t].type == TaskKind::kRating &&
        valid_all.rated_se[t][kNumNeighbourWeights] + test_all.rated_se[t][kNumNeighbourWeights] >
            0) {
      const auto& se = valid_all.rated_se[t];
      const size_t k =
          size_t(std::min_element(se.begin(), se.begin() + kNumNeighbourWeights) - se.begin());
      nlohmann::json rmse = nlohmann::json::object();
      const double n = std::max(1.0, se[kNumNeighbourWeights]);
      for (size_t j = 0; j < kNumNeighbourWeights; ++j) {
        rmse[WeightKey(kNeighbourWeights[j])] = std::sqrt(se[j] / n);
      }
      (*wide_weights)[tasks[t].name] = {{"weight", kNeighbourWeights[k]}, {"valid_RMSE", rmse}};
      for (auto [mine, out] : {std::pair{&test_mine, test}, std::pair{&valid_mine, valid}})
        for (const auto& r : mine->rated[t]) {
          TaskMetrics m(ds, tasks[t].name, r.user, out);
          const double e = double(r.At(kNeighbourWeights[k])) - r.truth;
          m.Add("SE", e * e);
          m.Add("AE", std::fabs(e));
        }
      continue;
    }
    if (tasks[t].type != TaskKind::kLike) continue;
    // The like head alone, or its blend with a neighbourhood model at the weight of the highest
    // validation AUC (first best: the head alone on a tie).
    auto hist = [&](const TaskHistograms& h, size_t k) -> const ScoreHistogram& {
      return k == 0 ? h.tasks[t] : h.like_blends[t][k];
    };
    size_t k = 0;
    const auto& blends = valid_all.like_blends[t];
    if (blends.size() == kNumNeighbourWeights && blends[0].total() > 0) {
      nlohmann::json auc = nlohmann::json::object();
      double best = -1;
      for (size_t j = 0; j < kNumNeighbourWeights; ++j) {
        const double a = blends[j].Auc();
        auc[WeightKey(kNeighbourWeights[j])] = a;
        if (a > best) best = a, k = j;
      }
      (*wide_weights)[tasks[t].name] = {{"weight", kNeighbourWeights[k]}, {"valid_AUC", auc}};
    }
    const double thr = hist(valid_all, k).BestF1Threshold();
    (*thresholds)[tasks[t].name] = thr;
    const std::string g = TaskGroup(tasks[t].name);
    for (auto [mine, all, out] : {std::make_tuple(&test_mine, &test_all, test),
                                  std::make_tuple(&valid_mine, &valid_all, valid)}) {
      const BinaryCounts c = hist(*mine, k).CountsAt(thr);
      out->AddGroup(g, "TP", double(c.tp));
      out->AddGroup(g, "FP", double(c.fp));
      out->AddGroup(g, "TN", double(c.tn));
      out->AddGroup(g, "FN", double(c.fn));
      out->AddGroup(g, "AUC", hist(*all, k).Auc() * mine->tasks[t].total());
      out->AddGroup(g, "AUC_deep", all->tasks[t].Auc() * mine->tasks[t].total());
    }
  }
}

std::vector<std::string> TaskSumNames(const Dataset& ds, const std::vector<TaskSpec>& tasks) {
  std::vector<std::string> out;
  for (size_t t = 1; t < tasks.size(); ++t) {
    std::vector<std::string> groups{TaskGroup(tasks[t].name)};
    for (const auto& d : ds.domains)
      if (ds.multi_domain() && d.evaluate) groups.push_back(TaskGroup(tasks[t].name, d.name));
    std::vector<std::string> names;
    switch (tasks[t].type) {
      case TaskKind::kRating:
        names = {"SE", "SE_deep", "AE"};
        break;
      case TaskKind::kLike:
        names = {"AUC", "AUC_deep", "FN", "FP", "TN", "TP"};
        break;
      case TaskKind::kAttribute: {
        names = {"correct"};
        const Dataset::UserAttribute* a = ds.FindAttribute(tasks[t].attribute);
        for (size_t k = 0; a && k < a->classes.size(); ++k)
          for (const char* c : {"FN#", "FP#", "TP#"}) names.push_back(c + std::to_string(k));
        break;
      }
      case TaskKind::kRetrieval:
        break;
    }
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      out.push_back(groups[gi] + "/users");
      // The confusion counts and AUC are the job's, not each domain's.
      for (const auto& n : names)
        if (gi == 0 || tasks[t].type != TaskKind::kLike) out.push_back(groups[gi] + "/" + n);
    }
  }
  return out;
}

namespace {

// A multinomial logistic regression on the user's bag of training items (each item 1/sqrt(n)),
// trained by SGD on the attribute's training users; L2 chosen on its validation users.
class BagOfItemsClassifier {
 public:
  BagOfItemsClassifier(const Dataset& ds, const Dataset::UserAttribute& a, uint64_t seed)
      : ds_(ds), C_(a.classes.size()) {
    std::vector<uint32_t> train, valid;
    for (uint32_t u = 0; u < ds.num_users; ++u) {
      if (InAttributeSplit(ds, a, u, 0, seed)) train.push_back(u);
      if (InAttributeSplit(ds, a, u, 1, seed)) valid.push_back(u);
    }
    double best = -1;
    for (double l2 : {1e-5, 1e-4, 1e-3}) {
      Fit(a, train, l2, seed);
      double correct = 0;
      for (uint32_t u : valid) correct += Predict(u) == a.label[u];
      if (correct > best) {
        best = correct;
        best_w_ = w_;
        best_b_ = b_;
      }
    }
    w_ = best_w_;
    b_ = best_b_;
  }
  int Predict(uint32_t u) const {
    const std::vector<double> z = Logits(u);
    return int(std::max_element(z.begin(), z.end()) - z.begin());
  }

 private:
  std::vector<double> Logits(uint32_t u) const {
    std::vector<double> z(b_);
    const double x = 1.0 / std::sqrt(double(std::max<size_t>(1, ds_.train[u].size())));
    for (uint32_t i : ds_.train[u])
      for (size_t c = 0; c < C_; ++c) z[c] += w_[size_t(i) * C_ + c] * x;
    return z;
  }
  void Fit(const Dataset::UserAttribute& a, std::vector<uint32_t> users, double l2, uint64_t seed) {
    w_.assign(size_t(ds_.num_items) * C_, 0.0);
    b_.assign(C_, 0.0);
    std::mt19937_64 rng(seed ^ 0x10615);
    for (int epoch = 0; epoch < 30; ++epoch) {
      std::shuffle(users.begin(), users.end(), rng);
      const double lr = 0.5 / (1 + epoch * 0.2);
      for (uint32_t u : users) {
        std::vector<double> z = Logits(u);
        const double mx = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double& v : z) sum += (v = std::exp(v - mx));
        const double x = 1.0 / std::sqrt(double(std::max<size_t>(1, ds_.train[u].size())));
        for (size_t c = 0; c < C_; ++c) {
          const double g = z[c] / sum - (int(c) == a.label[u] ? 1.0 : 0.0);
          b_[c] -= lr * g;
          for (uint32_t i : ds_.train[u]) {
            double& w = w_[size_t(i) * C_ + c];
            w -= lr * (g * x + l2 * w);
          }
        }
      }
    }
  }
  const Dataset& ds_;
  size_t C_;
  std::vector<double> w_, b_, best_w_, best_b_;
};

}  // namespace

double TaskValidationSize(const Dataset& ds, const TaskSpec& task, uint64_t seed) {
  if (task.type == TaskKind::kRating || task.type == TaskKind::kLike) {
    double liked = 0, n = 0;
    for (const auto& list : ds.rated_valid)
      for (const auto& pair : list) liked += pair.second >= task.like_threshold ? 1 : 0, n += 1;
    return task.type == TaskKind::kRating ? n : std::min(liked, n - liked);
  }
  const Dataset::UserAttribute* a =
      task.type == TaskKind::kAttribute ? ds.FindAttribute(task.attribute) : nullptr;
  double n = 0;
  if (a)
    for (uint32_t u = 0; u < ds.num_users; ++u) n += InAttributeSplit(ds, *a, u, 1, seed) ? 1 : 0;
  return n;
}

double TaskChance(const Dataset& ds, const TaskSpec& task, uint64_t seed) {
  if (task.type == TaskKind::kLike) return 0.5;
  if (task.type == TaskKind::kRating) {
    double sum = 0, n = 0, se = 0, m = 0;
    for (uint32_t u = 0; u < ds.num_users; ++u)
      if (ds.Trained(u) && u < ds.train_ratings.size())
        for (float r : ds.train_ratings[u]) sum += r, n += 1;
    const double mean = n > 0 ? sum / n : 0;
    for (const auto& list : ds.rated_valid)
      for (const auto& [item, r] : list) se += (r - mean) * (r - mean), m += 1;
    return m > 0 ? std::sqrt(se / m) : 0;
  }
  if (task.type != TaskKind::kAttribute) return 0;
  const Dataset::UserAttribute* a = ds.FindAttribute(task.attribute);
  if (!a || a->classes.empty()) return 0;
  std::vector<double> train(a->classes.size(), 0), valid(a->classes.size(), 0);
  double n = 0;
  for (uint32_t u = 0; u < ds.num_users; ++u) {
    if (InAttributeSplit(ds, *a, u, 0, seed)) train[size_t(a->label[u])] += 1;
    if (InAttributeSplit(ds, *a, u, 1, seed)) valid[size_t(a->label[u])] += 1, n += 1;
  }
  const size_t majority = size_t(std::max_element(train.begin(), train.end()) - train.begin());
  return n > 0 ? valid[majority] / n : 0;
}

Status EvalTaskBaselines(const Dataset& ds, const std::vector<TaskSpec>& tasks,
                         const std::vector<uint32_t>& users, uint64_t seed, MetricSums* out) {
  for (size_t t = 1; t < tasks.size(); ++t) {
    const TaskSpec& task = tasks[t];
    if (task.type == TaskKind::kRating) {
      double sum = 0, n = 0;
      for (uint32_t u = 0; u < ds.num_users; ++u)
        if (ds.Trained(u) && u < ds.train_ratings.size())
          for (float r : ds.train_ratings[u]) sum += r, n += 1;
      const double mean = n > 0 ? sum / n : 0;
      for (uint32_t u : users)
        if (u < ds.rated_test.size())
          for (const auto& [item, r] : ds.rated_test[u]) {
            TaskMetrics m(ds, task.name, u, out);
            m.Example();
            m.Add("SE", (r - mean) * (r - mean));
            m.Add("AE", std::fabs(r - mean));
          }
    } else if (task.type == TaskKind::kAttribute) {
      const Dataset::UserAttribute* a = ds.FindAttribute(task.attribute);
      if (!a) return Status::InvalidArgument("no user attribute '" + task.attribute + "'");
      std::vector<double> counts(a->classes.size(), 0);
      for (uint32_t u = 0; u < ds.num_users; ++u)
        if (InAttributeSplit(ds, *a, u, 0, seed)) counts[size_t(a->label[u])] += 1;
      const int majority = int(std::max_element(counts.begin(), counts.end()) - counts.begin());
      BagOfItemsClassifier logreg(ds, *a, seed);
      for (uint32_t u : users)
        if (InAttributeSplit(ds, *a, u, 2, seed)) {
          TaskMetrics m(ds, task.name, u, out);
          m.Example();
          AddClassCounts(m, a->label[u], majority);
          TaskMetrics lr(ds, task.name + "_logreg", u, out);
          lr.Example();
          AddClassCounts(lr, a->label[u], logreg.Predict(u));
        }
    }
  }
  return Status::OK();
}

}  // namespace m6rec
