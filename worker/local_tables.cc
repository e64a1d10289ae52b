#include "worker/local_tables.h"

#include <map>

#include "common/cluster_view.h"
#include "common/key_index.h"

namespace m6rec {

StatusOr<std::shared_ptr<LocalStores>> LocalStores::Open(const LocalStoresOptions& opts) {
  auto ls = std::shared_ptr<LocalStores>(new LocalStores());
  ls->tables_ = opts.tables;
  const bool rocksdb = opts.ps.store == PsConfig::Store::kRocksDB;
  if (rocksdb && opts.shard_dirs.empty())
    return Status::InvalidArgument("local RocksDB tables need one directory per shard");
  const size_t shards = std::max<size_t>(1, opts.shard_dirs.size());
  for (size_t s = 0; s < shards; ++s) {
    StoreOptions so;
    so.kind = opts.ps.store;
    so.durability = opts.ps.durability;
    so.hot_rows = opts.ps.hot_rows;
    so.path = s < opts.shard_dirs.size() ? opts.shard_dirs[s] : "";
    so.read_only = opts.read_only;
    if (!opts.restore_from.empty())
      so.restore_from = opts.restore_from + "/server-" + std::to_string(s);
    M6_ASSIGN_OR_RETURN(auto store, OpenTableStore(so, opts.tables));
    ls->stores_.push_back(std::move(store));
  }
  ls->slot_map_ = RoundRobinSlotMap(opts.ps.num_slots, static_cast<uint32_t>(shards));
  for (size_t s = 0; s < shards; ++s) {
    ls->lifecycles_.push_back(
        std::make_unique<RowLifecycle>(opts.tables, static_cast<uint32_t>(shards), &ls->clock_));
    if (!opts.restore_from.empty() && !opts.read_only)
      M6_RETURN_IF_ERROR(ls->lifecycles_.back()->Seed(*ls->stores_[s]));
  }
  // A fresh job's imported rows, each shard its own (as its server would).
  if (!opts.read_only && opts.restore_from.empty())
    for (size_t s = 0; s < shards; ++s)
      for (const TableSpec& t : opts.tables) {
        uint64_t n = 0;
        M6_RETURN_IF_ERROR(ImportRows(
            *ls->stores_[s], t, [&](Key k) { return ls->ShardOf(k) == s; }, &n));
      }
  return ls;
}

RowLifecycle* LocalStores::LifecycleOf(const TableStore& st) {
  for (size_t s = 0; s < stores_.size(); ++s)
    if (stores_[s].get() == &st) return lifecycles_[s].get();
  return nullptr;
}

uint32_t LocalStores::ShardOf(Key key) const {
  return slot_map_[SlotOf(key, static_cast<uint32_t>(slot_map_.size()))];
}

namespace {

class LocalTables final : public SparseTables {
 public:
  explicit LocalTables(std::shared_ptr<LocalStores> stores) : stores_(std::move(stores)) {}

  StatusOr<Ticket> PullAsync(TableId table, const Key* keys, size_t n) override {
    M6_ASSIGN_OR_RETURN(const TableSpec* spec, Spec(table));
    Done& d = done_[next_];
    d.is_pull = true;
    d.rows.assign(n * spec->dim, 0.0f);
    d.status = ForEachShard(
        table, keys, n,
        [&](TableStore& st, const std::vector<Key>& k, const std::vector<size_t>& at) -> Status {
          std::vector<float> rows(k.size() * spec->dim);
          M6_RETURN_IF_ERROR(st.Lookup(table, k.data(), k.size(), spec->dim, rows.data()));
          for (size_t j = 0; j < at.size(); ++j)
            std::copy_n(&rows[j * spec->dim], spec->dim, &d.rows[at[j] * spec->dim]);
          return Status::OK();
        });
    return next_++;
  }

