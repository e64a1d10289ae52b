#include "worker/m6_batch.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace m6rec {

bool PartlyTrained(const Dataset& ds, uint32_t first, uint32_t end) {
  for (const auto& d : ds.domains)
    if (d.train_users < 1.0f && d.item_begin < end && first < d.item_end) return true;
  return false;
}

double ColdNegativeWeight(const Dataset& ds, const JobConfig& cfg, uint32_t first, uint32_t end) {
  if (ds.cold_split() || cfg.model.item_id_dropout > 0) return 0.0;
  if (cfg.train.cold_negative_weight != TrainConfig::kAutoColdNegativeWeight)
    return cfg.train.cold_negative_weight;
  // A stream job's live scoring is not calibrated (its evaluation of the held-out targets is).
  const bool calibrated = ds.protocol == Dataset::Protocol::kSampled &&
                          cfg.train.popularity_calibration &&
                          cfg.stream.source == StreamKind::kNone;
  return calibrated && PartlyTrained(ds, first, end) ? 0.0 : 1.0;
}

namespace {

constexpr int kMaxItemTokens = 16;  // most tokens of an item's text the item tower reads

const std::vector<uint32_t>& FriendsOf(const Dataset& ds, uint32_t u) {
  static const std::vector<uint32_t> kNoFriends;
  return u < ds.social.size() ? ds.social[u] : kNoFriends;
}

float DegreeWeight(size_t degree) { return 1.0f / std::sqrt(float(std::max<size_t>(1, degree))); }

// Training negatives over the items [first, end) (end: the item counts' size).
NegativeSampler MakeSampler(const Dataset& ds, const JobConfig& cfg, uint32_t first, uint32_t end) {
  const double cold = ColdNegativeWeight(ds, cfg, first, end);
  const std::vector<uint32_t> counts(ds.item_popularity.begin(), ds.item_popularity.begin() + end);
  if (cfg.train.negative_sampler == SamplerKind::kPopularity)
    return NegativeSampler(counts, first, 0.75, cold);
  if (cold != 1.0) return NegativeSampler(counts, first, 0.0, cold);
  return NegativeSampler(first, end);
}

}  // namespace

float TrainRating(const Dataset& ds, uint32_t u, uint32_t item) {
  if (u >= ds.train.size() || u >= ds.train_ratings.size()) return 0;
  const auto& items = ds.train[u];
  const auto& r = ds.train_ratings[u];
  for (size_t k = 0; k < items.size() && k < r.size(); ++k)
    if (items[k] == item) return r[k];
  return 0;
}

int64_t RatingLevel(float rating) {
  if (!(rating > 0)) return 0;
  return std::clamp<int64_t>(std::lround(rating), 1, kRatingLevels);
}

std::vector<uint32_t> SampleRated(const std::vector<uint32_t>& items, size_t n,
                                  const std::vector<float>* ratings, int count, int64_t exclude,
                                  std::mt19937_64& rng, std::vector<float>* sampled_ratings) {
  std::vector<uint32_t> pos(std::min(n, items.size()));
  for (size_t k = 0; k < pos.size(); ++k) pos[k] = uint32_t(k);
  std::vector<uint32_t> out;
  sampled_ratings->clear();
  for (uint32_t p : SampleNeighbours(pos, count, exclude, rng)) {
    out.push_back(items[p]);
    sampled_ratings->push_back(ratings && p < ratings->size() ? (*ratings)[p] : 0.0f);
  }
  return out;
}

