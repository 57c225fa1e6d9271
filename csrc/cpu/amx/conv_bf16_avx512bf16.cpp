// The bf16 tile convolution on AVX512-BF16 (amx/tile_avx512bf16.h TilesAvx512Bf16), compiled under
// UF_TARGET_AVX512BF16 so the rest of _C stays baseline x86-64. Callers check
// amx::avx512bf16_support().runnable() first (the bindings do): elsewhere this code faults.
#include "unet_fast/cpu_isa.h"  // UF_TARGET_* and UF_CPU_X86

#include <cstdint>
#include <cstring>

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
#include "unet_fast/amx/conv_bf16_body.h"

// The bf16 dot-product peak of one core: 16 independent zmm accumulators (more than VDPBF16PS's latency x
// its issue rate), both operands in registers, no loads or stores: only VDPBF16PS in the loop. One round is
// 1024 VDPBF16PS zmm = 16 x 16 x 32 multiply-adds x 4, the work of tile_peak's 4 TDPBF16PS, so the FLOP count
// per iteration is the same for every backend. All operands 2^-10: each accumulator gains 2 x 2^-20 per
// instruction, 64 instructions per round; returns accumulator 0 / 4 = iters x 32 / 2^20 like tile_peak.
float register_peak(std::int64_t iters) {
  const __m512bh x = reinterpret_cast<__m512bh>(_mm512_set1_epi16(static_cast<short>(f32_to_bf16(1.f / 1024.f))));
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (std::int64_t it = 0; it < iters; ++it) {
    for (int r = 0; r < 64; ++r) {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, x);
    }
  }
  alignas(64) float out[16];
  _mm512_store_ps(out, acc[0]);
  return out[0] / 4.f;
}
}  // namespace avx512bf16

void conv_bf16_avx512bf16(const ConvBf16& cv) { avx512bf16::conv_bf16(cv); }
void tile_dot_avx512bf16(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  avx512bf16::tile_dot(a, b, c, m, kp, n);
}
float tile_peak_avx512bf16(std::int64_t iters) { return avx512bf16::register_peak(iters); }

}  // namespace amx
}  // namespace unet_fast
UF_TARGET_END
#endif
