// The M6 model's batches, without LibTorch: which users, items and tokens a batch reads (each
// once, 1-based indices with 0 = padding) and the ragged inputs of the towers as index lists
// and masks — histories, graph neighbours with their weights, friends, content tokens, the item
// graph's sampled users. worker/m6_model.cc turns a built batch into tensors.
//
// Training batches sample neighbours from the rank's RNG; evaluation reads fixed samples
// seeded by (eval seed, node), so every epoch, every worker count and `m6rec eval` see the same
// inputs for a user.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "common/config.h"
#include "worker/dataset.h"
#include "worker/model_plugin.h"
#include "worker/samplers.h"

namespace m6rec {

// model.rating_messages: a rating's level, its rounded value in 1..kRatingLevels (0: unrated).
constexpr int64_t kRatingLevels = 10;
int64_t RatingLevel(float rating);
// User u's training rating of `item` (0: none, or u did not train on it). A scan of u's list:
// the item graph asks it for a batch's sampled raters only.
float TrainRating(const Dataset& ds, uint32_t u, uint32_t item);

// A sample of `count` of the first n of `items` (SampleNeighbours' draws over their positions,
// so the same items it would draw), never position `exclude` (-1: none); `ratings` (may be null
// or shorter than n) receives the sampled items' ratings where known, 0 elsewhere.
std::vector<uint32_t> SampleRated(const std::vector<uint32_t>& items, size_t n,
                                  const std::vector<float>* ratings, int count, int64_t exclude,
                                  std::mt19937_64& rng, std::vector<float>* sampled_ratings);

// Whether the items [first, end) are of a domain that trains only a share of its users
// (data.domains.N.train_users < 1): its never-trained items are then the other users' items.
bool PartlyTrained(const Dataset& ds, uint32_t first, uint32_t end);

// A never-trained item's weight as a sampled training negative over the items [first, end),
// against a trained item's 1. An item that is only ever a negative learns to score low, so a
// model that must score items without training interactions from their content (a cold split,
// model.item_id_dropout) draws none; otherwise train.cold_negative_weight (1: uniform over every
// item). Its default, auto: none where the domain trains a share of its users and the
// evaluation ranks with the popularity calibration — the never-trained items are then the
// context users' live items, and the calibration's offsets put them where validation says
// they belong (+0.6–2.2% HR@10 at 10% of the users) — and uniform elsewhere: with every user
// trained they are the catalogue's dead items, and the uniform draw is level or slightly ahead
// on validation (docs/results.md, "Popularity calibration").
double ColdNegativeWeight(const Dataset& ds, const JobConfig& cfg, uint32_t first, uint32_t end);

// What the data offers the model; parts whose input is missing are left out of the model.
struct ModelShape {
  int64_t dim = 64;
  int64_t image_dim = 0;  // 0 = no image vectors
  int64_t audio_dim = 0;
  bool tokens = false;  // items/users have tokens (a token table is needed)
  bool social = false;  // a user-user graph exists
  int64_t domains = 1;  // > 1: the fusion is conditioned on the row's domain
  // The tasks (cfg.train.tasks): the user fusion's condition is task x domains + domain (a new
  // task appends its rows: what adapting to a task needs), and
  // each task other than retrieval has a head with task_outputs[t] outputs (1 for like and
  // rating, the classes for an attribute; 0 for retrieval, scored by the dot product).
  int64_t tasks = 1;
  std::vector<TaskKind> task_kinds{TaskKind::kRetrieval};
  std::vector<int64_t> task_outputs{0};
  double rating_mean = 0;  // the mean training rating (a rating head's starting offset)
  // The training ratings' range: a rating head's predictions are clipped to it (the scale is
  // known, so an estimate outside it is a sure error; 0 / 0 without ratings: no clipping).
  double rating_min = 0, rating_max = 0;
  // model.wide_table: each attribute task's first column in the wide rows (-1: no wide part;
  // every other task -1), and the columns the attribute tasks need together.
  std::vector<int64_t> wide_offset{-1};
  int64_t wide_columns = 0;
  // An adapted job (cfg.adapt): the backbone's first domains and tasks (0: not adapted).
  int64_t backbone_domains = 0, backbone_tasks = 0;
  int64_t user_conditions() const { return domains * tasks; }
};

// Everything about the data and the configuration that batches of one job share.
struct M6Inputs {
  M6Inputs(const Dataset& ds, const JobConfig& cfg);
  // The dataset grew by these interactions (AppendInteractions): the samplers count them, the
  // item graph links them, their items' and users' tokens are trained from now on.
  void Grow(const StreamEvent* ev, size_t n);
  const Dataset& ds;
  const JobConfig& cfg;
  const ModelConfig& mc;
  ModelShape shape;
  int item_tokens = 1;  // tokens read per item (the longest item text, capped)
  int eval_fanout = 0, eval_item_fanout = 0;
  uint64_t eval_seed = 0;
  std::vector<std::vector<uint32_t>> item_users;  // the item graph's neighbours (item_graph)
  NegativeSampler sampler;                        // over every item (one domain)
  std::vector<NegativeSampler> domain_samplers;   // multi-domain: one over each domain's items
  int negatives = 0;
  std::vector<float> like_threshold;  // per task (cfg.train.tasks[t].like_threshold)
  // Cold-start-capable models (model.item_id_dropout > 0): the tokens no training example can
  // reach (only on items without training interactions, never in a trained user's profile)
  // have untrained rows, noise that would drown the trained tokens of a cold item; they are
  // left out of every input, like a never-trained item's id row. Empty: none left out (and
  // never when the token table starts from imported rows, which carry meaning untrained).
  std::vector<uint8_t> untrained_token;
  bool Untrained(uint32_t t) const { return t < untrained_token.size() && untrained_token[t]; }
};

// One batch's unique ids and the towers' inputs as index lists.
class BatchBuilder {
 public:
  // fanout / item_fanout: the widths of the graph inputs (training: the config's fanouts;
  // evaluation: model.eval_fanout).
  BatchBuilder(const M6Inputs& in, int fanout, int item_fanout);

