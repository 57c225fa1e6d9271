// The CPU module's first op: an activation over a contiguous fp32 buffer. It exercises the build,
// OpenMP with the caller's thread count, and the shared per-element math end to end. The loop
// (cpu_kernel_body.h) is compiled once per CPU variant (cpu_isa.h); `isa` picks one.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_variant.h"

namespace py = pybind11;

namespace unet_fast {
void activation_f32(std::uintptr_t x_ptr, std::uintptr_t out_ptr, std::int64_t n, int act,
                    float negative_slope, int num_threads, int isa) {
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
  UF_CHECK_PTR(x_ptr);
  UF_CHECK_PTR(out_ptr);
  UF_CHECK_NONNEG(n);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK_POSITIVE(num_threads);
  const float* x = reinterpret_cast<const float*>(x_ptr);
  float* out = reinterpret_cast<float*>(out_ptr);
  py::gil_scoped_release release;
  ops.activation(x, out, n, static_cast<Act>(act), negative_slope, num_threads);
}

void register_activation(py::module_& m) {
  m.def("activation_f32", &activation_f32, py::arg("x_ptr"), py::arg("out_ptr"), py::arg("n"),
        py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"), py::arg("isa"),
        "out[i] = act(x[i]) over n contiguous float32 elements. isa: index into cpu_isa_table().");
}

}  // namespace unet_fast
