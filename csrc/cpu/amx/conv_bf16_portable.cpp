// The bf16 tile convolution over the portable tile emulator (amx/tile.h TilesPortable): runs on any CPU,
// gives the same results as the native AMX build (same blocking, same per-element operation order).
#include <cstdint>
#include <cstring>

#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/amx/tile.h"
#include "unet_fast/epilogue.h"

namespace unet_fast {
namespace amx {
namespace portable {
using Tiles = TilesPortable;
#include "unet_fast/amx/conv_bf16_body.h"
}  // namespace portable

void conv_bf16_portable(const ConvBf16& cv) { portable::conv_bf16(cv); }
void tile_dot_portable(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  portable::tile_dot(a, b, c, m, kp, n);
}
float tile_peak_portable(std::int64_t iters) { return portable::tile_peak(iters); }

}  // namespace amx

const amx::TileOps& tile_ops_tiles_portable() {
  static const amx::TileOps ops{&amx::conv_bf16_portable, &amx::tile_dot_portable, &amx::tile_peak_portable};
  return ops;
}
}  // namespace unet_fast
