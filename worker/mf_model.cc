#include "worker/mf_model.h"

#include "worker/dataset.h"
#include "worker/losses.h"
#include "worker/sparse_tables.h"

namespace m6rec {

namespace {

// The batch: B (user, positive) pairs, M shared negatives, and each user's history items.
struct MfBatch final : TrainBatch {
  enum List { kUsers, kPositives, kNegatives, kHistory };
  std::vector<uint32_t> hcount;  // history items per pair (their rows are consecutive)
};

class MfPlugin final : public ModelPlugin {
 public:
  MfPlugin(const PluginContext& ctx, const TableSpec& users, const TableSpec& items)
      : tc_(ctx.cfg->train),
        ds_(*ctx.data),
        tables_(*ctx.tables),
        ut_(users),
        it_(items),
        dim_(users.dim),
        g_user_(tc_.history > 0 ? tc_.history_user_weight : 1.0f) {}

  const char* name() const override { return "mf"; }
  DenseModel* dense() override { return nullptr; }

  StatusOr<std::unique_ptr<TrainBatch>> MakeBatch(const Sample* s, size_t n,
                                                  std::mt19937_64& rng) override;
  StatusOr<StepResult> Step(TrainBatch& batch) override;

  Status BeginScoring() override { return Status::OK(); }
  void EndScoring() override { all_items_.clear(); }
  Status ScoreCandidates(const std::vector<UserQuery>& queries,
                         const std::vector<std::vector<uint32_t>>& cands,
                         std::vector<std::vector<float>>* scores) override;
  Status ScoreAllItems(const std::vector<UserQuery>& queries, std::vector<float>* scores) override;

 private:
  Key UserKey(uint32_t u) const { return MakeKey(ut_.id, u); }
  Key ItemKey(uint32_t i) const { return MakeKey(it_.id, i); }
  KeyList List(const TableSpec& t) const {
    KeyList l;
    l.table = t.id;
    l.dim = t.dim;
    return l;
  }
  // The last L items of `items` (newest first), skipping `exclude` (-1: none).
  void History(const std::vector<uint32_t>& items, int64_t exclude,
               std::vector<uint32_t>* h) const {
    h->clear();
    for (size_t k = items.size(); k-- > 0 && static_cast<int>(h->size()) < tc_.history;)
      if (static_cast<int64_t>(items[k]) != exclude) h->push_back(items[k]);
  }
  // U[b] = g U[b] + (1 - g) mean(H rows of b), in place.
  void Compose(size_t n, const std::vector<uint32_t>& hcount, const float* H, float* U) const;
  // The queries' user vectors (own row composed with their history's rows).
  Status UserVectors(const std::vector<UserQuery>& queries, std::vector<float>* out);

