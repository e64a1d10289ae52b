// The m6 job: trains the M6-Rec style model (worker/model.h) with sparse rows on the parameter
// servers and dense layers replicated on the workers. One step:
//   build the batch (samples, negatives, histories, graph neighbours, content tokens), collect
//   its unique user / item / token keys -> pull them (the next batch's pull is already on the
//   wire while this one computes when train.staleness = 1) -> forward / backward -> push the
//   rows' gradients (the servers apply the sparse optimizer) -> allreduce the dense gradients
//   (mean over workers) -> Adam step, the same on every worker, so the replicas stay bit-identical.
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "common/clock.h"
#include "common/keys.h"
#include "common/logging.h"
#include "common/util.h"
#include "worker/collective.h"
#include "worker/datasets.h"
#include "worker/evaluator.h"
#include "worker/model.h"
#include "worker/progress.h"
#include "worker/samplers.h"
#include "worker/trainer.h"

namespace m6rec {

namespace {

using nlohmann::json;

constexpr int kMaxItemTokens = 16;  // most tokens of an item's text the item tower reads

torch::Tensor LongTensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  if (v.empty()) return torch::zeros({rows, cols}, torch::kLong);
  return torch::from_blob(const_cast<int64_t*>(v.data()), {rows, cols}, torch::kLong).clone();
}
torch::Tensor FloatTensor(const std::vector<float>& v, int64_t rows, int64_t cols) {
  if (v.empty()) return torch::zeros({rows, cols}, torch::kFloat);
  return torch::from_blob(const_cast<float*>(v.data()), {rows, cols}, torch::kFloat).clone();
}

// A user's friends in the social graph (none where the data has no social graph).
const std::vector<uint32_t>& FriendsOf(const Dataset& ds, uint32_t u) {
  static const std::vector<uint32_t> kNoFriends;
  return u < ds.social.size() ? ds.social[u] : kNoFriends;
}

// One batch's sparse ids (deduplicated, 1-based indices) and the ragged inputs of the towers.
class BatchBuilder {
 public:
  // fanout / item_fanout: the widths of the graph inputs (training: the config's fanouts;
  // evaluation: model.eval_fanout).
  BatchBuilder(const Dataset& ds, const ModelConfig& mc, const ModelShape& shape, int item_tokens, int fanout,
               int item_fanout)
      : ds_(ds), mc_(mc), shape_(shape), tt_(item_tokens), fanout_(fanout), item_fanout_(item_fanout) {}

  int64_t User(uint32_t u) {
    auto [it, fresh] = umap_.emplace(u, int64_t(user_ids.size()) + 1);
    if (fresh) user_ids.push_back(u);
    return it->second;
  }
  int64_t Item(uint32_t i) {
    auto [it, fresh] = imap_.emplace(i, int64_t(item_ids.size()) + 1);
    if (fresh) {
      item_ids.push_back(i);
      item_nbr_.emplace_back();
      item_nbr_w_.emplace_back();
      const auto& toks = i < ds_.item_tokens.size() ? ds_.item_tokens[i] : kNone;
      for (int k = 0; k < tt_; ++k) {
        const bool on = shape_.tokens && k < int(toks.size());
        item_tok.push_back(on ? Token(toks[k]) : 0);
        item_tok_mask.push_back(on ? 1.0f : 0.0f);
      }
    }
    return it->second;
  }
  // An item that will be scored: with model.item_graph its sampled users (item_users) join the
  // batch as the item graph's input. Items only read by user towers need no call.
  int64_t Scored(uint32_t i) {
    const int64_t idx = Item(i);
    auto& nbr = item_nbr_[idx - 1];
    if (mc_.item_graph && item_users && nbr.empty()) {
      item_users(i, &scratch_);
      auto& w = item_nbr_w_[idx - 1];
      for (uint32_t v : scratch_) {
        nbr.push_back(User(v));
        w.push_back(degree_weights_ ? DegreeWeight(ds_.train[v].size()) : 1.0f);
      }
      Symmetric(ds_.item_popularity[i], &w);
    }
    return idx;
  }
  // The users of an item the item graph reads (set by the job: training draws, evaluation is fixed).
  std::function<void(uint32_t item, std::vector<uint32_t>* users)> item_users;

  int64_t Token(uint32_t t) {
    auto [it, fresh] = tmap_.emplace(t, int64_t(token_ids.size()) + 1);
    if (fresh) token_ids.push_back(t);
    return it->second;
  }

