// Arithmetic and stores shared by the CPU kernels of this folder
// (mmdistill/losses/fast/*_kernel.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace mmdistill {

// exp(x) for x <= 0 in float32: x = n ln2 + r with integer n and |r| <= ln2 / 2, exp(r) by its
// Taylor polynomial of degree 7 (truncation below 6e-9 relative, under float32's rounding),
// times 2^n built in the exponent bits. Inputs below -87 give exp(-87) (1.6e-38) instead of a
// smaller number. Branch-free, so the loops around it vectorise.
inline float exp_poly(float x) {
  x = x < -87.0f ? -87.0f : x;
  // n = round(x / ln 2): adding 1.5 * 2^23 rounds to an integer
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // ln 2 in two parts: n * 0.693359375 is exact in float32
  const float r = (x - n * 0.693359375f) + n * 2.12194440054690583e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

inline float exp_nonpositive(float x) { return exp_poly(x); }
inline double exp_nonpositive(double x) { return std::exp(x); }

// dst[0 .. L) = src[0 .. L) with non-temporal stores where the CPU has them (x86: SSE2): the
// lines of dst are written to memory without being read first, a third less traffic for an
// output that is not read again soon. Call stream_fence() before another thread reads dst.
template <typename T>
inline void stream_copy(T* dst, const T* src, long L) {
  long l = 0;
#if defined(__SSE2__)
  constexpr long kLanes = 16 / static_cast<long>(sizeof(T));
  for (; l < L && (reinterpret_cast<std::uintptr_t>(dst + l) & 15); ++l) dst[l] = src[l];
  for (; l + kLanes <= L; l += kLanes) {
    if constexpr (sizeof(T) == 4) {
      _mm_stream_ps(reinterpret_cast<float*>(dst + l),
                    _mm_loadu_ps(reinterpret_cast<const float*>(src + l)));
    } else {
      _mm_stream_pd(reinterpret_cast<double*>(dst + l),
                    _mm_loadu_pd(reinterpret_cast<const double*>(src + l)));
    }
  }
#endif
  for (; l < L; ++l) dst[l] = src[l];
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace mmdistill
