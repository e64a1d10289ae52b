// The M6-Rec style model's dense part (LibTorch). Sparse rows (user, item and token embeddings)
// come from the parameter servers as leaf tensors; every index tensor below points into them.
//
// Index convention: every index tensor is 1-based into its rows tensor, 0 = padding (a zero
// row is prepended inside the model), so ragged lists (histories, neighbours, tokens) become
// dense [N, K] tensors with a {0,1} float mask of the same shape.
//
//   item tower  (per unique item of the batch)
//     sources: id row (a learned "missing id" row where item_id_keep says so: cold start)
//              | text: mean of the item's token rows, projected | image: Linear(image)
//              | audio: Linear(audio)
//                                                     -> fusion -> item vector [Ki, d]
//   user tower  (per user of the batch)
//     sources: id row
//              | sequence: GRU/LSTM over the last L items' item vectors, or self-attention blocks
//                (SelfAttentionEncoder), then attention pooling with the most recent output as
//                the query (or the last output), projected to d
//              | content: attention over the user's content tokens (profile + recent items')
//              | graph: GraphSAGE mean over sampled interacted items' vectors and sampled
//                friends' id rows, W [mean_items || mean_friends] (linear, as LightGCN); with
//                model.rating_messages each item's vector is first bent by its rating (GC-MC)
//                                                     -> fusion -> user vector [B, d]
//   item graph (model.item_graph; the item side of the user-item graph): a scored item's vector
//              is (tower vector + W mean of its sampled users' id rows) / 2 — LightGCN's first
//              layer on the item side. The items a user tower reads (history, neighbours) stay
//              tower vectors, so the user side and the item side are each one hop.
//   fusion: "gate"   per-source sigmoid gates from all sources, reduction Linear(S*d -> d),
//                    residual MLP (d -> hidden -> d) with dropout; initialised to the plain
//                    mean of the sources (open gates, averaging reduction, silent MLP)
//           "concat" the same without gates;  "mean"  the mean of the sources
//   score(u, i) = <user vector, item vector>
//   tasks (cfg.train.tasks): the user fusion is conditioned on (domain, task), so every task
//            has its own condition embedding, FiLM head and adapters over the shared towers;
//            like/rating score a pair by a weighted dot product with user and item offsets,
//            attribute reads the user vector
//            with a linear classifier (PairHead, UserHead)
// Every part is switched by ModelConfig, so an ablation is a config change.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/config.h"
#include "worker/m6_batch.h"

