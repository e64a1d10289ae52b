#include "worker/model.h"

#include <cmath>

namespace m6rec {

namespace nn = torch::nn;

torch::Tensor WithPadRow(const torch::Tensor& rows) {
  return torch::cat({torch::zeros({1, rows.size(1)}, rows.options()), rows}, 0);
}

namespace {
// rows[idx] for an index tensor of any shape: [..., d].
torch::Tensor Gather(const torch::Tensor& rows, const torch::Tensor& idx) {
  auto sizes = idx.sizes().vec();
  sizes.push_back(rows.size(1));
  return rows.index_select(0, idx.reshape({-1})).view(sizes);
}
}  // namespace

torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask) {
  auto m = mask.unsqueeze(-1);
  // A weighted mean when the mask holds weights; rows without any weight give 0.
  return (x * m).sum(1) / m.sum(1).clamp_min(1e-12);
}

torch::Tensor AttentionPool(const torch::Tensor& x, const torch::Tensor& q,
                            const torch::Tensor& mask, torch::Tensor* weights) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(x.size(-1)));
  torch::Tensor s = q.dim() == 1 ? torch::matmul(x, q) : (x * q.unsqueeze(1)).sum(-1);  // [N, K]
  s = (s * scale).masked_fill(mask <= 0, -1e9);
  auto w = torch::softmax(s, 1) * mask;  // rows with no valid entry pool to 0
  if (weights) *weights = w.detach();
  return (w.unsqueeze(-1) * x).sum(1);
}

torch::Tensor PerConditionLowRank(const torch::Tensor& x, const torch::Tensor& cond,
                                  const torch::Tensor& down, const torch::Tensor& up) {
  // Every condition's D applied to every row, then only the row's own condition kept:
  // [N, in] x [in, C r] -> mask -> x [C r, out]. Cheap for the few conditions a job has.
  const int64_t C = down.size(0), r = down.size(1);
  auto a = torch::matmul(x, down.reshape({C * r, -1}).t());
  auto own = torch::one_hot(cond, C).to(a.dtype()).repeat_interleave(r, 1);
  return torch::matmul(a * own, up.permute({0, 2, 1}).reshape({C * r, -1}));
}

bool FusionImpl::PerCondition(const std::string& name) {
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
           (name.size() == suffix.size() || name[name.size() - suffix.size() - 1] == '.');
  };
  return ends("cond_emb.weight") || ends("film.weight") || ends("adapter_gate") ||
         ends("adapter_down") || ends("adapter_up");
}

FusionImpl::FusionImpl(int64_t sources, int64_t dim, int64_t hidden, FusionKind mode,
                       double dropout, int64_t conditions, int64_t adapter_rank)
    : mode_(mode), sources_(sources), conditions_(conditions), rank_(adapter_rank) {
  if (conditions_ > 1) {
    film_ = register_module("film", nn::Embedding(conditions_, 2 * dim));
    torch::NoGradGuard ng;
    film_->weight.zero_();  // scale 1 + 0, shift 0: the identity until a domain learns its own
  }
  if (mode_ == FusionKind::kMean) return;
  const int64_t cond_in = conditions_ > 1 && mode_ == FusionKind::kGate ? kConditionDim : 0;
  if (cond_in > 0) {
    cond_emb_ = register_module("cond_emb", nn::Embedding(conditions_, kConditionDim));
    torch::NoGradGuard ng;
    cond_emb_->weight.normal_(0.0, 1.0);
  }
  if (mode_ == FusionKind::kGate)
    gate_ = register_module("gate", nn::Linear(sources * dim + cond_in, sources));
  reduce_ = register_module("reduce", nn::Linear(sources * dim, dim));
  mlp1_ = register_module("mlp1", nn::Linear(dim, hidden));
  mlp2_ = register_module("mlp2", nn::Linear(hidden, dim));
  drop_ = register_module("drop", nn::Dropout(dropout));
  // Start as the plain mean of the sources: gates open (sigmoid(3) = 0.95, input-independent),
  // the reduction the averaging map, the residual MLP silent (zero output layer). The model
  // then begins where an id model with behaviour aggregation is, and learns departures from it;
  // random dense maps on both towers started it far below that on Gowalla.
  torch::NoGradGuard ng;
  if (gate_) {
    gate_->weight.zero_();
    gate_->bias.fill_(kOpenGate);
  }
  reduce_->weight.zero_();
  for (int64_t s = 0; s < sources; ++s)
    reduce_->weight.narrow(1, s * dim, dim).add_(torch::eye(dim) / double(sources));
  reduce_->bias.zero_();
  mlp2_->weight.zero_();
  mlp2_->bias.zero_();
  if (conditions_ > 1 && rank_ > 0) {
    // Adapters start silent: no gate offset, B = 0 (A random, so B's gradient is not zero).
    if (gate_)
      adapter_gate_ = register_parameter("adapter_gate", torch::zeros({conditions_, sources}));
    adapter_down_ =
        register_parameter("adapter_down", torch::randn({conditions_, rank_, sources * dim}) /
                                               std::sqrt(double(sources * dim)));
    adapter_up_ = register_parameter("adapter_up", torch::zeros({conditions_, dim, rank_}));
  }
}

