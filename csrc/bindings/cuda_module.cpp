// unet_fast._cuda: the CUDA ops. Kernels live in csrc/cuda/*.cu (compiled by nvcc); this file only binds
// their host launchers. It is compiled by the host compiler and links cudart statically (no libtorch).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "unet_fast/checks.h"
#include "unet_fast/cuda_check.h"

namespace py = pybind11;

namespace unet_fast {
void launch_activation_f32(std::uintptr_t x, std::uintptr_t out, std::int64_t n, int act, float negative_slope,
                           std::uintptr_t stream);
}  // namespace unet_fast

#ifndef UNET_FAST_GIT_COMMIT
#define UNET_FAST_GIT_COMMIT "unknown"
#endif
#ifndef UNET_FAST_CUDA_ARCHS
#define UNET_FAST_CUDA_ARCHS "unknown"
#endif
#ifndef UNET_FAST_NVCC_VERSION
#define UNET_FAST_NVCC_VERSION "unknown"
#endif

static py::dict build_info() {
  py::dict info;
  info["git_commit"] = UNET_FAST_GIT_COMMIT;
  info["archs"] = UNET_FAST_CUDA_ARCHS;
  info["nvcc"] = UNET_FAST_NVCC_VERSION;
  info["host_compiler"] = __VERSION__;
  info["cudart_version"] = CUDART_VERSION;
  return info;
}

// Number of usable CUDA devices, or a RuntimeError that says why there are none (no driver, ...).
static int device_count() {
  int n = 0;
  UF_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "unet_fast CUDA ops (raw pointers + stream; the launchers in unet_fast.kernels.cuda check arguments)";
  m.def("build_info", &build_info, "Compile-time metadata: archs, nvcc and host compiler, git commit.");
  m.def("device_count", &device_count);
  m.def(
      "activation_f32",
      [](std::uintptr_t x, std::uintptr_t out, std::int64_t n, int act, float slope, std::uintptr_t stream) {
        UF_CHECK_PTR(x);
        UF_CHECK_PTR(out);
        UF_CHECK_NONNEG(n);
        UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
        unet_fast::launch_activation_f32(x, out, n, act, slope, stream);
      },
      py::arg("x_ptr"), py::arg("out_ptr"), py::arg("n"), py::arg("act"), py::arg("negative_slope"),
      py::arg("stream"));
}
