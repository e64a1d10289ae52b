// Deterministic row initialisation: a row that was never written is a pure function of
// (table seed, key). Each element draws from a counter-based generator (Mix64 of seed, key and
// element index), so the value does not depend on which server owns the row, when it is first
// touched, or how many rows were initialised before it. Thread-safe (pure).
#pragma once

#include "common/config.h"

namespace m6rec {

// Writes spec.dim floats for `key` into `out`.
void InitRow(const TableSpec& spec, Key key, float* out);

// Uniform in [0, 1) from a 64-bit counter value (53 random bits).
inline double CounterUniform(uint64_t seed, uint64_t counter) {
  uint64_t x = Mix64(seed ^ Mix64(counter + 0x9e3779b97f4a7c15ULL));
  return static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace m6rec
