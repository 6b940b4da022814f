// The channel transform of FGD's GcBlocks (mmdistill/losses/fgd.py, FGDLoss._channel_add) on
// the (N, C) context vectors of a batch, and its backward, for the CPU kernel (fgd_kernel.cpp):
//   h = W1 x + b1 (C -> C/2, the first 1x1 conv),  y = gamma (h - mean h) / sqrt(var h + eps)
//   + beta (LayerNorm over the C/2 values, biased variance),  out = W2 relu(y) + b2 (C/2 -> C).
// Each weight row is read once for all images (a reduction per image, independent chains), and
// the weights' gradients are written once per batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace mmdistill {

template <typename T>
struct ChannelAdd {
  long C, H;  // H = C / 2
  T eps;
  const T *w1, *b1, *gamma, *beta, *w2, *b2;  // (H, C), (H), (H), (H), (C, H), (C)
  T *g_w1, *g_b1, *g_gamma, *g_beta, *g_w2, *g_b2;  // their gradients, accumulated
};

// out[n] = sum_k w[k] x[n, k] + bias for n < N (x: N rows of `stride`; K terms), four images at a
// time (four independent sums per weight load).
template <typename T>
inline void dot_rows(const T* w, const T* x, long stride, long N, long K, T bias, T* out,
                     long out_stride) {
  long n = 0;
  for (; n + 4 <= N; n += 4) {
    const T *x0 = x + n * stride, *x1 = x0 + stride, *x2 = x1 + stride, *x3 = x2 + stride;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (long k = 0; k < K; ++k) {
      a0 += w[k] * x0[k];
      a1 += w[k] * x1[k];
      a2 += w[k] * x2[k];
      a3 += w[k] * x3[k];
    }
    out[n * out_stride] = a0 + bias;
    out[(n + 1) * out_stride] = a1 + bias;
    out[(n + 2) * out_stride] = a2 + bias;
    out[(n + 3) * out_stride] = a3 + bias;
  }
  for (; n < N; ++n) {
    const T* xn = x + n * stride;
    T a = 0;
#pragma omp simd reduction(+ : a)
    for (long k = 0; k < K; ++k) a += w[k] * xn[k];
    out[n * out_stride] = a + bias;
  }
}

// The backward of out[n] = W x[n] + b (W: (R, K)) over N inputs x[n] (rows x_stride apart)
// for the gradients G[n, r] (rows g_stride apart): g_w (R, K) and g_b (R) added to, G_in (N, K)
// = sum_r G[n, r] W[r]. Each weight row is read, and its gradient written, once for all N.
template <typename T>
void linear_backward(const T* W, long R, long K, const T* x, long x_stride, const T* G,
                     long g_stride, long N, T* g_w, T* g_b, T* G_in) {
  std::fill(G_in, G_in + N * K, T(0));
  for (long r = 0; r < R; ++r) {
    const T* w = W + r * K;
    T* gw = g_w + r * K;
    for (long n = 0; n < N; ++n) {
      const T g = G[n * g_stride + r];
      const T* xn = x + n * x_stride;
      T* gx = G_in + n * K;
      g_b[r] += g;
#pragma omp simd
      for (long k = 0; k < K; ++k) {
        gw[k] += g * xn[k];
        gx[k] += g * w[k];
      }
    }
  }
}

// OUT (N, C) = the transform of X (N, C); cache (N, 2 H + 1) keeps each image's normalised h,
// relu(y) and 1 / std.
template <typename T>
void channel_add_forward(const ChannelAdd<T>& m, const T* X, long N, T* OUT, T* cache) {
  const long H = m.H, C = m.C, K = 2 * H + 1;
  for (long j = 0; j < H; ++j) dot_rows(m.w1 + j * C, X, C, N, C, m.b1[j], cache + j, K);
  for (long n = 0; n < N; ++n) {
    T* h_hat = cache + n * K;
    T* r = h_hat + H;
    T mean = 0, var = 0;
    for (long j = 0; j < H; ++j) mean += h_hat[j];
    mean /= static_cast<T>(H);
    for (long j = 0; j < H; ++j) var += (h_hat[j] - mean) * (h_hat[j] - mean);
    const T inv_std = T(1) / std::sqrt(var / static_cast<T>(H) + m.eps);
    h_hat[2 * H] = inv_std;
    for (long j = 0; j < H; ++j) {
      h_hat[j] = (h_hat[j] - mean) * inv_std;
      r[j] = std::max(m.gamma[j] * h_hat[j] + m.beta[j], T(0));
    }
  }
  for (long c = 0; c < C; ++c) dot_rows(m.w2 + c * H, cache + H, K, N, H, m.b2[c], OUT + c, C);
}

// G_X (N, C) = the gradients w.r.t. X of sum_n <G_OUT[n], transform(X[n])>, from X and the
// forward's cache; the parameters' gradients are added to m.g_*. work: 2 N H values.
template <typename T>
void channel_add_backward(const ChannelAdd<T>& m, const T* X, long N, const T* cache,
                          const T* G_OUT, T* G_X, T* work) {
  const long H = m.H, C = m.C, K = 2 * H + 1;
  T* g_r = work;       // (N, H): through W2
  T* g_h = work + N * H;  // (N, H): through the ReLU and the LayerNorm
  // W2 and b2 (the inputs: relu(y), in the cache)
  linear_backward(m.w2, C, H, cache + H, K, G_OUT, C, N, m.g_w2, m.g_b2, g_r);
  // ReLU and LayerNorm: g_h = (g_hat - mean g_hat - h_hat mean(g_hat h_hat)) / std with
  // g_hat = gamma g_y, g_y = g_r where y > 0
  for (long n = 0; n < N; ++n) {
    const T* h_hat = cache + n * K;
    const T* r = h_hat + H;
    const T inv_std = h_hat[2 * H];
    const T* gr = g_r + n * H;
    T* gh = g_h + n * H;
    T mean_g = 0, mean_gh = 0;
    for (long j = 0; j < H; ++j) {
      const T g_y = r[j] > T(0) ? gr[j] : T(0);
      m.g_gamma[j] += g_y * h_hat[j];
      m.g_beta[j] += g_y;
      gh[j] = m.gamma[j] * g_y;
      mean_g += gh[j];
      mean_gh += gh[j] * h_hat[j];
    }
    mean_g /= static_cast<T>(H);
    mean_gh /= static_cast<T>(H);
    for (long j = 0; j < H; ++j) gh[j] = (gh[j] - mean_g - h_hat[j] * mean_gh) * inv_std;
  }
  // W1 and b1
  linear_backward(m.w1, H, C, X, C, g_h, H, N, m.g_w1, m.g_b1, G_X);
}

}  // namespace mmdistill
