// KeyIndex: an open-addressing hash map from a 64-bit key to a uint32 index (linear probing,
// backward-shift deletion, no tombstones). The row index of RowCache and the de-duplication
// map of the PS client.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/keys.h"

namespace m6rec {

// Open-addressing (linear probing, backward-shift deletion) map key -> uint32 row index.
// Not thread-safe.
class KeyIndex {
 public:
  static constexpr uint32_t kNone = 0xffffffffu;
  KeyIndex() { Rehash(16); }

  uint32_t Find(Key k) const {
    for (size_t i = Hash(k) & mask_;; i = (i + 1) & mask_) {
      if (vals_[i] == kNone) return kNone;
      if (keys_[i] == k) return vals_[i];
    }
  }
  void Insert(Key k, uint32_t v) {
    if ((size_ + 1) * 10 > (mask_ + 1) * 7) Rehash((mask_ + 1) * 2);
    size_t i = Hash(k) & mask_;
    while (vals_[i] != kNone) i = (i + 1) & mask_;
    keys_[i] = k;
    vals_[i] = v;
    ++size_;
  }
  void Erase(Key k) {
    size_t i = Hash(k) & mask_;
    for (;; i = (i + 1) & mask_) {
      if (vals_[i] == kNone) return;
      if (keys_[i] == k) break;
    }
    // Backward shift: move later members of the probe run into the hole.
    size_t hole = i;
    for (size_t j = (i + 1) & mask_; vals_[j] != kNone; j = (j + 1) & mask_) {
      size_t home = Hash(keys_[j]) & mask_;
      bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
      if (movable) {
        keys_[hole] = keys_[j];
        vals_[hole] = vals_[j];
        hole = j;
      }
    }
    vals_[hole] = kNone;
    --size_;
  }
  size_t size() const { return size_; }
  // Empties the index, keeping its capacity when it is small enough to reuse.
  void Clear() {
    if (mask_ + 1 > (1u << 20)) {
      keys_.clear();
      vals_.clear();
      Rehash(16);
      return;
    }
    std::fill(vals_.begin(), vals_.end(), kNone);
    size_ = 0;
  }

 private:
  // The shard was chosen by the top bits of Mix64(key); use a different mix for the index.
  static size_t Hash(Key k) { return static_cast<size_t>(Mix64(k ^ 0x5bd1e9955bd1e995ULL)); }
  void Rehash(size_t cap) {
    std::vector<Key> ok = std::move(keys_);
    std::vector<uint32_t> ov = std::move(vals_);
    keys_.assign(cap, 0);
    vals_.assign(cap, kNone);
    mask_ = cap - 1;
    size_ = 0;
    for (size_t i = 0; i < ov.size(); ++i)
      if (ov[i] != kNone) Insert(ok[i], ov[i]);
  }
  std::vector<Key> keys_;
  std::vector<uint32_t> vals_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace m6rec
