// The segmentation head in one pass: per pixel, K = num_classes dot products of the C input channels with
// the [K, C] weight, + bias, then softmax / sigmoid / argmax / nothing (pixel_ops.h), written to the output
// (NHWC [N, H, W, K] fp32, or an [N, H, W] class map of uint8 / int32 / int64 for argmax). K is small,
// so this is one read of the input and one small write: cheaper than a 1x1 conv + a separate softmax.
// The per-row body (scores, then the head op) is csrc/include/unet_fast/head_kernels.h, compiled once per
// CPU variant (cpu_isa.h); `isa` picks one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_head.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/cpu_variant.h"
#include "unet_fast/pixel_ops.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// Index of the class map element type; matches the launcher's INDEX_KINDS.
enum class IndexKind : int { kUint8 = 0, kInt32 = 1, kInt64 = 2 };

using HeadRowFn = void (*)(const HeadArgs&, std::int64_t, std::int64_t, float*, HeadOp);

// fn(n, y, scratch) once per image row, with a per-thread scratch row of [W, K] floats.
template <typename Fn>
void for_each_row(const HeadArgs& h, int num_threads, Fn fn) {
  const std::int64_t rows = h.x.n * h.x.h;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> s(static_cast<std::size_t>(h.x.w * h.k));
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) fn(r / h.x.h, r % h.x.h, s.data());
  }
}

template <typename I>
void argmax_into(const HeadArgs& h, HeadRowFn row, const Nhwc<I>& out, int num_threads) {
  for_each_row(h, num_threads, [&](std::int64_t n, std::int64_t y, float* s) {
    row(h, n, y, s, HeadOp::kArgmax);
    for (std::int64_t x = 0; x < h.x.w; ++x)
      *out.pixel(n, y, x) = static_cast<I>(argmax_first(s + x * h.k, static_cast<int>(h.k)));
  });
}

}  // namespace

void head_f32(const DescArgs& x_desc, std::uintptr_t w_ptr, std::uintptr_t bias_ptr, std::int64_t num_classes,
              int op, const DescArgs& out_desc, int index_kind, int num_threads, int isa) {
  const Nhwc<const float> x = make_nhwc<const float>(x_desc, "x");
  UF_CHECK_PTR(w_ptr);
  UF_CHECK_POSITIVE(num_classes);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(op >= 0 && op <= 3, "unknown head op index " << op);
  const HeadRowFn row = cpu_variant(isa).head_row;  // checks isa
  std::vector<float> zeros;
  const float* bias = reinterpret_cast<const float*>(bias_ptr);
  if (bias == nullptr) {
    zeros.assign(static_cast<std::size_t>(num_classes), 0.f);
    bias = zeros.data();
  }
  const HeadArgs h{x, reinterpret_cast<const float*>(w_ptr), bias, num_classes};
  const auto head_op = static_cast<HeadOp>(op);
  if (head_op == HeadOp::kArgmax) {
    UF_CHECK(index_kind >= 0 && index_kind <= 2, "unknown class map dtype index " << index_kind);
    const auto kind = static_cast<IndexKind>(index_kind);
    UF_CHECK(kind != IndexKind::kUint8 || num_classes <= 256, "a uint8 class map holds at most 256 classes");
    // The class map is [N, H, W]: described as NHWC with one channel.
    if (kind == IndexKind::kUint8) {
      const auto out = make_nhwc<std::uint8_t>(out_desc, "out", true);
      UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == 1, "out must be [N, H, W]");
      py::gil_scoped_release release;
      argmax_into(h, row, out, num_threads);
    } else if (kind == IndexKind::kInt32) {
      const auto out = make_nhwc<std::int32_t>(out_desc, "out", true);
      UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == 1, "out must be [N, H, W]");
      py::gil_scoped_release release;
      argmax_into(h, row, out, num_threads);
    } else {
      const auto out = make_nhwc<std::int64_t>(out_desc, "out", true);
      UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == 1, "out must be [N, H, W]");
      py::gil_scoped_release release;
      argmax_into(h, row, out, num_threads);
    }
    return;
  }
  const auto out = make_nhwc<float>(out_desc, "out", true);
  UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == num_classes, "out must be [N, H, W, K]");
  const int k = static_cast<int>(num_classes);
  py::gil_scoped_release release;
  for_each_row(h, num_threads, [&](std::int64_t n, std::int64_t y, float* scratch) {
    float* o = out.pixel(n, y, 0);
    float* s = out.sw == k ? o : scratch;  // a dense output row is its own scratch
    row(h, n, y, s, head_op);
    if (s != o)
      for (std::int64_t xx = 0; xx < h.x.w; ++xx)
        for (int j = 0; j < k; ++j) out.pixel(n, y, xx)[j] = s[xx * k + j];
  });
}

void register_head(py::module_& m) {
  m.def("head_f32", &head_f32, py::arg("x"), py::arg("w_ptr"), py::arg("bias_ptr"), py::arg("num_classes"),
        py::arg("op"), py::arg("out"), py::arg("index_kind"), py::arg("num_threads"), py::arg("isa"),
        "Per pixel: scores = W[K, C] x + bias, then the head op (spec.HEAD_OPS index) into out. "
        "isa: index into cpu_isa_table().");
}

}  // namespace unet_fast