void FusionImpl::ResetConditionGates() {
  if (conditions_ <= 1 || mode_ != FusionKind::kGate) return;
  auto o = gate_->weight.options().requires_grad(false);
  cond_gate_sum_ = torch::zeros({conditions_, sources_}, o);
  cond_rows_ = torch::zeros({conditions_}, o);
}

torch::Tensor FusionImpl::ConditionGates() const {
  if (!cond_gate_sum_.defined()) return {};
  return cond_gate_sum_ / cond_rows_.unsqueeze(1);
}

void FusionImpl::SetPlainConditions(const std::vector<int64_t>& conditions) {
  if (conditions.empty() || conditions_ <= 1) {
    plain_ = torch::Tensor();
    return;
  }
  plain_ = torch::zeros({conditions_}, torch::kBool);
  for (int64_t c : conditions) plain_[c] = true;
}

torch::Tensor FusionImpl::forward(const torch::Tensor& xs, const torch::Tensor& cond) {
  const bool conditioned = conditions_ > 1 && cond.defined();
  // The condition's head: y * (1 + scale) + shift.
  auto head = [&](const torch::Tensor& y) {
    if (!conditioned) return y;
    auto ss = film_(cond).chunk(2, 1);
    return y * (1 + ss[0]) + ss[1];
  };
  if (mode_ == FusionKind::kMean) return head(xs.mean(1));
  const int64_t n = xs.size(0);
  if (n == 0) return torch::zeros({0, xs.size(2)}, xs.options());
  torch::Tensor flat = xs.reshape({n, -1});
  // Rows of a plain condition (SetPlainConditions): [N, 1]. The flags move to the rows'
  // device once, not on every forward.
  torch::Tensor plain;
  if (conditioned && plain_.defined()) {
    if (plain_.device() != cond.device()) plain_ = plain_.to(cond.device());
    plain = plain_.index_select(0, cond).unsqueeze(1);
  }
  if (mode_ == FusionKind::kGate) {
    torch::Tensor in = flat;
    if (cond_emb_) {
      // Without a condition (a caller that has none) the gates see the mean condition.
      auto c = conditioned ? cond_emb_(cond) : cond_emb_->weight.mean(0).expand({n, -1});
      in = torch::cat({flat, c}, 1);
    }
    auto logits = gate_(in);
    if (plain.defined()) logits = torch::where(plain, torch::full_like(logits, kOpenGate), logits);
    if (adapter_gate_.defined() && conditioned)
      logits = logits + adapter_gate_.index_select(0, cond);
    auto g = torch::sigmoid(logits);  // [N, S]: how much each source speaks for this row
    last_gates = g.detach().mean(0);
    last_row_gates = g.detach();
    if (conditioned) {
      auto gd = g.detach();
      auto oh = torch::one_hot(cond, conditions_).to(gd.dtype());  // [N, C]
      if (!cond_gate_sum_.defined() || cond_gate_sum_.scalar_type() != gd.scalar_type())
        ResetConditionGates();
      cond_gate_sum_ = cond_gate_sum_.to(gd.device()) + oh.t().matmul(gd);
      cond_rows_ = cond_rows_.to(gd.device()) + oh.sum(0);
    }
    flat = (xs * g.unsqueeze(-1)).reshape({n, -1});
  }
  auto y = reduce_(flat);
  torch::Tensor low;
  if (adapter_down_.defined() && conditioned)
    low = PerConditionLowRank(flat, cond, adapter_down_, adapter_up_);
  if (low.defined()) y = y + low;
  auto out = y + mlp2_(drop_(torch::relu(mlp1_(y))));
  if (plain.defined()) {
    // Plain rows: the starting map — the reduction's average of the gated sources, no
    // residual — plus the condition's adapter.
    auto mean = flat.reshape({n, sources_, -1}).mean(1);
    out = torch::where(plain, low.defined() ? mean + low : mean, out);
  }
  return head(out);
}

