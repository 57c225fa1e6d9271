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
void gather_view_f32(const DescArgs& src_desc, const DescArgs& dst_desc, int mode, std::int64_t resampled_h,
                     std::int64_t resampled_w, bool align_corners, std::int64_t off_y, std::int64_t off_x,
                     int num_threads, int isa) {
  const Nhwc<const float> src = make_nhwc<const float>(src_desc, "src");
  const Nhwc<float> dst = make_nhwc<float>(dst_desc, "dst", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
  const GatherTaps t = gather_taps(src, dst, mode, resampled_h, resampled_w, align_corners, off_y, off_x);
  const std::int64_t rows = dst.n * dst.h;
  const GatherArgs g{src, dst, t.ty.data(), t.tx.data(), t.mode == ResampleMode::kBilinear};
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
