#include "ps/optimizer.h"

#include <cmath>

#include "common/initializer.h"

namespace m6rec {

uint32_t OptimizerStateWidth(const OptimizerSpec& opt, uint32_t dim) {
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd: return 0;
    case OptimizerSpec::Kind::kAdagrad: return dim;
    case OptimizerSpec::Kind::kAdam: return 2 * dim + 1;
  }
  return 0;
}

void InitOptimizerState(const OptimizerSpec& opt, uint32_t dim, float* state) {
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd: return;
    case OptimizerSpec::Kind::kAdagrad:
      for (uint32_t i = 0; i < dim; ++i) state[i] = opt.initial_accumulator;
      return;
    case OptimizerSpec::Kind::kAdam:
      for (uint32_t i = 0; i < 2 * dim + 1; ++i) state[i] = 0.0f;
      return;
  }
}

void InitFullRow(const TableSpec& spec, Key key, float* row) {
  InitRow(spec, key, row);
  InitOptimizerState(spec.optimizer, spec.dim, row + spec.dim);
}

void ApplyUpdate(const OptimizerSpec& opt, uint32_t dim, float* __restrict w,
                 const float* __restrict grad) {
  const float lr = opt.lr, wd = opt.weight_decay;
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd:
      for (uint32_t i = 0; i < dim; ++i) w[i] -= lr * (grad[i] + wd * w[i]);
      return;
    case OptimizerSpec::Kind::kAdagrad: {
      float* __restrict acc = w + dim;
      for (uint32_t i = 0; i < dim; ++i) {
        float g = grad[i] + wd * w[i];
        acc[i] += g * g;
        w[i] -= lr * g / (std::sqrt(acc[i]) + opt.eps);
      }
      return;
    }
    case OptimizerSpec::Kind::kAdam: {
      float* __restrict m = w + dim;
      float* __restrict v = w + 2 * dim;
      float& t = w[3 * dim];
      t += 1.0f;
      const float b1 = opt.beta1, b2 = opt.beta2;
      const float c1 = 1.0f - std::pow(b1, t), c2 = 1.0f - std::pow(b2, t);
      for (uint32_t i = 0; i < dim; ++i) {
        float g = grad[i] + wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        w[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + opt.eps);
      }
      return;
    }
  }
}

}  // namespace m6rec