LowRankAdapterImpl::LowRankAdapterImpl(int64_t conditions, int64_t in, int64_t out, int64_t rank) {
  down_ = register_parameter("adapter_down",
                             torch::randn({conditions, rank, in}) / std::sqrt(double(in)));
  up_ = register_parameter("adapter_up", torch::zeros({conditions, out, rank}));
}

torch::Tensor LowRankAdapterImpl::forward(const torch::Tensor& x, const torch::Tensor& cond) {
  return PerConditionLowRank(x, cond, down_, up_);
}

SelfAttentionEncoderImpl::SelfAttentionEncoderImpl(int64_t dim, int64_t len, int64_t blocks,
                                                   double dropout) {
  pos_ = register_parameter("pos", torch::randn({len, dim}) * 0.02);
  norm1_ = register_module("norm1", nn::ModuleList());
  qkv_ = register_module("qkv", nn::ModuleList());
  norm2_ = register_module("norm2", nn::ModuleList());
  ff1_ = register_module("ff1", nn::ModuleList());
  ff2_ = register_module("ff2", nn::ModuleList());
  for (int64_t b = 0; b < blocks; ++b) {
    norm1_->push_back(nn::LayerNorm(nn::LayerNormOptions({dim})));
    qkv_->push_back(nn::Linear(dim, 3 * dim));
    norm2_->push_back(nn::LayerNorm(nn::LayerNormOptions({dim})));
    ff1_->push_back(nn::Linear(dim, dim));
    ff2_->push_back(nn::Linear(dim, dim));
  }
  out_norm_ = register_module("out_norm", nn::LayerNorm(nn::LayerNormOptions({dim})));
  drop_ = register_module("drop", nn::Dropout(dropout));
}

torch::Tensor SelfAttentionEncoderImpl::forward(const torch::Tensor& seq,
                                                const torch::Tensor& mask) {
  const int64_t L = seq.size(1), d = seq.size(2);
  const auto m = mask.unsqueeze(-1);  // [B, L, 1]
  // Positions by slot from the newest (slot L-1), so the newest item always has the same one.
  auto x = drop_((seq * std::sqrt(double(d)) + pos_.narrow(0, pos_.size(0) - L, L)) * m);
  const auto key_pad = (mask <= 0).unsqueeze(1);  // [B, 1, L]: padding keys
  const double scale = 1.0 / std::sqrt(double(d));
  for (size_t b = 0; b < qkv_->size(); ++b) {
    auto h = norm1_[b]->as<nn::LayerNorm>()->forward(x);
    auto qkv = qkv_[b]->as<nn::Linear>()->forward(h).chunk(3, -1);
    auto s = torch::matmul(qkv[0], qkv[1].transpose(1, 2)) * scale;  // [B, L, L]
    // A row of nothing but padding (an empty history) attends uniformly and is zeroed below.
    auto w = torch::softmax(s.masked_fill(key_pad, -1e9), -1);
    x = x + drop_(torch::matmul(w, qkv[2]));
    h = norm2_[b]->as<nn::LayerNorm>()->forward(x);
    x = x + drop_(ff2_[b]->as<nn::Linear>()->forward(
                torch::relu(ff1_[b]->as<nn::Linear>()->forward(h))));
    x = x * m;
  }
  return out_norm_(x) * m;
}

