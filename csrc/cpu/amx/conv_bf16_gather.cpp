// The bilinear staging of the bf16 tile conv (amx/conv_bf16.h stage_bilinear_bf16), compiled once for every
// tile backend: outside any UF_TARGET region and without FMA contraction, so the staged bf16 bits are the
// same whether the portable emulator or native AMX runs the conv, and equal to a float32 evaluation of the
// expression below one operation at a time (unet_fast/kernels/cpu_bf16.py read_view_bf16, the tests' truth).
#include <cstdint>

#include "unet_fast/amx/bf16.h"
#include "unet_fast/amx/conv_bf16.h"

namespace unet_fast {
namespace amx {

__attribute__((optimize("fp-contract=off"))) void stage_bilinear_bf16(const Nhwc<const std::uint16_t>& x,
                                                                      std::int64_t n, const Tap& ty,
                                                                      const Tap& tx, std::int64_t c_first,
                                                                      int count, std::uint16_t* dst) {
  const std::uint16_t* s00 = x.pixel(n, ty.i0, tx.i0) + c_first;
  const std::uint16_t* s01 = x.pixel(n, ty.i0, tx.i1) + c_first;
  const std::uint16_t* s10 = x.pixel(n, ty.i1, tx.i0) + c_first;
  const std::uint16_t* s11 = x.pixel(n, ty.i1, tx.i1) + c_first;
  for (int k = 0; k < count; ++k) {
    // The fp32 gather's expression and order (cpu_kernel_body.h gather_row), on the bf16 values read exactly.
    const float top = tx.w0 * bf16_to_f32(s00[k]) + tx.w1 * bf16_to_f32(s01[k]);
    const float bottom = tx.w0 * bf16_to_f32(s10[k]) + tx.w1 * bf16_to_f32(s11[k]);
    dst[k] = f32_to_bf16(ty.w0 * top + ty.w1 * bottom);
  }
}

}  // namespace amx
}  // namespace unet_fast