  // One user row of the user tower. hist: oldest first; nbr: items sampled from nbr_pool of
  // them (the size of the neighbourhood, for graph_weighting: symmetric).
  void AddUser(uint32_t u, const std::vector<uint32_t>& hist, const std::vector<uint32_t>& nbr, size_t nbr_pool,
               const std::vector<uint32_t>& friends) {
    users.push_back(User(u));
    const int L = mc_.seq_len, F = fanout_, T = mc_.content_tokens;
    const size_t pad = L - std::min<size_t>(L, hist.size());
    for (size_t k = 0; k < pad; ++k) {
      this->hist.push_back(0);
      hist_mask.push_back(0);
    }
    for (size_t k = hist.size() - (L - pad); k < hist.size(); ++k) {
      this->hist.push_back(Item(hist[k]));
      hist_mask.push_back(1);
    }
    std::vector<float> weight;
    auto fill = [F, &weight](const std::vector<int64_t>& idx, std::vector<int64_t>* out, std::vector<float>* mask) {
      for (int k = 0; k < F; ++k) {
        out->push_back(k < int(idx.size()) ? idx[k] : 0);
        mask->push_back(k < int(idx.size()) ? (k < int(weight.size()) ? weight[k] : 1.0f) : 0.0f);
      }
      weight.clear();
    };
    std::vector<int64_t> idx;
    if (mc_.graph) {
      for (uint32_t i : nbr) {
        idx.push_back(Item(i));
        if (degree_weights_) weight.push_back(DegreeWeight(ds_.item_popularity[i]));
      }
      Symmetric(nbr_pool, &weight);
    }
    fill(idx, &this->nbr, &nbr_mask);
    idx.clear();
    if (mc_.graph && shape_.social) {
      for (uint32_t v : friends) {  // in the social graph a friend's degree is its number of friends
        idx.push_back(User(v));
        if (degree_weights_) weight.push_back(DegreeWeight(FriendsOf(ds_, v).size()));
      }
      Symmetric(FriendsOf(ds_, u).size(), &weight);
    }
    fill(idx, &this->friends, &friends_mask);
    // Content: the user's profile tokens, then the tokens of the newest history items.
    int n = 0;
    if (mc_.content && shape_.tokens) {
      std::vector<uint32_t> seen;
      auto add = [&](uint32_t t) {
        if (n >= T || std::find(seen.begin(), seen.end(), t) != seen.end()) return;
        seen.push_back(t);
        utok.push_back(Token(t));
        utok_mask.push_back(1);
        ++n;
      };
      if (u < ds_.user_tokens.size())
        for (uint32_t t : ds_.user_tokens[u]) add(t);
      for (size_t k = hist.size(); k-- > 0 && n < T;)
        if (hist[k] < ds_.item_tokens.size())
          for (uint32_t t : ds_.item_tokens[hist[k]]) add(t);
    }
    for (; n < T; ++n) {
      utok.push_back(0);
      utok_mask.push_back(0);
    }
  }

  size_t num_users() const { return users.size(); }

  // The model's input; rows are pulled by the caller into urows/irows/trows.
  ModelBatch Tensors(std::vector<float>& urows, std::vector<float>& irows, std::vector<float>& trows,
                     bool grad, torch::Device dev) const {
    const int64_t d = shape_.dim, B = int64_t(users.size()), Ki = int64_t(item_ids.size());
    auto leaf = [&](std::vector<float>& v, size_t n, bool want_grad) {
      torch::Tensor t = n == 0 ? torch::zeros({0, d}) : torch::from_blob(v.data(), {int64_t(n), d}, torch::kFloat);
      t = t.to(dev);
      if (want_grad) t = t.detach().requires_grad_(true);
      return t;
    };
    ModelBatch b;
    b.user_rows = leaf(urows, user_ids.size(), grad);
    b.item_rows = mc_.item_id ? leaf(irows, item_ids.size(), grad) : torch::zeros({Ki, d}).to(dev);
    b.token_rows = leaf(trows, token_ids.size(), grad && !token_ids.empty());
    b.item_tok = LongTensor(item_tok, Ki, tt_).to(dev);
    b.item_tok_mask = FloatTensor(item_tok_mask, Ki, tt_).to(dev);
    auto features = [&](const std::vector<float>& m, uint32_t dim) {
      std::vector<float> f(size_t(Ki) * dim);
      for (int64_t k = 0; k < Ki; ++k)
        std::memcpy(&f[size_t(k) * dim], &m[size_t(item_ids[k]) * dim], dim * sizeof(float));
      return FloatTensor(f, Ki, dim).to(dev);
    };
    if (shape_.image_dim > 0) b.item_image = features(ds_.item_image, ds_.image_dim);
    if (shape_.audio_dim > 0) b.item_audio = features(ds_.item_audio, ds_.audio_dim);
    b.users = LongTensor(users, B, 1).view({B}).to(dev);
    b.hist = LongTensor(hist, B, mc_.seq_len).to(dev);
    b.hist_mask = FloatTensor(hist_mask, B, mc_.seq_len).to(dev);
    b.utok = LongTensor(utok, B, mc_.content_tokens).to(dev);
    b.utok_mask = FloatTensor(utok_mask, B, mc_.content_tokens).to(dev);
    b.nbr = LongTensor(nbr, B, fanout_).to(dev);
    b.nbr_mask = FloatTensor(nbr_mask, B, fanout_).to(dev);
    b.friends = LongTensor(friends, B, fanout_).to(dev);
    b.friends_mask = FloatTensor(friends_mask, B, fanout_).to(dev);
    if (mc_.item_graph) {
      const int64_t F = item_fanout_;
      std::vector<int64_t> idx(size_t(Ki) * F, 0);
      std::vector<float> mask(size_t(Ki) * F, 0.0f);
      for (int64_t k = 0; k < Ki; ++k)
        for (size_t j = 0; j < item_nbr_[k].size() && j < size_t(F); ++j) {
          idx[k * F + j] = item_nbr_[k][j];
          mask[k * F + j] = item_nbr_w_[k][j];
        }
      b.item_nbr = LongTensor(idx, Ki, F).to(dev);
      b.item_nbr_mask = FloatTensor(mask, Ki, F).to(dev);
    }
    return b;
  }

  std::vector<uint32_t> user_ids, item_ids, token_ids;
  std::vector<int64_t> users, hist, nbr, friends, utok, item_tok;
  std::vector<float> hist_mask, nbr_mask, friends_mask, utok_mask, item_tok_mask;

