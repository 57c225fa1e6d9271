// Every C++ CPU kernel body, written once, and the variant's entry-point table `kOps`.
//
// No include guard on purpose: each variant file (csrc/cpu/variants/<id>.cpp) includes this inside its own
// namespace (and target region), after defining
//   Vec, kL                       the vector type and its lanes (cpu_vec_portable.h VecP<8|16>, _avx2, _avx512)
//   kWinoBlocking, kCtBlocking    Blocking{mr, nr} of the Winograd and transposed-conv micro-GEMMs
//   ThreadState                   an RAII per-thread hook run inside every parallel region of the GEMM ops
//                                 (empty for vector variants; a tile variant configures and releases tiles)
// The variant file includes the standard headers and unet_fast/{cpu_variant,resample,epilogue,pixel_ops}.h
// first, outside the namespace.

constexpr int kWinoMR = kWinoBlocking.mr, kWinoNR = kWinoBlocking.nr, kWinoNV = kWinoNR / kL;
constexpr int kCtMR = kCtBlocking.mr, kCtNR = kCtBlocking.nr, kCtNV = kCtNR / kL;
static_assert(kWinoNR % kL == 0 && kCtNR % kL == 0, "a GEMM block is whole vectors wide");
static_assert(kWinoMR <= 16 && kCtMR <= 16, "gemm_rows finishes a partial micro-tile of up to 15 rows");

#include "unet_fast/cpu_gemm_kernels.h"
#include "unet_fast/winograd_kernels.h"
#include "unet_fast/conv_transpose_kernels.h"
#include "unet_fast/head_kernels.h"

// One output row of gather_view: each pixel zero (outside the resampled image), copied, or bilinearly
// blended in PyTorch's order, h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * d). The channel loops are
// left to the compiler (they vectorise to the variant's width under its target options).
inline void gather_row(const GatherArgs& g, std::int64_t n, std::int64_t oy) {
  const Tap& y = g.ty[oy];
  const std::int64_t c = g.dst.c;
  for (std::int64_t ox = 0; ox < g.dst.w; ++ox) {
    const Tap& x = g.tx[ox];
    float* o = g.dst.pixel(n, oy, ox);
    if (!y.valid || !x.valid) {
      std::memset(o, 0, static_cast<std::size_t>(c) * sizeof(float));
    } else if (!g.bilinear) {
      std::memcpy(o, g.src.pixel(n, y.i0, x.i0), static_cast<std::size_t>(c) * sizeof(float));
    } else {
      const float* s00 = g.src.pixel(n, y.i0, x.i0);
      const float* s01 = g.src.pixel(n, y.i0, x.i1);
      const float* s10 = g.src.pixel(n, y.i1, x.i0);
      const float* s11 = g.src.pixel(n, y.i1, x.i1);
#pragma omp simd
      for (std::int64_t k = 0; k < c; ++k)
        o[k] = y.w0 * (x.w0 * s00[k] + x.w1 * s01[k]) + y.w1 * (x.w0 * s10[k] + x.w1 * s11[k]);
    }
  }
}

// The 2x2 max-pool's row (cpu_pool.h), compiled for this variant.
inline void maxpool_row(const Nhwc<const float>& x, const Nhwc<float>& out, std::int64_t n, std::int64_t oy) {
  maxpool2x2_row(x, out, n, oy);
}

// The activation is a template parameter: a runtime switch inside the loop kept it scalar and branchy.
template <Act A>
void activation_loop(const float* x, float* out, std::int64_t n, float negative_slope, int num_threads) {
#pragma omp parallel for simd num_threads(num_threads) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = apply_act(x[i], A, negative_slope);
}

inline void activation(const float* x, float* out, std::int64_t n, Act act, float negative_slope, int num_threads) {
  switch (act) {
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

constexpr CpuVariantOps kOps{kL,
                             kWinoBlocking,
                             kCtBlocking,
                             &winograd_conv<float>,
                             &winograd_conv<std::uint16_t>,
                             &conv_transpose2x2,
                             &head_row,
                             &gather_row,
                             &maxpool_row,
                             &activation};