M6Inputs::M6Inputs(const Dataset& d, const JobConfig& c)
    : ds(d),
      cfg(c),
      mc(c.model),
      sampler(MakeSampler(d, cfg, d.first_item, d.num_items)),
      negatives(cfg.train.negatives) {
  const TableSpec* ut = cfg.FindTable(cfg.train.user_table);
  shape.dim = ut ? ut->dim : 0;
  shape.tokens = d.num_tokens > 0 && (mc.text || mc.content);
  shape.social = !d.social.empty() && mc.social;
  shape.image_dim = mc.image ? d.image_dim : 0;
  shape.audio_dim = mc.audio ? d.audio_dim : 0;
  for (const auto& l : d.item_tokens)
    item_tokens = std::max<int>(item_tokens, std::min<int>(kMaxItemTokens, l.size()));
  // Evaluation reads wider neighbourhoods than a training step when model.eval_fanout says so:
  // the mean over more neighbours is the expectation of the training-time sampled mean.
  eval_fanout = mc.eval_fanout > 0 ? mc.eval_fanout : mc.fanout;
  eval_item_fanout = mc.eval_fanout > 0 ? mc.eval_fanout : mc.item_fanout;
  eval_seed = Mix64(cfg.seed ^ 0xe7a1);
  if (mc.item_graph) item_users = d.ItemUsers();
  shape.domains = int64_t(std::max<size_t>(1, d.domains.size()));
  shape.tasks = int64_t(cfg.train.tasks.size());
  if (!cfg.adapt.from.empty()) {
    shape.backbone_tasks = cfg.adapt.frozen_tasks;
    shape.backbone_domains =
        cfg.adapt.adds_tasks(cfg.train.tasks.size())
            ? shape.domains
            : std::max<int64_t>(1, d.DomainsOfSpecs(uint32_t(cfg.adapt.frozen_domains)));
  }
  shape.task_kinds.clear();
  shape.task_outputs.clear();
  for (const TaskSpec& t : cfg.train.tasks) {
    const Dataset::UserAttribute* a =
        t.type == TaskKind::kAttribute ? d.FindAttribute(t.attribute) : nullptr;
    shape.task_kinds.push_back(t.type);
    shape.task_outputs.push_back(t.type == TaskKind::kRetrieval ? 0
                                 : a                            ? int64_t(a->classes.size())
                                                                : 1);
    like_threshold.push_back(t.like_threshold);
  }
  shape.wide_offset.assign(cfg.train.tasks.size(), -1);
  if (!mc.wide_table.empty())
    for (size_t t = 0; t < cfg.train.tasks.size(); ++t)
      if (shape.task_kinds[t] == TaskKind::kAttribute) {
        shape.wide_offset[t] = shape.wide_columns;
        shape.wide_columns += shape.task_outputs[t];
      }
  double sum = 0, count = 0;
  shape.rating_min = std::numeric_limits<double>::infinity();
  shape.rating_max = -shape.rating_min;
  for (const auto& r : d.train_ratings)
    for (float x : r) {
      sum += x, count += 1;
      shape.rating_min = std::min(shape.rating_min, double(x));
      shape.rating_max = std::max(shape.rating_max, double(x));
    }
  shape.rating_mean = count > 0 ? sum / count : 0;
  if (count == 0) shape.rating_min = shape.rating_max = 0;
  if (d.multi_domain())
    for (const auto& dom : d.domains)
      domain_samplers.push_back(MakeSampler(d, cfg, dom.item_begin, dom.item_end));
  const TableSpec* tt = cfg.FindTable(mc.token_table);
  if (mc.item_id_dropout > 0 && shape.tokens && tt && tt->init.from.empty()) {
    untrained_token.assign(d.num_tokens, 1);
    for (uint32_t i = 0; i < d.item_tokens.size() && i < d.item_popularity.size(); ++i)
      if (d.item_popularity[i] > 0)
        for (uint32_t t : d.item_tokens[i]) untrained_token[t] = 0;
    for (uint32_t u = 0; u < d.user_tokens.size() && u < d.train.size(); ++u)
      if (!d.train[u].empty())
        for (uint32_t t : d.user_tokens[u]) untrained_token[t] = 0;
  }
}

