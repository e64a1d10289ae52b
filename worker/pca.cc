#include "worker/pca.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace m6rec {

double Pca::explained() const {
  if (total_variance <= 0) return 0;
  return std::accumulate(variance.begin(), variance.end(), 0.0) / total_variance;
}

namespace {

// Orthonormalises the rows of v [k x d] in place (modified Gram-Schmidt); a row that vanishes
// is replaced by the first unit vector orthogonal to the others.
void Orthonormalise(std::vector<double>* v, int64_t k, int64_t d) {
  auto row = [&](int64_t r) { return v->data() + r * d; };
  for (int64_t r = 0; r < k; ++r) {
    for (int attempt = 0; attempt <= d; ++attempt) {
      for (int64_t q = 0; q < r; ++q) {
        double dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += row(r)[j] * row(q)[j];
        for (int64_t j = 0; j < d; ++j) row(r)[j] -= dot * row(q)[j];
      }
      double norm = 0;
      for (int64_t j = 0; j < d; ++j) norm += row(r)[j] * row(r)[j];
      norm = std::sqrt(norm);
      if (norm > 1e-10) {
        for (int64_t j = 0; j < d; ++j) row(r)[j] /= norm;
        break;
      }
      std::fill(row(r), row(r) + d, 0.0);
      row(r)[(r + attempt) % d] = 1.0;
    }
  }
}

}  // namespace

Pca FitPca(const std::vector<float>& x, int64_t n, int64_t dim, int64_t k) {
  Pca p;
  p.dim = dim;
  p.k = k = std::clamp<int64_t>(k, 0, dim);
  p.mean.assign(size_t(dim), 0.0f);
  if (n == 0 || dim == 0) return p;
  std::vector<double> mean(size_t(dim), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) mean[size_t(j)] += x[size_t(i * dim + j)];
  for (auto& m : mean) m /= double(n);
  // The covariance [dim x dim].
  std::vector<double> cov(size_t(dim * dim), 0.0), row(static_cast<size_t>(dim));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < dim; ++j) row[size_t(j)] = x[size_t(i * dim + j)] - mean[size_t(j)];
    for (int64_t a = 0; a < dim; ++a)
      for (int64_t b = a; b < dim; ++b) cov[size_t(a * dim + b)] += row[size_t(a)] * row[size_t(b)];
  }
  for (int64_t a = 0; a < dim; ++a)
    for (int64_t b = a; b < dim; ++b) {
      cov[size_t(a * dim + b)] /= double(std::max<int64_t>(1, n - 1));
      cov[size_t(b * dim + a)] = cov[size_t(a * dim + b)];
    }
  for (int64_t a = 0; a < dim; ++a) p.total_variance += cov[size_t(a * dim + a)];
  // Subspace iteration from a fixed start: V <- orth(V C), until the subspace settles.
  std::vector<double> v(size_t(k * dim)), next(size_t(k * dim));
  for (int64_t r = 0; r < k; ++r)
    for (int64_t j = 0; j < dim; ++j)
      v[size_t(r * dim + j)] = std::cos(double(r + 1) * double(j + 1) * 0.7) + (r == j ? 1 : 0);
  Orthonormalise(&v, k, dim);
  for (int iter = 0; iter < 300; ++iter) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t r = 0; r < k; ++r)
      for (int64_t a = 0; a < dim; ++a) {
        const double va = v[size_t(r * dim + a)];
        if (va == 0) continue;
        for (int64_t b = 0; b < dim; ++b)
          next[size_t(r * dim + b)] += va * cov[size_t(a * dim + b)];
      }
    Orthonormalise(&next, k, dim);
    double change = 0;
    for (size_t t = 0; t < v.size(); ++t) change = std::max(change, std::fabs(next[t] - v[t]));
    v.swap(next);
    if (change < 1e-9) break;
  }
  // Each direction's variance (its Rayleigh quotient), then by decreasing variance.
  std::vector<double> var(static_cast<size_t>(k), 0.0);
  for (int64_t r = 0; r < k; ++r)
    for (int64_t a = 0; a < dim; ++a)
      for (int64_t b = 0; b < dim; ++b)
        var[size_t(r)] +=
            v[size_t(r * dim + a)] * cov[size_t(a * dim + b)] * v[size_t(r * dim + b)];
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return var[size_t(a)] > var[size_t(b)]; });
  for (int64_t j = 0; j < dim; ++j) p.mean[size_t(j)] = float(mean[size_t(j)]);
  for (int64_t r : order) {
    p.variance.push_back(var[size_t(r)]);
    for (int64_t j = 0; j < dim; ++j) p.components.push_back(float(v[size_t(r * dim + j)]));
  }
  return p;
}

std::vector<float> ApplyPca(const Pca& p, const std::vector<float>& x, int64_t n) {
  std::vector<float> out(size_t(n * p.k), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < p.k; ++r) {
      double s = 0;
      for (int64_t j = 0; j < p.dim; ++j)
        s += (double(x[size_t(i * p.dim + j)]) - p.mean[size_t(j)]) *
             p.components[size_t(r * p.dim + j)];
      out[size_t(i * p.k + r)] = float(s);
    }
  return out;
}

}  // namespace m6rec
