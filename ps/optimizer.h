// Server-side sparse optimizers. A stored row is [weights x dim][optimizer state x StateWidth];
// ApplyUpdate performs one step on one row in place. The caller holds whatever lock makes the
// row private for the call (the store's shard lock), so the update is atomic per row.
//   sgd:      g' = g + wd*w;  w -= lr*g'
//   adagrad:  g' = g + wd*w;  a += g'^2;  w -= lr*g' / (sqrt(a) + eps)
//   adam:     g' = g + wd*w;  t += 1;  m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'^2;
//             w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   (t counted per row)
#pragma once

#include <cstdint>

#include "common/config.h"

namespace m6rec {

uint32_t OptimizerStateWidth(const OptimizerSpec& opt, uint32_t dim);
inline uint32_t RowWidth(const TableSpec& t) {
  return t.dim + OptimizerStateWidth(t.optimizer, t.dim);
}

// Initialises the state part of a fresh row.
void InitOptimizerState(const OptimizerSpec& opt, uint32_t dim, float* state);

// Fills a whole fresh row: deterministic weights and initial state.
void InitFullRow(const TableSpec& spec, Key key, float* row);

// One optimizer step on `row` (dim weights followed by state) with gradient `grad`.
void ApplyUpdate(const OptimizerSpec& opt, uint32_t dim, float* row, const float* grad);

}  // namespace m6rec
