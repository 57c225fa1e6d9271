// Standalone 2x2, stride-2 max-pool over NHWC fp32 (floored like F.max_pool2d: an odd trailing row or
// column is dropped). Input and output may be channel slices of bigger buffers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_pool.h"
#include "unet_fast/cpu_tensor.h"

namespace py = pybind11;

namespace unet_fast {

void maxpool2x2_f32(const DescArgs& x_desc, const DescArgs& out_desc, int num_threads) {
  const Nhwc<const float> x = make_nhwc<const float>(x_desc, "x");
  const Nhwc<float> out = make_nhwc<float>(out_desc, "out", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(out.n == x.n && out.h == x.h / 2 && out.w == x.w / 2 && out.c == x.c,
           "out must be [" << x.n << ", " << x.h / 2 << ", " << x.w / 2 << ", " << x.c << "]");
  const std::int64_t rows = out.n * out.h;
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) maxpool2x2_row(x, out, r / out.h, r % out.h);
}

void register_maxpool2x2(py::module_& m) {
  m.def("maxpool2x2_f32", &maxpool2x2_f32, py::arg("x"), py::arg("out"), py::arg("num_threads"),
        "out = 2x2 stride-2 max-pool of x (NHWC fp32 descriptors).");
}

}  // namespace unet_fast
