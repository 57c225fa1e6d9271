// Gather one input view into a channel slot: read `src` through an optional resample (nearest, or
// bilinear with either align_corners, PyTorch-exact coordinates from resample.h), then a window at
// (off_y, off_x) of the slot's size; pixels outside the resampled image read as zero (crop and F.pad).
// The Python launcher calls it once per view: upsample + concat into a slot, and the conv's gather of a
// virtual concat into the contiguous NHWC scratch the convolution reads. The row body is in
// csrc/include/unet_fast/cpu_kernel_body.h, compiled once per CPU variant (cpu_isa.h); `isa` picks one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_gather.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/cpu_variant.h"
#include "unet_fast/resample.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

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

}  // namespace

void gather_view_f32(const DescArgs& src_desc, const DescArgs& dst_desc, int mode, std::int64_t resampled_h,
                     std::int64_t resampled_w, bool align_corners, std::int64_t off_y, std::int64_t off_x,
                     int num_threads, int isa) {
  const Nhwc<const float> src = make_nhwc<const float>(src_desc, "src");
  const Nhwc<float> dst = make_nhwc<float>(dst_desc, "dst", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(mode >= 0 && mode <= 2, "unknown resample mode " << mode);
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
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
  const GatherArgs g{src, dst, ty.data(), tx.data(), m == ResampleMode::kBilinear};
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) ops.gather_row(g, r / dst.h, r % dst.h);
}

void register_upsample_concat(py::module_& m) {
  m.def("gather_view_f32", &gather_view_f32, py::arg("src"), py::arg("dst"), py::arg("mode"),
        py::arg("resampled_h"), py::arg("resampled_w"), py::arg("align_corners"), py::arg("off_y"),
        py::arg("off_x"), py::arg("num_threads"), py::arg("isa"),
        "dst = window (off_y, off_x, dst size) of src resampled to (resampled_h, resampled_w); 0 outside. "
        "isa: index into cpu_isa_table().");
}

}  // namespace unet_fast
