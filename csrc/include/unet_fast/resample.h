// Source coordinates for reading through a resample, bit-compatible with PyTorch's F.interpolate
// (aten/src/ATen/native/UpSample.h: area_pixel_compute_scale, area_pixel_compute_source_index,
// nearest_idx), for an explicit output size. Shared by the CPU twins and the CUDA kernels.
#pragma once

#include <cmath>

#include "unet_fast/macros.h"

namespace unet_fast {

enum class ResampleMode : int { kNone = 0, kNearest = 1, kBilinear = 2 };

// Legacy 'nearest': src = floor(dst * in / out), with PyTorch's exact fast paths for 1x and 2x.
UF_HD int nearest_source(int dst, int in_size, int out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const int src = static_cast<int>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

struct LinearTap {
  int i0, i1;      // the two source indices (equal at the far edge)
  float w0, w1;    // their weights, w0 + w1 == 1
};

UF_HD float bilinear_scale(int in_size, int out_size, bool align_corners) {
  if (align_corners) return out_size > 1 ? static_cast<float>(in_size - 1) / static_cast<float>(out_size - 1) : 0.f;
  return static_cast<float>(in_size) / static_cast<float>(out_size);
}

UF_HD LinearTap linear_source(int dst, int in_size, int out_size, bool align_corners) {
  const float scale = bilinear_scale(in_size, out_size, align_corners);
  float src = align_corners ? scale * static_cast<float>(dst) : scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0.f) src = 0.f;
  LinearTap t;
  t.i0 = static_cast<int>(src);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.w1 = src - static_cast<float>(t.i0);
  t.w0 = 1.f - t.w1;
  return t;
}

// A consumer reads logical pixel (y, x) of a view: window offset first, then (if any) the resample.
// Returns false where the window lies outside the resampled image: that pixel reads as zero.
UF_HD bool view_to_resampled(int y, int x, int off_y, int off_x, int rh, int rw, int* ry, int* rx) {
  *ry = y + off_y;
  *rx = x + off_x;
  return *ry >= 0 && *ry < rh && *rx >= 0 && *rx < rw;
}

}  // namespace unet_fast
