// The portable emulator's TDPBF16PS (amx/tile.h). Compiled twice (GCC target_clones, chosen at load time):
// with FMA instructions where the CPU has them, else through libm's fmaf; both are the exact fused
// multiply-add, so the results are the same bits, only the speed differs.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "unet_fast/amx/tile.h"

namespace unet_fast {
namespace amx {

#if defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("fma", "default")))
#endif
void emu_dpbf16ps(EmuTile& c, const EmuTile& a, const EmuTile& b) {
  const int m_rows = c.rows, n_cols = c.colsb / 4, k_pairs = a.colsb / 4;
  float bf[kTileRows][32];  // b widened once (inputs: denormals as zero): bf[k][2n + j]
  for (int k = 0; k < k_pairs; ++k) {
    std::uint16_t row[32];
    std::memcpy(row, b.data + k * kTileColsB, sizeof row);
    for (int j = 0; j < 2 * n_cols; ++j) bf[k][j] = bf16_daz(row[j]);
  }
  for (int m = 0; m < m_rows; ++m) {
    std::uint16_t arow[32];
    std::memcpy(arow, a.data + m * kTileColsB, sizeof arow);
    float af[32];
    for (int j = 0; j < 2 * k_pairs; ++j) af[j] = bf16_daz(arow[j]);
    float* crow = reinterpret_cast<float*>(c.data + m * kTileColsB);
    for (int n = 0; n < n_cols; ++n) {
      float even = 0.f, odd = 0.f;
      for (int k = 0; k < k_pairs; ++k) {
        even = f32_ftz(std::fma(af[2 * k], bf[k][2 * n], even));
        odd = f32_ftz(std::fma(af[2 * k + 1], bf[k][2 * n + 1], odd));
      }
      crow[n] = f32_ftz(crow[n] + f32_ftz(even + odd));
    }
  }
}

}  // namespace amx
}  // namespace unet_fast
