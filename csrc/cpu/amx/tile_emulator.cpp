// The portable emulator (amx/tile.h): the hardware's fault conditions it checks on every tile operation
// (LDTILECFG #GP, TILELOADD / TILESTORED / TILEZERO / TDPBF16PS #UD) and the record of the first fault, and
// its TDPBF16PS, compiled twice (GCC target_clones, chosen at load time): with FMA instructions where the
// CPU has them, else through libm's fmaf; both are the exact fused multiply-add, so the results are the
// same bits, only the speed differs.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "unet_fast/amx/tile.h"

namespace unet_fast {
namespace amx {

namespace {
std::mutex fault_mutex;
std::string first_fault;  // guarded by fault_mutex
}  // namespace

void emu_fault(const std::string& why) {
  const std::lock_guard<std::mutex> lock(fault_mutex);
  if (first_fault.empty()) first_fault = why;
}

std::string take_emu_fault() {
  const std::lock_guard<std::mutex> lock(fault_mutex);
  std::string why;
  why.swap(first_fault);
  return why;
}

void throw_if_emulator_fault() {
  const std::string why = take_emu_fault();
  if (!why.empty())
    throw std::runtime_error("the portable tile emulator ran an operation the AMX hardware would fault on "
                             "(a bug in the tile program, which the native build runs too): " + why);
}

std::string tile_config_fault(const TileConfig& cfg) {
  unsigned char b[64];
  std::memcpy(b, &cfg, sizeof b);
  if (b[0] > 1) return "palette_id " + std::to_string(b[0]) + " (#GP: palette 1 is the only one)";
  for (int i = 2; i < 64; ++i) {
    const bool reserved = i < 16 || (i >= 32 && i < 48) || i >= 56;
    if (reserved && b[i] != 0) return "reserved byte " + std::to_string(i) + " is nonzero (#GP)";
  }
  if (b[0] == 0) return "";  // the init state: the other fields are ignored
  for (int t = 0; t < 8; ++t) {
    const int rows = cfg.rows[t], colsb = cfg.colsb[t];
    const std::string tile = "tile " + std::to_string(t) + ": ";
    if (rows > kTileRows) return tile + std::to_string(rows) + " rows > 16 (#GP)";
    if (colsb > kTileColsB) return tile + std::to_string(colsb) + " bytes per row > 64 (#GP)";
    if ((rows == 0) != (colsb == 0))
      return tile + "rows " + std::to_string(rows) + ", colsb " + std::to_string(colsb) + ": only one is zero (#GP)";
  }
  if (cfg.start_row != 0)
    return "start_row " + std::to_string(cfg.start_row) + " != 0 (the next tile load / store would start at that row)";
  return "";
}

// Both build their message only on a fault: the emulator calls them on every tile operation.
std::string tile_op_fault(const TileConfig& cfg, bool configured, const char* op, int t) {
  const auto fail = [&](const std::string& why) { return std::string(op) + " tmm" + std::to_string(t) + ": " + why; };
  if (!configured) return fail("the tiles are not configured in this thread (#UD: no LDTILECFG, or after TILERELEASE)");
  if (t < 0 || t >= 8) return fail("no such tile (#UD)");
  if (cfg.rows[t] == 0) return fail("tile not configured (rows 0, #UD)");
  const bool memory = std::strcmp(op, "TILEZERO") != 0;  // TILELOADD / TILESTORED
  if (memory && cfg.colsb[t] % 4 != 0) return fail("colsb " + std::to_string(cfg.colsb[t]) + " not a multiple of 4 (#UD)");
  return "";
}

std::string tile_dpbf16ps_fault(const TileConfig& cfg, bool configured, int c, int a, int b) {
  const auto fail = [&](const std::string& why) {
    return "TDPBF16PS tmm" + std::to_string(c) + " += tmm" + std::to_string(a) + " . tmm" + std::to_string(b) + ": " + why;
  };
  if (!configured) return fail("the tiles are not configured in this thread (#UD: no LDTILECFG, or after TILERELEASE)");
  if (c == a || c == b || a == b) return fail("the three tiles must differ (#UD)");
  for (const int t : {c, a, b}) {
    if (t < 0 || t >= 8 || cfg.rows[t] == 0) return fail("tmm" + std::to_string(t) + " not configured (#UD)");
    if (cfg.colsb[t] % 4 != 0) return fail("tmm" + std::to_string(t) + " colsb not a multiple of 4 (#UD)");
  }
  const int m = cfg.rows[c], n = cfg.colsb[c] / 4, k = cfg.rows[b];
  if (cfg.rows[a] != m) return fail("A has " + std::to_string(cfg.rows[a]) + " rows, C " + std::to_string(m) + " (#UD)");
  if (cfg.colsb[b] != cfg.colsb[c])
    return fail("B has " + std::to_string(cfg.colsb[b]) + " bytes per row, C " + std::to_string(cfg.colsb[c]) + " (#UD)");
  if (cfg.colsb[a] / 4 != k)
    return fail("A has " + std::to_string(cfg.colsb[a] / 4) + " K pairs per row, B " + std::to_string(k) + " rows (#UD)");
  if (n > 16 || k > 16) return fail("N or K above 16 (#UD)");
  return "";
}

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
      crow[n] = f32_ftz(f32_ftz(crow[n]) + f32_ftz(even + odd));  // C read with DAZ too
    }
  }
}

}  // namespace amx
}  // namespace unet_fast
