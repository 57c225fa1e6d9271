// The bf16 tile convolution on AVX512-BF16 (amx/tile_avx512bf16.h TilesAvx512Bf16), compiled under
// UF_TARGET_AVX512BF16 so the rest of _C stays baseline x86-64. Callers check
// amx::avx512bf16_support().runnable() first (the bindings do): elsewhere this code faults.
#include "unet_fast/cpu_isa.h"  // UF_TARGET_* and UF_CPU_X86

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/amx/tile.h"
#include "unet_fast/epilogue.h"

#ifdef UF_CPU_X86
UF_TARGET_BEGIN(UF_TARGET_AVX512BF16)
#include "unet_fast/amx/tile_avx512bf16.h"
namespace unet_fast {
namespace amx {
namespace avx512bf16 {
using Tiles = TilesAvx512Bf16;

// The block epilogue in 16-lane vectors, the same per-element arithmetic as the body's scalar loop
// (epilogue(): (acc + bias) + residual, a zero added where there is none, so -0 becomes +0 alike; ReLU /
// leaky ReLU as apply_act's comparisons, NaN -> 0; bf16 stores rounded like f32_to_bf16: nearest even, NaN
// -> 0x7FC0). Returns false, having written nothing, for what it leaves to the scalar loop: SiLU (expf has
// no bit-identical vector form here) and a transposed-conv block whose 16-column half straddles two output
// taps (Ct not a multiple of 16).
// One run of `rows` <= 16 output pixels p0 .. (flat over Hout x Wout), acc[r][j] its accumulators.
inline bool block_epilogue_avx512(const ConvBf16& cv, std::int64_t n, std::int64_t p0, int rows, int co0, int cn,
                                  const float* acc) {
  if (cv.act == Act::kSilu) return false;
  const int ct = cv.scatter_cout;
  if (ct > 0)
    for (int j0 = 0; j0 < cn; j0 += 16) {
      const int w = cn - j0 < 16 ? cn - j0 : 16;
      if ((co0 + j0) % ct + w > ct) return false;
    }
  const __m512 zero = _mm512_setzero_ps(), slope = _mm512_set1_ps(cv.negative_slope);
  const __m512i round_bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
  const __m512i qnan = _mm512_set1_epi32(0x7FC0);
  // The zero-masked forms below: GCC 12's unmasked ones start from _mm512_undefined_*, which -Wall (with
  // -Werror) reports as maybe-uninitialized once inlined here.
  constexpr __mmask16 all = 0xFFFF;
  std::int64_t oy = p0 / cv.wout, ox = p0 % cv.wout;
  for (int r = 0; r < rows; ++r, ++ox) {
    if (ox == cv.wout) ox = 0, ++oy;
    for (int j0 = 0; j0 < cn; j0 += 16) {
      const int w = cn - j0 < 16 ? cn - j0 : 16;
      const __mmask16 m = static_cast<__mmask16>((1u << w) - 1u);
      const int col = co0 + j0;  // GEMM column; output channel c (and tap ab for the transposed conv)
      const int ab = ct > 0 ? col / ct : 0, c = ct > 0 ? col % ct : col;
      const std::int64_t y = ct > 0 ? 2 * oy + ab / 2 : oy, x = ct > 0 ? 2 * ox + ab % 2 : ox;
      __m512 v = _mm512_maskz_loadu_ps(m, acc + r * kBlockCout + j0);
      v = _mm512_add_ps(v, cv.bias != nullptr ? _mm512_maskz_loadu_ps(m, cv.bias + c) : zero);
      __m512 res = zero;
      if (ct == 0 && cv.residual.elem == Elem::kBf16)
        res = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
            all, _mm512_maskz_cvtepu16_epi32(m, _mm256_maskz_loadu_epi16(m, cv.residual.b16.pixel(n, oy, ox) + c)),
            16));
      else if (ct == 0 && cv.residual.elem == Elem::kF32)
        res = _mm512_maskz_loadu_ps(m, cv.residual.f32.pixel(n, oy, ox) + c);
      v = _mm512_add_ps(v, res);
      if (cv.act == Act::kRelu)
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
      else if (cv.act == Act::kLeakyRelu)
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), _mm512_mul_ps(v, slope), v);
      if (cv.out.elem == Elem::kBf16) {
        const __m512i u = _mm512_castps_si512(v);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i h =
            _mm512_add_epi32(u, _mm512_add_epi32(round_bias, _mm512_and_si512(_mm512_maskz_srli_epi32(all, u, 16), one)));
        h = _mm512_mask_mov_epi32(_mm512_maskz_srli_epi32(all, h, 16), nan, qnan);
        _mm256_mask_storeu_epi16(cv.out.b16.pixel(n, y, x) + c, m, _mm512_maskz_cvtepi32_epi16(all, h));
      } else {
        _mm512_mask_storeu_ps(cv.out.f32.pixel(n, y, x) + c, m, v);
      }
    }
  }
  return true;
}
#define UF_BF16_BLOCK_EPILOGUE block_epilogue_avx512
#include "unet_fast/amx/conv_bf16_body.h"
#undef UF_BF16_BLOCK_EPILOGUE
#include "unet_fast/amx/conv_bf16_direct_avx512bf16.h"

