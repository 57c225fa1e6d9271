// Standalone 2x2, stride-2 max-pool over NHWC fp32 (floored like F.max_pool2d: an odd trailing row or
// column is dropped). Input and output may be channel slices of bigger buffers. The row (cpu_pool.h) is
// compiled once per CPU variant (cpu_isa.h); `isa` picks one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/cpu_variant.h"

namespace py = pybind11;

namespace unet_fast {

void maxpool2x2_f32(const DescArgs& x_desc, const DescArgs& out_desc, int num_threads, int isa) {
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
  const Nhwc<const float> x = make_nhwc<const float>(x_desc, "x");
  const Nhwc<float> out = make_nhwc<float>(out_desc, "out", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(out.n == x.n && out.h == x.h / 2 && out.w == x.w / 2 && out.c == x.c,
           "out must be [" << x.n << ", " << x.h / 2 << ", " << x.w / 2 << ", " << x.c << "]");
  const std::int64_t rows = out.n * out.h;
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) ops.maxpool_row(x, out, r / out.h, r % out.h);
}

void register_maxpool2x2(py::module_& m) {
  m.def("maxpool2x2_f32", &maxpool2x2_f32, py::arg("x"), py::arg("out"), py::arg("num_threads"), py::arg("isa"),
        "out = 2x2 stride-2 max-pool of x (NHWC fp32 descriptors). isa: index into cpu_isa_table().");
}

}  // namespace unet_fast
