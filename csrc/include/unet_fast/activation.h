// Per-element activations: one definition for the CPU twins and the CUDA kernels.
#pragma once

#include <cmath>

#include "unet_fast/macros.h"

namespace unet_fast {

// Order matches unet_fast.kernels.spec.ACTIVATIONS; the Python launchers pass the index.
enum class Act : int { kNone = 0, kRelu = 1, kLeakyRelu = 2, kSilu = 3 };

UF_HD float apply_act(float x, Act act, float negative_slope) {
  switch (act) {
    case Act::kRelu:
      return x > 0.f ? x : 0.f;
    case Act::kLeakyRelu:
      return x > 0.f ? x : x * negative_slope;
    case Act::kSilu:
      return x / (1.f + expf(-x));
    default:
      return x;
  }
}

}  // namespace unet_fast
