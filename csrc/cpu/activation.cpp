// The CPU module's first op: an activation over a contiguous fp32 buffer. It exercises the build,
// OpenMP with the caller's thread count, and the shared per-element math end to end.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/checks.h"

namespace py = pybind11;

namespace unet_fast {

void activation_f32(std::uintptr_t x_ptr, std::uintptr_t out_ptr, std::int64_t n, int act,
                    float negative_slope, int num_threads) {
  UF_CHECK_PTR(x_ptr);
  UF_CHECK_PTR(out_ptr);
  UF_CHECK_NONNEG(n);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK_POSITIVE(num_threads);
  const float* x = reinterpret_cast<const float*>(x_ptr);
  float* out = reinterpret_cast<float*>(out_ptr);
  const Act a = static_cast<Act>(act);
  py::gil_scoped_release release;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = apply_act(x[i], a, negative_slope);
}

void register_activation(py::module_& m) {
  m.def("activation_f32", &activation_f32, py::arg("x_ptr"), py::arg("out_ptr"), py::arg("n"),
        py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"),
        "out[i] = act(x[i]) over n contiguous float32 elements.");
}

}  // namespace unet_fast