namespace m6rec {

struct ModelBatch {
  // Sparse rows (leaves; requires_grad while training).
  torch::Tensor user_rows, item_rows, token_rows;  // [Ku, d], [Ki, d], [Kt, d] (Kt may be 0)
  // Item tower inputs, one row per item of item_rows.
  torch::Tensor item_tok, item_tok_mask;  // [Ki, Tt] into token_rows
  torch::Tensor item_image, item_audio;   // [Ki, Di], [Ki, Da] (undefined when absent)
  // model.item_id_dropout: 1 where the item's id row enters the tower, 0 where it is left out
  // (dropped in training, or an item without training interactions); undefined: all enter.
  torch::Tensor item_id_keep;  // [Ki]
  // User tower inputs, one row per user of the batch.
  torch::Tensor users;  // [B] into user_rows
  // Rows that read every sparse row (items, tokens, friends) with the gradient stopped (bool
  // [B]; undefined: none): attribute rows with model.attribute_rows false.
  torch::Tensor rows_stop;
  torch::Tensor hist, hist_mask;  // [B, L] into item_rows, left-padded (newest last)
  torch::Tensor utok, utok_mask;  // [B, Tu] into token_rows
  torch::Tensor nbr, nbr_mask;    // [B, F] into item_rows (mask: weights, see graph_weighting)
  // model.rating_messages: each neighbour's RatingLevel (0: unrated) [B, F], and the bags'
  // [A, W] (long; undefined without rating messages).
  torch::Tensor nbr_level, bag_level;
  // Attribute rows' whole bags, read instead of nbr by the rows bag_rows names (undefined when
  // the batch has none).
  torch::Tensor bag_rows;       // [A] into the batch's user rows
  torch::Tensor bag, bag_mask;  // [A, W] into item_rows
  // model.wide_table: the bags' rows of the wide table and the bags as indices into them
  // (1-based, 0: padding; undefined without a wide part or without bags).
  torch::Tensor wide_rows;              // [Kw, wide dim]
  torch::Tensor wide_bag, wide_mask;    // [A, W]
  torch::Tensor friends, friends_mask;  // [B, F] into user_rows
  // Item graph inputs, one row per item of item_rows (all-zero mask: the item is not scored).
  torch::Tensor item_nbr, item_nbr_mask;  // [Ki, Fi] into user_rows
  torch::Tensor item_nbr_level;           // [Ki, Fi] model.rating_messages: each rater's level
  // The user fusion's condition of every user row (task x domains + domain: the domain it is
  // scored in, the task it is scored for; undefined with one domain and one task) and the
  // domain of every item (undefined with one domain).
  torch::Tensor user_condition, item_domain;  // [B], [Ki] (long, 0-based)
  // A serving strategy's scale of each user source's vector before the fusion ([B, S] in
  // user_sources() order; undefined: 1).
  torch::Tensor user_source_scale;
};

// U_c D_c x for each row's condition c: x [N, in], cond [N], down [C, r, in], up [C, out, r]
// -> [N, out] (the per-condition low-rank corrections of Fusion and LowRankAdapter).
torch::Tensor PerConditionLowRank(const torch::Tensor& x, const torch::Tensor& cond,
                                  const torch::Tensor& down, const torch::Tensor& up);

// Fusion of S source vectors into one. With `conditions` > 1 (domains) it is conditioned on
// each row's condition: a learned condition embedding joins the gates' input (so each domain
// learns which sources to trust), and a per-condition scale and shift of the fused vector
// (FiLM; starts as the identity) is the condition's own small head. With `adapter_rank` r > 0
// each condition also has low-rank adapters (gate and concat modes): an offset of its gates'
// logits, and a rank-r correction B_c A_c of the reduction (B_c zero at the start), so a new
// domain can bend a frozen fusion with r (S d + d) + S parameters of its own.
// Every per-condition parameter has the condition as its first dimension (PerCondition()).
class FusionImpl : public torch::nn::Module {
 public:
  FusionImpl(int64_t sources, int64_t dim, int64_t hidden, FusionKind mode, double dropout,
             int64_t conditions = 1, int64_t adapter_rank = 0);
  // xs: [N, S, d], cond: [N] condition ids (undefined without conditions) -> [N, d]
  torch::Tensor forward(const torch::Tensor& xs, const torch::Tensor& cond = {});
  // The mean gate of each source over the last forward (for logs); empty unless mode = gate.
  torch::Tensor last_gates;
  // Every row's gates of the last forward ([N, S], explanations); undefined unless mode = gate.
  torch::Tensor last_row_gates;
  // Per condition, the mean gates of its rows over every forward since ResetConditionGates
  // ([conditions, S]; NaN for a condition without rows); undefined without conditions.
  torch::Tensor ConditionGates() const;
  void ResetConditionGates();
  // Conditions whose rows are fused by the starting map instead of the learned one: every
  // source at the starting gate (plus the condition's adapter offset), the plain mean of them,
  // no residual MLP; the condition's low-rank adapter and FiLM head still apply. An adapted
  // job's new domains with adapt.item_fusion: plain. Not a parameter: the job's configuration
  // sets it, so a checkpoint is read back with it.
  void SetPlainConditions(const std::vector<int64_t>& conditions);

  static constexpr int64_t kConditionDim = 16;
  // The gates' starting logit: sigmoid(3) = 0.95, every source open.
  static constexpr double kOpenGate = 3.0;
  // Whether a parameter name (as named_parameters() gives it, any prefix) is one of the
  // per-condition ones: condition embedding, FiLM head, adapters.
  static bool PerCondition(const std::string& name);

