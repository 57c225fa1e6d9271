// The conv epilogue, per element: y = act(acc + bias + residual). The 2x2 max-pool output takes the max
// of four such y values (floored like F.max_pool2d: odd trailing rows/columns are dropped).
#pragma once

#include "unet_fast/activation.h"
#include "unet_fast/macros.h"

namespace unet_fast {

struct Epilogue {
  Act act;
  float negative_slope;
};

UF_HD float epilogue(float acc, float bias, float residual, Epilogue e) {
  return apply_act(acc + bias + residual, e.act, e.negative_slope);
}

// NaN-propagating max, like F.max_pool2d.
UF_HD float max_nan(float a, float b) { return (a != a || a > b) ? a : b; }

}  // namespace unet_fast
