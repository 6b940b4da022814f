// FGD's loss of one level and all its gradients as one CPU kernel call (loss_and_grads below):
// a forward pass over the (N, C, HW) maps, the small per-image steps (softmaxes, sums over tasks,
// the GcBlocks' channel transforms and their backward, fgd_channel_add.h), a backward pass.
//
// Built and loaded by mmdistill/losses/fast/fgd_kernel.py (plain C ABI, no torch headers); what
// the passes compute is described in mmdistill/losses/fast/fgd.py. Work is split into tasks, an
// image's chunk of locations each; a task walks its chunk in tiles of `tile` locations. For each
// tile, sweep 1 reads the tile's rows of every channel (the column sums over channels need all
// of them), sweep 2 reads them again from cache and prefetches the next tile's rows, so that
// their reads from memory overlap its arithmetic (fgd_kernel.py sizes the tiles of large maps
// so that two fit in half the L2): each map is read from memory once per pass. The spatial
// softmaxes (teacher attention, the GcBlock contexts) are over every location of an image, so
// the forward accumulates their numerators against the task's running maximum, rescaled when it
// grows; a last step per image combines the tasks and divides by the softmax sums.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_math.h"
#include "fgd_channel_add.h"
#include "cpu_tasks.h"

namespace {

using mmdistill::ChannelAdd;
using mmdistill::channel_add_backward;
using mmdistill::channel_add_forward;
using mmdistill::exp_nonpositive;
using mmdistill::run_tasks;
using mmdistill::stream_copy;
using mmdistill::stream_fence;

// Sweep 1 walks one tile-row per channel, a stride of HW apart: too many streams for the
// hardware prefetchers, so each row is prefetched this many channels ahead (4 to 16 measured
// alike on an AMD EPYC, 1.5x faster forward than none).
constexpr long kPrefetchAhead = 16;

template <typename T>
inline void prefetch_rows(const T* s, const T* t, long ahead, long L) {
  for (long l = 0; l < L; l += 64 / static_cast<long>(sizeof(T))) {
    __builtin_prefetch(s + ahead + l);
    __builtin_prefetch(t + ahead + l);
  }
}

// Sweep 1 of a pass over the tile of image n at h0 (L locations): step(s, t, c, B) for the
// channels c .. c + B - 1 (rows s[b], t[b] of S and T), kChannelBlock channels at a time (B a
// std::integral_constant, so that the step's loops are compiled for it), the rest one by one;
// each row prefetched kPrefetchAhead channels ahead.
constexpr int kChannelBlock = 4;

template <typename T, typename Step>
inline void walk_channel_blocks(const T* S, const T* Tm, long n, long C, long HW, long h0, long L,
                                Step&& step) {
  const T* s[kChannelBlock];
  const T* t[kChannelBlock];
  for (long c = 0; c < C; c += kChannelBlock) {
    const int count = static_cast<int>(std::min<long>(kChannelBlock, C - c));
    for (int b = 0; b < count; ++b) {
      s[b] = S + (n * C + c + b) * HW + h0;
      t[b] = Tm + (n * C + c + b) * HW + h0;
      if (c + b + kPrefetchAhead < C) prefetch_rows(s[b], t[b], kPrefetchAhead * HW, L);
    }
    if (count == kChannelBlock) {
      step(s, t, c, std::integral_constant<int, kChannelBlock>{});
    } else {
      for (int b = 0; b < count; ++b) step(s + b, t + b, c + b, std::integral_constant<int, 1>{});
    }
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

// Sweep 1 of the backward over channels c .. c + B - 1 of a tile: the projections of the
// contexts' gradients, gp_s[l] += sum_b g_cs[b] S[b, l] (gp_t of T the same).
template <int B, typename T>
inline void context_projections(const T* const* s, const T* const* t, const T* g_cs,
                                const T* g_ct, long L, T* gp_s, T* gp_t) {
#pragma omp simd
  for (long l = 0; l < L; ++l) {
    T ps = 0, pt = 0;
#pragma GCC unroll 8
    for (int b = 0; b < B; ++b) {
      ps += g_cs[b] * s[b][l];
      pt += g_ct[b] * t[b][l];
    }
    gp_s[l] += ps;
    gp_t[l] += pt;
  }
}

// softmax over x[0 .. L) in place, times `scale`, of x * x_scale; returns the sum of
// exp(x * x_scale - max) (max: `top` if given, else computed).
template <typename T>
T softmax_in_place(T* x, long L, T x_scale, T scale, const T* top = nullptr) {
  T m = -std::numeric_limits<T>::infinity();
  if (top != nullptr) {
    m = *top;
  } else {
    for (long l = 0; l < L; ++l) m = std::max(m, x[l] * x_scale);
  }
  T z = 0;
#pragma omp simd reduction(+ : z)
  for (long l = 0; l < L; ++l) {
    x[l] = exp_nonpositive(x[l] * x_scale - m);
    z += x[l];
  }
  const T f = scale / z;
#pragma omp simd
  for (long l = 0; l < L; ++l) x[l] *= f;
  return z;
}

// The options of the loss the kernel needs: the attention temperatures' scales and the weights
// of the terms it sums itself.
template <typename T>
struct Weights {
  T a_scale;   // 1 / (C temp): spatial attention logits from the sums over channels
  T c_scale;   // 1 / (HW temp): channel attention logits from the sums over locations
  T gamma;     // attention loss
  T lambda;    // global (relation) loss
};

// Forward. Maps (4, N, HW) out: the student's and the teacher's spatial attentions
// HW softmax(sum_c |F| a_scale) and the GcBlock context weights softmax(w . F + b). Vectors
// (7, N, C) out: the channel attentions C softmax(sum_hw |F| c_scale) of S and T, and with
// d = S - T: sum_hw d, sum_hw d^2, q1 = sum_hw d^2 A^S_t pixw, the contexts sum_hw F p.
// terms (N) out: sum_c A^C_t q1 + gamma (sum |A^C_s - A^C_t| + sum |A^S_s - A^S_t|)
// + lambda sum_c sum_hw d^2 (the loss times N, less the terms of the channel transforms).
// work_rows (N * chunks * 7 * C) and work_max (N * chunks * 3): the tasks' partial sums.
template <typename T>
void forward(const T* S, const T* Tm, const T* w_s, const T* w_t, T b_s, T b_t, const T* pixw,
             Weights<T> wt_, long N, long C, long HW, long chunk, long tile, T* maps, T* vecs,
             T* terms, T* work_rows, T* work_max, int n_threads) {
  const long chunks = (HW + chunk - 1) / chunk;
  T* as_hw = maps;
  T* at_hw = maps + N * HW;
  T* ls = maps + 2 * N * HW;
  T* lt = maps + 3 * N * HW;
  const T a_scale = wt_.a_scale;
  run_tasks(N * chunks, n_threads, [&](long k) {
    const long n = k / chunks, h_begin = (k % chunks) * chunk;
    const long h_end = std::min(HW, h_begin + chunk);
    T* row = work_rows + k * 7 * C;
    std::fill(row, row + 7 * C, T(0));
    T* mx = work_max + k * 3;
    mx[0] = mx[1] = mx[2] = -std::numeric_limits<T>::infinity();
    std::vector<T> buf(7 * tile);
    T *c_as = buf.data(), *c_at = c_as + tile, *c_ls = c_at + tile, *c_lt = c_ls + tile;
    T *e_a = c_lt + tile, *e_s = e_a + tile, *e_t = e_s + tile;
    for (long h0 = h_begin; h0 < h_end; h0 += tile) {
      const long L = std::min(tile, h_end - h0);
      std::fill(buf.begin(), buf.begin() + 4 * tile, T(0));
      // sweep 1: column sums over channels
      walk_channel_blocks(S, Tm, n, C, HW, h0, L, [&](auto s, auto t, long c, auto B) {
        column_sums<B()>(s, t, w_s + c, w_t + c, L, c_as, c_at, c_ls, c_lt);
      });
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
      // sweep 2 (from cache): the row sums; the next tile prefetched
      const long L_next = std::min(tile, h_end - h0 - L);
      for (long c = 0; c < C; ++c) {
        const long r = (n * C + c) * HW + h0;
        if (L_next > 0) prefetch_rows(S + r, Tm + r, L, L_next);
        row_sums(S + r, Tm + r, e_a, e_s, e_t, L, row + c, C);
      }
    }
  });
  // per image: the tasks combined, the softmaxes, the terms
  run_tasks(N, n_threads, [&](long n) {
    const T* rows = work_rows + n * chunks * 7 * C;
    const T* maxima = work_max + n * chunks * 3;
    T top[3];
    for (int i = 0; i < 3; ++i) {
      top[i] = -std::numeric_limits<T>::infinity();
      for (long k = 0; k < chunks; ++k) top[i] = std::max(top[i], maxima[k * 3 + i]);
    }
    T* v[7];
    for (int i = 0; i < 7; ++i) {
      v[i] = vecs + (i * N + n) * C;
      std::fill(v[i], v[i] + C, T(0));
    }
    for (long k = 0; k < chunks; ++k) {
      const T* row = rows + k * 7 * C;
      for (int i = 0; i < 4; ++i)
        for (long c = 0; c < C; ++c) v[i][c] += row[i * C + c];
      for (int i = 4; i < 7; ++i) {
        const T f = std::exp(maxima[k * 3 + i - 4] - top[i - 4]);
        for (long c = 0; c < C; ++c) v[i][c] += row[i * C + c] * f;
      }
    }
    T* sp_s = as_hw + n * HW;
    T* sp_t = at_hw + n * HW;
    softmax_in_place(sp_s, HW, a_scale, static_cast<T>(HW));
    const T z_a = softmax_in_place(sp_t, HW, a_scale, static_cast<T>(HW), &top[0]);
    const T z_s = softmax_in_place(ls + n * HW, HW, T(1), T(1), &top[1]);
    const T z_t = softmax_in_place(lt + n * HW, HW, T(1), T(1), &top[2]);
    // v: as_c, at_c, dsum, q2, q1 e, ctx_s e, ctx_t e -> channel_s, channel_t, dsum, q2, q1,
    // ctx_s, ctx_t
    T q2 = 0;
    for (long c = 0; c < C; ++c) {
      q2 += v[3][c];
      v[4][c] *= static_cast<T>(HW) / z_a;
      v[5][c] /= z_s;
      v[6][c] /= z_t;
    }
    softmax_in_place(v[0], C, wt_.c_scale, static_cast<T>(C));
    softmax_in_place(v[1], C, wt_.c_scale, static_cast<T>(C));
    T focal = 0, mask = 0;
    for (long c = 0; c < C; ++c) {
      focal += v[1][c] * v[4][c];
      mask += std::abs(v[0][c] - v[1][c]);
    }
    for (long l = 0; l < HW; ++l) mask += std::abs(sp_s[l] - sp_t[l]);
    terms[n] = focal + wt_.gamma * mask + wt_.lambda * q2;
  });
}

// Backward, for a loss gradient of 1. From the forward's maps and vectors and the
// gradients of the contexts g_cs, g_ct and of d's sums g_d (N, C) (from the channel
// transforms): dS (N, C, HW), and the conv_mask gradients conv_grads (2, C) = sum over images
// and locations of g_ls S, g_lt T and bias_grads (2) = sum g_ls, sum g_lt. With, per image,
//   g_p[hw] = sum_c g_ctx[c] F[c, hw],  g_l = p (g_p - sum_c g_ctx ctx)       (GcBlock logits)
//   g_as_hw = g gamma a_scale A^S_s (sgn(A^S_s - A^S_t) - sum_hw A^S_s sgn(..) / HW)
//   g_as_c  = g gamma c_scale A^C_s (sgn(A^C_s - A^C_t) - sum_c A^C_s sgn(..) / C)
//   dS = 2 g d (lambda + A^C_t A^S_t pixw) + sign(S) (g_as_c + g_as_hw) + g_d + w_s g_ls
//        + g_cs p_s                                             (g = 1 / N, the loss's 1 / N)
// work (N * chunks * 2 * (C + 1)): the tasks' partial sums. With `stream` (maps larger than the
// caches), dS goes to memory with non-temporal stores.
template <typename T>
void backward(const T* S, const T* Tm, const T* maps, const T* vecs, const T* pixw,
              const T* g_cs, const T* g_ct, const T* g_d, const T* w_s, Weights<T> wt_, long N,
              long C, long HW, long chunk, long tile, T* dS, T* conv_grads,
              T* bias_grads, T* work, bool stream, int n_threads) {
  const long chunks = (HW + chunk - 1) / chunk;
  const T g = T(1) / static_cast<T>(N);
  const T *sp_s = maps, *sp_t = maps + N * HW, *p_s = maps + 2 * N * HW, *p_t = maps + 3 * N * HW;
  const T *ch_s = vecs, *ch_t = vecs + N * C, *ctx_s = vecs + 5 * N * C, *ctx_t = vecs + 6 * N * C;
  // per image: the coefficients of the attention loss and the contexts
  std::vector<T> g_as_c(N * C), per_n(3 * N);
  T *k_a = per_n.data(), *k_s = k_a + N, *k_t = k_s + N;
  run_tasks(N, n_threads, [&](long n) {
    const long nc = n * C, nh = n * HW;
    T ka = 0;
    for (long l = 0; l < HW; ++l) ka += sp_s[nh + l] * sign_of(sp_s[nh + l] - sp_t[nh + l]);
    k_a[n] = ka / static_cast<T>(HW);
    T kc = 0, ks = 0, kt = 0;
    for (long c = 0; c < C; ++c) {
      kc += ch_s[nc + c] * sign_of(ch_s[nc + c] - ch_t[nc + c]);
      ks += g_cs[nc + c] * ctx_s[nc + c];
      kt += g_ct[nc + c] * ctx_t[nc + c];
    }
    kc /= static_cast<T>(C);
    k_s[n] = ks;
    k_t[n] = kt;
    const T f = g * wt_.gamma * wt_.c_scale;
    for (long c = 0; c < C; ++c)
      g_as_c[nc + c] = f * ch_s[nc + c] * (sign_of(ch_s[nc + c] - ch_t[nc + c]) - kc);
  });
  const T two_q2 = 2 * g * wt_.lambda, f_hw = g * wt_.gamma * wt_.a_scale;
  run_tasks(N * chunks, n_threads, [&](long k) {
    const long n = k / chunks, h_begin = (k % chunks) * chunk;
    const long h_end = std::min(HW, h_begin + chunk);
    T* row = work + k * 2 * (C + 1);
    std::fill(row, row + 2 * (C + 1), T(0));
    std::vector<T> buf(5 * tile);
    T *gp_s = buf.data(), *gp_t = gp_s + tile, *P = gp_t + tile, *g_hw = P + tile;
    T* g_row = g_hw + tile;  // a row of dS, streamed to memory
    for (long h0 = h_begin; h0 < h_end; h0 += tile) {
      const long L = std::min(tile, h_end - h0);
      const long o = n * HW + h0;
      std::fill(buf.begin(), buf.begin() + 2 * tile, T(0));
      // sweep 1: the contexts' gradients against every location
      walk_channel_blocks(S, Tm, n, C, HW, h0, L, [&](auto s, auto t, long c, auto B) {
        context_projections<B()>(s, t, g_cs + n * C + c, g_ct + n * C + c, L, gp_s, gp_t);
      });
      T bs = 0, bt = 0;
      for (long l = 0; l < L; ++l) {
        gp_s[l] = p_s[o + l] * (gp_s[l] - k_s[n]);
        gp_t[l] = p_t[o + l] * (gp_t[l] - k_t[n]);
        bs += gp_s[l];
        bt += gp_t[l];
        P[l] = sp_t[o + l] * pixw[o + l];
        g_hw[l] = f_hw * sp_s[o + l] * (sign_of(sp_s[o + l] - sp_t[o + l]) - k_a[n]);
      }
      row[2 * C] += bs;
      row[2 * C + 1] += bt;
      const T* ps = p_s + o;
      // sweep 2 (from cache): dS and the conv_mask weight gradients; the next tile prefetched
      const long L_next = std::min(tile, h_end - h0 - L);
      for (long c = 0; c < C; ++c) {
        const long r = (n * C + c) * HW + h0;
        const T* sr = S + r;
        const T* tr = Tm + r;
        if (L_next > 0) prefetch_rows(sr, tr, L, L_next);
        T* gr = stream ? g_row : dS + r;
        const long nc = n * C + c;
        const T a = two_q2, b = 2 * g * ch_t[nc], sc = g_as_c[nc], dc = g_d[nc];
        const T wc = w_s[c], cc = g_cs[nc];
        T rs = 0, rt = 0;
#pragma omp simd reduction(+ : rs, rt)
        for (long l = 0; l < L; ++l) {
          gr[l] = (sr[l] - tr[l]) * (a + b * P[l]) + sign_of(sr[l]) * (sc + g_hw[l]) + dc +
                  wc * gp_s[l] + cc * ps[l];
          rs += gp_s[l] * sr[l];
          rt += gp_t[l] * tr[l];
        }
        row[c] += rs;
        row[C + c] += rt;
        if (stream) stream_copy(dS + r, g_row, L);
      }
    }
    stream_fence();
  });
  std::fill(conv_grads, conv_grads + 2 * C, T(0));
  bias_grads[0] = bias_grads[1] = 0;
  for (long k = 0; k < N * chunks; ++k) {
    const T* row = work + k * 2 * (C + 1);
    for (long c = 0; c < 2 * C; ++c) conv_grads[c] += row[c];
    bias_grads[0] += row[2 * C];
    bias_grads[1] += row[2 * C + 1];
  }
}

// FGD's pixel weights alpha M_fg + beta M_bg (N, H * W) from the boxes' cells (see
// mmdistill/losses/fgd.py, fgd_masks, which builds the masks with torch ops): the boxes of image
// n are ends[n - 1] .. ends[n] - 1; box b gives value[b] to the cells [wmin, wmax] x [hmin, hmax]
// of bounds[b] (clipped to the grid), the largest value kept where boxes overlap; M_bg is
// 1 / (the image's number of cells without a box) on those cells. Work: the boxes' cells, not
// B x H x W.
template <typename T>
void pixel_weights(const long* ends, const double* bounds, const T* value, long N, long H,
                   long W, T alpha, T beta, T* pix, int n_threads) {
  run_tasks(N, n_threads, [&](long n) {
    T* fg = pix + n * H * W;
    std::fill(fg, fg + H * W, T(0));
    for (long b = n > 0 ? ends[n - 1] : 0; b < ends[n]; ++b) {
      const double* r = bounds + 4 * b;  // wmin, hmin, wmax, hmax
      if (!(r[0] <= r[2] && r[1] <= r[3])) continue;  // no cell
      const long w0 = static_cast<long>(std::max(r[0], 0.0));
      const long h0 = static_cast<long>(std::max(r[1], 0.0));
      const long w1 = static_cast<long>(std::min(r[2], static_cast<double>(W - 1)));
      const long h1 = static_cast<long>(std::min(r[3], static_cast<double>(H - 1)));
      for (long h = h0; h <= h1; ++h)
        for (long w = w0; w <= w1; ++w) fg[h * W + w] = std::max(fg[h * W + w], value[b]);
    }
    long background = 0;
    for (long l = 0; l < H * W; ++l) background += fg[l] == T(0);
    const T bg = T(1) / static_cast<T>(std::max(background, 1L));
    for (long l = 0; l < H * W; ++l) fg[l] = alpha * fg[l] + beta * (fg[l] == T(0) ? bg : T(0));
  });
}

// The loss of one level (returned) and, where dS is not null, its gradients (for a loss
// gradient of 1): dS (N, C, HW) and those of the parameters, params[i] -> grads (one buffer, in
// order, each the size of its parameter): the conv_mask weights (C) and biases (1) of S, then
// of T, then each channel transform's w1, b1, gamma, beta, w2, b2 (S's, then T's;
// fgd_channel_add.h). Runs forward, the channel transforms and their backward per image, then
// backward.
template <typename T>
T loss_and_grads(const T* S, const T* Tm, const T* pixw, const T* const* params, T eps_s,
                 T eps_t, Weights<T> wt_, long N, long C, long HW, long chunk, long tile, T* dS,
                 T* grads, bool stream, int n_threads) {
  const long chunks = (HW + chunk - 1) / chunk, H = C / 2;
  std::vector<T> maps(4 * N * HW), vecs(7 * N * C), terms(N);
  {
    std::vector<T> work_rows(N * chunks * 7 * C), work_max(N * chunks * 3);
    forward<T>(S, Tm, params[0], params[2], params[1][0], params[3][0], pixw, wt_, N, C, HW,
               chunk, tile, maps.data(), vecs.data(), terms.data(), work_rows.data(),
               work_max.data(), n_threads);
  }
  const T* dsum = vecs.data() + 2 * N * C;
  const T* ctx_s = vecs.data() + 5 * N * C;
  const T* ctx_t = vecs.data() + 6 * N * C;
  // the parameters' gradients in `grads`, in the order of params
  const long sizes[16] = {C, 1, C, 1, H * C, H, H, H, C * H, C, H * C, H, H, H, C * H, C};
  T* g[16];
  for (int i = 0; i < 16; ++i) g[i] = i == 0 ? grads : g[i - 1] + sizes[i - 1];
  auto transform = [&](int first, T eps) {
    const T* const* p = params + first;
    T* const* gp = g + first;
    return ChannelAdd<T>{C, H, eps, p[0], p[1], p[2], p[3], p[4], p[5],
                         gp[0], gp[1], gp[2], gp[3], gp[4], gp[5]};
  };
  const ChannelAdd<T> add_s = transform(4, eps_s), add_t = transform(10, eps_t);
  // the channel transforms; per image, the global term sum((d + add_s - add_t)^2) less sum d^2
  std::vector<T> adds(2 * N * C), caches(2 * N * (2 * H + 1));
  T* a_s = adds.data();
  T* a_t = adds.data() + N * C;
  channel_add_forward(add_s, ctx_s, N, a_s, caches.data());
  channel_add_forward(add_t, ctx_t, N, a_t, caches.data() + N * (2 * H + 1));
  T total = 0;
  for (long n = 0; n < N; ++n) {
    T relation = 0;
    for (long i = n * C; i < (n + 1) * C; ++i) {
      const T a = a_s[i] - a_t[i];
      relation += 2 * a * dsum[i] + static_cast<T>(HW) * a * a;
    }
    total += terms[n] + wt_.lambda * relation;
  }
  if (dS == nullptr) return total / static_cast<T>(N);
  // the gradients of the transforms' outputs: d/d add = 2 lambda (dsum + HW add) / N (add_s's;
  // add_t's its negative), and of the sums of d, 2 lambda add / N
  std::fill(grads, g[15] + sizes[15], T(0));
  std::vector<T> g_d(N * C), g_add(2 * N * C), g_ctx(2 * N * C), work(2 * N * H);
  const T scale = 2 * wt_.lambda / static_cast<T>(N);
  for (long i = 0; i < N * C; ++i) {
    const T a = a_s[i] - a_t[i];
    g_d[i] = scale * a;
    g_add[i] = scale * (dsum[i] + static_cast<T>(HW) * a);
    g_add[N * C + i] = -g_add[i];
  }
  channel_add_backward(add_s, ctx_s, N, caches.data(), g_add.data(), g_ctx.data(), work.data());
  channel_add_backward(add_t, ctx_t, N, caches.data() + N * (2 * H + 1), g_add.data() + N * C,
                       g_ctx.data() + N * C, work.data());
  std::vector<T> conv_grads(2 * C), bias_grads(2), work_b(N * chunks * 2 * (C + 1));
  backward<T>(S, Tm, maps.data(), vecs.data(), pixw, g_ctx.data(), g_ctx.data() + N * C,
              g_d.data(), params[0], wt_, N, C, HW, chunk, tile, dS, conv_grads.data(),
              bias_grads.data(), work_b.data(), stream, n_threads);
  std::copy(conv_grads.begin(), conv_grads.begin() + C, g[0]);
  g[1][0] = bias_grads[0];
  std::copy(conv_grads.begin() + C, conv_grads.end(), g[2]);
  g[3][0] = bias_grads[1];
  return total / static_cast<T>(N);
}

}  // namespace

#define FGD_EXPORT(T, SUFFIX)                                                                  \
  extern "C" T fgd_loss_##SUFFIX(                                                              \
      const T* S, const T* Tm, const T* pixw, const T* const* params, T eps_s, T eps_t,       \
      T a_scale, T c_scale, T gamma, T lambda, long N, long C, long HW, long chunk, long tile, \
      T* dS, T* grads, int stream, int n_threads) {                                            \
    return loss_and_grads<T>(S, Tm, pixw, params, eps_s, eps_t,                               \
                             {a_scale, c_scale, gamma, lambda}, N, C, HW, chunk, tile, dS,    \
                             grads, stream != 0, n_threads);                                   \
  }                                                                                            \
  extern "C" void fgd_pixel_weights_##SUFFIX(const long* ends, const double* bounds,          \
                                             const T* value, long N, long H, long W, T alpha, \
                                             T beta, T* pix, int n_threads) {                 \
    pixel_weights<T>(ends, bounds, value, N, H, W, alpha, beta, pix, n_threads);              \
  }

FGD_EXPORT(float, f32)
FGD_EXPORT(double, f64)
