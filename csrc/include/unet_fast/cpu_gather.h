// Gathering one input view into a channel slot (csrc/cpu/upsample_concat.cpp): per output column / row
// where it reads from, and what one row call of a variant's gather body receives.
#pragma once

#include <cstdint>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/resample.h"

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

// The taps of `out_len` output positions read at window offset `off` from a source of `in_len` resampled
// to `resampled_len` (PyTorch-exact coordinates, resample.h). Shared by the fp32 gather
// (csrc/cpu/upsample_concat.cpp) and the bf16 one (csrc/cpu/bf16/gather_view_bf16.cpp).
inline std::vector<Tap> make_taps(std::int64_t out_len, std::int64_t off, std::int64_t in_len, std::int64_t resampled_len,
                           ResampleMode mode, bool align_corners) {
  std::vector<Tap> taps(static_cast<std::size_t>(out_len));
  for (std::int64_t o = 0; o < out_len; ++o) {
    Tap& t = taps[static_cast<std::size_t>(o)];
    const std::int64_t r = o + off;
    t = Tap{r >= 0 && r < resampled_len, 0, 0, 1.f, 0.f};
    if (!t.valid) continue;
    if (mode == ResampleMode::kNone) {
      t.i0 = t.i1 = r;
    } else if (mode == ResampleMode::kNearest) {
      t.i0 = t.i1 = nearest_source(static_cast<int>(r), static_cast<int>(in_len), static_cast<int>(resampled_len));
    } else {
      const LinearTap lt = linear_source(static_cast<int>(r), static_cast<int>(in_len),
                                         static_cast<int>(resampled_len), align_corners);
      t = Tap{true, lt.i0, lt.i1, lt.w0, lt.w1};
    }
    // The shared math keeps indices in range; re-check, since a wrong index here reads out of bounds.
    UF_CHECK(t.i0 >= 0 && t.i0 < in_len && t.i1 >= 0 && t.i1 < in_len, "source index out of range at " << o);
  }
  return taps;
}

}  // namespace unet_fast
