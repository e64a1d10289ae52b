#include "ps/row_lifecycle.h"

#include <algorithm>

#include "common/key_index.h"
#include "common/mutex.h"

namespace m6rec {
namespace {

constexpr uint32_t kNone = KeyIndex::kNone;

// Rows in recency-of-update order: a KeyIndex to a slot, and per slot its key, last update and
// neighbours (head = most recent).
class RecencyList {
 public:
  size_t size() const { return index_.size(); }
  bool Contains(Key k) const { return index_.Find(k) != kNone; }
  void Touch(Key k, int64_t ms) {
    uint32_t s = index_.Find(k);
    if (s == kNone) {
      s = Allocate();
      index_.Insert(k, s);
      key_[s] = k;
    } else {
      Unlink(s);
    }
    ms_[s] = ms;
    PushFront(s);
  }
  // The least recently updated row (size() > 0).
  Key Oldest(int64_t* ms) const {
    *ms = ms_[tail_];
    return key_[tail_];
  }
  void Remove(Key k) {
    const uint32_t s = index_.Find(k);
    if (s == kNone) return;
    Unlink(s);
    index_.Erase(k);
    free_.push_back(s);
  }

 private:
  uint32_t Allocate() {
    if (!free_.empty()) {
      const uint32_t s = free_.back();
      free_.pop_back();
      return s;
    }
    key_.push_back(0);
    ms_.push_back(0);
    prev_.push_back(kNone);
    next_.push_back(kNone);
    return uint32_t(key_.size() - 1);
  }
  void Unlink(uint32_t s) {
    if (prev_[s] != kNone) next_[prev_[s]] = next_[s];
    if (next_[s] != kNone) prev_[next_[s]] = prev_[s];
    if (head_ == s) head_ = next_[s];
    if (tail_ == s) tail_ = prev_[s];
    prev_[s] = next_[s] = kNone;
  }
  void PushFront(uint32_t s) {
    next_[s] = head_;
    prev_[s] = kNone;
    if (head_ != kNone) prev_[head_] = s;
    head_ = s;
    if (tail_ == kNone) tail_ = s;
  }

  KeyIndex index_;
  std::vector<Key> key_;
  std::vector<int64_t> ms_;
  std::vector<uint32_t> prev_, next_, free_;
  uint32_t head_ = kNone, tail_ = kNone;
};

// Count-min sketch of push counts: kDepth rows of 2^kBits saturating 16-bit counters.
class CountSketch {
 public:
  static constexpr int kDepth = 4, kBits = 20;
  CountSketch() : c_(size_t{kDepth} << kBits, 0) {}
  // Adds one occurrence of k; returns its estimated count.
  uint32_t Add(Key k) {
    uint32_t est = UINT32_MAX;
    for (int d = 0; d < kDepth; ++d) {
      uint16_t& c = c_[(size_t(d) << kBits) + Slot(k, d)];
      if (c < UINT16_MAX) ++c;
      est = std::min<uint32_t>(est, c);
    }
    return est;
  }

 private:
  static size_t Slot(Key k, int d) {
    return size_t(Mix64(k ^ (0x9e3779b97f4a7c15ULL * uint64_t(d + 1))) >> (64 - kBits));
  }
  std::vector<uint16_t> c_;
};

}  // namespace

struct RowLifecycle::Table {
  TableSpec spec;
  uint64_t cap = 0;    // per server; 0 = none
  int64_t ttl_ms = 0;  // 0 = none
  mutable Mutex mu;
  RecencyList rows GUARDED_BY(mu);
  std::unique_ptr<CountSketch> sketch GUARDED_BY(mu);  // admit_after > 1
  LifecycleStats stats GUARDED_BY(mu);

