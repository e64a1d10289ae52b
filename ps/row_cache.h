// RowCache: an in-memory, lock-striped map from key to a fixed-width float row. It is the whole
// table for the memory store and the hot tier in front of RocksDB. Rows live in arena blocks
// (no per-row allocation); each of the 64 shards has its own mutex, open-addressing index and
// arena, so concurrent requests touching different keys rarely contend. With a capacity, a
// shard evicts with CLOCK (second chance) when full; callers only evict rows that are already
// durable elsewhere (the RocksDB store writes through).
// Thread-safe: every public method locks the key's shard; a callback runs under that lock and
// must not call back into the cache. A shard's state is GUARDED_BY its mutex, and the private
// helpers REQUIRE it held.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/key_index.h"
#include "common/keys.h"
#include "common/mutex.h"

namespace m6rec {

class RowCache {
 public:
  static constexpr int kShards = 64;

  // capacity 0 = unbounded.
  RowCache(uint32_t width, uint64_t capacity) : width_(width) {
    per_shard_cap_ = capacity == 0 ? 0 : std::max<uint64_t>(1, (capacity + kShards - 1) / kShards);
    for (auto& s : shards_) s = std::make_unique<Shard>();
  }
  RowCache(const RowCache&) = delete;
  RowCache& operator=(const RowCache&) = delete;

  uint32_t width() const { return width_; }

  // If `k` is cached, runs fn(const float* row) under the shard lock and returns true.
  template <typename F>
  bool Read(Key k, F&& fn) {
    Shard& s = ShardOf(k);
    MutexLock lock(&s.mu);
    uint32_t idx = s.index.Find(k);
    if (idx == KeyIndex::kNone) return false;
    s.ref[idx] = 1;
    fn(static_cast<const float*>(RowPtr(s, idx)));
    return true;
  }

  // Finds or inserts `k` (a new row is filled by init(float* row)), then runs fn(float* row),
  // both under the shard lock.
  template <typename I, typename F>
  void Upsert(Key k, I&& init, F&& fn) {
    Shard& s = ShardOf(k);
    MutexLock lock(&s.mu);
    uint32_t idx = s.index.Find(k);
    if (idx == KeyIndex::kNone) {
      idx = Allocate(s);
      s.index.Insert(k, idx);
      s.row_key[idx] = k;
      init(RowPtr(s, idx));
    }
    s.ref[idx] = 1;
    fn(RowPtr(s, idx));
  }

  void Erase(Key k) {
    Shard& s = ShardOf(k);
    MutexLock lock(&s.mu);
    uint32_t idx = s.index.Find(k);
    if (idx == KeyIndex::kNone) return;
    s.index.Erase(k);
    s.live[idx] = 0;
    s.free.push_back(idx);
  }

  uint64_t size() const {
    uint64_t n = 0;
    for (const auto& s : shards_) {
      MutexLock lock(&s->mu);
      n += s->index.size();
    }
    return n;
  }
  uint64_t evictions() const {
    uint64_t n = 0;
    for (const auto& s : shards_) {
      MutexLock lock(&s->mu);
      n += s->evictions;
    }
    return n;
  }

  // Visits every cached row (under each shard's lock in turn): fn(Key, const float* row).
  template <typename F>
  void ForEach(F&& fn) const {
    for (const auto& sp : shards_) {
      MutexLock lock(&sp->mu);
      for (size_t i = 0; i < sp->live.size(); ++i)
        if (sp->live[i]) fn(sp->row_key[i], RowPtrConst(*sp, static_cast<uint32_t>(i)));
    }
  }

 private:
  static constexpr uint32_t kBlockRows = 1024;
  struct Shard {
    mutable Mutex mu;
    KeyIndex index GUARDED_BY(mu);
    std::vector<std::unique_ptr<float[]>> blocks GUARDED_BY(mu);
    std::vector<Key> row_key GUARDED_BY(mu);
    std::vector<uint8_t> ref GUARDED_BY(mu);  // CLOCK reference bit
    std::vector<uint8_t> live GUARDED_BY(mu);
    std::vector<uint32_t> free GUARDED_BY(mu);
    size_t hand GUARDED_BY(mu) = 0;
    uint64_t evictions GUARDED_BY(mu) = 0;
  };

  Shard& ShardOf(Key k) { return *shards_[Mix64(k) >> 58]; }
  float* RowPtr(Shard& s, uint32_t idx) REQUIRES(s.mu) {
    return s.blocks[idx / kBlockRows].get() + size_t{idx % kBlockRows} * width_;
  }
  const float* RowPtrConst(const Shard& s, uint32_t idx) const REQUIRES(s.mu) {
    return s.blocks[idx / kBlockRows].get() + size_t{idx % kBlockRows} * width_;
  }

  uint32_t Allocate(Shard& s) REQUIRES(s.mu) {
    if (per_shard_cap_ != 0 && s.index.size() >= per_shard_cap_) EvictOne(s);
    if (!s.free.empty()) {
      uint32_t idx = s.free.back();
      s.free.pop_back();
      s.live[idx] = 1;
      return idx;
    }
    uint32_t idx = static_cast<uint32_t>(s.row_key.size());
    if (idx % kBlockRows == 0)
      s.blocks.emplace_back(new float[size_t{kBlockRows} * std::max<uint32_t>(width_, 1)]);
    s.row_key.push_back(0);
    s.ref.push_back(0);
    s.live.push_back(1);
    return idx;
  }

  void EvictOne(Shard& s) REQUIRES(s.mu) {
    const size_t n = s.row_key.size();
    for (size_t steps = 0; steps < 2 * n + 1; ++steps) {
      size_t i = s.hand;
      s.hand = (s.hand + 1) % n;
      if (!s.live[i]) continue;
      if (s.ref[i]) {
        s.ref[i] = 0;
        continue;
      }
      s.index.Erase(s.row_key[i]);
      s.live[i] = 0;
      s.free.push_back(static_cast<uint32_t>(i));
      ++s.evictions;
      return;
    }
  }

  const uint32_t width_;
  uint64_t per_shard_cap_ = 0;
  std::unique_ptr<Shard> shards_[kShards];
};

}  // namespace m6rec
