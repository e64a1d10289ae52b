// Losses of the id-embedding model over negatives shared by a batch: B (user, positive) pairs
// and M negative items that every pair is contrasted with (one matrix of scores per batch, so
// many negatives cost little). Each function adds d(loss)/d(row) into gu [B x d], gp [B x d]
// and gn [M x d] (gradients of shared negatives are summed over the batch) and returns the
// summed loss over the B pairs.
//   bpr      mean_j softplus(-(u.p - u.n_j))
//   ccl      (1 - cos(u,p)) + w/M * sum_j max(0, cos(u,n_j) - margin)     (SimpleX)
//   softmax  -log softmax over [u.p, u.n_1..u.n_M] / temperature           (sampled softmax)
// Pure functions; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>

namespace m6rec {

inline float Dot(const float* a, const float* b, uint32_t d) {
  float s = 0;
  for (uint32_t k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}
inline void Axpy(float a, const float* x, float* y, uint32_t d) {
  for (uint32_t k = 0; k < d; ++k) y[k] += a * x[k];
}

double LossBpr(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
               float* gu, float* gp, float* gn);
double LossCcl(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
               float margin, float w, float* gu, float* gp, float* gn);
double LossSoftmax(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
                   float t, float* gu, float* gp, float* gn);

}  // namespace m6rec