 private:
  static inline const std::vector<uint32_t> kNone{};
  const Dataset& ds_;
  const ModelConfig& mc_;
  const ModelShape& shape_;
  int tt_;
  int fanout_, item_fanout_;
  std::unordered_map<uint32_t, int64_t> umap_, imap_, tmap_;
  static float DegreeWeight(size_t degree) { return 1.0f / std::sqrt(float(std::max<size_t>(1, degree))); }
  // graph_weighting: symmetric — the model sums its neighbours' rows, each weighted
  // 1/sqrt(own degree · neighbour's degree) as in LightGCN; a sample of n of the node's `pool`
  // neighbours is scaled by pool/n so that the sum estimates the whole neighbourhood's.
  void Symmetric(size_t pool, std::vector<float>* w) const {
    if (!symmetric_ || w->empty()) return;
    const float scale = float(std::max(pool, w->size())) / float(w->size()) * DegreeWeight(pool);
    for (float& x : *w) x *= scale;
  }
  const bool symmetric_ = mc_.graph_weighting == "symmetric";
  const bool degree_weights_ = mc_.graph_weighting == "degree" || symmetric_;
  std::vector<std::vector<int64_t>> item_nbr_;  // per item index - 1: its sampled users' indices
  std::vector<std::vector<float>> item_nbr_w_;  // ... and their weights
  std::vector<uint32_t> scratch_;
};

// A batch with its pulls in flight.
struct Pending {
  std::unique_ptr<BatchBuilder> b;
  std::vector<Key> ukeys, ikeys, tkeys;
  std::vector<float> urows, irows, trows;
  PsClient::Ticket tu = 0, ti = 0, tt = 0;
  // training: positives (one per user row) and the shared negatives, as item indices
  std::vector<int64_t> pos, neg;
  std::vector<uint32_t> pos_items, neg_items;
};

// The dense replicas' synchronisation: gradient mean over workers, parameter broadcast and a
// fingerprint of the parameters (to check that the replicas are bit-identical).
class DenseSync {
 public:
  DenseSync(std::vector<torch::Tensor> params, Collective* coll)
      : params_(std::move(params)), coll_(coll) {
    for (const auto& p : params_) numel_ += p.numel();
  }
  int64_t numel() const { return numel_; }

  Status AllReduceGrads() {
    if (coll_->size() == 1 || numel_ == 0) return Status::OK();
    const bool on_device = coll_->capabilities().device_buffers;
    std::vector<torch::Tensor> flat;
    for (auto& p : params_) {
      torch::Tensor g = p.grad();
      flat.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({p.numel()}, p.options()));
    }
    torch::Tensor buf = torch::cat(flat);
    if (!on_device) buf = buf.to(torch::kCPU).contiguous();
    M6_RETURN_IF_ERROR(coll_->AllReduceSum(buf.data_ptr<float>(), size_t(numel_)));
    buf = (buf / double(coll_->size())).to(params_.empty() ? torch::kCPU : params_[0].device());
    int64_t off = 0;
    for (auto& p : params_) {
      auto g = buf.slice(0, off, off + p.numel()).view_as(p);
      if (p.grad().defined()) p.mutable_grad().copy_(g);
      else p.mutable_grad() = g.clone();
      off += p.numel();
    }
    return Status::OK();
  }

  Status BroadcastParams() {
    if (coll_->size() == 1 || numel_ == 0) return Status::OK();
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> flat;
    for (auto& p : params_) flat.push_back(p.detach().reshape({-1}));
    torch::Tensor buf = torch::cat(flat);
    if (!coll_->capabilities().device_buffers) buf = buf.to(torch::kCPU).contiguous();
    M6_RETURN_IF_ERROR(coll_->Broadcast(buf.data_ptr<float>(), size_t(numel_), 0));
    buf = buf.to(params_[0].device());
    int64_t off = 0;
    for (auto& p : params_) {
      p.copy_(buf.slice(0, off, off + p.numel()).view_as(p));
      off += p.numel();
    }
    return Status::OK();
  }

  // FNV-1a over the parameters' bytes, in order.
  uint64_t Fingerprint() const {
    uint64_t h = 1469598103934665603ull;
    for (const auto& p : params_) {
      auto c = p.detach().to(torch::kCPU).contiguous();
      const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
      for (size_t k = 0, n = size_t(c.numel()) * c.element_size(); k < n; ++k) h = (h ^ bytes[k]) * 1099511628211ull;
    }
    return h;
  }

 private:
  std::vector<torch::Tensor> params_;
  Collective* coll_;
  int64_t numel_ = 0;
};

// The metric sums of all workers (a collective call: every rank, same names in the same order).
StatusOr<MetricSums> GlobalSums(Collective& coll, const MetricSums& m, const std::vector<std::string>& names) {
  std::vector<float> packed{float(m.users())};
  for (const auto& n : names) {
    auto it = m.sums().find(n);
    packed.push_back(it == m.sums().end() ? 0.0f : float(it->second));
  }
  M6_RETURN_IF_ERROR(coll.AllReduceSum(packed.data(), packed.size()));
  MetricSums out;
  for (uint64_t u = 0; u < uint64_t(packed[0]); ++u) out.AddUser();
  for (size_t k = 0; k < names.size(); ++k) out.Add(names[k], packed[k + 1]);
  return out;
}

json MetricsJson(const MetricSums& m) {
  json j = {{"users", m.users()}};
  for (const auto& [k, v] : SummaryMetrics(m)) j[k] = v;
  return j;
}


}  // namespace

