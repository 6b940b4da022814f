// FGD's passes over the (N, C, HW) maps as one hand-tiled CPU kernel forward and one backward.
//
// Built and loaded by mmdistill/losses/fast/fgd_kernel.py (plain C ABI, no torch headers); what
// the passes compute is described in mmdistill/losses/fast/fgd.py. Work is split into tasks, an
// image's chunk of locations each; a task walks its chunk in tiles of `tile` locations. For each
// tile, sweep 1 reads the tile's rows of every channel from memory (the column sums over
// channels need all of them), sweep 2 reads them again from cache: each map is read from memory
// once per direction. The spatial softmaxes (teacher attention, the GcBlock contexts) are over
// every location of an image, so the forward accumulates their numerators against the task's
// running maximum, rescaled when it grows; the caller combines the tasks and divides by the
// softmax sums, which the column outputs give it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_math.h"
#include "cpu_tasks.h"

namespace {

using mmdistill::exp_nonpositive;
using mmdistill::run_tasks;

// Sweep 1 walks one tile-row per channel, a stride of HW apart: too many streams for the
// hardware prefetchers, so each row is prefetched this many channels ahead (4 and 16 measured
// alike on an AMD EPYC, 1.5x faster forward than none).
constexpr long kPrefetchAhead = 16;

template <typename T>
inline void prefetch_rows(const T* s, const T* t, long ahead, long L) {
  for (long l = 0; l < L; l += 64 / static_cast<long>(sizeof(T))) {
    __builtin_prefetch(s + ahead + l);
    __builtin_prefetch(t + ahead + l);
  }
}

template <typename T>
inline T sign_of(T x) {
  return static_cast<T>((x > T(0)) - (x < T(0)));
}

// Sweep 1 of the forward over channels c .. c + B - 1 of a tile (rows s[b], t[b], L locations):
// adds to the column sums over channels c_as, c_at (|S|, |T|) and c_ls, c_lt (w . F). B channels
// at a time, so that the column sums are loaded and stored once per B rows.
template <int B, typename T>
inline void column_sums(const T* const* s, const T* const* t, const T* ws, const T* wt, long L,
                        T* c_as, T* c_at, T* c_ls, T* c_lt) {
#pragma omp simd
  for (long l = 0; l < L; ++l) {
    T as = 0, at = 0, ls = 0, lt = 0;
#pragma GCC unroll 8
    for (int b = 0; b < B; ++b) {
      as += std::abs(s[b][l]);
      at += std::abs(t[b][l]);
      ls += ws[b] * s[b][l];
      lt += wt[b] * t[b][l];
    }
    c_as[l] += as;
    c_at[l] += at;
    c_ls[l] += ls;
    c_lt[l] += lt;
  }
}

// Sweep 2 of the forward over one channel of a tile (from cache): with d = S - T, adds
// sum |S|, sum |T|, sum d, sum d^2, sum d^2 e_a, sum S e_s and sum T e_t over the tile's
// locations to r[0 .. 6] (a stride of C apart).
template <typename T>
inline void row_sums(const T* s, const T* t, const T* e_a, const T* e_s, const T* e_t, long L,
                     T* r, long C) {
  T sa = 0, ta = 0, ds = 0, d2 = 0, q1 = 0, cs = 0, ct = 0;
#pragma omp simd reduction(+ : sa, ta, ds, d2, q1, cs, ct)
  for (long l = 0; l < L; ++l) {
    const T d = s[l] - t[l], dd = d * d;
    sa += std::abs(s[l]);
    ta += std::abs(t[l]);
    ds += d;
    d2 += dd;
    q1 += dd * e_a[l];
    cs += s[l] * e_s[l];
    ct += t[l] * e_t[l];
  }
  r[0] += sa;
  r[C] += ta;
  r[2 * C] += ds;
  r[3 * C] += d2;
  r[4 * C] += q1;
  r[5 * C] += cs;
  r[6 * C] += ct;
}

// Forward. Per (n, hw) outputs: as_hw, at_hw (sums over channels of |S|, |T|), ls, lt (GcBlock
// logits w . F + b). Per task k (row-major (N, chunks)): rows[k] (7, C) = sum over the chunk of
// |S|, |T|, d, d^2, d^2 pixw e_a, S e_s, T e_t with d = S - T, e_x = exp(x - max_k(x)) of the
// attention logit a = at_hw * a_scale and of ls, lt; maxima[k] (3) = those maxima.
template <typename T>
void forward(const T* S, const T* Tm, const T* w_s, const T* w_t, T b_s, T b_t,
             const T* pixw, T a_scale, long N, long C, long HW, long chunk, long tile,
             T* as_hw, T* at_hw, T* ls, T* lt, T* rows, T* maxima, int n_threads) {
  constexpr int kSweep1 = 4;  // channels per step of sweep 1
  const long chunks = (HW + chunk - 1) / chunk;
  run_tasks(N * chunks, n_threads, [&](long k) {
    const long n = k / chunks, h_begin = (k % chunks) * chunk;
    const long h_end = std::min(HW, h_begin + chunk);
    T* row = rows + k * 7 * C;
    T* mx = maxima + k * 3;
    mx[0] = mx[1] = mx[2] = -std::numeric_limits<T>::infinity();
    std::vector<T> buf(7 * tile);
    T *c_as = buf.data(), *c_at = c_as + tile, *c_ls = c_at + tile, *c_lt = c_ls + tile;
    T *e_a = c_lt + tile, *e_s = e_a + tile, *e_t = e_s + tile;
    const T* s[kSweep1];
    const T* t[kSweep1];
    for (long h0 = h_begin; h0 < h_end; h0 += tile) {
      const long L = std::min(tile, h_end - h0);
      std::fill(buf.begin(), buf.begin() + 4 * tile, T(0));
      auto rows_at = [&](long c, int count) {
        for (int b = 0; b < count; ++b) {
          s[b] = S + (n * C + c + b) * HW + h0;
          t[b] = Tm + (n * C + c + b) * HW + h0;
        }
      };
      // sweep 1: column sums over channels
      long c = 0;
      for (; c + kSweep1 <= C; c += kSweep1) {
        rows_at(c, kSweep1);
        for (int b = 0; b < kSweep1 && c + kPrefetchAhead + b < C; ++b)
          prefetch_rows(s[b], t[b], kPrefetchAhead * HW, L);
        column_sums<kSweep1>(s, t, w_s + c, w_t + c, L, c_as, c_at, c_ls, c_lt);
      }
      for (; c < C; ++c) {
        rows_at(c, 1);
        column_sums<1>(s, t, w_s + c, w_t + c, L, c_as, c_at, c_ls, c_lt);
      }
      // the tile's logits; the running maxima, the accumulators rescaled when they grow
      T m[3] = {mx[0], mx[1], mx[2]};
      const long o = n * HW + h0;
      for (long l = 0; l < L; ++l) {
        as_hw[o + l] = c_as[l];
        at_hw[o + l] = c_at[l];
        ls[o + l] = c_ls[l] += b_s;
        lt[o + l] = c_lt[l] += b_t;
        e_a[l] = c_at[l] * a_scale;
        m[0] = std::max(m[0], e_a[l]);
        m[1] = std::max(m[1], c_ls[l]);
        m[2] = std::max(m[2], c_lt[l]);
      }
      for (int i = 0; i < 3; ++i) {
        if (m[i] > mx[i]) {
          const T scale = std::exp(mx[i] - m[i]);
          T* acc = row + (4 + i) * C;
          for (long c = 0; c < C; ++c) acc[c] *= scale;
          mx[i] = m[i];
        }
      }
#pragma omp simd
      for (long l = 0; l < L; ++l) {
        e_a[l] = exp_nonpositive(e_a[l] - m[0]) * pixw[o + l];
        e_s[l] = exp_nonpositive(c_ls[l] - m[1]);
        e_t[l] = exp_nonpositive(c_lt[l] - m[2]);
      }
      // sweep 2 (from cache): the row sums
      for (c = 0; c < C; ++c) {
        const long r = (n * C + c) * HW + h0;
        row_sums(S + r, Tm + r, e_a, e_s, e_t, L, row + c, C);
      }
    }
  });
}

// Backward: dS (N, C, HW) and, per (n, hw), the gradients of the GcBlock logits g_ls, g_lt;
// per task k, rows[k] (2, C) = sum over the chunk of g_ls S and g_lt T (the conv_mask weight
// gradients). Coefficients per (n, c): two_q2, two_q1, g_as_c, g_d, g_cs, g_ct; per c: w_s;
// per (n, hw): weight (the focal weight P), g_as_hw, p_s, p_t; per n: k_s, k_t (sum over
// locations of p g_p, which equals sum over channels of g_ctx ctx).
//   g_p[hw] = sum_c g_ctx[c] F[c, hw],  g_l = p (g_p - k)
//   dS = d (two_q2 + two_q1 P) + sign(S) (g_as_c + g_as_hw) + g_d + w_s g_ls + g_cs p_s
template <typename T>
void backward(const T* S, const T* Tm, const T* two_q2, const T* two_q1, const T* g_as_c,
              const T* g_d, const T* g_cs, const T* g_ct, const T* w_s, const T* weight,
              const T* g_as_hw, const T* p_s, const T* p_t, const T* k_s, const T* k_t,
              long N, long C, long HW, long chunk, long tile, T* dS, T* g_ls, T* g_lt,
              T* rows, int n_threads) {
  const long chunks = (HW + chunk - 1) / chunk;
  run_tasks(N * chunks, n_threads, [&](long k) {
    const long n = k / chunks, h_begin = (k % chunks) * chunk;
    const long h_end = std::min(HW, h_begin + chunk);
    T* row = rows + k * 2 * C;
    std::vector<T> buf(2 * tile);
    T *gp_s = buf.data(), *gp_t = gp_s + tile;
    for (long h0 = h_begin; h0 < h_end; h0 += tile) {
      const long L = std::min(tile, h_end - h0);
      const long o = n * HW + h0;
      std::fill(buf.begin(), buf.end(), T(0));
      // sweep 1: the contexts' gradients against every location
      for (long c = 0; c < C; ++c) {
        const T* s = S + (n * C + c) * HW + h0;
        const T* t = Tm + (n * C + c) * HW + h0;
        if (c + kPrefetchAhead < C) prefetch_rows(s, t, kPrefetchAhead * HW, L);
        const T gs = g_cs[n * C + c], gt = g_ct[n * C + c];
#pragma omp simd
        for (long l = 0; l < L; ++l) {
          gp_s[l] += gs * s[l];
          gp_t[l] += gt * t[l];
        }
      }
      for (long l = 0; l < L; ++l) {
        gp_s[l] = g_ls[o + l] = p_s[o + l] * (gp_s[l] - k_s[n]);
        gp_t[l] = g_lt[o + l] = p_t[o + l] * (gp_t[l] - k_t[n]);
      }
      const T* P = weight + o;
      const T* g_hw = g_as_hw + o;
      const T* ps = p_s + o;
      // sweep 2 (from cache): dS and the conv_mask weight gradients
      for (long c = 0; c < C; ++c) {
        const long r = (n * C + c) * HW + h0;
        const T* s = S + r;
        const T* t = Tm + r;
        T* g = dS + r;
        const long nc = n * C + c;
        const T a = two_q2[nc], b = two_q1[nc], sc = g_as_c[nc], dc = g_d[nc];
        const T wc = w_s[c], cc = g_cs[nc];
        T rs = 0, rt = 0;
#pragma omp simd reduction(+ : rs, rt)
        for (long l = 0; l < L; ++l) {
          g[l] = (s[l] - t[l]) * (a + b * P[l]) + sign_of(s[l]) * (sc + g_hw[l]) + dc +
                 wc * gp_s[l] + cc * ps[l];
          rs += gp_s[l] * s[l];
          rt += gp_t[l] * t[l];
        }
        row[c] += rs;
        row[C + c] += rt;
      }
    }
  });
}

}  // namespace

