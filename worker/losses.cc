#include "worker/losses.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace m6rec {

double LossBpr(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
               float* gu, float* gp, float* gn) {
  double loss = 0;
  const float inv = 1.0f / M;
  std::vector<float> g(M);
  for (size_t b = 0; b < B; ++b) {
    const float* u = U + b * d;
    const float* p = P + b * d;
    const float sp = Dot(u, p, d);
    float gsum = 0;
    for (size_t j = 0; j < M; ++j) {
      const float x = sp - Dot(u, N + j * d, d);
      loss += inv * (x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x)));
      g[j] = -inv / (1.0f + std::exp(x));  // d loss / d x_j, x_j = u.p - u.n_j
      gsum += g[j];
    }
    // d/du = sum_j g_j (p - n_j); d/dp = (sum_j g_j) u; d/dn_j = -g_j u
    float* gub = gu + b * d;
    Axpy(gsum, p, gub, d);
    Axpy(gsum, u, gp + b * d, d);
    for (size_t j = 0; j < M; ++j) {
      Axpy(-g[j], N + j * d, gub, d);
      Axpy(-g[j], u, gn + j * d, d);
    }
  }
  return loss;
}

// SimpleX's cosine contrastive loss: (1 - cos(u,p)) + w/M * sum_j max(0, cos(u,n_j) - margin).
double LossCcl(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
               float margin, float w, float* gu, float* gp, float* gn) {
  std::vector<float> nn(M);
  for (size_t j = 0; j < M; ++j) nn[j] = std::sqrt(Dot(N + j * d, N + j * d, d)) + 1e-8f;
  double loss = 0;
  for (size_t b = 0; b < B; ++b) {
    const float* u = U + b * d;
    const float* p = P + b * d;
    const float nu = std::sqrt(Dot(u, u, d)) + 1e-8f, np = std::sqrt(Dot(p, p, d)) + 1e-8f;
    // cos and its gradients: dc/du = v/(|u||v|) - c u/|u|^2 ; dc/dv = u/(|u||v|) - c v/|v|^2
    auto add = [&](const float* v, float nv, float dl_dc, float* gv) {
      const float c = Dot(u, v, d) / (nu * nv);
      Axpy(dl_dc / (nu * nv), v, gu + b * d, d);
      Axpy(-dl_dc * c / (nu * nu), u, gu + b * d, d);
      Axpy(dl_dc / (nu * nv), u, gv, d);
      Axpy(-dl_dc * c / (nv * nv), v, gv, d);
    };
    const float cp = Dot(u, p, d) / (nu * np);
    loss += 1.0f - cp;
    add(p, np, -1.0f, gp + b * d);
    for (size_t j = 0; j < M; ++j) {
      const float* n = N + j * d;
      const float c = Dot(u, n, d) / (nu * nn[j]);
      if (c > margin) {
        loss += w / M * (c - margin);
        add(n, nn[j], w / M, gn + j * d);
      }
    }
  }
  return loss;
}

// Sampled softmax: -log( exp(s_p/t) / (exp(s_p/t) + sum_j exp(s_j/t)) ).
double LossSoftmax(size_t B, size_t M, uint32_t d, const float* U, const float* P, const float* N,
                   float t, float* gu, float* gp, float* gn) {
  std::vector<float> z(M + 1);
  double loss = 0;
  for (size_t b = 0; b < B; ++b) {
    const float* u = U + b * d;
    const float* p = P + b * d;
    z[0] = Dot(u, p, d) / t;
    for (size_t j = 0; j < M; ++j) z[j + 1] = Dot(u, N + j * d, d) / t;
    const float mx = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (float x : z) sum += std::exp(x - mx);
    loss += -(z[0] - mx) + std::log(sum);
    for (size_t k = 0; k <= M; ++k) {
      const float g = (float(std::exp(z[k] - mx) / sum) - (k == 0 ? 1.0f : 0.0f)) / t;  // dl/ds_k
      const float* v = k == 0 ? p : N + (k - 1) * d;
      Axpy(g, v, gu + b * d, d);
      Axpy(g, u, k == 0 ? gp + b * d : gn + (k - 1) * d, d);
    }
  }
  return loss;
}

}  // namespace m6rec
