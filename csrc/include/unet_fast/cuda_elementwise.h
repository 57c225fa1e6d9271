// Per-element bodies of the CUDA ops that are one thread per output element (maxpool2x2, the per-view copy
// of upsample_concat, the head's per-pixel 1x1 conv + op). The kernels are grid-stride loops over these;
// the g++ harness in tests/kernels/cuda/ runs the same functions on the CPU against PyTorch.
#pragma once

#include "unet_fast/cuda_view.h"
#include "unet_fast/epilogue.h"
#include "unet_fast/macros.h"
#include "unet_fast/pixel_ops.h"

namespace unet_fast {

// Flat index i (channel fastest) of an [n, h, w, c] output -> (b, y, x, ch).
UF_HD void unflatten_nhwc(long long i, int h, int w, int c, int* b, int* y, int* x, int* ch) {
  *ch = static_cast<int>(i % c);
  long long p = i / c;
  *x = static_cast<int>(p % w);
  p /= w;
  *y = static_cast<int>(p % h);
  *b = static_cast<int>(p / h);
}

// Output element i of the 2x2, stride-2 max-pool (NaN propagates like F.max_pool2d).
template <typename T>
UF_HD void maxpool2x2_element(const T* x, long long xsn, long long xsh, long long xsw, T* out, long long osn,
                              long long osh, long long osw, int ho, int wo, int c, long long i) {
  int b, oy, ox, ch;
  unflatten_nhwc(i, ho, wo, c, &b, &oy, &ox, &ch);
  const T* src = x + b * xsn + (2 * oy) * xsh + (2 * ox) * xsw + ch;
  const float m = max_nan(max_nan(to_float(src[0]), to_float(src[xsw])), max_nan(to_float(src[xsh]), to_float(src[xsh + xsw])));
  out[b * osn + oy * osh + ox * osw + ch] = from_float<T>(m);
}

// Output element i of a view materialised into an [n, h, w, v.c] slot (upsample_concat, one view).
template <typename T>
UF_HD void view_copy_element(const ViewDesc& v, T* out, long long osn, long long osh, long long osw, int h, int w,
                             long long i) {
  int b, y, x, ch;
  unflatten_nhwc(i, h, w, v.c, &b, &y, &x, &ch);
  const ViewSample s = view_sample(v, b, y, x);
  out[b * osn + y * osh + x * osw + ch] = from_float<T>(sample_channel<T>(v, s, ch));
}

// Head pixel i of an [n, h, w] grid: K fp32 scores (weight [K][C] fp32, bias or nullptr) in `scores`
// (caller-provided, K floats), then the op; argmax writes one class index through osn/osh/osw, the others
// K values of the pixel (channel stride 1). O is the output storage type.
template <typename T, typename O>
UF_HD void head_pixel(const ViewDesc& v, const float* weight, const float* bias, int k, HeadOp op, O* out,
                      long long osn, long long osh, long long osw, int h, int w, long long i, float* scores) {
  const int x = static_cast<int>(i % w);
  const int y = static_cast<int>((i / w) % h);
  const int b = static_cast<int>(i / (static_cast<long long>(w) * h));
  const ViewSample s = view_sample(v, b, y, x);
  for (int j = 0; j < k; ++j) scores[j] = bias != nullptr ? bias[j] : 0.f;
  for (int c = 0; c < v.c; ++c) {
    const float xc = sample_channel<T>(v, s, c);
    for (int j = 0; j < k; ++j) scores[j] += weight[static_cast<long long>(j) * v.c + c] * xc;
  }
  O* dst = out + b * osn + y * osh + x * osw;
  if (op == HeadOp::kArgmax) {
    *dst = static_cast<O>(argmax_first(scores, k));
    return;
  }
  if (op == HeadOp::kSoftmax) softmax_inplace(scores, k);
  for (int j = 0; j < k; ++j) dst[j] = static_cast<O>(from_float<T>(op == HeadOp::kSigmoid ? sigmoidf(scores[j]) : scores[j]));
}

}  // namespace unet_fast
