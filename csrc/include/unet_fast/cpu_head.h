// The segmentation head (csrc/cpu/head.cpp): what one row call of a variant's head body receives.
#pragma once

#include <cstdint>

#include "unet_fast/cpu_tensor.h"
#include "unet_fast/pixel_ops.h"

namespace unet_fast {

struct HeadArgs {
  Nhwc<const float> x;
  const float* w;  // [K, C] row-major
  const float* bias;  // [K], never null (zeros when the head has none)
  std::int64_t k;
};

}  // namespace unet_fast
