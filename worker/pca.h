// Principal component analysis of item feature matrices (M6-Rec reduces each modality's
// features before the fusion): the top-k directions of a [n x d] row-major matrix's covariance
// by subspace iteration, deterministic (a fixed start, Gram-Schmidt), no LAPACK needed.
#pragma once

#include <cstdint>
#include <vector>

namespace m6rec {

struct Pca {
  int64_t dim = 0, k = 0;
  std::vector<float> mean;        // [dim]
  std::vector<float> components;  // [k x dim], orthonormal rows, by decreasing variance
  std::vector<double> variance;   // [k]: the variance each component explains
  double total_variance = 0;      // the trace of the covariance
  double explained() const;       // sum(variance) / total_variance
};

// The top k (<= dim) principal components of x [n x dim].
Pca FitPca(const std::vector<float>& x, int64_t n, int64_t dim, int64_t k);
// x [n x dim] -> [n x k]: (x - mean) projected on the components.
std::vector<float> ApplyPca(const Pca& p, const std::vector<float>& x, int64_t n);

}  // namespace m6rec
