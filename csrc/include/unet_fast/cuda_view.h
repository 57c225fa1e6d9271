// Reading an InputView (kernels/spec.py) from a CUDA kernel: window offset, then nearest/bilinear
// resample, zero outside the window. Host-compilable (g++): tests/kernels/cuda/ runs the same code on the
// CPU against PyTorch, which is how the index math is checked on machines without a GPU.
#pragma once

#include "unet_fast/macros.h"
#include "unet_fast/resample.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

// `#pragma unroll` for device passes only (the host compiler warns about it, and warnings are errors).
#if defined(__CUDA_ARCH__)
#define UF_UNROLL _Pragma("unroll")
#else
#define UF_UNROLL
#endif

namespace unet_fast {

// Storage <-> fp32 (all math is fp32). The 16-bit overloads exist only under nvcc.
UF_HD float to_float(float x) { return x; }
template <typename T>
UF_HD T from_float(float x);
template <>
UF_HD float from_float<float>(float x) { return x; }
#if defined(__CUDACC__)
UF_HD float to_float(__half x) { return __half2float(x); }
UF_HD float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
UF_HD __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
UF_HD __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
#endif

// One view of an NHWC tensor whose channel stride is 1. Strides are in elements.
struct ViewDesc {
  const void* data;
  long long sn, sh, sw;
  int h, w, c;          // the source tensor's H, W, C
  int mode;             // ResampleMode
  int rh, rw;           // (H, W) after the resample (== h, w without one)
  int align_corners;
  int off_y, off_x;     // window offset into the resampled image
};

// Where pixel (n, y, x) of a view lives in memory: one tap (plain / nearest) or four (bilinear).
// Computed once per pixel, then reused for every channel of the view.
struct ViewSample {
  long long base;       // element offset of tap (y0, x0)
  long long dy, dx;     // offsets of the y1 row and x1 column relative to base
  float wy0, wy1, wx0, wx1;
  bool valid;           // false: the pixel lies outside the resampled image and reads as zero
  bool bilinear;
};

UF_HD ViewSample view_sample(const ViewDesc& v, int n, int y, int x) {
  ViewSample s;
  s.dy = 0;
  s.dx = 0;
  s.wy0 = s.wx0 = 1.f;
  s.wy1 = s.wx1 = 0.f;
  s.bilinear = false;
  int ry, rx;
  s.valid = view_to_resampled(y, x, v.off_y, v.off_x, v.rh, v.rw, &ry, &rx);
  if (!s.valid) {
    s.base = 0;
    return s;
  }
  int sy = ry, sx = rx;
  if (v.mode == static_cast<int>(ResampleMode::kNearest)) {
    sy = nearest_source(ry, v.h, v.rh);
    sx = nearest_source(rx, v.w, v.rw);
  } else if (v.mode == static_cast<int>(ResampleMode::kBilinear)) {
    const LinearTap ty = linear_source(ry, v.h, v.rh, v.align_corners != 0);
    const LinearTap tx = linear_source(rx, v.w, v.rw, v.align_corners != 0);
    sy = ty.i0;
    sx = tx.i0;
    s.dy = static_cast<long long>(ty.i1 - ty.i0) * v.sh;
    s.dx = static_cast<long long>(tx.i1 - tx.i0) * v.sw;
    s.wy0 = ty.w0;
    s.wy1 = ty.w1;
    s.wx0 = tx.w0;
    s.wx1 = tx.w1;
    s.bilinear = true;
  }
  s.base = n * v.sn + sy * v.sh + sx * v.sw;
  return s;
}

// Channel c (0 <= c < v.c) of a sampled pixel, in fp32; the bilinear blend is F.interpolate's order.
template <typename T>
UF_HD float sample_channel(const ViewDesc& v, const ViewSample& s, int c) {
  if (!s.valid) return 0.f;
  const T* p = static_cast<const T*>(v.data) + s.base + c;
  if (!s.bilinear) return to_float(p[0]);
  const float top = s.wx0 * to_float(p[0]) + s.wx1 * to_float(p[s.dx]);
  const float bot = s.wx0 * to_float(p[s.dy]) + s.wx1 * to_float(p[s.dy + s.dx]);
  return s.wy0 * top + s.wy1 * bot;
}

}  // namespace unet_fast
