// The segmentation head on bf16 activations (issue 17): the 1x1 conv to K classes on the bf16 tile conv
// (amx/conv_bf16.h; bf16 inputs and weights, fp32 accumulation, bias in the epilogue, fp32 logits), then the
// per-pixel op in fp32 with the fp32 head's code (pixel_ops.h: softmax_rows, sigmoid_n, argmax_first), into
// fp32 / bf16 probabilities or logits, or a uint8 / int32 / int64 class map.
//
// Two entry points:
// - head_pixels_bf16: the per-pixel op over an fp32 logits tensor (the second pass of the two-pass head,
//   whose first pass is cpu_bf16.conv2d with an fp32 output);
// - head_bf16: fused. Each thread runs the tile conv (one thread, through the backend's ConvFn) on a chunk
//   of rows of one image into an L1-sized fp32 scratch, applies the per-pixel op there and stores the chunk:
//   the logits never go to memory. A chunk has >= 256 pixels where the image is that large, so the conv's
//   32-pixel blocks are filled as well as in one whole-image call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "unet_fast/activation.h"
#include "unet_fast/amx/tile.h"
#include "unet_fast/bf16/ops.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/pixel_ops.h"

namespace py = pybind11;

namespace unet_fast {
namespace bf16ops {
namespace {

constexpr std::int64_t kChunkPixels = 256;

HeadOutput make_output(const DescArgs& d, int kind, std::int64_t n, std::int64_t h, std::int64_t w,
                       std::int64_t k) {
  UF_CHECK(kind >= 0 && kind <= 4, "unknown head output kind " << kind);
  HeadOutput o;
  o.kind = static_cast<HeadOut>(kind);
  std::int64_t on = 0, oh = 0, ow = 0, oc = 0;
  switch (o.kind) {
    case HeadOut::kF32:
      o.f32 = make_nhwc<float>(d, "out", true);
      on = o.f32.n, oh = o.f32.h, ow = o.f32.w, oc = o.f32.c;
      break;
    case HeadOut::kBf16:
      o.b16 = make_nhwc<std::uint16_t>(d, "out", true);
      on = o.b16.n, oh = o.b16.h, ow = o.b16.w, oc = o.b16.c;
      break;
    case HeadOut::kU8:
      o.u8 = make_nhwc<std::uint8_t>(d, "out", true);
      on = o.u8.n, oh = o.u8.h, ow = o.u8.w, oc = o.u8.c;
      break;
    case HeadOut::kI32:
      o.i32 = make_nhwc<std::int32_t>(d, "out", true);
      on = o.i32.n, oh = o.i32.h, ow = o.i32.w, oc = o.i32.c;
      break;
    case HeadOut::kI64:
      o.i64 = make_nhwc<std::int64_t>(d, "out", true);
      on = o.i64.n, oh = o.i64.h, ow = o.i64.w, oc = o.i64.c;
      break;
  }
  const bool index = o.kind == HeadOut::kU8 || o.kind == HeadOut::kI32 || o.kind == HeadOut::kI64;
  UF_CHECK(on == n && oh == h && ow == w && oc == (index ? 1 : k),
           "out must be [" << n << ", " << h << ", " << w << (index ? "" : ", K") << "]");
  UF_CHECK(o.kind != HeadOut::kU8 || k <= 256, "a uint8 class map holds at most 256 classes");
  return o;
}

// s: `pixels` groups of k fp32 scores, those of pixels (n, y0 + p / w, p % w). The head op in place, then the
// store into `o` (a class map for argmax).
UF_NO_TRAP void finish(float* s, std::int64_t pixels, int k, HeadOp op, const HeadOutput& o, std::int64_t n,
                       std::int64_t y0, std::int64_t w) {
  if (op == HeadOp::kSoftmax) {
    softmax_rows(s, pixels, k);
  } else if (op == HeadOp::kSigmoid) {
    sigmoid_n(s, pixels * k);
  }
  for (std::int64_t p = 0; p < pixels; ++p) {
    const std::int64_t y = y0 + p / w, x = p % w;
    const float* v = s + p * k;
    switch (o.kind) {
      case HeadOut::kF32: {
        float* d = o.f32.pixel(n, y, x);
        for (int j = 0; j < k; ++j) d[j] = v[j];
        break;
      }
      case HeadOut::kBf16: {
        std::uint16_t* d = o.b16.pixel(n, y, x);
        for (int j = 0; j < k; ++j) d[j] = f32_to_bf16(v[j]);
        break;
      }
      case HeadOut::kU8:
        *o.u8.pixel(n, y, x) = static_cast<std::uint8_t>(argmax_first(v, k));
        break;
      case HeadOut::kI32:
        *o.i32.pixel(n, y, x) = argmax_first(v, k);
        break;
      case HeadOut::kI64:
        *o.i64.pixel(n, y, x) = argmax_first(v, k);
        break;
    }
  }
}

HeadOp check_op(int op, int out_kind) {
  UF_CHECK(op >= 0 && op <= 3, "unknown head op index " << op);
  const auto head_op = static_cast<HeadOp>(op);
  const bool index = out_kind >= static_cast<int>(HeadOut::kU8);
  UF_CHECK(index == (head_op == HeadOp::kArgmax), "argmax writes a class map, the other ops fp32 / bf16");
  return head_op;
}

}  // namespace

void head_pixels_bf16(const DescArgs& logits_desc, int op, const DescArgs& out_desc, int out_kind,
                      int num_threads) {
  const auto logits = make_nhwc<const float>(logits_desc, "logits");
  UF_CHECK_POSITIVE(num_threads);
  const HeadOp head_op = check_op(op, out_kind);
  const HeadOutput o = make_output(out_desc, out_kind, logits.n, logits.h, logits.w, logits.c);
  const int k = static_cast<int>(logits.c);
  const std::int64_t rows = logits.n * logits.h;
  py::gil_scoped_release release;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> s(static_cast<std::size_t>(logits.w * k));
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t n = r / logits.h, y = r % logits.h;
      for (std::int64_t x = 0; x < logits.w; ++x)
        std::copy(logits.pixel(n, y, x), logits.pixel(n, y, x) + k, s.data() + x * k);
      finish(s.data(), logits.w, k, head_op, o, n, y, logits.w);
    }
  }
}