 private:
  FusionKind mode_;
  int64_t sources_, conditions_, rank_;
  torch::Tensor adapter_gate_, adapter_down_, adapter_up_;  // [C, S], [C, r, S d], [C, d, r]
  torch::nn::Linear gate_{nullptr}, reduce_{nullptr}, mlp1_{nullptr}, mlp2_{nullptr};
  torch::nn::Dropout drop_{nullptr};
  torch::nn::Embedding cond_emb_{nullptr}, film_{nullptr};
  torch::Tensor cond_gate_sum_, cond_rows_;  // [conditions, S], [conditions]
  torch::Tensor plain_;                      // [conditions] bool; undefined: none
};
TORCH_MODULE(Fusion);

// A per-condition low-rank correction of a linear map: x [N, in] with conditions [N] ->
// U_c D_c x [N, out] (U zero at the start, so it is silent until trained). The towers'
// adapters (model.tower_adapters): a new domain's own bend of the sequence read-out and of the
// item text projection. Its parameters are per-condition (FusionImpl::PerCondition).
class LowRankAdapterImpl : public torch::nn::Module {
 public:
  LowRankAdapterImpl(int64_t conditions, int64_t in, int64_t out, int64_t rank);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond);

 private:
  torch::Tensor down_, up_;  // [C, r, in], [C, out, r]
};
TORCH_MODULE(LowRankAdapter);

// The self-attention sequence encoder (model.rnn: attention), SASRec's block: learned position
// embeddings per slot, then per block pre-norm single-head self-attention (padding slots are
// never attended to) and a position-wise feed-forward layer, each residual, with dropout;
// padding slots are zeroed after every block. [B, L, d] with mask [B, L] -> [B, L, d].
class SelfAttentionEncoderImpl : public torch::nn::Module {
 public:
  SelfAttentionEncoderImpl(int64_t dim, int64_t len, int64_t blocks, double dropout);
  torch::Tensor forward(const torch::Tensor& seq, const torch::Tensor& mask);

 private:
  torch::Tensor pos_;
  torch::nn::ModuleList norm1_, qkv_, norm2_, ff1_, ff2_;
  torch::nn::LayerNorm out_norm_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(SelfAttentionEncoder);

class M6ModelImpl : public torch::nn::Module {
 public:
  M6ModelImpl(const ModelConfig& cfg, const ModelShape& shape);

  // Item vectors for every item of batch.item_rows: [Ki, d].
  torch::Tensor ItemVectors(const ModelBatch& b);
  // User vectors [B, d]; item_vecs is ItemVectors(b).
  torch::Tensor UserVectors(const ModelBatch& b, const torch::Tensor& item_vecs);
  // The vectors items are scored with: item_vecs, plus the item graph where it is on.
  torch::Tensor ScoredItemVectors(const ModelBatch& b, const torch::Tensor& item_vecs);

  // Task t's head (ModelShape::task_outputs[t] > 0). Rating and like: the pair's score from
  // its user and item vectors [N, d] -> [N], w . [u * i, u, i] + b (the dot product weighted
  // per dimension, plus the user's and the item's own linear offsets; it starts as the plain
  // dot product, a rating head at the mean training rating).
  // Attribute: the classes' logits from user vectors [N, d] -> [N, classes].
  // wide: WideLogits' rows of the same users, added to an attribute task's logits (its own
  // columns of the wide table); undefined: the deep head alone.
  torch::Tensor PairHead(int64_t t, const torch::Tensor& users, const torch::Tensor& items);
  torch::Tensor UserHead(int64_t t, const torch::Tensor& users,
                         const torch::Tensor& wide = torch::Tensor());
  // Attribute task t's columns of WideLogits' `wide` [N, classes] (undefined when wide is
  // undefined or t has no wide columns).
  torch::Tensor WideColumns(int64_t t, const torch::Tensor& wide) const;
  // The wide part (model.wide_table) of every user row [B, wide dim]: the sum of the rows of
  // the row's bag / sqrt(bag size), a logistic regression on the user's items (zero for rows
  // without a bag); undefined when the batch has no wide rows. B = b.users' rows.
  torch::Tensor WideLogits(const ModelBatch& b) const;

  // The sequence's attention over each user's history in the last UserVectors ([B, L], the
  // hist slots; explanations); undefined without attention pooling.
  torch::Tensor last_history_attention;

  const std::vector<std::string>& user_sources() const { return user_sources_; }
  const std::vector<std::string>& item_sources() const { return item_sources_; }
  Fusion user_fusion{nullptr}, item_fusion{nullptr};

