// Per-pixel head math over K class scores: numerically stable softmax, sigmoid, argmax (first maximum
// on ties, like torch.argmax). Shared by the CPU twins and the CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "unet_fast/macros.h"

namespace unet_fast {

// Order matches unet_fast.kernels.spec.HEAD_OPS.
enum class HeadOp : int { kLogits = 0, kSoftmax = 1, kSigmoid = 2, kArgmax = 3 };

UF_HD float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

// In place: v[0..k) <- softmax(v). Subtracting the max keeps exp() from overflowing.
UF_HD void softmax_inplace(float* v, int k) {
  float m = v[0];
  for (int i = 1; i < k; ++i) m = v[i] > m ? v[i] : m;
  float s = 0.f;
  for (int i = 0; i < k; ++i) {
    v[i] = expf(v[i] - m);
    s += v[i];
  }
  const float inv = 1.f / s;
  for (int i = 0; i < k; ++i) v[i] *= inv;
}

#if !defined(__CUDACC__)
// The CPU twin's softmax, over `pixels` consecutive groups of k scores, in three passes so the exp pass is
// one long loop the compiler vectorises. glibc's expf does not vectorise without -ffast-math, so the exp
// is Cephes' expf (range reduction + degree-6 polynomial, max relative error ~2e-7) on x <= 0. GCC
// if-converts the clamp (and so vectorises these loops) only without trapping math: hence UF_NO_TRAP on
// these functions and on their callers (GCC inlines only between functions with the same optimize
// options). Not for the whole extension: -fno-trapping-math there stopped maxpool2x2's NaN-propagating
// max from vectorising (11x slower). The CUDA head keeps softmax_inplace above (hardware expf).
#define UF_NO_TRAP __attribute__((optimize("no-trapping-math")))

UF_NO_TRAP inline float exp_nonpositive(float x) {
  x = x < -87.3f ? -87.3f : x;  // below: ~1e-38 instead of a denormal; NaN passes (compare is false)
  const int n = static_cast<int>(x * 1.44269504088896341f - 0.5f);  // round(x / ln2) for x <= 0
  const float fn = static_cast<float>(n);
  const float g = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * g + 1.3981999507e-3f;
  y = y * g + 8.3334519073e-3f;
  y = y * g + 4.1665795894e-2f;
  y = y * g + 1.6666665459e-1f;
  y = y * g + 5.0000001201e-1f;
  y = y * g * g + g + 1.f;
  const std::int32_t bits = (n + 127) << 23;  // 2^n, n in [-126, 0]: a normal float
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

UF_NO_TRAP inline void exp_nonpositive_n(float* v, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) v[i] = exp_nonpositive(v[i]);
}

// sigmoid(x) into *pos and sigmoid(-x) = 1 - sigmoid(x) into *neg, both without cancellation: e = exp(-|x|)
// <= 1 never overflows, and x >= 0 ? 1 / (1 + e) : e / (1 + e) is a select, not a branch. NaN stays NaN.
UF_NO_TRAP inline void sigmoid_pair(float x, float* pos, float* neg) {
  const float e = exp_nonpositive(x > 0.f ? -x : x);
  const float r = 1.f / (1.f + e);
  *pos = x >= 0.f ? r : e * r;
  *neg = x >= 0.f ? e * r : r;
}

UF_NO_TRAP inline void softmax_rows(float* v, std::int64_t pixels, int k) {
  if (k == 2) {  // two classes: softmax(s0, s1) = (sigmoid(s0 - s1), sigmoid(s1 - s0))
    for (std::int64_t p = 0; p < pixels; ++p) {
      // + (m - m): NaN when the larger score is infinite, as the max-subtracting form (and torch) gives.
      const float m = v[2 * p] > v[2 * p + 1] ? v[2 * p] : v[2 * p + 1];
      sigmoid_pair((v[2 * p] - v[2 * p + 1]) + (m - m), &v[2 * p], &v[2 * p + 1]);
    }
    return;
  }
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* q = v + p * k;
    float m = q[0];
    for (int i = 1; i < k; ++i) m = q[i] > m ? q[i] : m;
    for (int i = 0; i < k; ++i) q[i] -= m;
  }
  exp_nonpositive_n(v, pixels * k);
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* q = v + p * k;
    float s = 0.f;
    for (int i = 0; i < k; ++i) s += q[i];
    const float inv = 1.f / s;
    for (int i = 0; i < k; ++i) q[i] *= inv;
  }
}
// In place: v[i] <- sigmoid(v[i]) over n scores (sigmoid_pair; the unused half folds away).
UF_NO_TRAP inline void sigmoid_n(float* v, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    float unused;
    sigmoid_pair(v[i], &v[i], &unused);
  }
}
#endif

// NaN compares false, so a NaN score never wins unless it is first; torch.argmax treats NaN as maximal.
// We follow torch: the first NaN wins.
UF_HD int argmax_first(const float* v, int k) {
  int best = 0;
  if (v[0] != v[0]) return 0;
  for (int i = 1; i < k; ++i) {
    if (v[i] != v[i]) return i;
    if (v[i] > v[best]) best = i;
  }
  return best;
}

}  // namespace unet_fast