void M6Inputs::Grow(const StreamEvent* ev, size_t n) {
  sampler = MakeSampler(ds, cfg, ds.first_item, ds.num_items);
  for (size_t d = 0; d < domain_samplers.size() && d < ds.domains.size(); ++d)
    domain_samplers[d] = MakeSampler(ds, cfg, ds.domains[d].item_begin, ds.domains[d].item_end);
  if (mc.item_graph) {
    item_users.resize(ds.num_items);
    for (size_t k = 0; k < n; ++k)
      if (ds.Trained(ev[k].user)) item_users[ev[k].item].push_back(ev[k].user);
  }
  if (!untrained_token.empty()) {
    auto trained = [&](const std::vector<std::vector<uint32_t>>& lists, uint32_t id) {
      if (id < lists.size())
        for (uint32_t t : lists[id])
          if (t < untrained_token.size()) untrained_token[t] = 0;
    };
    for (size_t k = 0; k < n; ++k) {
      trained(ds.item_tokens, ev[k].item);
      trained(ds.user_tokens, ev[k].user);
    }
  }
}

BatchBuilder::BatchBuilder(const M6Inputs& in, int fanout, int item_fanout)
    : in_(in),
      fanout_(fanout),
      item_fanout_(item_fanout),
      symmetric_(in.mc.graph_weighting == GraphWeighting::kSymmetric),
      degree_weights_(in.mc.graph_weighting != GraphWeighting::kMean) {}

int64_t BatchBuilder::User(uint32_t u) {
  auto [it, fresh] = umap_.emplace(u, int64_t(user_ids.size()) + 1);
  if (fresh) user_ids.push_back(u);
  return it->second;
}

int64_t BatchBuilder::Item(uint32_t i) {
  auto [it, fresh] = imap_.emplace(i, int64_t(item_ids.size()) + 1);
  if (!fresh) return it->second;
  item_ids.push_back(i);
  item_nbr_.emplace_back();
  item_nbr_w_.emplace_back();
  item_nbr_level_.emplace_back();
  static const std::vector<uint32_t> kNone;
  const auto& toks = i < in_.ds.item_tokens.size() ? in_.ds.item_tokens[i] : kNone;
  size_t next = 0;  // the item's next token that an input may read
  for (int k = 0; k < in_.item_tokens; ++k) {
    while (next < toks.size() && in_.Untrained(toks[next])) ++next;
    const bool on = in_.shape.tokens && next < toks.size();
    item_tok.push_back(on ? Token(toks[next++]) : 0);
    item_tok_mask.push_back(on ? 1.0f : 0.0f);
  }
  return it->second;
}

int64_t BatchBuilder::Token(uint32_t t) {
  auto [it, fresh] = tmap_.emplace(t, int64_t(token_ids.size()) + 1);
  if (fresh) token_ids.push_back(t);
  return it->second;
}

int64_t BatchBuilder::Wide(uint32_t i) {
  auto [it, fresh] = wmap_.emplace(i, int64_t(wide_ids.size()) + 1);
  if (fresh) wide_ids.push_back(i);
  return it->second;
}

int64_t BatchBuilder::Scored(uint32_t i) {
  const int64_t idx = Item(i);
  auto& nbr = item_nbr_[idx - 1];
  if (in_.mc.item_graph && item_users && nbr.empty()) {
    item_users(i, &scratch_);
    auto& w = item_nbr_w_[idx - 1];
    const bool rated = in_.mc.rating_messages && in_.ds.has_ratings();
    for (uint32_t v : scratch_) {
      nbr.push_back(User(v));
      w.push_back(degree_weights_ ? DegreeWeight(in_.ds.train[v].size()) : 1.0f);
      if (rated) item_nbr_level_[idx - 1].push_back(RatingLevel(TrainRating(in_.ds, v, i)));
    }
    Symmetric(in_.ds.item_popularity[i], &w);
  }
  return idx;
}