  int64_t User(uint32_t u);
  int64_t Item(uint32_t i);
  int64_t Token(uint32_t t);
  int64_t Wide(uint32_t i);  // an item's row of the wide table (model.wide_table)
  // An item that will be scored: with model.item_graph its users (from item_users) join the
  // batch as the item graph's input. Items only read by user towers need no call.
  int64_t Scored(uint32_t i);
  // The users of an item the item graph reads (training draws them, evaluation is fixed).
  std::function<void(uint32_t item, std::vector<uint32_t>* users)> item_users;

  // One user row of the user tower. hist: oldest first; nbr: items sampled from nbr_pool of
  // them (the size of the neighbourhood, for graph_weighting: symmetric); domain: the domain
  // the row is scored in and task its task (together the user fusion's condition). u =
  // kUnseenUser: a user without a row, whose profile tokens are `profile`. nbr_ratings: the
  // ratings of nbr's items (model.rating_messages; null or shorter: unrated).
  static constexpr uint32_t kUnseenUser = UINT32_MAX;
  // An attribute row's graph source reads (up to) this many of the user's items, not a
  // fanout-sized sample: a user's attributes show in the whole bag of what it chose (the
  // logistic regression on that bag is the attributes' baseline), and an attribute row has
  // no item whose neighbourhood has to stay small.
  static constexpr int kAttributeBag = 256;
  // The neighbours to sample for a row of `task`: kAttributeBag for an attribute, else fanout.
  int NeighbourCount(uint32_t task, int fanout) const;
  void AddUser(uint32_t u, const std::vector<uint32_t>& hist, const std::vector<uint32_t>& nbr,
               size_t nbr_pool, const std::vector<uint32_t>& friends, uint32_t domain = 0,
               uint32_t task = 0, const std::vector<uint32_t>* profile = nullptr,
               const std::vector<float>* nbr_ratings = nullptr);