void head_bf16(const DescArgs& x_desc, std::uintptr_t w_ptr, std::int64_t w_numel, std::int64_t num_classes,
               std::uintptr_t bias_ptr, int op, const DescArgs& out_desc, int out_kind, int num_threads,
               int backend, bool tile_body) {
  const auto x = make_nhwc<const std::uint16_t>(x_desc, "x");
  UF_CHECK_PTR(w_ptr);
  UF_CHECK_POSITIVE(num_classes);
  UF_CHECK_POSITIVE(num_threads);
  const HeadOp head_op = check_op(op, out_kind);
  const HeadOutput o = make_output(out_desc, out_kind, x.n, x.h, x.w, num_classes);
  const int cin = static_cast<int>(x.c), k = static_cast<int>(num_classes);
  const int kc = (cin + amx::kChunkCin - 1) / amx::kChunkCin;
  const int nb = 2 * ((k + amx::kBlockCout - 1) / amx::kBlockCout);
  UF_CHECK(w_numel == static_cast<std::int64_t>(kc) * nb * 512,
           "packed weight has " << w_numel << " elements, the 1x1 layout needs " << kc * nb * 512);
  const amx::ConvFn conv = tile_variant(backend).conv;  // checks the row is a tile backend that runs here
  const std::int64_t chunk = std::min<std::int64_t>(x.h, std::max<std::int64_t>(1, (kChunkPixels + x.w - 1) / x.w));
  const std::int64_t per_image = (x.h + chunk - 1) / chunk, tasks = x.n * per_image;
  py::gil_scoped_release release;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> s(static_cast<std::size_t>(chunk * x.w * k));
    // The tile conv stages edge tiles through its sources' tap tables: here the identity (a plain read of
    // the chunk's rows), the same for every chunk.
    std::vector<Tap> ty(static_cast<std::size_t>(chunk)), tx(static_cast<std::size_t>(x.w));
    for (std::int64_t i = 0; i < chunk; ++i) ty[static_cast<std::size_t>(i)] = Tap{true, i, i, 1.f, 0.f};
    for (std::int64_t i = 0; i < x.w; ++i) tx[static_cast<std::size_t>(i)] = Tap{true, i, i, 1.f, 0.f};
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t n = t / per_image, y0 = (t % per_image) * chunk;
      const std::int64_t rows = std::min(chunk, x.h - y0);
      amx::ConvBf16 cv{};
      cv.src[0].x = Nhwc<const std::uint16_t>{x.pixel(n, y0, 0), 1, rows, x.w, x.c, x.sn, x.sh, x.sw};
      cv.src[0].ty = ty.data(), cv.src[0].tx = tx.data();
      cv.nsrc = 1;  // one plain source (mode kNone, no offset): the rows of this chunk
      cv.batch = 1, cv.in_h = rows, cv.in_w = x.w;
      cv.w = reinterpret_cast<const std::uint16_t*>(w_ptr);
      cv.kh = cv.kw = cv.stride = 1, cv.pad = 0;
      cv.hout = rows, cv.wout = x.w;
      cv.cin = cin, cv.cout = k, cv.kc = kc, cv.nb = nb;
      cv.bias = reinterpret_cast<const float*>(bias_ptr);
      cv.out.elem = amx::Elem::kF32;
      cv.out.f32 = Nhwc<float>{s.data(), 1, rows, x.w, k, rows * x.w * k, x.w * k, k};
      cv.act = Act::kNone;
      cv.num_threads = 1;  // nested in this thread's task: the tile conv runs single-threaded on the chunk
      cv.tile_body = tile_body;
      conv(cv);
      finish(s.data(), rows * x.w, k, head_op, o, n, y0, x.w);
    }
  }
  amx::throw_if_emulator_fault();  // the portable backend's record of a tile op AMX would fault on
}

void register_head_bf16(py::module_& m) {
  m.def("head_pixels_bf16", &head_pixels_bf16, py::arg("logits"), py::arg("op"), py::arg("out"),
        py::arg("out_kind"), py::arg("num_threads"),
        "The head's per-pixel op (spec.HEAD_OPS index) over fp32 logits [N, H, W, K] into out (out_kind: fp32, "
        "bf16, uint8, int32, int64). Use unet_fast.kernels.cpu_bf16_ops.head.");
  m.def("head_bf16", &head_bf16, py::arg("x"), py::arg("w_ptr"), py::arg("w_numel"), py::arg("num_classes"),
        py::arg("bias_ptr"), py::arg("op"), py::arg("out"), py::arg("out_kind"), py::arg("num_threads"),
        py::arg("backend"), py::arg("tile_body"),
        "The fused bf16 head: 1x1 tile conv (packed 1x1 weight, tile backend index) per chunk of rows into an "
        "fp32 scratch, then the per-pixel op into out. Use unet_fast.kernels.cpu_bf16_ops.head.");
}

}  // namespace bf16ops
}  // namespace unet_fast