namespace {
// W = [I/k, I/k, ...] (k input blocks of the output's size), bias 0: the mean of the blocks.
void IdentityInit(nn::LinearImpl* l) {
  torch::NoGradGuard ng;
  const int64_t out = l->weight.size(0), in = l->weight.size(1), k = in / out;
  l->weight.zero_();
  for (int64_t b = 0; b < k; ++b)
    l->weight.narrow(1, b * out, out).add_(torch::eye(out) / double(k));
  l->bias.zero_();
}
}  // namespace

M6ModelImpl::M6ModelImpl(const ModelConfig& cfg, const ModelShape& shape)
    : cfg_(cfg), shape_(shape) {
  const int64_t d = shape.dim, h = cfg.hidden;
  // Item tower sources.
  if (cfg.item_id) item_sources_.push_back("id");
  if (cfg.item_id && cfg.item_id_dropout > 0)
    missing_id_ = register_parameter("missing_id", torch::zeros({d}));
  if (cfg.text && shape.tokens) {
    item_sources_.push_back("text");
    text_proj_ = register_module("text_proj", nn::Linear(d, d));
    IdentityInit(text_proj_.get());
    if (cfg.tower_adapters && cfg.adapter_rank > 0 && shape.domains > 1)
      item_text_adapter_ = register_module("item_text_adapter",
                                           LowRankAdapter(shape.domains, d, d, cfg.adapter_rank));
  }
  if (cfg.image && shape.image_dim > 0) {
    item_sources_.push_back("image");
    image_proj_ = register_module("image_proj", nn::Linear(shape.image_dim, d));
  }
  if (cfg.audio && shape.audio_dim > 0) {
    item_sources_.push_back("audio");
    audio_proj_ = register_module("audio_proj", nn::Linear(shape.audio_dim, d));
  }
  if (item_sources_.empty()) item_sources_.push_back("id");  // the data offers nothing else
  // User tower sources.
  if (cfg.user_id) user_sources_.push_back("id");
  if (cfg.sequence) {
    user_sources_.push_back("sequence");
    // The encoder's output width: the RNN's hidden size, or d for self-attention.
    int64_t w = h;
    if (cfg.rnn == RnnKind::kLstm) {
      lstm_ = register_module("lstm", nn::LSTM(nn::LSTMOptions(d, h).batch_first(true)));
    } else if (cfg.rnn == RnnKind::kAttention) {
      attn_enc_ = register_module(
          "attn_enc", SelfAttentionEncoder(d, cfg.seq_len, cfg.seq_blocks, cfg.dropout));
      w = d;
    } else {
      gru_ = register_module("gru", nn::GRU(nn::GRUOptions(d, h).batch_first(true)));
    }
    if (cfg.attention) seq_query_ = register_module("seq_query", nn::Linear(w, w));
    seq_out_ = register_module("seq_out", nn::Linear(cfg.attention ? 2 * w : w, d));
    if (cfg.tower_adapters && cfg.adapter_rank > 0 && shape.user_conditions() > 1)
      user_seq_adapter_ = register_module(
          "user_seq_adapter",
          LowRankAdapter(shape.user_conditions(), cfg.attention ? 2 * w : w, d, cfg.adapter_rank));
  }
  if (cfg.content && shape.tokens) {
    user_sources_.push_back("content");
    content_key_ = register_module("content_key", nn::Linear(d, d));
    content_query_ =
        register_parameter("content_query", torch::randn({d}) * (1.0 / std::sqrt(double(d))));
  }
  if (cfg.graph) {
    user_sources_.push_back("graph");
    sage_ = register_module("sage", nn::Linear((cfg.social && shape.social) ? 2 * d : d, d));
    IdentityInit(sage_.get());  // the mean of the neighbour means at the start
    if (cfg.rating_messages) {
      rating_scale_ = register_parameter("rating_scale", torch::zeros({kRatingLevels, d}));
      rating_shift_ = register_parameter("rating_shift", torch::zeros({kRatingLevels, d}));
    }
  }
  if (user_sources_.empty()) user_sources_.push_back("id");
  if (cfg.item_graph) {
    item_sage_ = register_module("item_sage", nn::Linear(d, d));
    IdentityInit(item_sage_.get());
    if (cfg.rating_messages) {
      item_rating_scale_ =
          register_parameter("item_rating_scale", torch::zeros({kRatingLevels, d}));
      item_rating_shift_ =
          register_parameter("item_rating_shift", torch::zeros({kRatingLevels, d}));
    }
  }
  item_fusion =
      register_module("item_fusion", Fusion(int64_t(item_sources_.size()), d, h, cfg.fusion,
                                            cfg.dropout, shape.domains, cfg.adapter_rank));
  user_fusion = register_module("user_fusion",
                                Fusion(int64_t(user_sources_.size()), d, h, cfg.fusion, cfg.dropout,
                                       shape.user_conditions(), cfg.adapter_rank));
  for (size_t t = 0; t < shape.task_outputs.size(); ++t) {
    const int64_t out = shape.task_outputs[t];
    if (out == 0) {
      heads_.emplace_back(nullptr);
      continue;
    }
    const bool pair = shape.task_kinds[t] != TaskKind::kAttribute;
    auto head = register_module("head" + std::to_string(t), nn::Linear(pair ? 3 * d : d, out));
    torch::NoGradGuard ng;
    if (pair) {
      // [u * i, u, i]: the plain dot product at the start; the linear terms (the user's and the
      // item's own offsets, as a biased factorisation has) start at zero.
      head->weight.zero_();
      head->weight.narrow(1, 0, d).fill_(1.0);
      head->bias.fill_(shape.task_kinds[t] == TaskKind::kRating ? shape.rating_mean : 0.0);
    }
    heads_.push_back(head);
  }
}

