#include "common/initializer.h"

#include <cmath>

namespace m6rec {

void InitRow(const TableSpec& spec, Key key, float* out) {
  const uint32_t dim = spec.dim;
  const InitializerSpec& in = spec.init;
  const uint64_t row_seed = Mix64(spec.seed ^ Mix64(key));
  switch (in.kind) {
    case InitializerSpec::Kind::kZeros:
      for (uint32_t i = 0; i < dim; ++i) out[i] = 0.0f;
      return;
    case InitializerSpec::Kind::kConstant:
      for (uint32_t i = 0; i < dim; ++i) out[i] = in.value;
      return;
    case InitializerSpec::Kind::kUniform: {
      const double span = static_cast<double>(in.high) - in.low;
      for (uint32_t i = 0; i < dim; ++i)
        out[i] = static_cast<float>(in.low + span * CounterUniform(row_seed, i));
      return;
    }
    case InitializerSpec::Kind::kNormal: {
      // Box-Muller: each pair of uniforms gives two independent normals.
      for (uint32_t i = 0; i < dim; i += 2) {
        double u1 = CounterUniform(row_seed, 2 * uint64_t{i});
        double u2 = CounterUniform(row_seed, 2 * uint64_t{i} + 1);
        if (u1 < 1e-300) u1 = 1e-300;
        double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = static_cast<float>(in.mean + in.stddev * r * std::cos(2 * M_PI * u2));
        if (i + 1 < dim)
          out[i + 1] = static_cast<float>(in.mean + in.stddev * r * std::sin(2 * M_PI * u2));
      }
      return;
    }
  }
}

}  // namespace m6rec
