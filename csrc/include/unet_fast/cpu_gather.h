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

// The argument checks and the row / column taps of a gather of `src` into `dst` (a view of src resampled to
// resampled_h x resampled_w by `mode` (ResampleMode), windowed at (off_y, off_x)): shared by the fp32 gather
// and the bf16 one, whatever their element types.
struct GatherTaps {
  ResampleMode mode;
  std::vector<Tap> ty, tx;
};
template <class S, class D>
GatherTaps gather_taps(const Nhwc<S>& src, const Nhwc<D>& dst, int mode, std::int64_t resampled_h,
                       std::int64_t resampled_w, bool align_corners, std::int64_t off_y, std::int64_t off_x) {
  UF_CHECK(mode >= 0 && mode <= 2, "unknown resample mode " << mode);
  UF_CHECK(dst.n == src.n && dst.c == src.c, "dst must have src's batch and channels");
  const auto m = static_cast<ResampleMode>(mode);
  if (m == ResampleMode::kNone) {
    UF_CHECK(resampled_h == src.h && resampled_w == src.w, "without a resample the size must be the source's");
  }
  UF_CHECK(resampled_h > 0 && resampled_w > 0, "resampled size must be positive");
  // The coordinate math is in int/float like PyTorch's: keep sizes where that is exact.
  UF_CHECK(resampled_h < (1 << 24) && resampled_w < (1 << 24), "resampled size too large");
  return {m, make_taps(dst.h, off_y, src.h, resampled_h, m, align_corners),
          make_taps(dst.w, off_x, src.w, resampled_w, m, align_corners)};
}

}  // namespace unet_fast