torch::Tensor M6ModelImpl::PairHead(int64_t t, const torch::Tensor& users,
                                    const torch::Tensor& items) {
  return heads_[size_t(t)](torch::cat({users * items, users, items}, 1)).squeeze(1);
}

torch::Tensor M6ModelImpl::UserHead(int64_t t, const torch::Tensor& users,
                                    const torch::Tensor& wide) {
  auto z = heads_[size_t(t)](users);
  const auto w = WideColumns(t, wide);
  return w.defined() ? z + w : z;
}

torch::Tensor M6ModelImpl::WideColumns(int64_t t, const torch::Tensor& wide) const {
  const int64_t off = size_t(t) < shape_.wide_offset.size() ? shape_.wide_offset[size_t(t)] : -1;
  if (!wide.defined() || off < 0) return {};
  return wide.narrow(1, off, shape_.task_outputs[size_t(t)]);
}

torch::Tensor M6ModelImpl::WideLogits(const ModelBatch& b) const {
  if (!b.wide_rows.defined() || !b.wide_bag.defined()) return {};
  const auto rows = WithPadRow(b.wide_rows);
  auto sum = (Gather(rows, b.wide_bag) * b.wide_mask.unsqueeze(-1)).sum(1);  // [A, Dw]
  sum = sum / b.wide_mask.sum(1, /*keepdim=*/true).clamp_min(1.0).sqrt();
  return torch::zeros({b.users.size(0), rows.size(1)}, sum.options())
      .index_copy(0, b.bag_rows, sum);
}