#define FGD_EXPORT(T, SUFFIX)                                                                  \
  extern "C" void fgd_forward_##SUFFIX(                                                        \
      const T* S, const T* Tm, const T* w_s, const T* w_t, T b_s, T b_t, const T* pixw,       \
      T a_scale, long N, long C, long HW, long chunk, long tile, T* as_hw, T* at_hw, T* ls,   \
      T* lt, T* rows, T* maxima, int n_threads) {                                              \
    forward<T>(S, Tm, w_s, w_t, b_s, b_t, pixw, a_scale, N, C, HW, chunk, tile, as_hw, at_hw, \
               ls, lt, rows, maxima, n_threads);                                               \
  }                                                                                            \
  extern "C" void fgd_backward_##SUFFIX(                                                       \
      const T* S, const T* Tm, const T* two_q2, const T* two_q1, const T* g_as_c,             \
      const T* g_d, const T* g_cs, const T* g_ct, const T* w_s, const T* weight,              \
      const T* g_as_hw, const T* p_s, const T* p_t, const T* k_s, const T* k_t, long N,       \
      long C, long HW, long chunk, long tile, T* dS, T* g_ls, T* g_lt, T* rows,               \
      int n_threads) {                                                                         \
    backward<T>(S, Tm, two_q2, two_q1, g_as_c, g_d, g_cs, g_ct, w_s, weight, g_as_hw, p_s,   \
                p_t, k_s, k_t, N, C, HW, chunk, tile, dS, g_ls, g_lt, rows, n_threads);      \
  }

FGD_EXPORT(float, f32)
FGD_EXPORT(double, f64)
