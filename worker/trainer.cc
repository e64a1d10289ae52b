#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unordered_set>

#include "common/clock.h"
#include "common/keys.h"
#include "common/logging.h"
#include "common/util.h"
#include "worker/datasets.h"
#include "worker/evaluator.h"
#include "worker/progress.h"
#include "worker/losses.h"
#include "worker/metrics.h"

namespace m6rec {

using nlohmann::json;

namespace {

using UserVecs = std::function<Status(const std::vector<uint32_t>& users, bool with_valid, std::vector<float>*)>;


}  // namespace

Status RunMfJob(const JobContext& ctx, std::string* summary) {
  const JobConfig& cfg = *ctx.cfg;
  const TrainConfig& tc = cfg.train;
  const TableSpec* ut = cfg.FindTable(tc.user_table);
  const TableSpec* it = cfg.FindTable(tc.item_table);
  const uint32_t dim = ut->dim;

  M6_ASSIGN_OR_RETURN(Dataset ds, LoadDataset(cfg.data, ctx.data_dir));
  const bool full = ds.protocol == Dataset::Protocol::kFullRanking;
  ds.sampled_negatives = tc.eval_negatives;
  std::vector<uint32_t> my_users;
  for (uint32_t u = 0; u < ds.num_users; ++u)
    if (u % ctx.num_workers == ctx.rank && !ds.train[u].empty()) my_users.push_back(u);
  std::vector<std::pair<uint32_t, uint32_t>> samples;
  for (uint32_t u : my_users)
    for (uint32_t i : ds.train[u]) samples.emplace_back(u, i);
  if (ctx.rank == 0) LOG_INFO << ds.Describe();
  LOG_INFO << "worker " << ctx.rank << ": " << my_users.size() << " users, " << samples.size()
           << " training samples; loss " << tc.loss << ", " << tc.negatives
           << " shared negatives per batch of " << tc.batch_size;
  if (samples.empty()) return Status::InvalidArgument("worker has no training samples");

  auto ukey = [&](uint32_t u) { return MakeKey(ut->id, u); };
  auto ikey = [&](uint32_t i) { return MakeKey(it->id, i); };
  auto pull_items = [&](const std::vector<Key>& k, std::vector<float>* out) {
    out->resize(k.size() * dim);
    return ctx.ps->Pull(it->id, k.data(), k.size(), out->data());
  };
  auto pull_users = [&](const std::vector<Key>& k, std::vector<float>* out) {
    out->resize(k.size() * dim);
    return ctx.ps->Pull(ut->id, k.data(), k.size(), out->data());
  };
  // Behaviour aggregation: a user's vector is g * e_user + (1 - g) * mean of the embeddings of
  // its last L history items (excluding the item being predicted). L = 0 turns it off.
  const int L = tc.history;
  const float g_user = L > 0 ? tc.history_user_weight : 1.0f;
  auto history_of = [&](uint32_t u, int64_t exclude, bool with_valid, std::vector<uint32_t>* h) {
    h->clear();
    if (L <= 0) return;
    if (with_valid && !full && ds.valid_item[u] >= 0) h->push_back(static_cast<uint32_t>(ds.valid_item[u]));
    const auto& tr = ds.train[u];
    for (size_t k = tr.size(); k-- > 0 && static_cast<int>(h->size()) < L;)
      if (static_cast<int64_t>(tr[k]) != exclude) h->push_back(tr[k]);
  };
  // Composes user vectors in place: U[b] = g U[b] + (1-g) mean(H rows of b).
  auto compose = [&](size_t n, const std::vector<uint32_t>& hcount, const float* H, float* U) {
    size_t off = 0;
    for (size_t b = 0; b < n; ++b) {
      float* u = U + b * dim;
      if (hcount[b] == 0) {
        continue;
      }
      for (uint32_t k = 0; k < dim; ++k) u[k] *= g_user;
      const float w = (1.0f - g_user) / hcount[b];
      for (uint32_t h = 0; h < hcount[b]; ++h, ++off) Axpy(w, H + off * dim, u, dim);
    }
  };
  UserVecs user_vecs = [&](const std::vector<uint32_t>& users, bool with_valid, std::vector<float>* out) -> Status {
    std::vector<Key> uk;
    std::vector<Key> hk;
    std::vector<uint32_t> hcount, h;
    for (uint32_t u : users) {
      uk.push_back(ukey(u));
      history_of(u, -1, with_valid, &h);
      hcount.push_back(static_cast<uint32_t>(h.size()));
      for (uint32_t i : h) hk.push_back(ikey(i));
    }
    M6_RETURN_IF_ERROR(pull_users(uk, out));
    if (hk.empty()) return Status::OK();
    std::vector<float> H;
    M6_RETURN_IF_ERROR(pull_items(hk, &H));
    compose(users.size(), hcount, H.data(), out->data());
    return Status::OK();
  };
  const uint64_t eval_seed = Mix64(cfg.seed ^ 0xe7a1);

  // Scorers of the two protocols over the current rows.
  SampledScorer sampled_scorer = [&](const std::vector<uint32_t>& users,
                                     const std::vector<std::vector<uint32_t>>& cands, bool with_valid,
                                     std::vector<std::vector<float>>* scores) -> Status {
    std::vector<Key> ik;
    for (const auto& c : cands)
      for (uint32_t i : c) ik.push_back(ikey(i));
    std::vector<float> urows, irows;
    M6_RETURN_IF_ERROR(user_vecs(users, with_valid, &urows));
    M6_RETURN_IF_ERROR(pull_items(ik, &irows));
    size_t off = 0;
    for (size_t c = 0; c < cands.size(); ++c) {
      scores->emplace_back();
      for (size_t k = 0; k < cands[c].size(); ++k, ++off)
        scores->back().push_back(Dot(&urows[c * dim], &irows[off * dim], dim));
    }
    return Status::OK();
  };
  std::vector<float> all_items;  // full ranking: every item's row, pulled once per evaluation
  FullScorer full_scorer = [&](const std::vector<uint32_t>& users, std::vector<float>* scores) -> Status {
    std::vector<float> urows;
    M6_RETURN_IF_ERROR(user_vecs(users, false, &urows));
    scores->resize(users.size() * size_t(ds.num_items));
    for (size_t c = 0; c < users.size(); ++c)
      for (uint32_t i = 0; i < ds.num_items; ++i)
        (*scores)[c * ds.num_items + i] = Dot(&urows[c * dim], &all_items[size_t(i) * dim], dim);
    return Status::OK();
  };

  // Popularity baseline under the same protocol.
  MetricSums pop;
  M6_RETURN_IF_ERROR(EvalPopularity(ds, my_users, eval_seed, &pop));

  const size_t B = tc.batch_size, M = tc.negatives;
  const size_t steps_per_epoch = (samples.size() + B - 1) / B;
  std::mt19937_64 rng(Mix64(cfg.seed ^ (uint64_t{ctx.rank} << 32)));
  const uint32_t item_span = ds.num_items - ds.first_item;

  struct Batch {
    size_t n = 0;
    std::vector<Key> ukeys, pkeys, nkeys, hkeys;
    std::vector<uint32_t> hcount;
    PsClient::Ticket tu = 0, tp = 0, tn = 0, th = 0;
  };
  std::vector<uint32_t> hbuf;
  auto make_batch = [&](size_t begin, Batch* b) -> Status {
    b->n = std::min<size_t>(B, samples.size() - begin);
    b->ukeys.resize(b->n);
    b->pkeys.resize(b->n);
    b->nkeys.resize(M);
    b->hkeys.clear();
    b->hcount.assign(b->n, 0);
    for (size_t s = 0; s < b->n; ++s) {
      b->ukeys[s] = ukey(samples[begin + s].first);
      b->pkeys[s] = ikey(samples[begin + s].second);
      history_of(samples[begin + s].first, samples[begin + s].second, false, &hbuf);
      b->hcount[s] = static_cast<uint32_t>(hbuf.size());
      for (uint32_t i : hbuf) b->hkeys.push_back(ikey(i));
    }
    for (size_t j = 0; j < M; ++j) b->nkeys[j] = ikey(ds.first_item + static_cast<uint32_t>(rng() % item_span));
    M6_ASSIGN_OR_RETURN(b->tu, ctx.ps->PullAsync(ut->id, b->ukeys.data(), b->n));
    M6_ASSIGN_OR_RETURN(b->tp, ctx.ps->PullAsync(it->id, b->pkeys.data(), b->n));
    M6_ASSIGN_OR_RETURN(b->tn, ctx.ps->PullAsync(it->id, b->nkeys.data(), M));
    if (!b->hkeys.empty()) {
      M6_ASSIGN_OR_RETURN(b->th, ctx.ps->PullAsync(it->id, b->hkeys.data(), b->hkeys.size()));
    }
    return Status::OK();
  };
  auto wait_batch = [&](Batch& b, std::vector<float>* U, std::vector<float>* P, std::vector<float>* N,
                        std::vector<float>* H) -> Status {
    U->resize(b.n * dim);
    P->resize(b.n * dim);
    N->resize(M * dim);
    H->resize(b.hkeys.size() * dim);
    M6_RETURN_IF_ERROR(ctx.ps->WaitPull(b.tu, U->data()));
    M6_RETURN_IF_ERROR(ctx.ps->WaitPull(b.tp, P->data()));
    M6_RETURN_IF_ERROR(ctx.ps->WaitPull(b.tn, N->data()));
    if (!b.hkeys.empty()) M6_RETURN_IF_ERROR(ctx.ps->WaitPull(b.th, H->data()));
    return Status::OK();
  };

  std::vector<float> U, P, N, H, gu, gp, gn, gh;
  TrainProgress prog(tc.log_every);
  nlohmann::json epochs = nlohmann::json::array();
  bool stop = false;
  for (int epoch = 1; epoch <= tc.epochs && !stop; ++epoch) {
    std::shuffle(samples.begin(), samples.end(), rng);
    Batch cur, next;
    M6_RETURN_IF_ERROR(make_batch(0, &cur));
    prog.StartEpoch();
    for (size_t step = 0; step < steps_per_epoch; ++step) {
      std::string why;
      if (ctx.should_abort && ctx.should_abort(&why)) return Status::Aborted(why);
      M6_RETURN_IF_ERROR(wait_batch(cur, &U, &P, &N, &H));
      if (!cur.hkeys.empty()) compose(cur.n, cur.hcount, H.data(), U.data());
      // Prefetch: the next batch's rows are on the wire while this one computes (staleness 1).
      const bool has_next = step + 1 < steps_per_epoch && !(tc.max_steps > 0 && prog.steps() + 1 >= uint64_t(tc.max_steps));
      if (has_next) M6_RETURN_IF_ERROR(make_batch((step + 1) * B, &next));
      gu.assign(cur.n * dim, 0.0f);
      gp.assign(cur.n * dim, 0.0f);
      gn.assign(M * dim, 0.0f);
      double loss;
      if (tc.loss == "ccl") {
        loss = LossCcl(cur.n, M, dim, U.data(), P.data(), N.data(), tc.margin, tc.neg_weight, gu.data(), gp.data(), gn.data());
      } else if (tc.loss == "softmax") {
        loss = LossSoftmax(cur.n, M, dim, U.data(), P.data(), N.data(), tc.temperature, gu.data(), gp.data(), gn.data());
      } else {
        loss = LossBpr(cur.n, M, dim, U.data(), P.data(), N.data(), gu.data(), gp.data(), gn.data());
      }
      if (!cur.hkeys.empty()) {
        // Back through the composition: d/d e_user = g * gu; d/d e_hist = (1-g)/|H| * gu.
        gh.assign(cur.hkeys.size() * dim, 0.0f);
        size_t off = 0;
        for (size_t b = 0; b < cur.n; ++b) {
          if (cur.hcount[b] == 0) continue;
          const float w = (1.0f - g_user) / cur.hcount[b];
          for (uint32_t h = 0; h < cur.hcount[b]; ++h, ++off) Axpy(w, &gu[b * dim], &gh[off * dim], dim);
          for (uint32_t k = 0; k < dim; ++k) gu[b * dim + k] *= g_user;
        }
      }
      PsClient::Ticket t4 = 0;
      if (!cur.hkeys.empty()) {
        M6_ASSIGN_OR_RETURN(t4, ctx.ps->PushAsync(it->id, cur.hkeys.data(), cur.hkeys.size(), gh.data()));
      }
      M6_ASSIGN_OR_RETURN(auto t1, ctx.ps->PushAsync(ut->id, cur.ukeys.data(), cur.n, gu.data()));
      M6_ASSIGN_OR_RETURN(auto t2, ctx.ps->PushAsync(it->id, cur.pkeys.data(), cur.n, gp.data()));
      M6_ASSIGN_OR_RETURN(auto t3, ctx.ps->PushAsync(it->id, cur.nkeys.data(), M, gn.data()));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPush(t1));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPush(t2));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPush(t3));
      if (t4) M6_RETURN_IF_ERROR(ctx.ps->WaitPush(t4));

