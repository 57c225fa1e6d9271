// Gather one bf16 input view into a bf16 channel slot: read `src` through an optional resample (nearest, or
// bilinear with either align_corners; the fp32 gather's PyTorch-exact taps, cpu_gather.h make_taps), then a
// window at (off_y, off_x) of the slot's size; pixels outside the resampled image read as zero (crop and
// F.pad). A plain read and nearest copy the bits; bilinear widens the four neighbours to fp32, blends them in
// the fp32 gather's operation order and rounds once to bf16. The Python launcher calls it once per view
// (upsample + concat into a slot, or a view gathered for the head).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/amx/bf16.h"
#include "unet_fast/bf16/ops.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_gather.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/resample.h"

namespace py = pybind11;

namespace unet_fast {
namespace bf16ops {
namespace {

struct Args {
  Nhwc<const std::uint16_t> src;
  Nhwc<std::uint16_t> dst;
  const Tap* ty;
  const Tap* tx;
  bool bilinear;
};

void gather_row(const Args& g, std::int64_t n, std::int64_t oy) {
  const Tap& y = g.ty[oy];
  const std::int64_t c = g.dst.c;
  const std::size_t bytes = static_cast<std::size_t>(c) * sizeof(std::uint16_t);
  for (std::int64_t ox = 0; ox < g.dst.w; ++ox) {
    const Tap& x = g.tx[ox];
    std::uint16_t* o = g.dst.pixel(n, oy, ox);
    if (!y.valid || !x.valid) {
      std::memset(o, 0, bytes);  // +0.0 in bf16
    } else if (!g.bilinear) {
      std::memcpy(o, g.src.pixel(n, y.i0, x.i0), bytes);
    } else {
      const std::uint16_t* s00 = g.src.pixel(n, y.i0, x.i0);
      const std::uint16_t* s01 = g.src.pixel(n, y.i0, x.i1);
      const std::uint16_t* s10 = g.src.pixel(n, y.i1, x.i0);
      const std::uint16_t* s11 = g.src.pixel(n, y.i1, x.i1);
      const float yw0 = y.w0, yw1 = y.w1, xw0 = x.w0, xw1 = x.w1;
#pragma omp simd
      for (std::int64_t k = 0; k < c; ++k)
        o[k] = f32_to_bf16(yw0 * (xw0 * bf16_to_f32(s00[k]) + xw1 * bf16_to_f32(s01[k])) +
                      yw1 * (xw0 * bf16_to_f32(s10[k]) + xw1 * bf16_to_f32(s11[k])));
    }
  }
}

}  // namespace

void gather_view_bf16(const DescArgs& src_desc, const DescArgs& dst_desc, int mode, std::int64_t resampled_h,
                      std::int64_t resampled_w, bool align_corners, std::int64_t off_y, std::int64_t off_x,
                      int num_threads) {
  const auto src = make_nhwc<const std::uint16_t>(src_desc, "src");
  const auto dst = make_nhwc<std::uint16_t>(dst_desc, "dst", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  const GatherTaps t = gather_taps(src, dst, mode, resampled_h, resampled_w, align_corners, off_y, off_x);
  const Args g{src, dst, t.ty.data(), t.tx.data(), t.mode == ResampleMode::kBilinear};
  const std::int64_t rows = dst.n * dst.h;
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) gather_row(g, r / dst.h, r % dst.h);
}

void register_gather_view_bf16(py::module_& m) {
  m.def("gather_view_bf16", &gather_view_bf16, py::arg("src"), py::arg("dst"), py::arg("mode"),
        py::arg("resampled_h"), py::arg("resampled_w"), py::arg("align_corners"), py::arg("off_y"),
        py::arg("off_x"), py::arg("num_threads"),
        "dst = window (off_y, off_x, dst size) of src resampled to (resampled_h, resampled_w); 0 outside "
        "(NHWC bf16 descriptors, uint16 storage). Use unet_fast.kernels.cpu_bf16_ops.upsample_concat.");
}

}  // namespace bf16ops
}  // namespace unet_fast