void BatchBuilder::Symmetric(size_t pool, std::vector<float>* w) const {
  if (!symmetric_ || w->empty()) return;
  const float scale = float(std::max(pool, w->size())) / float(w->size()) * DegreeWeight(pool);
  for (float& x : *w) x *= scale;
}

int BatchBuilder::NeighbourCount(uint32_t task, int fanout) const {
  return in_.shape.task_kinds[task] == TaskKind::kAttribute ? std::max(fanout, kAttributeBag)
                                                            : fanout;
}

void BatchBuilder::AddUser(uint32_t u, const std::vector<uint32_t>& h,
                           const std::vector<uint32_t>& nbr_items, size_t nbr_pool,
                           const std::vector<uint32_t>& fr, uint32_t domain, uint32_t task,
                           const std::vector<uint32_t>* profile,
                           const std::vector<float>* nbr_ratings) {
  const ModelConfig& mc = in_.mc;
  // An attribute task reads the user's behaviour, not its own row: trained on the id, a head
  // would learn the training users' rows by heart and know nothing of anyone else's.
  const bool no_row = u == kUnseenUser || in_.shape.task_kinds[task] == TaskKind::kAttribute;
  users.push_back(no_row ? 0 : User(u));
  row_condition.push_back(int64_t(task) * in_.shape.domains + domain);
  const int L = mc.seq_len, F = fanout_;
  const size_t pad = L - std::min<size_t>(L, h.size());
  for (size_t k = 0; k < pad; ++k) {
    hist.push_back(0);
    hist_mask.push_back(0);
  }
  for (size_t k = h.size() - (L - pad); k < h.size(); ++k) {
    hist.push_back(Item(h[k]));
    hist_mask.push_back(1);
  }
  std::vector<float> weight;
  auto fill = [F, &weight](const std::vector<int64_t>& idx, std::vector<int64_t>* out,
                           std::vector<float>* mask) {
    for (int k = 0; k < F; ++k) {
      out->push_back(k < int(idx.size()) ? idx[k] : 0);
      mask->push_back(k < int(idx.size()) ? (k < int(weight.size()) ? weight[k] : 1.0f) : 0.0f);
    }
    weight.clear();
  };
  std::vector<int64_t> idx;
  auto item_weights = [&](size_t n) {
    if (degree_weights_)
      for (size_t k = 0; k < n; ++k)
        weight.push_back(DegreeWeight(in_.ds.item_popularity[nbr_items[k]]));
    Symmetric(nbr_pool, &weight);
  };
  bag.emplace_back();
  bag_weight.emplace_back();
  bag_level.emplace_back();
  wide_bag.emplace_back();
  std::vector<int64_t> level;  // rating_messages: the neighbours' levels
  if (mc.graph && mc.rating_messages)
    for (size_t k = 0; k < nbr_items.size(); ++k)
      level.push_back(nbr_ratings && k < nbr_ratings->size() ? RatingLevel((*nbr_ratings)[k]) : 0);
  if (mc.graph) {
    for (uint32_t i : nbr_items) idx.push_back(Item(i));
    if (in_.shape.task_kinds[task] == TaskKind::kAttribute && !idx.empty()) {
      if (in_.shape.wide_columns > 0)
        for (uint32_t i : nbr_items) wide_bag.back().push_back(Wide(i));
      item_weights(idx.size());
      bag.back() = idx;
      bag_weight.back() = weight.empty() ? std::vector<float>(idx.size(), 1.0f) : weight;
      bag_level.back() = level;
      weight.clear();
      if (idx.size() > size_t(F)) idx.resize(size_t(F));
    }
    item_weights(idx.size());
  }
  if (mc.rating_messages)
    for (int k = 0; k < F; ++k) nbr_level.push_back(k < int(idx.size()) ? level[size_t(k)] : 0);
  fill(idx, &nbr, &nbr_mask);
  idx.clear();
  if (mc.graph && in_.shape.social) {
    for (uint32_t v : fr) {  // in the social graph a friend's degree is its number of friends
      idx.push_back(User(v));
      if (degree_weights_) weight.push_back(DegreeWeight(FriendsOf(in_.ds, v).size()));
    }
    Symmetric(u == kUnseenUser ? fr.size() : FriendsOf(in_.ds, u).size(), &weight);
  }
  fill(idx, &friends, &friends_mask);
  static const std::vector<uint32_t> kNone;
  const auto& own = u < in_.ds.user_tokens.size() ? in_.ds.user_tokens[u] : kNone;
  AddContent(profile ? *profile : own, h);
}

