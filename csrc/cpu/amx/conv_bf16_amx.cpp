// The bf16 tile convolution on native AMX tiles (amx/tile_amx.h TilesAmx), compiled under UF_TARGET_AMX.
// Callers check amx::cpu_has_amx() first (the bindings do): on other CPUs this code faults.
#include "unet_fast/cpu_isa.h"  // UF_TARGET_* and UF_CPU_X86

#include <cstdint>
#include <cstring>

#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/amx/tile.h"
#include "unet_fast/epilogue.h"

#ifdef UF_CPU_X86
UF_TARGET_BEGIN(UF_TARGET_AMX)
#include "unet_fast/amx/tile_amx.h"
namespace unet_fast {
namespace amx {
namespace native {
using Tiles = TilesAmx;
#include "unet_fast/amx/conv_bf16_body.h"
}  // namespace native

void conv_bf16_amx(const ConvBf16& cv) { native::conv_bf16(cv); }
void tile_dot_amx(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  native::tile_dot(a, b, c, m, kp, n);
}
float tile_peak_amx(std::int64_t iters) { return native::tile_peak(iters); }

}  // namespace amx
}  // namespace unet_fast
UF_TARGET_END

namespace unet_fast {
// Outside the target region: reading the table must not execute AMX code on a CPU without it.
const amx::TileOps& tile_ops_amx() {
  static const amx::TileOps ops{&amx::conv_bf16_amx, &amx::tile_dot_amx, &amx::tile_peak_amx};
  return ops;
}
}  // namespace unet_fast
#endif
