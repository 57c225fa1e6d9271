// The CPU module's first op: an activation over a contiguous fp32 buffer. It exercises the build,
// OpenMP with the caller's thread count, and the shared per-element math end to end.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/checks.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// The activation is a template parameter: a runtime switch inside the loop kept it scalar and branchy
// (about 20x slower than torch.relu on random data).
template <Act A>
void activation_loop(const float* x, float* out, std::int64_t n, float negative_slope, int num_threads) {
#pragma omp parallel for simd num_threads(num_threads) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = apply_act(x[i], A, negative_slope);
}

}  // namespace

void activation_f32(std::uintptr_t x_ptr, std::uintptr_t out_ptr, std::int64_t n, int act,
                    float negative_slope, int num_threads) {
  UF_CHECK_PTR(x_ptr);
  UF_CHECK_PTR(out_ptr);
  UF_CHECK_NONNEG(n);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK_POSITIVE(num_threads);
  const float* x = reinterpret_cast<const float*>(x_ptr);
  float* out = reinterpret_cast<float*>(out_ptr);
  py::gil_scoped_release release;
  switch (static_cast<Act>(act)) {
    case Act::kRelu:
      return activation_loop<Act::kRelu>(x, out, n, negative_slope, num_threads);
    case Act::kLeakyRelu:
      return activation_loop<Act::kLeakyRelu>(x, out, n, negative_slope, num_threads);
    case Act::kSilu:
      return activation_loop<Act::kSilu>(x, out, n, negative_slope, num_threads);
    default:
      return activation_loop<Act::kNone>(x, out, n, negative_slope, num_threads);
  }
}

void register_activation(py::module_& m) {
  m.def("activation_f32", &activation_f32, py::arg("x_ptr"), py::arg("out_ptr"), py::arg("n"),
        py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"),
        "out[i] = act(x[i]) over n contiguous float32 elements.");
}

}  // namespace unet_fast