// Content: the user's profile tokens, then the tokens of the newest history items.
void BatchBuilder::AddContent(const std::vector<uint32_t>& profile,
                              const std::vector<uint32_t>& h) {
  const int T = in_.mc.content_tokens;
  const Dataset& ds = in_.ds;
  int n = 0;
  if (in_.mc.content && in_.shape.tokens) {
    std::vector<uint32_t> seen;
    auto add = [&](uint32_t t) {
      if (n >= T || in_.Untrained(t) || std::find(seen.begin(), seen.end(), t) != seen.end())
        return;
      seen.push_back(t);
      utok.push_back(Token(t));
      utok_mask.push_back(1);
      ++n;
    };
    for (uint32_t t : profile) add(t);
    for (size_t k = h.size(); k-- > 0 && n < T;)
      if (h[k] < ds.item_tokens.size())
        for (uint32_t t : ds.item_tokens[h[k]]) add(t);
  }
  for (; n < T; ++n) {
    utok.push_back(0);
    utok_mask.push_back(0);
  }
}

void FillKeyLists(const BatchBuilder& b, const JobConfig& cfg, std::vector<KeyList>* lists) {
  const TableSpec* ut = cfg.FindTable(cfg.train.user_table);
  const TableSpec* it = cfg.FindTable(cfg.train.item_table);
  const TableSpec* tt = cfg.FindTable(cfg.model.token_table);
  lists->assign(4, KeyList());
  auto& L = *lists;
  L[M6TrainBatch::kUsers].table = ut->id;
  L[M6TrainBatch::kUsers].dim = ut->dim;
  for (uint32_t u : b.user_ids) L[M6TrainBatch::kUsers].keys.push_back(MakeKey(ut->id, u));
  L[M6TrainBatch::kItems].table = it->id;
  L[M6TrainBatch::kItems].dim = it->dim;
  if (cfg.model.item_id)
    for (uint32_t i : b.item_ids) L[M6TrainBatch::kItems].keys.push_back(MakeKey(it->id, i));
  if (tt) {
    L[M6TrainBatch::kTokens].table = tt->id;
    L[M6TrainBatch::kTokens].dim = tt->dim;
    for (uint32_t t : b.token_ids) L[M6TrainBatch::kTokens].keys.push_back(MakeKey(tt->id, t));
  }
  if (const TableSpec* wt = cfg.FindTable(cfg.model.wide_table); wt && !b.wide_ids.empty()) {
    L[M6TrainBatch::kWide].table = wt->id;
    L[M6TrainBatch::kWide].dim = wt->dim;
    for (uint32_t i : b.wide_ids) L[M6TrainBatch::kWide].keys.push_back(MakeKey(wt->id, i));
  }
}

