// The segmentation head in one pass: per pixel, K = num_classes dot products of the C input channels with
// the [K, C] weight, + bias, then softmax / sigmoid / argmax / nothing (pixel_ops.h), written to the output
// (NHWC [N, H, W, K] fp32, or an [N, H, W] class map of uint8 / int32 / int64 for argmax). K is small,
// so this is one read of the input and one small write: cheaper than a 1x1 conv + a separate softmax.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
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

// The per-row work (scores, then the head op) is written once as always-inline functions and compiled into
// two row functions, baseline and AVX2+FMA (head_row_portable / head_row_avx2, at the end), picked per call
// like the GEMM kernels (cpu_isa.h; `isa` forces one, so tests run both). Everything on the way is
// UF_NO_TRAP: GCC inlines only between functions with the same optimize options, and the exp needs it.
#define UF_ROW_INLINE __attribute__((always_inline)) UF_NO_TRAP inline

// Eight floats as a GCC/Clang vector: AVX2 in the AVX2 row function, SSE pairs in the baseline one. Only
// ever passed by reference (by value it would change the ABI between the two).
typedef float F8 __attribute__((vector_size(32)));

// The eight lane sums of eight vectors, r[q] = sum(a[q]), as a transpose-and-add tree: 7 vector adds
// instead of eight scalar reductions (which also stall on store forwarding of the spilled vectors).
UF_ROW_INLINE void sum8(const F8* a, float* r) {
  typedef int I8 __attribute__((vector_size(32)));
  constexpr I8 even{0, 8, 2, 10, 4, 12, 6, 14}, odd{1, 9, 3, 11, 5, 13, 7, 15};
  constexpr I8 lo2{0, 1, 8, 9, 4, 5, 12, 13}, hi2{2, 3, 10, 11, 6, 7, 14, 15};
  constexpr I8 lo4{0, 1, 2, 3, 8, 9, 10, 11}, hi4{4, 5, 6, 7, 12, 13, 14, 15};
  F8 x[4], y[2];
  for (int q = 0; q < 4; ++q)
    x[q] = __builtin_shuffle(a[2 * q], a[2 * q + 1], even) + __builtin_shuffle(a[2 * q], a[2 * q + 1], odd);
  for (int q = 0; q < 2; ++q)
    y[q] = __builtin_shuffle(x[2 * q], x[2 * q + 1], lo2) + __builtin_shuffle(x[2 * q], x[2 * q + 1], hi2);
  const F8 z = __builtin_shuffle(y[0], y[1], lo4) + __builtin_shuffle(y[0], y[1], hi4);
  std::memcpy(r, &z, sizeof(F8));
}

// s[p * K + j] = bias[j] + <px[p], w[j]> for P pixels and KB classes, P * KB = 8 independent
// accumulators, so the FMAs pipeline instead of waiting on one reduction chain and each weight vector
// is loaded once per P pixels. Always inlined, so it is compiled for the calling row function's ISA.
template <int P, int KB>
UF_ROW_INLINE void dot_block(const float* const* px, const float* w, std::int64_t c, const float* bias,
                             float* s, std::int64_t k) {
  static_assert(P * KB == 8, "one accumulator per lane of the reduction tree");
  F8 acc[8];
  for (int q = 0; q < 8; ++q) acc[q] = F8{};
  std::int64_t i = 0;
  for (; i + 8 <= c; i += 8) {
    F8 wv[KB];
    for (int j = 0; j < KB; ++j) std::memcpy(&wv[j], w + j * c + i, sizeof(F8));
    for (int p = 0; p < P; ++p) {
      F8 xv;
      std::memcpy(&xv, px[p] + i, sizeof(F8));
      for (int j = 0; j < KB; ++j) acc[p * KB + j] += xv * wv[j];
    }
  }
  float r[8];
  sum8(acc, r);
  for (int p = 0; p < P; ++p) {
    for (int j = 0; j < KB; ++j) {
      float t = r[p * KB + j];
      for (std::int64_t ii = i; ii < c; ++ii) t += px[p][ii] * w[j * c + ii];  // the C % 8 tail
      s[p * k + j] = t + bias[j];
    }
  }
}

// One score the plain way: the few pixels left over by the 8-pixel blocks.
UF_ROW_INLINE float dot_one(const float* px, const float* w, std::int64_t c, float bias) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < c; ++i) acc += px[i] * w[i];
  return acc + bias;
}

// Scores of one row of pixels: s[x * K + j] = bias[j] + <x_pixel, w[j]>, in blocks of 4 pixels x 2
// classes (8 pixels x 1 class for an odd class count's last class), the pixels past the last block
// one at a time. The dot products are the head's whole cost (the input is read once).
UF_ROW_INLINE void row_scores(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s) {
  const std::int64_t c = h.x.c, k = h.k, width = h.x.w;
  const std::int64_t kpairs = k / 2 * 2;
  std::int64_t x = 0;
  for (; x + 8 <= width; x += 8) {
    const float* px[8];
    for (int p = 0; p < 8; ++p) px[p] = h.x.pixel(n, y, x + p);
    if (x + 16 <= width)  // the next block's pixels, a block ahead
      for (int p = 0; p < 8; ++p)
        for (std::int64_t q = 0; q < c; q += 16) __builtin_prefetch(h.x.pixel(n, y, x + 8 + p) + q);
    for (std::int64_t j = 0; j < kpairs; j += 2) {
      dot_block<4, 2>(px, h.w + j * c, c, h.bias + j, s + x * k + j, k);
      dot_block<4, 2>(px + 4, h.w + j * c, c, h.bias + j, s + (x + 4) * k + j, k);
    }
    if (kpairs < k) dot_block<8, 1>(px, h.w + kpairs * c, c, h.bias + kpairs, s + x * k + kpairs, k);
  }
  for (; x < width; ++x)
    for (std::int64_t j = 0; j < k; ++j) s[x * k + j] = dot_one(h.x.pixel(n, y, x), h.w + j * c, c, h.bias[j]);
}

// Row (n, y): its [W, K] scores into s, then the head op in place (argmax and logits: none here).
UF_ROW_INLINE void head_row(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s, HeadOp op) {
  row_scores(h, n, y, s);
  if (op == HeadOp::kSoftmax) {
    softmax_rows(s, h.x.w, static_cast<int>(h.k));
  } else if (op == HeadOp::kSigmoid) {
    sigmoid_n(s, h.x.w * h.k);
  }
}

using HeadRowFn = void (*)(const HeadArgs&, std::int64_t, std::int64_t, float*, HeadOp);

UF_NO_TRAP void head_row_portable(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s, HeadOp op) {
  head_row(h, n, y, s, op);
}

#ifdef UF_CPU_X86
__attribute__((target("avx2,fma"))) UF_NO_TRAP void head_row_avx2(const HeadArgs& h, std::int64_t n,
                                                                   std::int64_t y, float* s, HeadOp op) {
  head_row(h, n, y, s, op);
}
#endif

HeadRowFn pick_head_row(int isa) {
  const bool avx2 = use_avx2(isa);  // checks isa too
#ifdef UF_CPU_X86
  if (avx2) return head_row_avx2;
#endif
  (void)avx2;
  return head_row_portable;
}

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
  const HeadRowFn row = pick_head_row(isa);
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
        "isa: 0 auto, 1 portable, 2 avx2.");
}

}  // namespace unet_fast
