#include "ps/optimizer.h"

#include <cmath>

#include "common/initializer.h"

namespace m6rec {

uint32_t OptimizerStateWidth(const OptimizerSpec& opt, uint32_t dim) {
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd:
      return 0;
    case OptimizerSpec::Kind::kAdagrad:
      return dim;
    case OptimizerSpec::Kind::kAdam:
      return 2 * dim + 1;
  }
  return 0;
}

void InitOptimizerState(const OptimizerSpec& opt, uint32_t dim, float* state) {
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd:
      return;
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

namespace {

// The per-row kernels. Weights and state never overlap (state follows the dim weights), which
// `ivdep` tells the vectoriser; target_clones builds AVX2 and AVX-512 variants next to the
// baseline and picks one at load time, so one binary is fast on every x86-64 machine.
#if defined(__x86_64__) && !defined(__clang__)
#define M6_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define M6_KERNEL
#endif

M6_KERNEL void SgdRow(uint32_t dim, float lr, float wd, float* w, const float* g) {
#pragma GCC ivdep
  for (uint32_t i = 0; i < dim; ++i) w[i] -= lr * (g[i] + wd * w[i]);
}

M6_KERNEL void AdagradRow(uint32_t dim, float lr, float wd, float eps, float* w, float* acc,
                          const float* grad) {
#pragma GCC ivdep
  for (uint32_t i = 0; i < dim; ++i) {
    const float g = grad[i] + wd * w[i];
    const float a = acc[i] + g * g;
    acc[i] = a;
    w[i] -= lr * g / (std::sqrt(a) + eps);
  }
}

M6_KERNEL void AdamRow(uint32_t dim, float lr, float wd, float eps, float b1, float b2, float c1,
                       float c2, float* w, float* m, float* v, const float* grad) {
#pragma GCC ivdep
  for (uint32_t i = 0; i < dim; ++i) {
    const float g = grad[i] + wd * w[i];
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * (mi / c1) / (std::sqrt(vi / c2) + eps);
  }
}

}  // namespace

void ApplyUpdate(const OptimizerSpec& opt, uint32_t dim, float* w, const float* grad) {
  switch (opt.kind) {
    case OptimizerSpec::Kind::kSgd:
      SgdRow(dim, opt.lr, opt.weight_decay, w, grad);
      return;
    case OptimizerSpec::Kind::kAdagrad:
      AdagradRow(dim, opt.lr, opt.weight_decay, opt.eps, w, w + dim, grad);
      return;
    case OptimizerSpec::Kind::kAdam: {
      float& t = w[3 * dim];
      t += 1.0f;
      const float c1 = 1.0f - std::pow(opt.beta1, t), c2 = 1.0f - std::pow(opt.beta2, t);
      AdamRow(dim, opt.lr, opt.weight_decay, opt.eps, opt.beta1, opt.beta2, c1, c2, w, w + dim,
              w + 2 * dim, grad);
      return;
    }
  }
}

}  // namespace m6rec