namespace {

// Training: the item graph's users of a scored item, drawn per batch. The edge being predicted
// stays out: a positive's sampled users never include the batch's users who have it as their
// target (they would see themselves).
void DrawItemUsers(const M6Inputs& in, const Sample* s, size_t n, std::mt19937_64& rng,
                   BatchBuilder* b) {
  auto targets = std::make_shared<std::unordered_map<uint32_t, std::vector<uint32_t>>>();
  for (size_t k = 0; k < n; ++k)
    if (s[k].pos < in.ds.train[s[k].user].size())
      (*targets)[in.ds.train[s[k].user][s[k].pos]].push_back(s[k].user);
  const int fanout = in.mc.item_fanout;
  b->item_users = [&in, &rng, targets, fanout](uint32_t i, std::vector<uint32_t>* out) {
    auto t = targets->find(i);
    const size_t skip = t == targets->end() ? 0 : t->second.size();
    *out = SampleNeighbours(in.item_users[i], fanout + int(skip), -1, rng);
    if (skip > 0)
      out->erase(std::remove_if(out->begin(), out->end(),
                                [&](uint32_t v) {
                                  return std::find(t->second.begin(), t->second.end(), v) !=
                                         t->second.end();
                                }),
                 out->end());
    if (out->size() > size_t(fanout)) out->resize(fanout);
  };
}

}  // namespace

std::unique_ptr<M6TrainBatch> BuildTrainBatch(const M6Inputs& in, const JobConfig& cfg,
                                              const Sample* s, size_t n, std::mt19937_64& rng) {
  const ModelConfig& mc = in.mc;
  const Dataset& ds = in.ds;
  auto batch = std::make_unique<M6TrainBatch>();
  batch->b = std::make_unique<BatchBuilder>(in, mc.fanout, mc.item_fanout);
  BatchBuilder& b = *batch->b;
  if (mc.item_graph) DrawItemUsers(in, s, n, rng, &b);
  std::vector<uint32_t> hist, nbr, fr, prefix;
  std::vector<float> nbr_ratings;
  const bool rated = mc.rating_messages && ds.has_ratings();
  size_t pool = 0;
  for (size_t k = 0; k < n; ++k) {
    const uint32_t u = s[k].user, pos = s[k].pos, task = s[k].task;
    // An attribute row reads the user's whole list and scores no item.
    const bool has_item = pos < ds.train[u].size();
    const uint32_t item = has_item ? ds.train[u][pos] : 0;
    const bool ordered = ds.Ordered(ds.UserDomain(u));
    hist = mc.sequence ? HistoryWindow(ds.train[u], pos, mc.seq_len, ordered)
                       : std::vector<uint32_t>{};
    if (mc.graph && rated) {
      // Positions, not items, are drawn (the same draws): a neighbour keeps its rating. The
      // target's own position stays out (its rating is what a rating row predicts).
      const size_t n = ordered ? pos : ds.train[u].size();
      nbr =
          SampleRated(ds.train[u], n, u < ds.train_ratings.size() ? &ds.train_ratings[u] : nullptr,
                      b.NeighbourCount(task, mc.fanout), !ordered && has_item ? int64_t(pos) : -1,
                      rng, &nbr_ratings);
      pool = n - (!ordered && has_item ? 1 : 0);
      fr = SampleNeighbours(FriendsOf(ds, u), mc.fanout, -1, rng);
    } else if (mc.graph) {
      // On time-ordered data the graph sees only what came before the target, as at test
      // time (where every training item precedes the held-out one).
      if (ordered) {
        prefix.assign(ds.train[u].begin(), ds.train[u].begin() + pos);
        nbr = SampleNeighbours(prefix, b.NeighbourCount(task, mc.fanout), -1, rng);
        pool = prefix.size();
      } else {
        nbr = SampleNeighbours(ds.train[u], b.NeighbourCount(task, mc.fanout),
                               has_item ? int64_t(item) : -1, rng);
        pool = ds.train[u].size() - (has_item ? 1 : 0);
      }
      fr = SampleNeighbours(FriendsOf(ds, u), mc.fanout, -1, rng);
    }
    const uint32_t domain = has_item ? ds.ItemDomain(item) : ds.UserDomain(u);
    b.AddUser(u, hist, nbr, pool, fr, domain, task, nullptr, rated ? &nbr_ratings : nullptr);
    batch->pos.push_back(has_item ? b.Scored(item) : 0);
    batch->pos_items.push_back(has_item ? item : UINT32_MAX);
    if (ds.multi_domain()) batch->pos_domain.push_back(domain);
    batch->row_task.push_back(task);
    switch (in.shape.task_kinds[task]) {
      case TaskKind::kRetrieval:
        batch->target.push_back(0);
        break;
      case TaskKind::kRating:
        batch->target.push_back(ds.train_ratings[u][pos]);
        break;
      case TaskKind::kLike:
        batch->target.push_back(ds.train_ratings[u][pos] >= in.like_threshold[task] ? 1 : 0);
        break;
      case TaskKind::kAttribute:
        batch->target.push_back(float(ds.FindAttribute(cfg.train.tasks[task].attribute)->label[u]));
        break;
    }
  }
  // Only retrieval rows read negatives.
  bool retrieval = false;
  for (size_t k = 0; k < n && !retrieval; ++k) retrieval = s[k].task == 0;
  if (retrieval && !ds.multi_domain()) {
    for (int j = 0; j < in.negatives; ++j) {
      const uint32_t neg = in.sampler.Draw(rng);
      batch->neg.push_back(b.Scored(neg));
      batch->neg_items.push_back(neg);
    }
  } else if (retrieval) {
    // Every domain of the batch draws its own shared negatives, in domain order.
    std::vector<bool> present(ds.domains.size(), false);
    for (size_t k = 0; k < n; ++k)
      if (s[k].task == 0) present[batch->pos_domain[k]] = true;
    for (uint32_t d = 0; d < present.size(); ++d)
      for (int j = 0; present[d] && j < in.negatives; ++j) {
        const uint32_t neg = in.domain_samplers[d].Draw(rng);
        batch->neg.push_back(b.Scored(neg));
        batch->neg_items.push_back(neg);
        batch->neg_domain.push_back(d);
      }
  }
  FillKeyLists(b, cfg, &batch->lists);
  return batch;
}