      prog.Step(epoch, loss, cur.n);
      if (!has_next) {
        if (tc.max_steps > 0 && prog.steps() >= uint64_t(tc.max_steps)) stop = true;
        break;
      }
      std::swap(cur, next);
    }
    const double last_loss = prog.EndEpoch();
    if (epoch % tc.eval_every != 0 && epoch != tc.epochs && !stop) continue;
    // Every worker finishes the epoch's pushes before anyone evaluates.
    M6_RETURN_IF_ERROR(ctx.barrier("epoch-" + std::to_string(epoch)));
    const int64_t e0 = MonotonicMs();
    MetricSums test, valid;
    if (full) {
      std::vector<Key> all;
      for (uint32_t i = 0; i < ds.num_items; ++i) all.push_back(ikey(i));
      M6_RETURN_IF_ERROR(pull_items(all, &all_items));
      M6_RETURN_IF_ERROR(EvalFullProtocol(ds, my_users, full_scorer, &test));
    } else {
      M6_RETURN_IF_ERROR(EvalSampledProtocol(ds, my_users, false, eval_seed, 0.0f, sampled_scorer, &test));
      M6_RETURN_IF_ERROR(EvalSampledProtocol(ds, my_users, true, eval_seed, 0.0f, sampled_scorer, &valid));
    }
    prog.AddEvalMs(MonotonicMs() - e0);
    LOG_INFO << EpochSummary(epoch, last_loss, full, test, valid);
    epochs.push_back({{"epoch", epoch}, {"loss", last_loss}, {"test", SumsJson(test)}, {"valid", SumsJson(valid)},
                      {"elapsed_s", prog.elapsed_s()}});
  }
  nlohmann::json j = {{"rank", ctx.rank},
                      {"job", "mf"},
                      {"dataset", ds.name},
                      {"protocol", full ? "full_ranking" : "sampled"},
                      {"popularity", SumsJson(pop)},
                      {"epochs", epochs}};
  j.update(prog.Summary());
  *summary = j.dump();
  return Status::OK();
}

