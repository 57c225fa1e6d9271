// Gathering one input view into a channel slot (csrc/cpu/upsample_concat.cpp): per output column / row
// where it reads from, and what one row call of a variant's gather body receives.
#pragma once

#include <cstdint>

#include "unet_fast/cpu_tensor.h"

namespace unet_fast {

// Where one output column (or row) reads from: two source indices and weights (nearest and plain reads
// use i0 with weight 1); `valid` is false where the window lies outside the resampled image.
struct Tap {
  bool valid;
  std::int64_t i0, i1;
  float w0, w1;
};

struct GatherArgs {
  Nhwc<const float> src;
  Nhwc<float> dst;
  const Tap* ty;  // [dst.h]
  const Tap* tx;  // [dst.w]
  bool bilinear;
};

}  // namespace unet_fast
