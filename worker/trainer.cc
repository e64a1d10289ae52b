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
#include "worker/losses.h"
#include "worker/metrics.h"

namespace m6rec {

using nlohmann::json;

namespace {

// ---- evaluation ---------------------------------------------------------------------------

constexpr int kEvalChunk = 256;  // users per pull during evaluation

// Sampled protocol: the target against its negatives, per user of this worker.
using UserVecs = std::function<Status(const std::vector<uint32_t>& users, bool with_valid, std::vector<float>*)>;

Status EvalSampled(const Dataset& ds, const std::vector<uint32_t>& users, bool valid, uint64_t seed,
                   const UserVecs& user_vecs,
                   const std::function<Status(const std::vector<Key>&, std::vector<float>*)>& pull_items,
                   const std::function<Key(uint32_t)>& ikey,
                   uint32_t dim, const std::vector<uint32_t>* popularity, MetricSums* out) {
  std::vector<uint32_t> chunk;
  for (size_t start = 0; start < users.size(); start += kEvalChunk) {
    chunk.clear();
    for (size_t k = start; k < std::min(users.size(), start + kEvalChunk); ++k) {
      const uint32_t u = users[k];
      if ((valid ? ds.valid_item[u] : ds.test_item[u]) >= 0) chunk.push_back(u);
    }
    if (chunk.empty()) continue;
    std::vector<std::vector<uint32_t>> cands(chunk.size());
    std::vector<Key> ik;
    for (size_t c = 0; c < chunk.size(); ++c) {
      const uint32_t u = chunk[c];
      cands[c].push_back(static_cast<uint32_t>(valid ? ds.valid_item[u] : ds.test_item[u]));
      for (uint32_t n : SampledNegatives(ds, u, seed)) cands[c].push_back(n);
      for (uint32_t i : cands[c]) ik.push_back(ikey(i));
    }
    std::vector<float> urows, irows;
    if (!popularity) {
      // Testing sees the validation item as history, as the sequential papers do.
      M6_RETURN_IF_ERROR(user_vecs(chunk, /*with_valid=*/!valid, &urows));
      M6_RETURN_IF_ERROR(pull_items(ik, &irows));
    }
    size_t off = 0;
    std::vector<float> scores;
    for (size_t c = 0; c < chunk.size(); ++c) {
      scores.resize(cands[c].size());
      for (size_t k = 0; k < cands[c].size(); ++k, ++off)
        scores[k] = popularity ? float((*popularity)[cands[c][k]])
                               : Dot(&urows[c * dim], &irows[off * dim], dim);
      const int rank = RankOfFirst(scores);
      out->AddUser();
      out->Add("HR@1", HitAtK(rank, 1));
      out->Add("HR@5", HitAtK(rank, 5));
      out->Add("HR@10", HitAtK(rank, 10));
      out->Add("NDCG@5", NdcgAtK(rank, 5));
      out->Add("NDCG@10", NdcgAtK(rank, 10));
      out->Add("MRR", 1.0 / (rank + 1));
    }
  }
  return Status::OK();
}

// Full ranking: every item scored, training items masked, top-20 against the test set.
Status EvalFull(const Dataset& ds, const std::vector<uint32_t>& users,
                const std::vector<float>& item_rows,
                const UserVecs& user_vecs, uint32_t dim,
                const std::vector<uint32_t>* popularity, MetricSums* out) {
  const uint32_t I = ds.num_items;
  std::vector<uint32_t> chunk;
  std::vector<float> scores(I);
  for (size_t start = 0; start < users.size(); start += kEvalChunk) {
    chunk.clear();
    for (size_t k = start; k < std::min(users.size(), start + kEvalChunk); ++k)
      if (!ds.test_sets[users[k]].empty()) chunk.push_back(users[k]);
    if (chunk.empty()) continue;
    std::vector<float> urows;
    if (!popularity) M6_RETURN_IF_ERROR(user_vecs(chunk, false, &urows));
    for (size_t c = 0; c < chunk.size(); ++c) {
      const uint32_t u = chunk[c];
      if (popularity) {
        for (uint32_t i = 0; i < I; ++i) scores[i] = float((*popularity)[i]);
      } else {
        const float* uv = &urows[c * dim];
        for (uint32_t i = 0; i < I; ++i) scores[i] = Dot(uv, &item_rows[size_t(i) * dim], dim);
      }
      for (uint32_t i : ds.train[u]) scores[i] = -1e30f;
      for (uint32_t i = 0; i < ds.first_item; ++i) scores[i] = -1e30f;
      auto top = TopK(scores, 20);
      out->AddUser();
      out->Add("Recall@20", RecallAtK(top, ds.test_sets[u], 20));
      out->Add("NDCG@20", FullNdcgAtK(top, ds.test_sets[u], 20));
    }
  }
  return Status::OK();
}

nlohmann::json SumsJson(const MetricSums& m) {
  nlohmann::json j = {{"users", m.users()}};
  for (const auto& [k, v] : m.sums()) j["sums"][k] = v;
  return j;
}

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

