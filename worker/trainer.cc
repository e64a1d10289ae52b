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
#include "worker/data.h"
#include "worker/metrics.h"

namespace m6rec {

using nlohmann::json;

namespace {

struct EvalResult {
  uint64_t users = 0;
  double hr10 = 0, ndcg10 = 0;
};

// Sampled-negative leave-last-out evaluation: the test item against `negs` items the user never
// touched, drawn with a seed that depends only on (seed, user), so every run and every worker
// count ranks against the same candidates. score(u, i) comes from `scorer`.
template <typename Scorer>
Status Evaluate(const Split& split, const std::vector<uint32_t>& users, uint32_t num_items,
                int negs, uint64_t seed, Scorer&& scorer, EvalResult* out) {
  *out = EvalResult();
  std::vector<uint32_t> cand;
  std::vector<float> scores;
  for (uint32_t u : users) {
    if (split.test[u] < 0) continue;
    std::unordered_set<uint32_t> seen(split.train[u].begin(), split.train[u].end());
    seen.insert(static_cast<uint32_t>(split.test[u]));
    cand.clear();
    cand.push_back(static_cast<uint32_t>(split.test[u]));
    std::mt19937_64 rng(Mix64(seed ^ (uint64_t{u} << 20)));
    const int want = std::min<int>(negs, static_cast<int>(num_items - seen.size()));
    while (static_cast<int>(cand.size()) < want + 1) {
      uint32_t j = static_cast<uint32_t>(rng() % num_items);
      if (!seen.count(j)) {
        cand.push_back(j);
        seen.insert(j);
      }
    }
    scores.resize(cand.size());
    M6_RETURN_IF_ERROR(scorer(u, cand, &scores));
    const int rank = RankOfFirst(scores);  // ties count against the test item
    out->users++;
    out->hr10 += HitAtK(rank, 10);
    out->ndcg10 += NdcgAtK(rank, 10);
  }
  return Status::OK();
}

}  // namespace

Status RunMfJob(const JobContext& ctx, std::string* summary) {
  const JobConfig& cfg = *ctx.cfg;
  const TrainConfig& tc = cfg.train;
  const TableSpec* ut = cfg.FindTable(tc.user_table);
  const TableSpec* it = cfg.FindTable(tc.item_table);
  const uint32_t dim = ut->dim;

  M6_ASSIGN_OR_RETURN(Interactions data, ReadInteractions(ctx.data_dir + "/interactions.tsv"));
  Split split = LeaveLastOut(data);
  std::vector<uint32_t> my_users;
  for (uint32_t u = 0; u < data.num_users; ++u)
    if (u % ctx.num_workers == ctx.rank && !split.train[u].empty()) my_users.push_back(u);
  std::vector<std::pair<uint32_t, uint32_t>> samples;
  for (uint32_t u : my_users)
    for (uint32_t i : split.train[u]) samples.emplace_back(u, i);
  LOG_INFO << "worker " << ctx.rank << ": " << my_users.size() << " users, " << samples.size()
           << " training samples of " << data.count << " interactions, " << data.num_items
           << " items";
  if (samples.empty()) return Status::InvalidArgument("worker has no training samples");

  const int B = tc.batch_size, N = tc.negatives;
  const size_t steps_per_epoch = (samples.size() + B - 1) / B;
  std::mt19937_64 rng(Mix64(cfg.seed ^ (uint64_t{ctx.rank} << 32)));

  // Batch buffers: keys, pulled rows and gradients for users and items (pos then N negatives).
  struct Batch {
    size_t n = 0;
    std::vector<Key> ukeys, ikeys;
    PsClient::Ticket ut = 0, itk = 0;
  };
  auto make_batch = [&](size_t begin, Batch* b) -> Status {
    b->n = std::min<size_t>(B, samples.size() - begin);
    b->ukeys.resize(b->n);
    b->ikeys.resize(b->n * (1 + N));
    for (size_t s = 0; s < b->n; ++s) {
      auto [u, i] = samples[begin + s];
      b->ukeys[s] = MakeKey(ut->id, u);
      Key* ik = &b->ikeys[s * (1 + N)];
      ik[0] = MakeKey(it->id, i);
      for (int j = 1; j <= N; ++j) {
        uint32_t neg;
        do neg = static_cast<uint32_t>(rng() % data.num_items);
        while (neg == i);
        ik[j] = MakeKey(it->id, neg);
      }
    }
    M6_ASSIGN_OR_RETURN(b->ut, ctx.ps->PullAsync(ut->id, b->ukeys.data(), b->n));
    M6_ASSIGN_OR_RETURN(b->itk, ctx.ps->PullAsync(it->id, b->ikeys.data(), b->ikeys.size()));
    return Status::OK();
  };

  auto scorer = [&](uint32_t u, const std::vector<uint32_t>& cand, std::vector<float>* scores) -> Status {
    std::vector<Key> keys(cand.size());
    for (size_t c = 0; c < cand.size(); ++c) keys[c] = MakeKey(it->id, cand[c]);
    Key uk = MakeKey(ut->id, u);
    std::vector<float> urow(dim), irows(cand.size() * dim);
    M6_RETURN_IF_ERROR(ctx.ps->Pull(ut->id, &uk, 1, urow.data()));
    M6_RETURN_IF_ERROR(ctx.ps->Pull(it->id, keys.data(), keys.size(), irows.data()));
    for (size_t c = 0; c < cand.size(); ++c) {
      float s = 0;
      for (uint32_t d = 0; d < dim; ++d) s += urow[d] * irows[c * dim + d];
      (*scores)[c] = s;
    }
    return Status::OK();
  };
  auto pop_scorer = [&](uint32_t, const std::vector<uint32_t>& cand, std::vector<float>* scores) {
    for (size_t c = 0; c < cand.size(); ++c) (*scores)[c] = split.item_popularity[cand[c]];
    return Status::OK();
  };
  const uint64_t eval_seed = Mix64(cfg.seed ^ 0xe7a1);
  EvalResult pop;
  M6_RETURN_IF_ERROR(Evaluate(split, my_users, data.num_items, tc.eval_negatives, eval_seed,
                              pop_scorer, &pop));

  std::vector<float> urows, irows, ugrad, igrad;
  double first_loss = -1, last_loss = 0, window_loss = 0;
  uint64_t window_n = 0, total_samples = 0, steps = 0;
  json epochs = json::array();
  EvalResult ev;
  const int64_t t0 = MonotonicMs();
  int64_t window_t0 = t0;
  bool stop = false;
  for (int epoch = 1; epoch <= tc.epochs && !stop; ++epoch) {
    std::shuffle(samples.begin(), samples.end(), rng);
    Batch cur, next;
    M6_RETURN_IF_ERROR(make_batch(0, &cur));
    double epoch_loss = 0;
    uint64_t epoch_n = 0;
    for (size_t step = 0; step < steps_per_epoch; ++step) {
      std::string why;
      if (ctx.should_abort && ctx.should_abort(&why)) return Status::Aborted(why);
      urows.resize(cur.n * dim);
      irows.resize(cur.ikeys.size() * dim);
      M6_RETURN_IF_ERROR(ctx.ps->WaitPull(cur.ut, urows.data()));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPull(cur.itk, irows.data()));
      // Prefetch: the next batch's rows are on the wire while this one computes (staleness 1).
      const bool has_next = step + 1 < steps_per_epoch;
      if (has_next) M6_RETURN_IF_ERROR(make_batch((step + 1) * B, &next));

      ugrad.assign(cur.n * dim, 0.0f);
      igrad.assign(cur.ikeys.size() * dim, 0.0f);
      double loss = 0;
      for (size_t s = 0; s < cur.n; ++s) {
        const float* uv = &urows[s * dim];
        float* gu = &ugrad[s * dim];
        const float* pv = &irows[s * (1 + N) * dim];
        float* gp = &igrad[s * (1 + N) * dim];
        for (int j = 1; j <= N; ++j) {
          const float* nv = pv + size_t(j) * dim;
          float* gn = gp + size_t(j) * dim;
          float x = 0;
          for (uint32_t d = 0; d < dim; ++d) x += uv[d] * (pv[d] - nv[d]);
          // loss = softplus(-x); dloss/dx = -sigmoid(-x)
          loss += x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x));
          const float g = -1.0f / (1.0f + std::exp(x));
          for (uint32_t d = 0; d < dim; ++d) {
            gu[d] += g * (pv[d] - nv[d]);
            gp[d] += g * uv[d];
            gn[d] -= g * uv[d];
          }
        }
      }
      M6_ASSIGN_OR_RETURN(auto pu, ctx.ps->PushAsync(ut->id, cur.ukeys.data(), cur.n, ugrad.data()));
      M6_ASSIGN_OR_RETURN(auto pi, ctx.ps->PushAsync(it->id, cur.ikeys.data(), cur.ikeys.size(), igrad.data()));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPush(pu));
      M6_RETURN_IF_ERROR(ctx.ps->WaitPush(pi));

      const double mean = loss / (double(cur.n) * N);
      if (first_loss < 0) first_loss = mean;
      window_loss += loss;
      window_n += cur.n * N;
      epoch_loss += loss;
      epoch_n += cur.n * N;
      total_samples += cur.n;
      ++steps;
      if (steps % tc.log_every == 0) {
        const int64_t now = MonotonicMs();
        LOG_INFO << "epoch " << epoch << " step " << steps << " loss " << window_loss / window_n
                 << " (" << static_cast<int>(window_n / N * 1000.0 / std::max<int64_t>(1, now - window_t0))
                 << " samples/s)";
        window_loss = 0;
        window_n = 0;
        window_t0 = now;
      }
      if (has_next) std::swap(cur, next);
      if (tc.max_steps > 0 && steps >= static_cast<uint64_t>(tc.max_steps)) {
        stop = true;
        // Drain the prefetched pulls so no reply is left in flight.
        if (has_next) {
          urows.resize(cur.n * dim);
          irows.resize(cur.ikeys.size() * dim);
          M6_RETURN_IF_ERROR(ctx.ps->WaitPull(cur.ut, urows.data()));
          M6_RETURN_IF_ERROR(ctx.ps->WaitPull(cur.itk, irows.data()));
        }
        break;
      }
    }
    last_loss = epoch_loss / std::max<uint64_t>(1, epoch_n);
    // Every worker finishes the epoch's pushes before anyone evaluates.
    M6_RETURN_IF_ERROR(ctx.barrier("epoch-" + std::to_string(epoch)));
    M6_RETURN_IF_ERROR(Evaluate(split, my_users, data.num_items, tc.eval_negatives, eval_seed,
                                scorer, &ev));
    LOG_INFO << "epoch " << epoch << " done: train loss " << last_loss << ", HR@10 "
             << ev.hr10 / std::max<uint64_t>(1, ev.users) << " NDCG@10 "
             << ev.ndcg10 / std::max<uint64_t>(1, ev.users) << " over " << ev.users
             << " users (popularity HR@10 " << pop.hr10 / std::max<uint64_t>(1, pop.users) << ")";
    epochs.push_back({{"epoch", epoch}, {"loss", last_loss}, {"users", ev.users},
                      {"hr10_sum", ev.hr10}, {"ndcg10_sum", ev.ndcg10}});
  }
  const double secs = (MonotonicMs() - t0) / 1000.0;
  json j = {{"rank", ctx.rank},
            {"job", "mf"},
            {"steps", steps},
            {"samples", total_samples},
            {"train_s", secs},
            {"samples_per_s", total_samples / std::max(1e-9, secs)},
            {"first_loss", first_loss},
            {"last_loss", last_loss},
            {"eval", {{"users", ev.users}, {"hr10_sum", ev.hr10}, {"ndcg10_sum", ev.ndcg10}}},
            {"popularity", {{"users", pop.users}, {"hr10_sum", pop.hr10}, {"ndcg10_sum", pop.ndcg10}}},
            {"epochs", epochs}};
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
