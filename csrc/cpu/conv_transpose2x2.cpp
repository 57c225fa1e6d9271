// ConvTranspose2d(kernel 2, stride 2)'s scatter epilogue. The launcher runs the GEMM in PyTorch:
// g[n, i, j, (2a + b) * Cout + co] = sum_ci x[n, i, j, ci] * w[ci, co, a, b]; this pass writes
// out[n, 2i + a, 2j + b, co] = act(g + bias[co]) straight into the output (a concat slot is fine).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/epilogue.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// Output row oy = 2i + a: it reads row i of g; pixel 2j + b takes the b-th Cout run of g's pixel j.
template <Act A>
void scatter_row(const Nhwc<const float>& g, const float* bias, const Nhwc<float>& out, float negative_slope,
                 std::int64_t n, std::int64_t oy) {
  const Epilogue ep{A, negative_slope};  // A is a constant here: the activation's switch folds away
  const std::int64_t c = out.c, a = oy % 2;
  for (std::int64_t ox = 0; ox < out.w; ++ox) {
    const float* s = g.pixel(n, oy / 2, ox / 2) + (2 * a + ox % 2) * c;
    float* o = out.pixel(n, oy, ox);
#pragma omp simd
    for (std::int64_t k = 0; k < c; ++k) o[k] = epilogue(s[k], bias[k], 0.f, ep);
  }
}

template <Act A>
void scatter(const Nhwc<const float>& g, const float* bias, const Nhwc<float>& out, float negative_slope,
             int num_threads) {
  const std::int64_t rows = out.n * out.h;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r) scatter_row<A>(g, bias, out, negative_slope, r / out.h, r % out.h);
}

}  // namespace

void conv_transpose2x2_epilogue_f32(const DescArgs& g_desc, std::uintptr_t bias_ptr, const DescArgs& out_desc,
                                    int act, float negative_slope, int num_threads) {
  const Nhwc<const float> g = make_nhwc<const float>(g_desc, "g");
  const Nhwc<float> out = make_nhwc<float>(out_desc, "out", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK(out.n == g.n && out.h == 2 * g.h && out.w == 2 * g.w && g.c == 4 * out.c,
           "g must be [N, H, W, 4 * Cout] for out [N, 2H, 2W, Cout]");
  std::vector<float> zeros;
  const float* bias = reinterpret_cast<const float*>(bias_ptr);
  if (bias == nullptr) {
    zeros.assign(static_cast<std::size_t>(out.c), 0.f);
    bias = zeros.data();
  }
  py::gil_scoped_release release;
  switch (static_cast<Act>(act)) {
    case Act::kRelu:
      scatter<Act::kRelu>(g, bias, out, negative_slope, num_threads);
      break;
    case Act::kLeakyRelu:
      scatter<Act::kLeakyRelu>(g, bias, out, negative_slope, num_threads);
      break;
    case Act::kSilu:
      scatter<Act::kSilu>(g, bias, out, negative_slope, num_threads);
      break;
    default:
      scatter<Act::kNone>(g, bias, out, negative_slope, num_threads);
  }
}

void register_conv_transpose2x2(py::module_& m) {
  m.def("conv_transpose2x2_epilogue_f32", &conv_transpose2x2_epilogue_f32, py::arg("g"), py::arg("bias_ptr"),
        py::arg("out"), py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"),
        "out[n, 2i+a, 2j+b, co] = act(g[n, i, j, (2a+b)*Cout + co] + bias[co]) (fp32 NHWC descriptors).");
}

}  // namespace unet_fast
