// ConvTranspose2d(kernel 2, stride 2) + bias + activation, NHWC fp32, written straight into the output
// (a concat slot is fine): a register-blocked GEMM whose tiles store their epilogue at the output pixels
// (body: csrc/include/unet_fast/conv_transpose_kernels.h, compiled once per CPU variant, cpu_isa.h; `isa` is
// the variant the weight was packed for). Launcher, argument checks and packing: unet_fast/kernels/cpu.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/conv_transpose2x2.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/cpu_variant.h"
#include "unet_fast/epilogue.h"

namespace py = pybind11;

namespace unet_fast {

void conv_transpose2x2_f32(const DescArgs& x_desc, std::uintptr_t panels_ptr, std::int64_t panels_numel,
                           std::int64_t cout, std::uintptr_t bias_ptr, const DescArgs& out_desc, int act,
                           float negative_slope, int num_threads, int isa) {
  const Nhwc<const float> x = make_nhwc<const float>(x_desc, "x");
  const Nhwc<float> out = make_nhwc<float>(out_desc, "out", /*output=*/true);
  UF_CHECK_PTR(panels_ptr);
  UF_CHECK_POSITIVE(cout);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK(out.n == x.n && out.h == 2 * x.h && out.w == 2 * x.w && out.c == cout,
           "out must be [N, 2H, 2W, Cout] for x [N, H, W, Cin]");
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
  const int nr = ops.conv_transpose.nr;
  const std::int64_t ncb = (cout + nr - 1) / nr;
  UF_CHECK(panels_numel == 4 * ncb * x.c * nr, "packed weight holds " << panels_numel << " floats, expected "
                                                                      << 4 * ncb * x.c * nr);
  UF_CHECK(x.n <= INT32_MAX && x.h <= INT32_MAX && x.w <= INT32_MAX && x.c <= INT32_MAX && cout <= INT32_MAX,
           "sizes must fit in int32");
  CtConv cv{x.p, x.sn, x.sh, x.sw,
            static_cast<int>(x.n), static_cast<int>(x.h), static_cast<int>(x.w), static_cast<int>(x.c),
            static_cast<int>(cout), nr, static_cast<int>(ncb), reinterpret_cast<const float*>(panels_ptr),
            reinterpret_cast<const float*>(bias_ptr), out.p, out.sn, out.sh, out.sw,
            Epilogue{static_cast<Act>(act), negative_slope}, num_threads};
  py::gil_scoped_release release;
  ops.conv_transpose2x2(cv);
}

void register_conv_transpose2x2(py::module_& m) {
  m.def("conv_transpose2x2_f32", &conv_transpose2x2_f32, py::arg("x"), py::arg("panels_ptr"),
        py::arg("panels_numel"), py::arg("cout"), py::arg("bias_ptr"), py::arg("out"), py::arg("act"),
        py::arg("negative_slope"), py::arg("num_threads"), py::arg("isa"),
        "out[n, 2i+a, 2j+b, :] = act(x[n, i, j, :] W[:, :, a, b] + bias) (fp32 NHWC descriptors; weight packed "
        "by unet_fast.kernels.cpu.pack_conv_transpose_weight for variant `isa`, an index into cpu_isa_table()).");
}

}  // namespace unet_fast