Status RunM6JobImpl(const JobContext& ctx, std::string* summary) {
  const JobConfig& cfg = *ctx.cfg;
  const TrainConfig& tc = cfg.train;
  const ModelConfig& mc = cfg.model;
  const TableSpec* ut = cfg.FindTable(tc.user_table);
  const TableSpec* it = cfg.FindTable(tc.item_table);
  const TableSpec* tt = cfg.FindTable(mc.token_table);
  if (!ctx.collective) return Status::Internal("m6 job: no collective");
  Collective& coll = *ctx.collective;

  M6_ASSIGN_OR_RETURN(Dataset ds, LoadDataset(cfg.data, ctx.data_dir));
  const bool full = ds.protocol == Dataset::Protocol::kFullRanking;
  ds.sampled_negatives = tc.eval_negatives;
  ModelShape shape;
  shape.dim = ut->dim;
  shape.tokens = ds.num_tokens > 0 && (mc.text || mc.content);
  shape.social = !ds.social.empty() && mc.social;
  shape.image_dim = mc.image ? ds.image_dim : 0;
  shape.audio_dim = mc.audio ? ds.audio_dim : 0;
  if (shape.tokens && !tt)
    return Status::InvalidArgument("the data has tokens but no table '" + mc.token_table +
                                   "' is declared (add it under tables, or set model.text and model.content to false)");
  int item_tokens = 1;
  for (const auto& l : ds.item_tokens) item_tokens = std::max<int>(item_tokens, std::min<int>(kMaxItemTokens, l.size()));

  torch::Device dev(torch::kCPU);
  if (mc.device == "cuda") {
    if (!torch::cuda::is_available())
      return Status::Unavailable("model.device is cuda, but this LibTorch sees no CUDA device (build against a CUDA LibTorch on a GPU machine)");
    dev = torch::Device(torch::kCUDA, 0);
  }
  // The same seed on every worker: the replicas start equal (and rank 0's copy is broadcast).
  torch::manual_seed(cfg.seed);
  M6Model model(mc, shape);
  model->to(dev);
  DenseSync sync(model->parameters(), &coll);
  M6_RETURN_IF_ERROR(sync.BroadcastParams());
  // A model with every dense part switched off (pure id embeddings) has no dense parameters.
  std::unique_ptr<torch::optim::Adam> opt;
  if (sync.numel() > 0)
    opt = std::make_unique<torch::optim::Adam>(model->parameters(),
                                               torch::optim::AdamOptions(mc.dense_lr).weight_decay(mc.dense_weight_decay));

  // This worker's shard: users u with u % W == rank; a sample is (user, position in train).
  const uint32_t W = ctx.num_workers;
  std::vector<uint32_t> my_users;
  std::vector<uint64_t> shard_samples(W, 0);
  for (uint32_t u = 0; u < ds.num_users; ++u) {
    if (ds.train[u].empty()) continue;
    shard_samples[u % W] += ds.train[u].size();
    if (u % W == ctx.rank) my_users.push_back(u);
  }
  std::vector<std::pair<uint32_t, uint32_t>> samples;
  for (uint32_t u : my_users)
    for (uint32_t k = 0; k < ds.train[u].size(); ++k) samples.emplace_back(u, k);
  if (samples.empty()) return Status::InvalidArgument("worker " + std::to_string(ctx.rank) + " has no training samples");
  const size_t B = tc.batch_size, M = tc.negatives;
  // Every worker runs the same number of steps (the allreduce needs every rank at every step):
  // the largest shard sets it, smaller shards wrap around.
  const size_t steps_per_epoch = (*std::max_element(shard_samples.begin(), shard_samples.end()) + B - 1) / B;
  if (ctx.rank == 0) {
    LOG_INFO << ds.Describe();
    std::string us, is;
    for (const auto& s : model->user_sources()) us += (us.empty() ? "" : "+") + s;
    for (const auto& s : model->item_sources()) is += (is.empty() ? "" : "+") + s;
    LOG_INFO << "m6 model: user tower " << us << ", item tower " << is << ", fusion " << mc.fusion << ", "
             << sync.numel() << " dense parameters on " << (dev.is_cuda() ? "cuda" : "cpu") << ", collective "
             << coll.name() << " over " << coll.size() << " worker(s)";
  }
  LOG_INFO << "worker " << ctx.rank << ": " << my_users.size() << " users, " << samples.size() << " samples, "
           << steps_per_epoch << " steps per epoch; loss " << tc.loss << ", " << M << " " << tc.negative_sampler
           << " negatives" << (tc.in_batch_negatives ? " + in-batch" : "") << ", staleness " << tc.staleness;

  const uint64_t eval_seed = Mix64(cfg.seed ^ 0xe7a1);
  const NegativeSampler sampler = tc.negative_sampler == "popularity"
                                      ? NegativeSampler(ds.item_popularity, ds.first_item, 0.75)
                                      : NegativeSampler(ds.first_item, ds.num_items);
  std::mt19937_64 rng(Mix64(cfg.seed ^ (uint64_t{ctx.rank} << 32)));
  auto friends_of = [&](uint32_t u) -> const std::vector<uint32_t>& { return FriendsOf(ds, u); };
  // The item graph's neighbours: an item's training users. Evaluation reads a fixed sample per item.
  const std::vector<std::vector<uint32_t>> item_users = mc.item_graph ? ds.ItemUsers() : std::vector<std::vector<uint32_t>>{};
  // Evaluation reads wider neighbourhoods than a training step when model.eval_fanout says so:
  // the mean over more neighbours is the expectation of the training-time sampled mean.
  const int eval_fanout = mc.eval_fanout > 0 ? mc.eval_fanout : mc.fanout;
  const int eval_item_fanout = mc.eval_fanout > 0 ? mc.eval_fanout : mc.item_fanout;
  auto eval_builder = [&]() {
    auto b = std::make_unique<BatchBuilder>(ds, mc, shape, item_tokens, eval_fanout, eval_item_fanout);
    if (mc.item_graph)
      b->item_users = [&](uint32_t i, std::vector<uint32_t>* out) {
        *out = SampleNeighboursFixed(item_users[i], eval_item_fanout, -1, eval_seed ^ 2, i);
      };
    return b;
  };

  auto issue = [&](Pending* p) -> Status {
    const BatchBuilder& b = *p->b;
    p->ukeys.resize(b.user_ids.size());
    for (size_t k = 0; k < b.user_ids.size(); ++k) p->ukeys[k] = MakeKey(ut->id, b.user_ids[k]);
    p->ikeys.clear();
    if (mc.item_id)
      for (uint32_t i : b.item_ids) p->ikeys.push_back(MakeKey(it->id, i));
    p->tkeys.resize(b.token_ids.size());
    for (size_t k = 0; k < b.token_ids.size(); ++k) p->tkeys[k] = MakeKey(tt->id, b.token_ids[k]);
    if (!p->ukeys.empty()) {
      M6_ASSIGN_OR_RETURN(p->tu, ctx.ps->PullAsync(ut->id, p->ukeys.data(), p->ukeys.size()));
    }
    if (!p->ikeys.empty()) {
      M6_ASSIGN_OR_RETURN(p->ti, ctx.ps->PullAsync(it->id, p->ikeys.data(), p->ikeys.size()));
    }
    if (!p->tkeys.empty()) {
      M6_ASSIGN_OR_RETURN(p->tt, ctx.ps->PullAsync(tt->id, p->tkeys.data(), p->tkeys.size()));
    }
    return Status::OK();
  };
  auto wait = [&](Pending* p) -> Status {
    const size_t d = shape.dim;
    p->urows.resize(p->ukeys.size() * d);
    p->irows.resize(p->ikeys.size() * d);
    p->trows.resize(p->tkeys.size() * d);
    if (p->tu) M6_RETURN_IF_ERROR(ctx.ps->WaitPull(p->tu, p->urows.data()));
    if (p->ti) M6_RETURN_IF_ERROR(ctx.ps->WaitPull(p->ti, p->irows.data()));
    if (p->tt) M6_RETURN_IF_ERROR(ctx.ps->WaitPull(p->tt, p->trows.data()));
    p->tu = p->ti = p->tt = 0;
    return Status::OK();
  };

  // Training batch `step` of the epoch from the shuffled samples (wrapping around).
  auto make_train = [&](size_t step, Pending* p) -> Status {
    p->b = std::make_unique<BatchBuilder>(ds, mc, shape, item_tokens, mc.fanout, mc.item_fanout);
    p->pos.clear();
    p->neg.clear();
    p->pos_items.clear();
    p->neg_items.clear();
    BatchBuilder& b = *p->b;
    if (mc.item_graph) {
      // The edge being predicted stays out of the item graph: a positive's sampled users never
      // include the batch's users who have it as their target (they would see themselves).
      auto targets = std::make_shared<std::unordered_map<uint32_t, std::vector<uint32_t>>>();
      for (size_t s = 0; s < B; ++s) {
        const auto [u, k] = samples[(step * B + s) % samples.size()];
        (*targets)[ds.train[u][k]].push_back(u);
      }
      b.item_users = [&, targets](uint32_t i, std::vector<uint32_t>* out) {
        auto t = targets->find(i);
        const size_t skip = t == targets->end() ? 0 : t->second.size();
        *out = SampleNeighbours(item_users[i], mc.item_fanout + int(skip), -1, rng);
        if (skip > 0)
          out->erase(std::remove_if(out->begin(), out->end(),
                                    [&](uint32_t v) {
                                      return std::find(t->second.begin(), t->second.end(), v) != t->second.end();
                                    }),
                     out->end());
        if (out->size() > size_t(mc.item_fanout)) out->resize(mc.item_fanout);
      };
    }
    std::vector<uint32_t> hist, nbr, fr, prefix;
    size_t pool = 0;
    for (size_t s = 0; s < B; ++s) {
      const auto [u, k] = samples[(step * B + s) % samples.size()];
      const uint32_t item = ds.train[u][k];
      hist = mc.sequence ? HistoryWindow(ds.train[u], k, mc.seq_len, ds.ordered) : std::vector<uint32_t>{};
      if (mc.graph) {
        // On time-ordered data the graph sees only what came before the target, as at test
        // time (where every training item precedes the held-out one).
        if (ds.ordered) {
          prefix.assign(ds.train[u].begin(), ds.train[u].begin() + k);
          nbr = SampleNeighbours(prefix, mc.fanout, -1, rng);
          pool = prefix.size();
        } else {
          nbr = SampleNeighbours(ds.train[u], mc.fanout, item, rng);
          pool = ds.train[u].size() - 1;
        }
        fr = SampleNeighbours(friends_of(u), mc.fanout, -1, rng);
      }
      b.AddUser(u, hist, nbr, pool, fr);
      p->pos.push_back(b.Scored(item));
      p->pos_items.push_back(item);
    }
    for (size_t j = 0; j < M; ++j) {
      const uint32_t n = sampler.Draw(rng);
      p->neg.push_back(b.Scored(n));
      p->neg_items.push_back(n);
    }
    return issue(p);
  };

  // Vectors of users (with their eval-time inputs) and of arbitrary items, in eval mode.
  auto build_eval_users = [&](const std::vector<uint32_t>& users, bool with_valid, BatchBuilder* b) {
    std::vector<uint32_t> seq;
    for (uint32_t u : users) {
      seq = ds.train[u];
      if (with_valid && !full && ds.valid_item[u] >= 0) seq.push_back(uint32_t(ds.valid_item[u]));
      b->AddUser(u, mc.sequence ? HistoryWindow(seq, -1, mc.seq_len, ds.ordered) : std::vector<uint32_t>{},
                 mc.graph ? SampleNeighboursFixed(ds.train[u], eval_fanout, -1, eval_seed, u) : std::vector<uint32_t>{},
                 ds.train[u].size(),
                 mc.graph ? SampleNeighboursFixed(friends_of(u), eval_fanout, -1, eval_seed ^ 1, u) : std::vector<uint32_t>{});
    }
  };
  SampledScorer sampled_scorer = [&](const std::vector<uint32_t>& users, const std::vector<std::vector<uint32_t>>& cands,
                                     bool with_valid, std::vector<std::vector<float>>* scores) -> Status {
    Pending p;
    p.b = eval_builder();
    build_eval_users(users, with_valid, p.b.get());
    std::vector<int64_t> cidx;
    for (const auto& c : cands)
      for (uint32_t i : c) cidx.push_back(p.b->Scored(i));
    M6_RETURN_IF_ERROR(issue(&p));
    M6_RETURN_IF_ERROR(wait(&p));
    torch::NoGradGuard ng;
    ModelBatch mb = p.b->Tensors(p.urows, p.irows, p.trows, false, dev);
    auto iv = model->ItemVectors(mb);
    auto uv = model->UserVectors(mb, iv);
    auto civ = WithPadRow(model->ScoredItemVectors(mb, iv)).index_select(0, LongTensor(cidx, int64_t(cidx.size()), 1).view({-1}).to(dev));
    const int64_t n = int64_t(cands[0].size());
    for (const auto& c : cands)
      if (int64_t(c.size()) != n) return Status::Internal("ragged candidate lists");
    auto s = (uv.unsqueeze(1) * civ.view({int64_t(users.size()), n, -1})).sum(-1).to(torch::kCPU).contiguous();
    const float* sp = s.data_ptr<float>();
    for (size_t c = 0; c < users.size(); ++c) scores->emplace_back(sp + c * n, sp + (c + 1) * n);
    return Status::OK();
  };
  torch::Tensor all_items;  // full ranking: every item's vector, computed once per evaluation
  auto compute_all_items = [&]() -> Status {
    std::vector<torch::Tensor> parts;
    // ~160k neighbour slots per chunk (8192 items at 20 neighbours) bound the gathered rows.
    const uint32_t kChunk = mc.item_graph ? std::max<uint32_t>(256, 163840 / uint32_t(eval_item_fanout)) : 8192;
    for (uint32_t start = 0; start < ds.num_items; start += kChunk) {
      Pending p;
      p.b = eval_builder();
      for (uint32_t i = start; i < std::min(ds.num_items, start + kChunk); ++i) p.b->Scored(i);
      M6_RETURN_IF_ERROR(issue(&p));
      M6_RETURN_IF_ERROR(wait(&p));
      torch::NoGradGuard ng;
      ModelBatch mb = p.b->Tensors(p.urows, p.irows, p.trows, false, dev);
      parts.push_back(model->ScoredItemVectors(mb, model->ItemVectors(mb)));
    }
    all_items = torch::cat(parts, 0);
    return Status::OK();
  };
  FullScorer full_scorer = [&](const std::vector<uint32_t>& users, std::vector<float>* scores) -> Status {
    Pending p;
    p.b = eval_builder();
    build_eval_users(users, false, p.b.get());
    M6_RETURN_IF_ERROR(issue(&p));
    M6_RETURN_IF_ERROR(wait(&p));
    torch::NoGradGuard ng;
    ModelBatch mb = p.b->Tensors(p.urows, p.irows, p.trows, false, dev);
    auto uv = model->UserVectors(mb, model->ItemVectors(mb));
    auto s = uv.matmul(all_items.t()).to(torch::kCPU).contiguous();
    scores->assign(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
    return Status::OK();
  };

  auto evaluate = [&](MetricSums* test, MetricSums* valid) -> Status {
    model->eval();
    if (full) {
      M6_RETURN_IF_ERROR(compute_all_items());
      M6_RETURN_IF_ERROR(EvalFullProtocol(ds, my_users, full_scorer, test));
      all_items = torch::Tensor();
      return Status::OK();
    }
    M6_RETURN_IF_ERROR(EvalSampledProtocol(ds, my_users, false, eval_seed, 0.0f, sampled_scorer, test));
    return EvalSampledProtocol(ds, my_users, true, eval_seed, 0.0f, sampled_scorer, valid);
  };

  // Serving from a checkpoint: the dense part from its file, the sparse rows from the servers.
  if (!ctx.checkpoint.empty()) {
    try {
      torch::load(model, ctx.checkpoint);
    } catch (const c10::Error& e) {
      return Status::IOError("cannot load the dense checkpoint '" + ctx.checkpoint +
                             "': " + e.what_without_backtrace());
    }
    model->to(dev);
  }
  if (ctx.mode == "recommend") {
    const int64_t u = ctx.recommend_user;
    if (u < 0 || u >= int64_t(ds.num_users))
      return Status::InvalidArgument("--user " + std::to_string(u) + ": the data has users 0.." +
                                     std::to_string(ds.num_users - 1));
    model->eval();
    M6_RETURN_IF_ERROR(compute_all_items());
    // Everything the user is known to have touched is history, and is excluded from the list.
    std::vector<uint32_t> seen = ds.train[u];
    if (!full) {
      for (int64_t extra : {ds.valid_item[u], ds.test_item[u]})
        if (extra >= 0) seen.push_back(uint32_t(extra));
    } else {
      seen.insert(seen.end(), ds.test_sets[u].begin(), ds.test_sets[u].end());
    }
    Pending p;
    p.b = eval_builder();
    p.b->AddUser(uint32_t(u), mc.sequence ? HistoryWindow(seen, -1, mc.seq_len, ds.ordered) : std::vector<uint32_t>{},
                 mc.graph ? SampleNeighboursFixed(seen, eval_fanout, -1, eval_seed, u) : std::vector<uint32_t>{},
                 seen.size(),
                 mc.graph ? SampleNeighboursFixed(friends_of(u), eval_fanout, -1, eval_seed ^ 1, u) : std::vector<uint32_t>{});
    M6_RETURN_IF_ERROR(issue(&p));
    M6_RETURN_IF_ERROR(wait(&p));
    torch::NoGradGuard ng;
    ModelBatch mb = p.b->Tensors(p.urows, p.irows, p.trows, false, dev);
    auto uv = model->UserVectors(mb, model->ItemVectors(mb));
    auto s = uv.matmul(all_items.t()).view({-1}).to(torch::kCPU).contiguous();
    std::vector<float> scores(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
    for (uint32_t i : seen) scores[i] = -1e30f;
    for (uint32_t i = 0; i < ds.first_item; ++i) scores[i] = -1e30f;
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    json items = json::array();
    for (uint32_t i : TopK(scores, ctx.recommend_k))
      if (scores[i] > -1e29f) items.push_back({{"item", i}, {"score", scores[i]}});
    *summary = json({{"user", u}, {"k", ctx.recommend_k}, {"seen", seen.size()}, {"items", items}}).dump();
    return Status::OK();
  }
  if (ctx.mode == "eval") {
    MetricSums test, valid;
    M6_RETURN_IF_ERROR(evaluate(&test, &valid));
    json j = {{"dataset", ds.name}, {"protocol", full ? "full_ranking" : "sampled"}, {"test", MetricsJson(test)}};
    if (!full) j["valid"] = MetricsJson(valid);
    *summary = j.dump();
    return Status::OK();
  }

  MetricSums pop;
  M6_RETURN_IF_ERROR(EvalPopularity(ds, my_users, eval_seed, &pop));

  TrainProgress prog(tc.log_every);
  json epochs = json::array(), hashes = json::array();
  bool stop = false;
  constexpr uint64_t kHashedSteps = 64;  // fingerprints of the first steps go into the summary
  for (int epoch = 1; epoch <= tc.epochs && !stop; ++epoch) {
    std::shuffle(samples.begin(), samples.end(), rng);
    model->train();
    Pending cur, next;
    M6_RETURN_IF_ERROR(make_train(0, &cur));
    prog.StartEpoch();
    for (size_t step = 0; step < steps_per_epoch; ++step) {
      std::string why;
      if (ctx.should_abort && ctx.should_abort(&why)) return Status::Aborted(why);
      M6_RETURN_IF_ERROR(wait(&cur));
      const bool has_next = step + 1 < steps_per_epoch && !(tc.max_steps > 0 && prog.steps() + 1 >= uint64_t(tc.max_steps));
      if (has_next && tc.staleness > 0) M6_RETURN_IF_ERROR(make_train(step + 1, &next));

      ModelBatch mb = cur.b->Tensors(cur.urows, cur.irows, cur.trows, true, dev);
      auto iv = model->ItemVectors(mb);
      auto uv = model->UserVectors(mb, iv);
      auto ivp = WithPadRow(model->ScoredItemVectors(mb, iv));
      const int64_t nb = int64_t(cur.pos.size());
      auto posv = ivp.index_select(0, LongTensor(cur.pos, nb, 1).view({-1}).to(dev));
      auto negv = ivp.index_select(0, LongTensor(cur.neg, int64_t(M), 1).view({-1}).to(dev));
      if (tc.loss == "ccl") {
        uv = torch::nn::functional::normalize(uv, torch::nn::functional::NormalizeFuncOptions().dim(1));
        posv = torch::nn::functional::normalize(posv, torch::nn::functional::NormalizeFuncOptions().dim(1));
        negv = torch::nn::functional::normalize(negv, torch::nn::functional::NormalizeFuncOptions().dim(1));
      }
      auto s_pos = (uv * posv).sum(1);
      auto s_neg = uv.matmul(negv.t());
      // A negative equal to the row's own positive is no negative.
      std::vector<float> valid(size_t(nb) * M);
      for (int64_t r = 0; r < nb; ++r)
        for (size_t j = 0; j < M; ++j) valid[r * M + j] = cur.neg_items[j] != cur.pos_items[r];
      torch::Tensor vt = FloatTensor(valid, nb, int64_t(M)).to(dev);
      if (tc.in_batch_negatives) {
        std::vector<float> vib(size_t(nb) * nb);
        for (int64_t r = 0; r < nb; ++r)
          for (int64_t c = 0; c < nb; ++c) vib[r * nb + c] = cur.pos_items[c] != cur.pos_items[r];
        s_neg = torch::cat({s_neg, uv.matmul(posv.t())}, 1);
        vt = torch::cat({vt, FloatTensor(vib, nb, nb).to(dev)}, 1);
      }
      auto loss = RankingLoss(tc.loss, s_pos, s_neg, vt, tc.temperature, tc.margin, tc.neg_weight);
      if (opt) opt->zero_grad();
      loss.backward();

      // Sparse gradients to the servers (row i of each grad belongs to key i of the pull).
      std::vector<PsClient::Ticket> pushes;
      std::vector<torch::Tensor> keep;
      auto push = [&](const TableSpec* t, const std::vector<Key>& keys, const torch::Tensor& rows) -> Status {
        if (keys.empty() || !rows.grad().defined()) return Status::OK();
        keep.push_back(rows.grad().to(torch::kCPU).contiguous());
        M6_ASSIGN_OR_RETURN(auto tk, ctx.ps->PushAsync(t->id, keys.data(), keys.size(), keep.back().data_ptr<float>()));
        pushes.push_back(tk);
        return Status::OK();
      };
      M6_RETURN_IF_ERROR(push(ut, cur.ukeys, mb.user_rows));
      if (mc.item_id) M6_RETURN_IF_ERROR(push(it, cur.ikeys, mb.item_rows));
      M6_RETURN_IF_ERROR(push(tt, cur.tkeys, mb.token_rows));
      // Dense gradients: mean over workers, then the same Adam step everywhere.
      M6_RETURN_IF_ERROR(sync.AllReduceGrads());
      if (opt) opt->step();
      for (auto t : pushes) M6_RETURN_IF_ERROR(ctx.ps->WaitPush(t));
      if (prog.steps() < kHashedSteps) hashes.push_back(std::to_string(sync.Fingerprint()));

      prog.Step(epoch, loss.item<double>() * nb, uint64_t(nb));
      if (!has_next) {
        if (tc.max_steps > 0 && prog.steps() >= uint64_t(tc.max_steps)) stop = true;
        break;
      }
      if (tc.staleness == 0) M6_RETURN_IF_ERROR(make_train(step + 1, &next));
      std::swap(cur, next);
    }
    const double last_loss = prog.EndEpoch();
    if (epoch % tc.eval_every != 0 && epoch != tc.epochs && !stop) continue;
    M6_RETURN_IF_ERROR(ctx.barrier("epoch-" + std::to_string(epoch)));
    const int64_t e0 = MonotonicMs();
    MetricSums test, valid;
    M6_RETURN_IF_ERROR(evaluate(&test, &valid));
    prog.AddEvalMs(MonotonicMs() - e0);
    json gates = json::object();
    for (auto [name, f, srcs] : {std::make_tuple("user", model->user_fusion, &model->user_sources()),
                                 std::make_tuple("item", model->item_fusion, &model->item_sources())}) {
      if (!f->last_gates.defined()) continue;
      auto g = f->last_gates.to(torch::kCPU);
      for (size_t k = 0; k < srcs->size(); ++k) gates[name][(*srcs)[k]] = g[int64_t(k)].item<double>();
    }
    LOG_INFO << EpochSummary(epoch, last_loss, full, test, valid) << (gates.empty() ? "" : "; gates " + gates.dump());
    epochs.push_back({{"epoch", epoch}, {"loss", last_loss}, {"test", SumsJson(test)}, {"valid", SumsJson(valid)},
                      {"gates", gates}, {"elapsed_s", prog.elapsed_s()}});
    // The metrics log: one JSON line per evaluated epoch, over all workers.
    const std::vector<std::string> names =
        full ? std::vector<std::string>{"NDCG@20", "Recall@20"}
             : std::vector<std::string>{"AUC", "FN", "FP", "HR@1", "HR@10", "HR@5", "MRR", "NDCG@10", "NDCG@5", "TN", "TP"};
    M6_ASSIGN_OR_RETURN(MetricSums gtest, GlobalSums(coll, test, names));
    M6_ASSIGN_OR_RETURN(MetricSums gvalid, GlobalSums(coll, valid, names));
    float gloss = float(last_loss / W);
    M6_RETURN_IF_ERROR(coll.AllReduceSum(&gloss, 1));
    if (ctx.rank == 0 && !ctx.run_dir.empty()) {
      json line = {{"epoch", epoch}, {"steps", prog.steps()}, {"loss", gloss}, {"test", MetricsJson(gtest)},
                   {"elapsed_s", prog.elapsed_s()}, {"gates", gates}};
      if (!full) line["valid"] = MetricsJson(gvalid);
      std::ofstream log(ctx.run_dir + "/metrics.jsonl", std::ios::app);
      log << line.dump() << "\n";
      if (!log) return Status::IOError("cannot append to " + ctx.run_dir + "/metrics.jsonl");
    }
  }
  const uint64_t final_hash = sync.Fingerprint();

  // Checkpoint of the dense part (the sparse part is the servers' stores): rank 0 writes it.
  if (ctx.rank == 0 && !ctx.run_dir.empty()) {
    const std::string dir = ctx.run_dir + "/checkpoint";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    try {
      torch::save(model, dir + "/dense.pt.tmp");
      if (opt) torch::save(*opt, dir + "/dense_optimizer.pt.tmp");
    } catch (const c10::Error& e) {
      return Status::IOError("checkpoint: " + std::string(e.what_without_backtrace()));
    }
    std::filesystem::rename(dir + "/dense.pt.tmp", dir + "/dense.pt", ec);
    if (!ec && opt) std::filesystem::rename(dir + "/dense_optimizer.pt.tmp", dir + "/dense_optimizer.pt", ec);
    if (ec) return Status::IOError("checkpoint: cannot write under " + dir + ": " + ec.message());
    json manifest = {{"steps", prog.steps()}, {"dense_params", sync.numel()}, {"dense_fingerprint", std::to_string(final_hash)},
                     {"user_sources", model->user_sources()}, {"item_sources", model->item_sources()},
                     {"sparse", "the servers' stores (ps.store) hold every row and its optimizer state"}};
    M6_RETURN_IF_ERROR(WriteFileAtomic(dir + "/manifest.json", manifest.dump(2) + "\n"));
  }

  json j = {{"rank", ctx.rank},
            {"job", "m6"},
            {"dataset", ds.name},
            {"protocol", full ? "full_ranking" : "sampled"},
            {"dense_params", sync.numel()},
            {"collective", coll.name()},
            {"param_fingerprints", hashes},
            {"final_fingerprint", std::to_string(final_hash)},
            {"user_sources", model->user_sources()},
            {"item_sources", model->item_sources()},
            {"popularity", SumsJson(pop)},
            {"epochs", epochs}};
  j.update(prog.Summary());
  *summary = j.dump();
  return Status::OK();
}

Status RunM6Job(const JobContext& ctx, std::string* summary) {
  // LibTorch reports misuse (shapes, devices, memory) by exception: one clear error, not an abort.
  try {
    return RunM6JobImpl(ctx, summary);
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("LibTorch: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(e.what());
  }
}

}  // namespace m6rec