  const TrainConfig& tc_;
  const Dataset& ds_;
  SparseTables& tables_;
  const TableSpec ut_, it_;
  const uint32_t dim_;
  const float g_user_;
  std::vector<float> all_items_;  // every item's row while scoring all items
};

StatusOr<std::unique_ptr<TrainBatch>> MfPlugin::MakeBatch(const Sample* s, size_t n,
                                                          std::mt19937_64& rng) {
  auto b = std::make_unique<MfBatch>();
  b->lists = {List(ut_), List(it_), List(it_), List(it_)};
  auto& L = b->lists;
  std::vector<uint32_t> h;
  for (size_t k = 0; k < n; ++k) {
    const uint32_t item = ds_.train[s[k].user][s[k].pos];
    L[MfBatch::kUsers].keys.push_back(UserKey(s[k].user));
    L[MfBatch::kPositives].keys.push_back(ItemKey(item));
    History(ds_.train[s[k].user], item, &h);
    b->hcount.push_back(static_cast<uint32_t>(h.size()));
    for (uint32_t i : h) L[MfBatch::kHistory].keys.push_back(ItemKey(i));
  }
  const uint32_t span = ds_.num_items - ds_.first_item;
  for (int j = 0; j < tc_.negatives; ++j)
    L[MfBatch::kNegatives].keys.push_back(
        ItemKey(ds_.first_item + static_cast<uint32_t>(rng() % span)));
  return std::unique_ptr<TrainBatch>(std::move(b));
}

void MfPlugin::Compose(size_t n, const std::vector<uint32_t>& hcount, const float* H,
                       float* U) const {
  size_t off = 0;
  for (size_t b = 0; b < n; ++b) {
    if (hcount[b] == 0) continue;
    float* u = U + b * dim_;
    for (uint32_t k = 0; k < dim_; ++k) u[k] *= g_user_;
    const float w = (1.0f - g_user_) / hcount[b];
    for (uint32_t h = 0; h < hcount[b]; ++h, ++off) Axpy(w, H + off * dim_, u, dim_);
  }
}

StatusOr<StepResult> MfPlugin::Step(TrainBatch& batch) {
  auto& b = static_cast<MfBatch&>(batch);
  auto& U = b.lists[MfBatch::kUsers];
  auto& P = b.lists[MfBatch::kPositives];
  auto& N = b.lists[MfBatch::kNegatives];
  auto& H = b.lists[MfBatch::kHistory];
  const size_t n = U.keys.size(), M = N.keys.size();
  if (!H.keys.empty()) Compose(n, b.hcount, H.rows.data(), U.rows.data());
  U.grads.assign(n * dim_, 0.0f);
  P.grads.assign(n * dim_, 0.0f);
  N.grads.assign(M * dim_, 0.0f);
  double loss = 0;
  switch (tc_.loss) {
    case LossKind::kCcl:
      loss = LossCcl(n, M, dim_, U.rows.data(), P.rows.data(), N.rows.data(), tc_.margin,
                     tc_.neg_weight, U.grads.data(), P.grads.data(), N.grads.data());
      break;
    case LossKind::kSoftmax:
      loss = LossSoftmax(n, M, dim_, U.rows.data(), P.rows.data(), N.rows.data(), tc_.temperature,
                         U.grads.data(), P.grads.data(), N.grads.data());
      break;
    default:
      loss = LossBpr(n, M, dim_, U.rows.data(), P.rows.data(), N.rows.data(), U.grads.data(),
                     P.grads.data(), N.grads.data());
  }
  if (!H.keys.empty()) {
    // Back through the composition: d/d e_user = g * gu; d/d e_hist = (1-g)/|H| * gu.
    H.grads.assign(H.keys.size() * dim_, 0.0f);
    size_t off = 0;
    for (size_t r = 0; r < n; ++r) {
      if (b.hcount[r] == 0) continue;
      const float w = (1.0f - g_user_) / b.hcount[r];
      for (uint32_t h = 0; h < b.hcount[r]; ++h, ++off)
        Axpy(w, &U.grads[r * dim_], &H.grads[off * dim_], dim_);
      for (uint32_t k = 0; k < dim_; ++k) U.grads[r * dim_ + k] *= g_user_;
    }
  }
  return StepResult{loss, n};
}

Status MfPlugin::UserVectors(const std::vector<UserQuery>& queries, std::vector<float>* out) {
  std::vector<Key> uk, hk;
  std::vector<uint32_t> hcount, h;
  for (const auto& q : queries) {
    uk.push_back(UserKey(q.user));
    History(q.history, -1, &h);
    hcount.push_back(static_cast<uint32_t>(h.size()));
    for (uint32_t i : h) hk.push_back(ItemKey(i));
  }
  out->resize(uk.size() * dim_);
  M6_RETURN_IF_ERROR(tables_.Pull(ut_.id, uk.data(), uk.size(), out->data()));
  if (hk.empty()) return Status::OK();
  std::vector<float> H(hk.size() * dim_);
  M6_RETURN_IF_ERROR(tables_.Pull(it_.id, hk.data(), hk.size(), H.data()));
  Compose(queries.size(), hcount, H.data(), out->data());
  return Status::OK();
}

Status MfPlugin::ScoreCandidates(const std::vector<UserQuery>& queries,
                                 const std::vector<std::vector<uint32_t>>& cands,
                                 std::vector<std::vector<float>>* scores) {
  std::vector<Key> ik;
  for (const auto& c : cands)
    for (uint32_t i : c) ik.push_back(ItemKey(i));
  std::vector<float> urows, irows(ik.size() * dim_);
  M6_RETURN_IF_ERROR(UserVectors(queries, &urows));
  M6_RETURN_IF_ERROR(tables_.Pull(it_.id, ik.data(), ik.size(), irows.data()));
  size_t off = 0;
  for (size_t c = 0; c < cands.size(); ++c) {
    scores->emplace_back();
    for (size_t k = 0; k < cands[c].size(); ++k, ++off)
      scores->back().push_back(Dot(&urows[c * dim_], &irows[off * dim_], dim_));
  }
  return Status::OK();
}

Status MfPlugin::ScoreAllItems(const std::vector<UserQuery>& queries, std::vector<float>* scores) {
  for (const auto& q : queries)
    if (q.unseen)
      return Status::InvalidArgument(
          "the mf job scores a user by its own row: a user the run has not seen needs the m6 job");
  const uint32_t I = ds_.num_items;
  if (all_items_.empty()) {
    std::vector<Key> all;
    for (uint32_t i = 0; i < I; ++i) all.push_back(ItemKey(i));
    all_items_.resize(size_t(I) * dim_);
    M6_RETURN_IF_ERROR(tables_.Pull(it_.id, all.data(), all.size(), all_items_.data()));
  }
  std::vector<float> urows;
  M6_RETURN_IF_ERROR(UserVectors(queries, &urows));
  scores->resize(queries.size() * size_t(I));
  for (size_t c = 0; c < queries.size(); ++c)
    for (uint32_t i = 0; i < I; ++i)
      (*scores)[c * I + i] = Dot(&urows[c * dim_], &all_items_[size_t(i) * dim_], dim_);
  return Status::OK();
}

}  // namespace

StatusOr<std::unique_ptr<ModelPlugin>> MakeMfPlugin(const PluginContext& ctx) {
  const TableSpec* ut = ctx.cfg->FindTable(ctx.cfg->train.user_table);
  const TableSpec* it = ctx.cfg->FindTable(ctx.cfg->train.item_table);
  if (!ut || !it)
    return Status::InvalidArgument("mf: train.user_table / train.item_table are not declared");
  return std::unique_ptr<ModelPlugin>(new MfPlugin(ctx, *ut, *it));
}

}  // namespace m6rec
