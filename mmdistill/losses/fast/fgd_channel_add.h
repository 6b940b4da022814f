// The channel transform of FGD's GcBlocks (mmdistill/losses/fgd.py, FGDLoss._channel_add) on
// one (C,) context vector, and its backward, for the CPU kernel (fgd_kernel.cpp):
//   h = W1 x + b1 (C -> C/2, the first 1x1 conv),  y = gamma (h - mean h) / sqrt(var h + eps)
//   + beta (LayerNorm over the C/2 values, biased variance),  out = W2 relu(y) + b2 (C/2 -> C).
#pragma once

#include <algorithm>
#include <cmath>

namespace mmdistill {

template <typename T>
struct ChannelAdd {
  long C, H;  // H = C / 2
  T eps;
  const T *w1, *b1, *gamma, *beta, *w2, *b2;  // (H, C), (H), (H), (H), (C, H), (C)
  T *g_w1, *g_b1, *g_gamma, *g_beta, *g_w2, *g_b2;  // their gradients, accumulated
};

// out (C) = the transform of x (C); cache (2 H + 1) keeps the normalised h, y and 1 / std.
template <typename T>
void channel_add_forward(const ChannelAdd<T>& m, const T* x, T* out, T* cache) {
  T* h_hat = cache;
  T* y = cache + m.H;
  T mean = 0;
  for (long j = 0; j < m.H; ++j) {
    T acc = 0;
    const T* w = m.w1 + j * m.C;
#pragma omp simd reduction(+ : acc)
    for (long c = 0; c < m.C; ++c) acc += w[c] * x[c];
    h_hat[j] = acc + m.b1[j];
    mean += h_hat[j];
  }
  mean /= static_cast<T>(m.H);
  T var = 0;
  for (long j = 0; j < m.H; ++j) var += (h_hat[j] - mean) * (h_hat[j] - mean);
  const T inv_std = T(1) / std::sqrt(var / static_cast<T>(m.H) + m.eps);
  cache[2 * m.H] = inv_std;
  for (long j = 0; j < m.H; ++j) {
    h_hat[j] = (h_hat[j] - mean) * inv_std;
    y[j] = m.gamma[j] * h_hat[j] + m.beta[j];
  }
  for (long c = 0; c < m.C; ++c) {
    T acc = 0;
    const T* w = m.w2 + c * m.H;
#pragma omp simd reduction(+ : acc)
    for (long j = 0; j < m.H; ++j) acc += w[j] * std::max(y[j], T(0));
    out[c] = acc + m.b2[c];
  }
}

// The gradient g_x (C) of <g_out, transform(x)> w.r.t. x, from x and the forward's cache; the
// parameters' gradients are added to m.g_*. work: 2 H values.
template <typename T>
void channel_add_backward(const ChannelAdd<T>& m, const T* x, const T* cache, const T* g_out,
                          T* g_x, T* work) {
  const T* h_hat = cache;
  const T* y = cache + m.H;
  const T inv_std = cache[2 * m.H];
  T* g_y = work;      // through W2 and the ReLU
  T* g_h = work + m.H;
  std::fill(g_y, g_y + m.H, T(0));
  for (long c = 0; c < m.C; ++c) {
    m.g_b2[c] += g_out[c];
    const T* w = m.w2 + c * m.H;
    T* gw = m.g_w2 + c * m.H;
#pragma omp simd
    for (long j = 0; j < m.H; ++j) {
      gw[j] += g_out[c] * std::max(y[j], T(0));
      g_y[j] += g_out[c] * w[j];
    }
  }
  // LayerNorm: g_h = (g_hat - mean g_hat - h_hat mean(g_hat h_hat)) / std, g_hat = gamma g_y
  T mean_g = 0, mean_gh = 0;
  for (long j = 0; j < m.H; ++j) {
    g_y[j] = y[j] > T(0) ? g_y[j] : T(0);
    m.g_gamma[j] += g_y[j] * h_hat[j];
    m.g_beta[j] += g_y[j];
    g_h[j] = m.gamma[j] * g_y[j];
    mean_g += g_h[j];
    mean_gh += g_h[j] * h_hat[j];
  }
  mean_g /= static_cast<T>(m.H);
  mean_gh /= static_cast<T>(m.H);
  for (long j = 0; j < m.H; ++j) g_h[j] = (g_h[j] - mean_g - h_hat[j] * mean_gh) * inv_std;
  std::fill(g_x, g_x + m.C, T(0));
  for (long j = 0; j < m.H; ++j) {
    m.g_b1[j] += g_h[j];
    const T* w = m.w1 + j * m.C;
    T* gw = m.g_w1 + j * m.C;
#pragma omp simd
    for (long c = 0; c < m.C; ++c) {
      gw[c] += g_h[j] * x[c];
      g_x[c] += g_h[j] * w[c];
    }
  }
}

}  // namespace mmdistill
