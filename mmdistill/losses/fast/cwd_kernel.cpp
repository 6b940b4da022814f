// CWD's divergence and its gradient as one CPU kernel, row by row (one row: a channel of an
// image, its H*W locations).
//
// Built and loaded by mmdistill/losses/fast/cwd_kernel.py (plain C ABI, no torch headers); the
// definition is mmdistill/losses/cwd.py. With s = S / tau, t = T / tau, e_s = exp(s - max s),
// Z_s = sum e_s (the same for t):
//   KL_row = sum(e_t (t - s)) / Z_t + log Z_s + max s - log Z_t - max t
//   d KL_row / d S = (e_s / Z_s - e_t / Z_t) / tau
// A row is read from memory once (its maxima); the exponentials read it again from cache and are
// kept in a per-thread buffer for the gradient, written once. The exponentials are
// exp_nonpositive (cpu_math.h: in-line and vectorised in float32; exp is most of the arithmetic
// here).
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_math.h"
#include "cpu_tasks.h"

namespace {

using mmdistill::exp_nonpositive;
using mmdistill::run_tasks;

// KL_row of one row s, t (HW each); with g (may be null) the gradient of grad_scale * KL_row
// w.r.t. the row of S (grad_scale includes 1 / tau), the exponentials kept in buffer (2 HW).
// Arguments by value, so that the compiler vectorises the loops.
template <typename T>
T cwd_row(const T* s, const T* t, long HW, T inv_tau, T grad_scale, T* g, T* buffer) {
  T ms = -std::numeric_limits<T>::infinity(), mt = ms;
#pragma omp simd reduction(max : ms, mt)
  for (long l = 0; l < HW; ++l) {
    ms = s[l] > ms ? s[l] : ms;
    mt = t[l] > mt ? t[l] : mt;
  }
  ms *= inv_tau;  // tau > 0: max(S / tau) = max(S) / tau
  mt *= inv_tau;
  T zs = 0, zt = 0, cross = 0;
  if (g == nullptr) {
#pragma omp simd reduction(+ : zs, zt, cross)
    for (long l = 0; l < HW; ++l) {
      const T xs = s[l] * inv_tau, xt = t[l] * inv_tau;
      const T et = exp_nonpositive(xt - mt);
      zs += exp_nonpositive(xs - ms);
      zt += et;
      cross += et * (xt - xs);
    }
  } else {
    T* es = buffer;
    T* et = buffer + HW;
#pragma omp simd reduction(+ : zs, zt, cross)
    for (long l = 0; l < HW; ++l) {
      const T xs = s[l] * inv_tau, xt = t[l] * inv_tau;
      es[l] = exp_nonpositive(xs - ms);
      et[l] = exp_nonpositive(xt - mt);
      zs += es[l];
      zt += et[l];
      cross += et[l] * (xt - xs);
    }
    const T cs = grad_scale / zs, ct = grad_scale / zt;
#pragma omp simd
    for (long l = 0; l < HW; ++l) g[l] = es[l] * cs - et[l] * ct;
  }
  return cross / zt + (ms + std::log(zs)) - (mt + std::log(zt));
}

// Per row r of the (R, HW) maps: kl[r] = KL_row; with grad (may be null) the gradient of
// grad_scale * sum KL_row w.r.t. S.
template <typename T>
void cwd_rows(const T* S, const T* Tm, long R, long HW, T inv_tau, T grad_scale, T* kl, T* grad,
              int n_threads) {
  run_tasks(R, n_threads, [&](long r) {
    thread_local std::vector<T> buffer;
    if (grad != nullptr && static_cast<long>(buffer.size()) < 2 * HW) buffer.resize(2 * HW);
    kl[r] = cwd_row(S + r * HW, Tm + r * HW, HW, inv_tau, grad_scale,
                    grad == nullptr ? nullptr : grad + r * HW, buffer.data());
  });
}

}  // namespace

#define CWD_EXPORT(T, SUFFIX)                                                                \
  extern "C" void cwd_rows_##SUFFIX(const T* S, const T* Tm, long R, long HW, T inv_tau,     \
                                    T grad_scale, T* kl, T* grad, int n_threads) {           \
    cwd_rows<T>(S, Tm, R, HW, inv_tau, grad_scale, kl, grad, n_threads);                     \
  }

CWD_EXPORT(float, f32)
CWD_EXPORT(double, f64)
