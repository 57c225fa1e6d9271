// Standalone 2x2, stride-2 max-pool over NHWC bf16 (floored like F.max_pool2d: an odd trailing row or column
// is dropped). Input and output may be channel slices of bigger buffers. Exact: the max of four bf16 values
// widened to fp32 is one of them, and its upper 16 bits are that bf16 (a NaN keeps its bits), so nothing is
// rounded. NaN propagates like the fp32 op (epilogue.h max_nan).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>

#include "unet_fast/amx/bf16.h"
#include "unet_fast/bf16/ops.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/epilogue.h"

namespace py = pybind11;

namespace unet_fast {
namespace bf16ops {
namespace {

inline std::uint16_t upper_half(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<std::uint16_t>(u >> 16);
}

// out[n, oy, :, :] = max over x[n, 2oy..2oy+1, 2ox..2ox+1, :]; descriptors by value (no aliasing seen).
void pool_row(const Nhwc<const std::uint16_t> x, const Nhwc<std::uint16_t> out, std::int64_t n, std::int64_t oy) {
  const std::int64_t c = out.c;
  for (std::int64_t ox = 0; ox < out.w; ++ox) {
    const std::uint16_t* a = x.pixel(n, 2 * oy, 2 * ox);
    const std::uint16_t* b = a + x.sw;
    const std::uint16_t* d = a + x.sh;
    const std::uint16_t* e = d + x.sw;
    std::uint16_t* o = out.pixel(n, oy, ox);
#pragma omp simd
    for (std::int64_t k = 0; k < c; ++k) {
      const float va = bf16_to_f32(a[k]), vb = bf16_to_f32(b[k]), vd = bf16_to_f32(d[k]), ve = bf16_to_f32(e[k]);
      o[k] = upper_half(max_nan(max_nan(va, vb), max_nan(vd, ve)));
    }
  }
}

}  // namespace

void maxpool2x2_bf16(const DescArgs& x_desc, const DescArgs& out_desc, int num_threads) {
  const auto x = make_nhwc<const std::uint16_t>(x_desc, "x");
  const auto out = make_nhwc<std::uint16_t>(out_desc, "out", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(out.n == x.n && out.h == x.h / 2 && out.w == x.w / 2 && out.c == x.c,
           "out must be [" << x.n << ", " << x.h / 2 << ", " << x.w / 2 << ", " << x.c << "]");
  const std::int64_t rows = out.n * out.h;
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) pool_row(x, out, r / out.h, r % out.h);
}

void register_maxpool2x2_bf16(py::module_& m) {
  m.def("maxpool2x2_bf16", &maxpool2x2_bf16, py::arg("x"), py::arg("out"), py::arg("num_threads"),
        "out = 2x2 stride-2 max-pool of x (NHWC bf16 descriptors, uint16 storage; exact). Use "
        "unet_fast.kernels.cpu_bf16_ops.maxpool2x2.");
}

}  // namespace bf16ops
}  // namespace unet_fast