// The bf16 dot-product peak of one core: 16 independent zmm accumulators (more than VDPBF16PS's latency x
// its issue rate), both operands in registers, no loads or stores: only VDPBF16PS in the loop. One round is
// 1024 VDPBF16PS zmm = 16 x 16 x 32 multiply-adds x 4, the work of tile_peak's 4 TDPBF16PS, so the FLOP count
// per iteration is the same for every backend. The empty asm after each group of 16 makes the accumulators
// opaque to the compiler: without it GCC merges the 16 identical chains into one (common subexpressions)
// and the loop runs 1/16 of the instructions it is credited with. They are 16 named variables, not an array:
// an array operand of the asm is kept in memory, and the loop would time store-to-load forwarding.
// Operands 2^-10: each accumulator gains 2 x 2^-20 per instruction, 64 per round; returns accumulator 0 / 4 =
// iters x 32 / 2^20 like tile_peak (exact for iters < 2^18).
float register_peak(std::int64_t iters) {
  const __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi16(static_cast<short>(f32_to_bf16(1.f / 1024.f))));
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
         c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
  for (std::int64_t it = 0; it < iters; ++it) {
    for (int r = 0; r < 64; ++r) {
      c0 = _mm512_dpbf16_ps(c0, x, x), c1 = _mm512_dpbf16_ps(c1, x, x), c2 = _mm512_dpbf16_ps(c2, x, x);
      c3 = _mm512_dpbf16_ps(c3, x, x), c4 = _mm512_dpbf16_ps(c4, x, x), c5 = _mm512_dpbf16_ps(c5, x, x);
      c6 = _mm512_dpbf16_ps(c6, x, x), c7 = _mm512_dpbf16_ps(c7, x, x), c8 = _mm512_dpbf16_ps(c8, x, x);
      c9 = _mm512_dpbf16_ps(c9, x, x), c10 = _mm512_dpbf16_ps(c10, x, x), c11 = _mm512_dpbf16_ps(c11, x, x);
      c12 = _mm512_dpbf16_ps(c12, x, x), c13 = _mm512_dpbf16_ps(c13, x, x), c14 = _mm512_dpbf16_ps(c14, x, x);
      c15 = _mm512_dpbf16_ps(c15, x, x);
      // two statements: an asm takes at most 30 operands, and "+v" counts twice
      __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7));
      __asm__ volatile("" : "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11), "+v"(c12), "+v"(c13), "+v"(c14), "+v"(c15));
    }
  }
  alignas(64) float out[16];
  _mm512_store_ps(out, c0);
  return out[0] / 4.f;
}
}  // namespace avx512bf16

// The register-blocked direct conv, or the tile body: the caller's choice (cv.tile_body, made once by the
// kernel registry in Python, so what the report names is what runs). Asking for the direct conv where it
// cannot run (a bilinear source; a transposed conv with a pool output) is an error, not a silent switch.
void conv_bf16_avx512bf16(const ConvBf16& cv) {
  if (cv.tile_body) {
    avx512bf16::conv_bf16(cv);
    return;
  }
  UF_CHECK(avx512bf16::direct_supported(cv),
           "the avx512bf16 direct conv reads plain and nearest sources only (a bilinear source, or a transposed "
           "conv with a pool output, runs the tile body: tile_body=True)");
  avx512bf16::conv_bf16_direct(cv);
}
void tile_dot_avx512bf16(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  avx512bf16::tile_dot(a, b, c, m, kp, n);
}
float tile_peak_avx512bf16(std::int64_t iters) { return avx512bf16::register_peak(iters); }

}  // namespace amx
}  // namespace unet_fast
UF_TARGET_END

namespace unet_fast {
// Outside the target region: reading the table must not execute AVX-512 code on a CPU without it.
const amx::TileOps& tile_ops_avx512bf16() {
  static const amx::TileOps ops{&amx::conv_bf16_avx512bf16, &amx::tile_dot_avx512bf16, &amx::tile_peak_avx512bf16,
                                /*direct_conv=*/true};
  return ops;
}
}  // namespace unet_fast
#endif