  // Popularity baseline under the same protocol.
  MetricSums pop;
  if (full) {
    std::vector<float> none;
    M6_RETURN_IF_ERROR(EvalFull(ds, my_users, none, user_vecs, dim, &ds.item_popularity, &pop));
  } else {
    M6_RETURN_IF_ERROR(EvalSampled(ds, my_users, false, eval_seed, user_vecs, pull_items, ikey,
                                   dim, &ds.item_popularity, &pop));
  }

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
  double first_loss = -1, last_loss = 0, window_loss = 0;
  uint64_t window_n = 0, total_samples = 0, steps = 0;
  nlohmann::json epochs = nlohmann::json::array();
  const int64_t t0 = MonotonicMs();
  int64_t window_t0 = t0, eval_ms = 0;
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
      M6_RETURN_IF_ERROR(wait_batch(cur, &U, &P, &N, &H));
      if (!cur.hkeys.empty()) compose(cur.n, cur.hcount, H.data(), U.data());
      // Prefetch: the next batch's rows are on the wire while this one computes (staleness 1).
      const bool has_next = step + 1 < steps_per_epoch && !(tc.max_steps > 0 && steps + 1 >= uint64_t(tc.max_steps));
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

      const double mean = loss / double(cur.n);
      if (first_loss < 0) first_loss = mean;
      window_loss += loss;
      window_n += cur.n;
      epoch_loss += loss;
      epoch_n += cur.n;
      total_samples += cur.n;
      ++steps;
      if (steps % tc.log_every == 0) {
        const int64_t now = MonotonicMs();
        LOG_INFO << "epoch " << epoch << " step " << steps << " loss " << window_loss / window_n << " ("
                 << static_cast<int>(window_n * 1000.0 / std::max<int64_t>(1, now - window_t0)) << " samples/s)";
        window_loss = 0;
        window_n = 0;
        window_t0 = now;
      }
      if (!has_next) {
        if (tc.max_steps > 0 && steps >= uint64_t(tc.max_steps)) stop = true;
        break;
      }
      std::swap(cur, next);
    }
    last_loss = epoch_loss / std::max<uint64_t>(1, epoch_n);
    if (epoch % tc.eval_every != 0 && epoch != tc.epochs && !stop) continue;
    // Every worker finishes the epoch's pushes before anyone evaluates.
    M6_RETURN_IF_ERROR(ctx.barrier("epoch-" + std::to_string(epoch)));
    const int64_t e0 = MonotonicMs();
    MetricSums test, valid;
    if (full) {
      std::vector<Key> all;
      for (uint32_t i = 0; i < ds.num_items; ++i) all.push_back(ikey(i));
      std::vector<float> items;
      M6_RETURN_IF_ERROR(pull_items(all, &items));
      M6_RETURN_IF_ERROR(EvalFull(ds, my_users, items, user_vecs, dim, nullptr, &test));
    } else {
      M6_RETURN_IF_ERROR(EvalSampled(ds, my_users, false, eval_seed, user_vecs, pull_items, ikey, dim, nullptr, &test));
      M6_RETURN_IF_ERROR(EvalSampled(ds, my_users, true, eval_seed, user_vecs, pull_items, ikey, dim, nullptr, &valid));
    }
    eval_ms += MonotonicMs() - e0;
    if (full)
      LOG_INFO << "epoch " << epoch << ": train loss " << last_loss << ", this worker's Recall@20 "
               << test.Mean("Recall@20") << " NDCG@20 " << test.Mean("NDCG@20") << " over " << test.users() << " users";
    else
      LOG_INFO << "epoch " << epoch << ": train loss " << last_loss << ", this worker's test HR@10 "
               << test.Mean("HR@10") << " NDCG@10 " << test.Mean("NDCG@10") << " (valid NDCG@10 "
               << valid.Mean("NDCG@10") << ") over " << test.users() << " users";
    epochs.push_back({{"epoch", epoch}, {"loss", last_loss}, {"test", SumsJson(test)}, {"valid", SumsJson(valid)},
                      {"elapsed_s", (MonotonicMs() - t0) / 1000.0}});
  }
  const double secs = (MonotonicMs() - t0) / 1000.0;
  nlohmann::json j = {{"rank", ctx.rank},
                      {"job", "mf"},
                      {"dataset", ds.name},
                      {"protocol", full ? "full_ranking" : "sampled"},
                      {"steps", steps},
                      {"samples", total_samples},
                      {"train_s", secs},
                      {"eval_s", eval_ms / 1000.0},
                      {"samples_per_s", total_samples / std::max(1e-9, secs - eval_ms / 1000.0)},
                      {"first_loss", first_loss},
                      {"last_loss", last_loss},
                      {"popularity", SumsJson(pop)},
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