  Status WaitPull(Ticket t, float* out) override {
    auto it = done_.find(t);
    if (it == done_.end() || !it->second.is_pull)
      return Status::InvalidArgument("unknown pull ticket");
    Status s = it->second.status;
    if (s.ok()) std::copy(it->second.rows.begin(), it->second.rows.end(), out);
    done_.erase(it);
    return s;
  }

  StatusOr<Ticket> PushAsync(TableId table, const Key* keys, size_t n,
                             const float* grads) override {
    M6_ASSIGN_OR_RETURN(const TableSpec* spec, Spec(table));
    // Sum duplicates first (as the PS client does): one optimizer step per unique key.
    dedup_.Clear();
    std::vector<Key> uniq;
    std::vector<float> sum;
    const uint32_t dim = spec->dim;
    for (size_t i = 0; i < n; ++i) {
      uint32_t u = dedup_.Find(keys[i]);
      if (u == KeyIndex::kNone) {
        u = static_cast<uint32_t>(uniq.size());
        dedup_.Insert(keys[i], u);
        uniq.push_back(keys[i]);
        sum.resize(sum.size() + dim, 0.0f);
      }
      for (uint32_t k = 0; k < dim; ++k) sum[size_t(u) * dim + k] += grads[i * dim + k];
    }
    Done& d = done_[next_];
    d.is_pull = false;
    d.status = ForEachShard(
        table, uniq.data(), uniq.size(),
        [&](TableStore& st, const std::vector<Key>& k, const std::vector<size_t>& at) {
          std::vector<float> g(k.size() * dim);
          for (size_t j = 0; j < at.size(); ++j) std::copy_n(&sum[at[j] * dim], dim, &g[j * dim]);
          return ApplyPush(st, *spec, k.data(), k.size(), g.data(), stores_->LifecycleOf(st));
        });
    return next_++;
  }

  Status WaitPush(Ticket t) override {
    auto it = done_.find(t);
    if (it == done_.end() || it->second.is_pull)
      return Status::InvalidArgument("unknown push ticket");
    Status s = it->second.status;
    done_.erase(it);
    return s;
  }

  Status Checkpoint(const std::string& dir) override {
    for (size_t s = 0; s < stores_->num_shards(); ++s)
      M6_RETURN_IF_ERROR(stores_->shard(s).Checkpoint(dir + "/server-" + std::to_string(s)));
    return Status::OK();
  }
  size_t num_shards() const override { return stores_->num_shards(); }

 private:
  struct Done {
    bool is_pull = true;
    Status status;
    std::vector<float> rows;
  };

  StatusOr<const TableSpec*> Spec(TableId table) const {
    if (table >= stores_->tables().size())
      return Status::InvalidArgument("unknown table id " + std::to_string(table));
    return &stores_->tables()[table];
  }

  // Calls fn(store, its keys, their positions in `keys`) for every shard that owns some keys.
  template <typename F>
  Status ForEachShard(TableId table, const Key* keys, size_t n, F&& fn) {
    std::map<uint32_t, std::pair<std::vector<Key>, std::vector<size_t>>> by_shard;
    for (size_t i = 0; i < n; ++i) {
      if (KeyTable(keys[i]) != table)
        return Status::InvalidArgument("key " + std::to_string(keys[i]) + " is not of table " +
                                       std::to_string(table));
      auto& part = by_shard[stores_->ShardOf(keys[i])];
      part.first.push_back(keys[i]);
      part.second.push_back(i);
    }
    for (auto& [s, part] : by_shard)
      M6_RETURN_IF_ERROR(fn(stores_->shard(s), part.first, part.second));
    return Status::OK();
  }

  std::shared_ptr<LocalStores> stores_;
  std::map<Ticket, Done> done_;
  Ticket next_ = 1;
  KeyIndex dedup_;
};

}  // namespace

std::unique_ptr<SparseTables> MakeLocalTables(std::shared_ptr<LocalStores> stores) {
  return std::make_unique<LocalTables>(std::move(stores));
}

}  // namespace m6rec