torch::Tensor M6ModelImpl::ItemVectors(const ModelBatch& b) {
  std::vector<torch::Tensor> xs;
  for (const auto& s : item_sources_) {
    if (s == "id") {
      if (!b.item_id_keep.defined()) {
        xs.push_back(b.item_rows);
      } else {
        auto keep = b.item_id_keep.unsqueeze(1);
        xs.push_back(missing_id_.defined() ? b.item_rows * keep + (1 - keep) * missing_id_
                                           : b.item_rows * keep);
      }
    } else if (s == "text") {
      auto tok = Gather(WithPadRow(b.token_rows), b.item_tok);
      auto text = MaskedMean(tok, b.item_tok_mask);
      if (item_text_adapter_ && b.item_domain.defined())
        xs.push_back(text_proj_(text) + item_text_adapter_(text, b.item_domain));
      else
        xs.push_back(text_proj_(text));
    } else if (s == "image") {
      xs.push_back(image_proj_(b.item_image));
    } else if (s == "audio") {
      xs.push_back(audio_proj_(b.item_audio));
    }
  }
  return item_fusion(torch::stack(xs, 1), b.item_domain);
}

torch::Tensor M6ModelImpl::UserVectors(const ModelBatch& b, const torch::Tensor& item_vecs) {
  const auto items = WithPadRow(item_vecs);
  const auto users = WithPadRow(b.user_rows);
  // What a row gathers from the sparse rows (and the item tower), with the gradient stopped for
  // the rows b.rows_stop names: they train the user tower's dense part only.
  auto read = [&](const torch::Tensor& x) {
    if (!b.rows_stop.defined()) return x;
    std::vector<int64_t> shape(size_t(x.dim()), 1);
    shape[0] = x.size(0);
    return torch::where(b.rows_stop.view(shape), x.detach(), x);
  };
  std::vector<torch::Tensor> xs;
  for (const auto& s : user_sources_) {
    if (s == "id") {
      xs.push_back(read(users.index_select(0, b.users)));
    } else if (s == "sequence") {
      auto seq = read(Gather(items, b.hist));  // [B, L, d], newest last
      torch::Tensor out;
      if (lstm_)
        out = std::get<0>(lstm_->forward(seq));
      else if (attn_enc_)
        out = attn_enc_(seq, b.hist_mask);
      else
        out = std::get<0>(gru_->forward(seq));
      auto last = out.select(1, out.size(1) - 1);
      auto summary = last;
      if (cfg_.attention) {
        auto pooled = AttentionPool(out, seq_query_(last), b.hist_mask, &last_history_attention);
        summary = torch::cat({pooled, last}, 1);
      }
      if (user_seq_adapter_ && b.user_condition.defined())
        xs.push_back(seq_out_(summary) + user_seq_adapter_(summary, b.user_condition));
      else
        xs.push_back(seq_out_(summary));
    } else if (s == "content") {
      auto tok = read(Gather(WithPadRow(b.token_rows), b.utok));  // [B, Tu, d]
      auto keys = torch::tanh(content_key_(tok));
      const double scale = 1.0 / std::sqrt(double(tok.size(-1)));
      auto sc = (torch::matmul(keys, content_query_) * scale).masked_fill(b.utok_mask <= 0, -1e9);
      auto w = torch::softmax(sc, 1) * b.utok_mask;
      xs.push_back((w.unsqueeze(-1) * tok).sum(1));
    } else if (s == "graph") {
      auto own = Aggregate(items, b.nbr, b.nbr_mask, b.nbr_level, rating_scale_, rating_shift_);
      if (b.bag.defined())
        own = own.index_copy(
            0, b.bag_rows,
            Aggregate(items, b.bag, b.bag_mask, b.bag_level, rating_scale_, rating_shift_));
      std::vector<torch::Tensor> parts{read(own)};
      if (cfg_.social && shape_.social)
        parts.push_back(read(Aggregate(users, b.friends, b.friends_mask, {}, {}, {})));
      // Linear aggregation (no ReLU): LightGCN found non-linearities in propagation hurt
      // collaborative filtering, and it keeps the source on the scale of the id rows.
      xs.push_back(sage_(torch::cat(parts, 1)));
    }
  }
  auto x = torch::stack(xs, 1);
  if (b.user_source_scale.defined()) x = x * b.user_source_scale.unsqueeze(2);
  return user_fusion(x, b.user_condition);
}

