// The segmentation head in one pass: per pixel, K = num_classes dot products of the C input channels with
// the [K, C] weight, + bias, then softmax / sigmoid / argmax / nothing (pixel_ops.h), written to the output
// (NHWC [N, H, W, K] fp32, or an [N, H, W] class map of uint8 / int32 / int64 for argmax). K is small,
// so this is one read of the input and one small write: cheaper than a 1x1 conv + a separate softmax.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/pixel_ops.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// Index of the class map element type; matches the launcher's INDEX_KINDS.
enum class IndexKind : int { kUint8 = 0, kInt32 = 1, kInt64 = 2 };

struct HeadArgs {
  Nhwc<const float> x;
  const float* w;  // [K, C] row-major
  const float* bias;
  std::int64_t k;
};

// Scores of one row of pixels: s[x * K + j] = bias[j] + <x_pixel, w[j]>. The dot products are the
// head's whole cost (the input is read once): compiled for AVX2+FMA too, picked at load time (ifunc),
// because the wheel is built without -march=native.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("arch=haswell", "default")))
#endif
void row_scores(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s) {
  const std::int64_t c = h.x.c, k = h.k;
  for (std::int64_t x = 0; x < h.x.w; ++x) {
    const float* px = h.x.pixel(n, y, x);
    for (std::int64_t j = 0; j < k; ++j) {
      const float* w = h.w + j * c;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (std::int64_t i = 0; i < c; ++i) acc += px[i] * w[i];
      s[x * k + j] = acc + h.bias[j];
    }
  }
}

// fn(n, y, s) once per image row, with s = that row's [W, K] scores (per-thread scratch).
template <typename Fn>
void for_each_row(const HeadArgs& h, int num_threads, Fn fn) {
  const std::int64_t rows = h.x.n * h.x.h;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> s(static_cast<std::size_t>(h.x.w * h.k));
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t n = r / h.x.h, y = r % h.x.h;
      row_scores(h, n, y, s.data());
      fn(n, y, s.data());
    }
  }
}

template <typename Fn>
void for_each_pixel(const HeadArgs& h, int num_threads, Fn fn) {
  for_each_row(h, num_threads, [&](std::int64_t n, std::int64_t y, float* s) {
    for (std::int64_t x = 0; x < h.x.w; ++x) fn(n, y, x, s + x * h.k);
  });
}

template <typename I>
void argmax_into(const HeadArgs& h, const Nhwc<I>& out, int num_threads) {
  for_each_pixel(h, num_threads, [&](std::int64_t n, std::int64_t y, std::int64_t x, float* s) {
    *out.pixel(n, y, x) = static_cast<I>(argmax_first(s, static_cast<int>(h.k)));
  });
}

}  // namespace

void head_f32(const DescArgs& x_desc, std::uintptr_t w_ptr, std::uintptr_t bias_ptr, std::int64_t num_classes,
              int op, const DescArgs& out_desc, int index_kind, int num_threads) {
  const Nhwc<const float> x = make_nhwc<const float>(x_desc, "x");
  UF_CHECK_PTR(w_ptr);
  UF_CHECK_POSITIVE(num_classes);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(op >= 0 && op <= 3, "unknown head op index " << op);
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
      argmax_into(h, out, num_threads);
    } else if (kind == IndexKind::kInt32) {
      const auto out = make_nhwc<std::int32_t>(out_desc, "out", true);
      UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == 1, "out must be [N, H, W]");
      py::gil_scoped_release release;
      argmax_into(h, out, num_threads);
    } else {
      const auto out = make_nhwc<std::int64_t>(out_desc, "out", true);
      UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == 1, "out must be [N, H, W]");
      py::gil_scoped_release release;
      argmax_into(h, out, num_threads);
    }
    return;
  }
  const auto out = make_nhwc<float>(out_desc, "out", true);
  UF_CHECK(out.n == x.n && out.h == x.h && out.w == x.w && out.c == num_classes, "out must be [N, H, W, K]");
  const int k = static_cast<int>(num_classes);
  py::gil_scoped_release release;
  for_each_row(h, num_threads, [&](std::int64_t n, std::int64_t y, float* s) {
    if (head_op == HeadOp::kSoftmax) {
      softmax_rows(s, h.x.w, k);  // row-wise, so the exp pass vectorises
    } else if (head_op == HeadOp::kSigmoid) {
      for (std::int64_t i = 0; i < h.x.w * k; ++i) s[i] = sigmoidf(s[i]);
    }
    for (std::int64_t xx = 0; xx < h.x.w; ++xx) {
      float* o = out.pixel(n, y, xx);
      for (int j = 0; j < k; ++j) o[j] = s[xx * k + j];
    }
  });
}

void register_head(py::module_& m) {
  m.def("head_f32", &head_f32, py::arg("x"), py::arg("w_ptr"), py::arg("bias_ptr"), py::arg("num_classes"),
        py::arg("op"), py::arg("out"), py::arg("index_kind"), py::arg("num_threads"),
        "Per pixel: scores = W[K, C] x + bias, then the head op (spec.HEAD_OPS index) into out.");
}

}  // namespace unet_fast