 private:
  // A graph source's aggregate of neighbour rows rows[idx] with weights [N, K] (0: padding): a
  // weighted mean, or for graph_weighting symmetric the weighted sum; with model.rating_messages
  // each row is first bent by its rating level, x * (1 + scale[level]) + shift[level] (level 0
  // unchanged; the item graph has its own scale and shift, item_rating_*). Computed as weighted
  // bags (RatedNeighbourSum) so that the [N, K, d] tensor of neighbour rows is never built:
  // with wide fanouts (ML-1M evaluates 100-200 raters of every movie, an attribute row reads a
  // bag of 256 movies) it ran to tens of megabytes a step, allocated and page-faulted afresh
  // each time. rows: with the pad row first.
  torch::Tensor Aggregate(const torch::Tensor& rows, const torch::Tensor& idx,
                          const torch::Tensor& weights, const torch::Tensor& level,
                          const torch::Tensor& scale, const torch::Tensor& shift) const;

  ModelConfig cfg_;
  ModelShape shape_;
  std::vector<std::string> user_sources_, item_sources_;
  torch::nn::Linear text_proj_{nullptr}, image_proj_{nullptr}, audio_proj_{nullptr};
  // With item id dropout: the id source of an item read without its id row (dropped in
  // training, never trained, new) is this learned row, not zeros: what an id-less item's id
  // looks like on average (undefined without dropout). Measured neutral against zeros
  // (docs/results.md); kept so an id-less item's id input is trained, not arbitrary.
  torch::Tensor missing_id_;
  torch::nn::GRU gru_{nullptr};
  torch::nn::LSTM lstm_{nullptr};
  SelfAttentionEncoder attn_enc_{nullptr};
  torch::nn::Linear seq_query_{nullptr}, seq_out_{nullptr};
  // model.tower_adapters: per-condition corrections of seq_out_ (the user condition) and of
  // text_proj_ (the item's domain); null without them.
  LowRankAdapter user_seq_adapter_{nullptr}, item_text_adapter_{nullptr};
  torch::nn::Linear content_key_{nullptr};
  torch::Tensor content_query_;
  torch::nn::Linear sage_{nullptr}, item_sage_{nullptr};
  torch::Tensor rating_scale_, rating_shift_;  // [kRatingLevels, d] (model.rating_messages)
  torch::Tensor item_rating_scale_, item_rating_shift_;  // the same for the item graph
  std::vector<torch::nn::Linear> heads_;                 // per task (nullptr for retrieval)
};
TORCH_MODULE(M6Model);

// Prepends a zero row: index 0 of the result is padding.
torch::Tensor WithPadRow(const torch::Tensor& rows);
// Masked mean over dim 1 of x [N, K, d] with mask [N, K] (a weighted mean when the mask holds
// non-negative weights); rows with no valid entry give 0.
torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask);
// sum_j weights[i, j] * (rows[idx[i, j]] * (1 + scale[level[i, j]]) + shift[level[i, j]]) for
// every i: [n, d] from idx, weights and level [n, k] (rows: [m, d] with the pad row first; scale
// and shift [levels, d] without it, level 0 meaning no rating; undefined scale or level: the
// plain weighted sum). Weighted bags (torch::embedding_bag), one per level, so the
// [n, k, d] tensor of gathered rows is never built.
torch::Tensor RatedNeighbourSum(const torch::Tensor& rows, const torch::Tensor& idx,
                                const torch::Tensor& weights, const torch::Tensor& level,
                                const torch::Tensor& scale, const torch::Tensor& shift);
// Attention pooling: softmax over K of <x, q> / sqrt(d) (masked) -> [N, d]; q is [N, d] or [d].
// `weights` (optional) receives the attention [N, K].
torch::Tensor AttentionPool(const torch::Tensor& x, const torch::Tensor& q,
                            const torch::Tensor& mask, torch::Tensor* weights = nullptr);

// Ranking losses over scores of B positives [B] against negatives [B, M] (valid [B, M] mask):
// "bpr" mean softplus(s_neg - s_pos); "softmax" cross-entropy of the positive among all at
// temperature tau; "bce" softplus(-s_pos) + mean softplus(s_neg); "ccl" (cosine scores)
// (1 - s_pos) + w * mean relu(s_neg - margin).
torch::Tensor RankingLoss(LossKind kind, const torch::Tensor& pos, const torch::Tensor& neg,
                          const torch::Tensor& valid, double temperature, double margin,
                          double neg_weight);

}  // namespace m6rec