  int fanout() const { return fanout_; }
  int item_fanout() const { return item_fanout_; }
  const M6Inputs& inputs() const { return in_; }
  // Per item index - 1: its sampled users' indices and their weights.
  const std::vector<std::vector<int64_t>>& item_neighbours() const { return item_nbr_; }
  const std::vector<std::vector<float>>& item_neighbour_weights() const { return item_nbr_w_; }
  // model.rating_messages: per item index - 1, the RatingLevel each sampled user gave the item.
  const std::vector<std::vector<int64_t>>& item_neighbour_levels() const { return item_nbr_level_; }

  std::vector<uint32_t> user_ids, item_ids, token_ids, wide_ids;
  std::vector<int64_t> users, hist, nbr, friends, utok, item_tok;
  std::vector<int64_t> row_condition;  // per user row: task x domains + domain
  std::vector<float> hist_mask, nbr_mask, friends_mask, utok_mask, item_tok_mask;
  // model.rating_messages: the RatingLevel of every nbr entry (empty without rating messages).
  std::vector<int64_t> nbr_level;
  // Per user row: an attribute row's whole sample of neighbours (indices into item_ids) and
  // their weights, which the graph source reads instead of nbr; empty for every other row.
  std::vector<std::vector<int64_t>> bag;
  std::vector<std::vector<float>> bag_weight;
  std::vector<std::vector<int64_t>> bag_level;  // model.rating_messages: per bag entry
  // model.wide_table: the same bags as indices into wide_ids (empty without a wide part).
  std::vector<std::vector<int64_t>> wide_bag;

 private:
  void AddContent(const std::vector<uint32_t>& profile, const std::vector<uint32_t>& hist);
  // graph_weighting: symmetric — the model sums its neighbours' rows, each weighted
  // 1/sqrt(own degree · neighbour's degree) as in LightGCN; a sample of n of the node's `pool`
  // neighbours is scaled by pool/n so that the sum estimates the whole neighbourhood's.
  void Symmetric(size_t pool, std::vector<float>* w) const;

  const M6Inputs& in_;
  int fanout_, item_fanout_;
  bool symmetric_, degree_weights_;
  std::unordered_map<uint32_t, int64_t> umap_, imap_, tmap_, wmap_;
  std::vector<std::vector<int64_t>> item_nbr_;
  std::vector<std::vector<float>> item_nbr_w_;
  std::vector<std::vector<int64_t>> item_nbr_level_;
  std::vector<uint32_t> scratch_;
};

// A training batch: the key lists (users, items, tokens, wide rows, in this order) and, for the
// loss, each row's positive and the shared negatives as item indices. In a multi-domain job every
// domain of the batch draws its own negatives, and a row is scored only against its domain's
// (pos_domain / neg_domain; empty otherwise). Rows of other tasks (row_task) carry their target
// (a rating, a like label 0/1, an attribute class); an attribute row has no item (pos 0).
struct M6TrainBatch final : TrainBatch {
  enum List { kUsers, kItems, kTokens, kWide };
  std::unique_ptr<BatchBuilder> b;
  std::vector<int64_t> pos, neg;
  std::vector<uint32_t> pos_items, neg_items;
  std::vector<uint32_t> pos_domain, neg_domain;
  std::vector<uint32_t> row_task;
  std::vector<float> target;
};

// The keys of a built batch's ids, as the four key lists (the wide one empty without a wide
// part).
void FillKeyLists(const BatchBuilder& b, const JobConfig& cfg, std::vector<KeyList>* lists);

// A training batch of samples s[0..n): histories (causal on ordered data), sampled graph
// neighbours and friends, the positives and `in.negatives` shared negatives from in.sampler.
std::unique_ptr<M6TrainBatch> BuildTrainBatch(const M6Inputs& in, const JobConfig& cfg,
                                              const Sample* s, size_t n, std::mt19937_64& rng);

// An evaluation builder (fixed neighbour samples) with the queries' users added in order.
std::unique_ptr<BatchBuilder> BuildEvalBatch(const M6Inputs& in,
                                             const std::vector<UserQuery>& queries);

}  // namespace m6rec