  // Deletes the rows idle past the TTL and those over the cap, oldest first.
  Status Trim(TableStore& store, int64_t now) REQUIRES(mu) {
    std::vector<Key> expired, evicted;
    int64_t ms = 0;
    while (ttl_ms > 0 && rows.size() > 0) {
      const Key k = rows.Oldest(&ms);
      if (now - ms < ttl_ms) break;
      rows.Remove(k);
      expired.push_back(k);
    }
    while (cap > 0 && rows.size() > cap) {
      const Key k = rows.Oldest(&ms);
      rows.Remove(k);
      evicted.push_back(k);
    }
    if (!expired.empty()) M6_RETURN_IF_ERROR(store.Erase(spec.id, expired.data(), expired.size()));
    if (!evicted.empty()) M6_RETURN_IF_ERROR(store.Erase(spec.id, evicted.data(), evicted.size()));
    stats.expired += expired.size();
    stats.evicted += evicted.size();
    stats.rows = rows.size();
    return Status::OK();
  }
};

RowLifecycle::RowLifecycle(const std::vector<TableSpec>& tables, uint32_t servers,
                           const Clock* clock)
    : clock_(clock) {
  for (const TableSpec& spec : tables) {
    auto t = std::make_unique<Table>();
    t->spec = spec;
    if (spec.max_rows > 0)
      t->cap =
          (spec.max_rows + std::max<uint32_t>(1, servers) - 1) / std::max<uint32_t>(1, servers);
    t->ttl_ms = int64_t(spec.ttl_s * 1000);
    if (spec.admit_after > 1) {
      MutexLock lock(&t->mu);
      t->sketch = std::make_unique<CountSketch>();
    }
    tables_.push_back(std::move(t));
  }
}

RowLifecycle::~RowLifecycle() = default;

Status RowLifecycle::Push(TableStore& store, const TableSpec& spec, const Key* keys, size_t n,
                          const std::function<Status(const std::vector<size_t>&)>& apply) {
  std::vector<size_t> admitted;
  if (spec.id >= tables_.size() || !spec.lifecycle()) {
    admitted.resize(n);
    for (size_t i = 0; i < n; ++i) admitted[i] = i;
    return apply(admitted);
  }
  Table& t = *tables_[spec.id];
  MutexLock lock(&t.mu);
  const int64_t now = clock_->NowMs();
  for (size_t i = 0; i < n; ++i) {
    if (t.rows.Contains(keys[i]) || !t.sketch || t.sketch->Add(keys[i]) >= spec.admit_after) {
      admitted.push_back(i);
    } else {
      ++t.stats.not_admitted;
    }
  }
  M6_RETURN_IF_ERROR(apply(admitted));
  for (size_t i : admitted) {
    if (!t.rows.Contains(keys[i])) ++t.stats.created;
    t.rows.Touch(keys[i], now);
  }
  t.stats.updated += admitted.size();
  return t.Trim(store, now);
}

Status RowLifecycle::Expire(TableStore& store) {
  const int64_t now = clock_->NowMs();
  for (auto& t : tables_) {
    if (!t->spec.lifecycle()) continue;
    MutexLock lock(&t->mu);
    M6_RETURN_IF_ERROR(t->Trim(store, now));
  }
  return Status::OK();
}

Status RowLifecycle::Seed(TableStore& store) {
  const int64_t now = clock_->NowMs();
  for (auto& t : tables_) {
    if (!t->spec.lifecycle()) continue;
    std::vector<Key> held;
    M6_RETURN_IF_ERROR(store.ForEachKey(t->spec.id, [&](Key k) { held.push_back(k); }));
    MutexLock lock(&t->mu);
    for (Key k : held) t->rows.Touch(k, now);
    M6_RETURN_IF_ERROR(t->Trim(store, now));
  }
  return Status::OK();
}

LifecycleStats RowLifecycle::Stats(TableId table) const {
  if (table >= tables_.size()) return {};
  MutexLock lock(&tables_[table]->mu);
  LifecycleStats s = tables_[table]->stats;
  s.rows = tables_[table]->rows.size();
  return s;
}

uint64_t RowLifecycle::cap(TableId table) const {
  return table < tables_.size() ? tables_[table]->cap : 0;
}

}  // namespace m6rec