Status RunPushCheckJob(const JobContext& ctx, std::string* summary) {
  const JobConfig& cfg = *ctx.cfg;
  const TableSpec* t = cfg.FindTable(cfg.train.item_table);
  if (!t) return Status::InvalidArgument("pushcheck: no table '" + cfg.train.item_table + "'");
  const uint32_t dim = t->dim;
  std::vector<uint64_t> ids;
  for (int j = 0; j < kPushCheckShared; ++j) ids.push_back(j);
  for (int j = 0; j < kPushCheckShared; ++j) ids.push_back(j);  // each shared key twice
  for (int j = 0; j < kPushCheckPrivate; ++j) ids.push_back(1000 + 100 * ctx.rank + j);
  std::vector<Key> keys(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) keys[i] = MakeKey(t->id, ids[i]);
  std::vector<float> grads(ids.size() * dim);
  for (int round = 0; round < kPushCheckRounds; ++round) {
    for (size_t i = 0; i < ids.size(); ++i)
      for (uint32_t d = 0; d < dim; ++d)
        grads[i * dim + d] = PushCheckGrad(ids[i], d, round, ctx.rank);
    M6_RETURN_IF_ERROR(ctx.ps->Push(t->id, keys.data(), keys.size(), grads.data()));
  }
  M6_RETURN_IF_ERROR(ctx.barrier("pushcheck-pushed"));
  if (ctx.rank == 0) {
    std::vector<uint64_t> all;
    for (int j = 0; j < kPushCheckShared; ++j) all.push_back(j);
    for (uint32_t w = 0; w < ctx.num_workers; ++w)
      for (int j = 0; j < kPushCheckPrivate; ++j) all.push_back(1000 + 100 * w + j);
    std::vector<Key> ak(all.size());
    for (size_t i = 0; i < all.size(); ++i) ak[i] = MakeKey(t->id, all[i]);
    std::vector<float> rows(all.size() * dim);
    M6_RETURN_IF_ERROR(ctx.ps->Pull(t->id, ak.data(), ak.size(), rows.data()));
    json out = {{"dim", dim}, {"workers", ctx.num_workers}, {"ids", all}, {"rows", rows}};
    M6_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/pushcheck.json", out.dump()));
  }
  *summary = json({{"rank", ctx.rank}, {"job", "pushcheck"}, {"pushed_keys", ids.size()}}).dump();
  return Status::OK();
}

}  // namespace m6rec