std::unique_ptr<BatchBuilder> BuildEvalBatch(const M6Inputs& in,
                                             const std::vector<UserQuery>& queries) {
  const ModelConfig& mc = in.mc;
  auto b = std::make_unique<BatchBuilder>(in, in.eval_fanout, in.eval_item_fanout);
  if (mc.item_graph)
    b->item_users = [&in](uint32_t i, std::vector<uint32_t>* out) {
      *out = SampleNeighboursFixed(in.item_users[i], in.eval_item_fanout, -1, in.eval_seed ^ 2, i);
    };
  std::vector<uint32_t> nbr;
  std::vector<float> nbr_ratings;
  for (const auto& q : queries) {
    const uint32_t u = q.unseen ? BatchBuilder::kUnseenUser : q.user;
    const uint32_t seed_id = q.unseen ? 0 : u;
    nbr.clear();
    nbr_ratings.clear();
    if (mc.graph) {  // SampleNeighboursFixed's draws, each neighbour with its rating
      std::mt19937_64 rng = NodeRng(in.eval_seed, seed_id);
      nbr = SampleRated(q.neighbours, q.neighbours.size(), &q.neighbour_ratings,
                        b->NeighbourCount(q.task, in.eval_fanout), -1, rng, &nbr_ratings);
    }
    b->AddUser(u,
               mc.sequence ? HistoryWindow(q.history, -1, mc.seq_len,
                                           in.ds.Ordered(q.domain >= 0 ? uint32_t(q.domain)
                                                                       : in.ds.UserDomain(u)))
                           : std::vector<uint32_t>{},
               nbr, q.neighbours.size(),
               mc.graph ? SampleNeighboursFixed(q.unseen ? q.friends : FriendsOf(in.ds, u),
                                                in.eval_fanout, -1, in.eval_seed ^ 1, seed_id)
                        : std::vector<uint32_t>{},
               q.domain >= 0 ? uint32_t(q.domain) : in.ds.UserDomain(u), q.task,
               q.unseen ? &q.profile : nullptr, &nbr_ratings);
  }
  return b;
}

}  // namespace m6rec
