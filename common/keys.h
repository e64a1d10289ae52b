// Sparse keys and their placement. A key is 64 bits: the table id in the top 8 bits and the row
// id in the low 56. A key's server is found through its slot: slot = Mix64(key) % num_slots,
// server = slot_map[slot], published by the scheduler so shards can later move slot by slot.
// Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string_view>

namespace m6rec {

using Key = uint64_t;
using TableId = uint32_t;

constexpr int kTableBits = 8;
constexpr int kIdBits = 64 - kTableBits;
constexpr uint64_t kIdMask = (uint64_t{1} << kIdBits) - 1;
constexpr TableId kMaxTables = 1u << kTableBits;

// A strong 64-bit finaliser (splitmix64 / murmur3 fmix64 family): every input bit affects
// every output bit, so consecutive ids spread evenly over slots.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline Key MakeKey(TableId table, uint64_t id) {
  return (static_cast<uint64_t>(table) << kIdBits) | (id & kIdMask);
}
inline TableId KeyTable(Key k) { return static_cast<TableId>(k >> kIdBits); }
inline uint64_t KeyId(Key k) { return k & kIdMask; }

// Ids that are strings (or longer than 56 bits) are hashed into the id space (FNV-1a, then
// mixed). Collisions at 56 bits are negligible for the table sizes this system serves.
inline uint64_t HashId(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return Mix64(h) & kIdMask;
}

inline uint32_t SlotOf(Key k, uint32_t num_slots) {
  return static_cast<uint32_t>(Mix64(k) % num_slots);
}

}  // namespace m6rec