torch::Tensor RatedNeighbourSum(const torch::Tensor& rows, const torch::Tensor& idx,
                                const torch::Tensor& weights, const torch::Tensor& level,
                                const torch::Tensor& scale, const torch::Tensor& shift) {
  const int64_t n = idx.size(0), k = idx.size(1);
  if (k == 0) return torch::zeros({n, rows.size(1)}, rows.options());  // no neighbour slots
  const auto flat = idx.reshape({-1}).to(torch::kLong);
  const auto offsets = torch::arange(0, n * k, k, flat.options());
  const auto w = weights.to(rows.dtype());
  // sum over each row's bag of rows[idx] * weight: [n, d]
  auto bag = [&](const torch::Tensor& wb) {
    return std::get<0>(torch::embedding_bag(rows, flat, offsets, /*scale_grad_by_freq=*/false,
                                            /*mode: sum*/ 0, /*sparse=*/false,
                                            wb.reshape({-1}).contiguous()));
  };
  if (!scale.defined() || !level.defined()) return bag(w);
  // sum_j w_j (x_j (1 + scale[l_j]) + shift[l_j]) = sum_l (1 + scale[l]) * bag_l + shift[l] *
  // (the weight at level l); level 0 (no rating) leaves x_j as it is.
  const auto sc = WithPadRow(scale), sh = WithPadRow(shift);
  torch::Tensor sum = torch::zeros({n, rows.size(1)}, rows.options());
  // Every level, present or not: skipping absent ones would read a flag back from the device
  // once per level (with ratings in the data all of them are present anyway).
  for (int64_t l = 0; l < sc.size(0); ++l) {
    const auto wl = w * (level == l).to(w.dtype());
    sum = sum + bag(wl) * (1 + sc[l]) + wl.sum(1, /*keepdim=*/true) * sh[l];
  }
  return sum;
}

torch::Tensor M6ModelImpl::Aggregate(const torch::Tensor& rows, const torch::Tensor& idx,
                                     const torch::Tensor& weights, const torch::Tensor& level,
                                     const torch::Tensor& scale, const torch::Tensor& shift) const {
  const auto sum = RatedNeighbourSum(rows, idx, weights, level, scale, shift);
  // symmetric: the weights carry the whole normalisation (see graph_weighting), so a plain sum.
  if (cfg_.graph_weighting == GraphWeighting::kSymmetric) return sum;
  return sum / weights.sum(1, /*keepdim=*/true).to(sum.dtype()).clamp_min(1e-12);
}

torch::Tensor M6ModelImpl::ScoredItemVectors(const ModelBatch& b, const torch::Tensor& item_vecs) {
  if (!item_sage_ || !b.item_nbr.defined() || b.item_nbr.size(1) == 0) return item_vecs;
  auto agg = item_sage_(Aggregate(WithPadRow(b.user_rows), b.item_nbr, b.item_nbr_mask,
                                  b.item_nbr_level, item_rating_scale_, item_rating_shift_));
  // Items without sampled users (cold, or not scored in this batch) keep their tower vector.
  auto has = (b.item_nbr_mask.sum(1, /*keepdim=*/true) > 0).to(item_vecs.dtype());
  return item_vecs + has * 0.5 * (agg - item_vecs);
}

torch::Tensor RankingLoss(LossKind kind, const torch::Tensor& pos, const torch::Tensor& neg,
                          const torch::Tensor& valid, double temperature, double margin,
                          double neg_weight) {
  const auto nvalid = valid.sum().clamp_min(1.0);
  if (kind == LossKind::kSoftmax) {
    auto logits =
        torch::cat({pos.unsqueeze(1), neg.masked_fill(valid <= 0, -1e9)}, 1) / temperature;
    return -torch::log_softmax(logits, 1).select(1, 0).mean();
  }
  if (kind == LossKind::kBce)
    return torch::softplus(-pos).mean() + (torch::softplus(neg) * valid).sum() / nvalid;
  if (kind == LossKind::kCcl)
    return (1.0 - pos).mean() +
           neg_weight * (torch::relu(neg - margin) * valid).sum() / nvalid * 1.0;
  // bpr
  return (torch::softplus(neg - pos.unsqueeze(1)) * valid).sum() / nvalid;
}

}  // namespace m6rec
