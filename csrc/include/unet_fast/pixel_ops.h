// Per-pixel head math over K class scores: numerically stable softmax, sigmoid, argmax (first maximum
// on ties, like torch.argmax). Shared by the CPU twins and the CUDA kernels.
#pragma once

#include <cmath>

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
