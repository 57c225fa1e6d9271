// The CPU conv's fused epilogue. The convolution itself runs in PyTorch (oneDNN, channels_last) into a
// contiguous NHWC scratch `acc`; this pass reads it once and writes y = act(acc + bias + residual) into
// the output (a channel slot of a bigger buffer is fine) and, in the same pass over a pair of rows, the
// 2x2 max-pool of y into `pool_out`: bias, activation, residual, slot write and pool cost one read of acc.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_pool.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/epilogue.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

struct EpilogueArgs {
  Nhwc<const float> acc;
  const float* bias;  // never null: zeros when the conv has no bias
  const Nhwc<const float>* residual;
  Nhwc<float> out;
  const Nhwc<float>* pool;
  float negative_slope;
};

// One pair of output rows (2p, 2p+1) and, if pooling, their pool row p. The activation is a template
// parameter so the per-channel loop has no branch on it.
template <Act A, bool kResidual>
void epilogue_row_pair(const EpilogueArgs& e, std::int64_t n, std::int64_t p) {
  const std::int64_t c = e.out.c;
  const Epilogue ep{A, e.negative_slope};
  for (std::int64_t y = 2 * p; y < 2 * p + 2 && y < e.out.h; ++y) {
    for (std::int64_t x = 0; x < e.out.w; ++x) {
      const float* a = e.acc.pixel(n, y, x);
      float* o = e.out.pixel(n, y, x);
      if (kResidual) {
        const float* r = e.residual->pixel(n, y, x);
#pragma omp simd
        for (std::int64_t k = 0; k < c; ++k) o[k] = epilogue(a[k], e.bias[k], r[k], ep);
      } else {
#pragma omp simd
        for (std::int64_t k = 0; k < c; ++k) o[k] = epilogue(a[k], e.bias[k], 0.f, ep);
      }
    }
  }
  if (e.pool == nullptr || p >= e.pool->h) return;
  // The rows just written are in cache; fp32 out holds y exactly, so pooling them is pooling y.
  const Nhwc<const float> y{e.out.p, e.out.n, e.out.h, e.out.w, e.out.c, e.out.sn, e.out.sh, e.out.sw};
  maxpool2x2_row(y, *e.pool, n, p);
}

template <Act A, bool kResidual>
void run_epilogue(const EpilogueArgs& e, int num_threads) {
  const std::int64_t pairs = (e.out.h + 1) / 2, tasks = e.out.n * pairs;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (std::int64_t t = 0; t < tasks; ++t) epilogue_row_pair<A, kResidual>(e, t / pairs, t % pairs);
}

template <Act A>
void run_epilogue(const EpilogueArgs& e, int num_threads) {
  if (e.residual != nullptr)
    run_epilogue<A, true>(e, num_threads);
  else
    run_epilogue<A, false>(e, num_threads);
}

}  // namespace

void conv_epilogue_f32(const DescArgs& acc_desc, std::uintptr_t bias_ptr, const std::optional<DescArgs>& residual_desc,
                       const DescArgs& out_desc, const std::optional<DescArgs>& pool_desc, int act,
                       float negative_slope, int num_threads) {
  const Nhwc<const float> acc = make_nhwc<const float>(acc_desc, "acc");
  const Nhwc<float> out = make_nhwc<float>(out_desc, "out", /*output=*/true);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK(acc.n == out.n && acc.h == out.h && acc.w == out.w && acc.c == out.c, "acc and out shapes differ");
  std::optional<Nhwc<const float>> residual;
  if (residual_desc) {
    residual = make_nhwc<const float>(*residual_desc, "residual");
    UF_CHECK(residual->n == out.n && residual->h == out.h && residual->w == out.w && residual->c == out.c,
             "residual and out shapes differ");
  }
  std::optional<Nhwc<float>> pool;
  if (pool_desc) {
    pool = make_nhwc<float>(*pool_desc, "pool_out", /*output=*/true);
    UF_CHECK(pool->n == out.n && pool->h == out.h / 2 && pool->w == out.w / 2 && pool->c == out.c,
             "pool_out must be [" << out.n << ", " << out.h / 2 << ", " << out.w / 2 << ", " << out.c << "]");
  }
  std::vector<float> zeros;
  const float* bias = reinterpret_cast<const float*>(bias_ptr);
  if (bias == nullptr) {
    zeros.assign(static_cast<std::size_t>(out.c), 0.f);
    bias = zeros.data();
  }
  const EpilogueArgs e{acc, bias, residual ? &*residual : nullptr, out, pool ? &*pool : nullptr, negative_slope};
  py::gil_scoped_release release;
  switch (static_cast<Act>(act)) {
    case Act::kRelu:
      run_epilogue<Act::kRelu>(e, num_threads);
      break;
    case Act::kLeakyRelu:
      run_epilogue<Act::kLeakyRelu>(e, num_threads);
      break;
    case Act::kSilu:
      run_epilogue<Act::kSilu>(e, num_threads);
      break;
    default:
      run_epilogue<Act::kNone>(e, num_threads);
  }
}

void register_conv_epilogue(py::module_& m) {
  m.def("conv_epilogue_f32", &conv_epilogue_f32, py::arg("acc"), py::arg("bias_ptr"), py::arg("residual"),
        py::arg("out"), py::arg("pool_out"), py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"),
        "out = act(acc + bias + residual); pool_out = 2x2 max-pool of out (fp32 NHWC descriptors; "
        "bias_ptr 0 = no bias; residual / pool_out None = absent).");
}

}  // namespace unet_fast
