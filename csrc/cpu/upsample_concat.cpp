// Gather one input view into a channel slot: read `src` through an optional resample (nearest, or
// bilinear with either align_corners, PyTorch-exact coordinates from resample.h), then a window at
// (off_y, off_x) of the slot's size; pixels outside the resampled image read as zero (crop and F.pad).
// The Python launcher calls it once per view: upsample + concat into a slot, and the conv's gather of a
// virtual concat into the contiguous NHWC scratch the convolution reads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/resample.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// Where one output column (or row) reads from: two source indices and weights (nearest and plain reads
// use i0 with weight 1); `valid` is false where the window lies outside the resampled image.
struct Tap {
  bool valid;
  std::int64_t i0, i1;
  float w0, w1;
};

std::vector<Tap> make_taps(std::int64_t out_len, std::int64_t off, std::int64_t in_len, std::int64_t resampled_len,
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

// One output row. Always inlined into two row functions, baseline and AVX2+FMA (below), picked per call
// (cpu_isa.h; `isa` forces one): the wheel has no -march=native, and the bilinear blend is the op's
// arithmetic.
__attribute__((always_inline)) inline void gather_row(const Nhwc<const float>& src, const Nhwc<float>& dst,
                                                      const Tap& y, const Tap* tx, bool bilinear, std::int64_t n,
                                                      std::int64_t oy) {
  const std::int64_t c = dst.c;
  for (std::int64_t ox = 0; ox < dst.w; ++ox) {
    const Tap& x = tx[ox];
    float* o = dst.pixel(n, oy, ox);
    if (!y.valid || !x.valid) {
      std::memset(o, 0, static_cast<std::size_t>(c) * sizeof(float));
    } else if (!bilinear) {
      std::memcpy(o, src.pixel(n, y.i0, x.i0), static_cast<std::size_t>(c) * sizeof(float));
    } else {
      const float* s00 = src.pixel(n, y.i0, x.i0);
      const float* s01 = src.pixel(n, y.i0, x.i1);
      const float* s10 = src.pixel(n, y.i1, x.i0);
      const float* s11 = src.pixel(n, y.i1, x.i1);
      // PyTorch's order: h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * d).
#pragma omp simd
      for (std::int64_t k = 0; k < c; ++k)
        o[k] = y.w0 * (x.w0 * s00[k] + x.w1 * s01[k]) + y.w1 * (x.w0 * s10[k] + x.w1 * s11[k]);
    }
  }
}

using GatherRowFn = void (*)(const Nhwc<const float>&, const Nhwc<float>&, const Tap&, const Tap*, bool,
                             std::int64_t, std::int64_t);

void gather_row_portable(const Nhwc<const float>& src, const Nhwc<float>& dst, const Tap& y, const Tap* tx,
                         bool bilinear, std::int64_t n, std::int64_t oy) {
  gather_row(src, dst, y, tx, bilinear, n, oy);
}

#ifdef UF_CPU_X86
__attribute__((target("avx2,fma"))) void gather_row_avx2(const Nhwc<const float>& src, const Nhwc<float>& dst,
                                                         const Tap& y, const Tap* tx, bool bilinear, std::int64_t n,
                                                         std::int64_t oy) {
  gather_row(src, dst, y, tx, bilinear, n, oy);
}
#endif

GatherRowFn pick_gather_row(int isa) {
  const bool avx2 = use_avx2(isa);  // checks isa too
#ifdef UF_CPU_X86
  if (avx2) return gather_row_avx2;
#endif
  (void)avx2;
  return gather_row_portable;
}

}  // namespace

void gather_view_f32(const DescArgs& src_desc, const DescArgs& dst_desc, int mode, std::int64_t resampled_h,
                     std::int64_t resampled_w, bool align_corners, std::int64_t off_y, std::int64_t off_x,
                     int num_threads, int isa) {
  const Nhwc<const float> src = make_nhwc<const float>(src_desc, "src");
  const Nhwc<float> dst = make_nhwc<float>(dst_desc, "dst", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(mode >= 0 && mode <= 2, "unknown resample mode " << mode);
  const GatherRowFn gather_row_fn = pick_gather_row(isa);
  UF_CHECK(dst.n == src.n && dst.c == src.c, "dst must have src's batch and channels");
  const auto m = static_cast<ResampleMode>(mode);
  if (m == ResampleMode::kNone) {
    UF_CHECK(resampled_h == src.h && resampled_w == src.w, "without a resample the size must be the source's");
  }
  UF_CHECK(resampled_h > 0 && resampled_w > 0, "resampled size must be positive");
  // The coordinate math is in int/float like PyTorch's: keep sizes where that is exact.
  UF_CHECK(resampled_h < (1 << 24) && resampled_w < (1 << 24), "resampled size too large");
  const std::vector<Tap> ty = make_taps(dst.h, off_y, src.h, resampled_h, m, align_corners);
  const std::vector<Tap> tx = make_taps(dst.w, off_x, src.w, resampled_w, m, align_corners);
  const std::int64_t rows = dst.n * dst.h;
  const bool bilinear = m == ResampleMode::kBilinear;
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r)
    gather_row_fn(src, dst, ty[static_cast<std::size_t>(r % dst.h)], tx.data(), bilinear, r / dst.h, r % dst.h);
}

void register_upsample_concat(py::module_& m) {
  m.def("gather_view_f32", &gather_view_f32, py::arg("src"), py::arg("dst"), py::arg("mode"),
        py::arg("resampled_h"), py::arg("resampled_w"), py::arg("align_corners"), py::arg("off_y"),
        py::arg("off_x"), py::arg("num_threads"), py::arg("isa"),
        "dst = window (off_y, off_x, dst size) of src resampled to (resampled_h, resampled_w); 0 outside. "
        "isa: 0 auto, 1 portable, 2 avx2.");
}

}  // namespace unet_fast
