// unet_fast._cuda: the CUDA ops. Kernels live in csrc/cuda/*.cu (compiled by nvcc); this file only binds
// their host launchers. It is compiled by the host compiler and links cudart statically (no libtorch).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_conv_params.h"
#include "unet_fast/cuda_view.h"

namespace py = pybind11;

namespace unet_fast {
void launch_activation_f32(std::uintptr_t x, std::uintptr_t out, std::int64_t n, int act, float negative_slope,
                           std::uintptr_t stream);
void launch_maxpool2x2(int dtype, std::uintptr_t x, long long xsn, long long xsh, long long xsw, std::uintptr_t out,
                       long long osn, long long osh, long long osw, int n, int ho, int wo, int c,
                       std::uintptr_t stream);
void launch_view_copy(int dtype, const ViewDesc& v, std::uintptr_t out, long long osn, long long osh, long long osw,
                      int n, int h, int w, std::uintptr_t stream);
void launch_head(int in_dtype, int out_dtype, const ViewDesc& v, std::uintptr_t weight, std::uintptr_t bias, int k,
                 int op, std::uintptr_t out, long long osn, long long osh, long long osw, int n, int h, int w,
                 std::uintptr_t stream);
const char* launch_conv2d(int dtype, const ConvParams& p, std::uintptr_t stream);
const char* launch_conv_transpose2x2(int dtype, const ConvParams& p, std::uintptr_t stream);
}  // namespace unet_fast

using unet_fast::ConvParams;
using unet_fast::ViewDesc;

using unet_fast::PtrStrides;
using ViewTuple = unet_fast::ViewInts;

static ViewDesc to_view(const ViewTuple& t) { return unet_fast::view_from_ints(t); }
static void check_dtype(int dtype) { unet_fast::check_float_dtype(dtype); }

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
  m.def(
      "maxpool2x2",
      [](int dtype, std::uintptr_t x, long long xsn, long long xsh, long long xsw, int h, int w,
         std::uintptr_t out, long long osn, long long osh, long long osw, int n, int c, std::uintptr_t stream) {
        check_dtype(dtype);
        UF_CHECK_PTR(x);
        UF_CHECK_PTR(out);
        UF_CHECK(n > 0 && c > 0 && h >= 2 && w >= 2, "pool input " << n << "x" << h << "x" << w << "x" << c);
        UF_CHECK(xsn >= 0 && xsh >= 0 && xsw >= 0 && osn >= 0 && osh >= 0 && osw >= 0, "negative stride");
        unet_fast::launch_maxpool2x2(dtype, x, xsn, xsh, xsw, out, osn, osh, osw, n, h / 2, w / 2, c, stream);
      },
      "2x2 max-pool of x [n, h, w, c] into out [n, h/2, w/2, c] (strides in elements, channel stride 1).");
  m.def(
      "view_copy",
      [](int dtype, const ViewTuple& view, std::uintptr_t out, long long osn, long long osh, long long osw, int n,
         int h, int w, std::uintptr_t stream) {
        check_dtype(dtype);
        const ViewDesc v = to_view(view);
        UF_CHECK_PTR(out);
        UF_CHECK(n > 0 && h > 0 && w > 0, "output " << n << "x" << h << "x" << w << " is empty");
        UF_CHECK(osn >= 0 && osh >= 0 && osw >= 0, "negative output stride");
        unet_fast::launch_view_copy(dtype, v, out, osn, osh, osw, n, h, w, stream);
      },
      "Materialise one view into out [n, h, w, view channels] (a channel slot of the concat buffer).");
  m.def(
      "head",
      [](int in_dtype, int out_dtype, const ViewTuple& view, std::uintptr_t weight, std::uintptr_t bias, int k,
         int op, std::uintptr_t out, long long osn, long long osh, long long osw, int n, int h, int w,
         std::uintptr_t stream) {
        check_dtype(in_dtype);
        const ViewDesc v = to_view(view);
        UF_CHECK_PTR(weight);
        UF_CHECK_PTR(out);
        UF_CHECK(k > 0 && k <= 256, "head classes must be in [1, 256], got " << k);
        UF_CHECK(op >= 0 && op <= 3, "unknown head op " << op);
        UF_CHECK(op == 3 ? (out_dtype >= 3 && out_dtype <= 5) : out_dtype == in_dtype,
                 "out dtype code " << out_dtype << " does not fit op " << op);
        UF_CHECK(n > 0 && h > 0 && w > 0, "output " << n << "x" << h << "x" << w << " is empty");
        UF_CHECK(osn >= 0 && osh >= 0 && osw >= 0, "negative output stride");
        unet_fast::launch_head(in_dtype, out_dtype, v, weight, bias, k, op, out, osn, osh, osw, n, h, w, stream);
      },
      "1x1 conv (fp32 weight [k, C]) + per-pixel op over one view; bias may be 0 (none).");
  m.def(
      "conv2d",
      [](int dtype, const std::vector<ViewTuple>& views, std::uintptr_t weight, std::uintptr_t bias,
         const PtrStrides& residual, const PtrStrides& out, const PtrStrides& pool, const std::vector<int>& geom,
         int act, float slope, std::uintptr_t stream) {
        const ConvParams p =
            unet_fast::make_conv_params(dtype, views, weight, bias, residual, out, pool, geom, act, slope);
        return std::string(unet_fast::launch_conv2d(dtype, p, stream));
      },
      "Fused conv over 1-4 views; geometry = (n, hi, wi, cin, cin_pad, cout, kh, kw, sy, sx, py, px, dy, dx, "
      "ho, wo, taps_packed). Returns the kernel variant that ran.");
  m.def(
      "conv_transpose2x2",
      [](int dtype, const ViewTuple& x, std::uintptr_t weight, std::uintptr_t bias, const PtrStrides& out,
         const std::vector<int>& geom, int act, float slope, std::uintptr_t stream) {
        const ConvParams p = unet_fast::make_conv_transpose_params(dtype, x, weight, bias, out, geom, act, slope);
        return std::string(unet_fast::launch_conv_transpose2x2(dtype, p, stream));
      },
      "ConvTranspose2d(2, stride 2) of x [n, h, w, cin] into out [n, 2h, 2w, cout]; returns the kernel variant.");
}
