// The bf16 tile interface: AMX's tile operations (config, load, TDPBF16PS dot product, store, release)
// with two implementations of exactly the same arithmetic, so that every kernel written over it (packing,
// blocking, edge tiles, epilogues) is tested on any CPU:
//   TilesPortable  an emulator in plain C++ (this file): 8 tiles of 16 rows x 64 bytes per thread;
//   TilesAmx       the native instructions (amx/tile_amx.h), compiled under UF_TARGET_AMX only;
// and a third with its own, documented, operation order (not bit-identical to those two):
//   TilesAvx512Bf16  tiles in a per-thread 8 KB state, each dot product as VDPBF16PS zmm (amx/
//                    tile_avx512bf16.h, under UF_TARGET_AVX512BF16): one fp32 chain into C, per K pair the
//                    odd product then the even one, each addition rounded (RNE) and flushed (DAZ/FTZ).
// A kernel body is a template over one of them (amx/conv_bf16_body.h). Both provide
//   config(cfg) / release()            per thread, around a kernel (RAII: TileScope)
//   zero<T>(), load<T>(p, stride), store<T>(p, stride)   rows x colsb bytes, stride in bytes
//   dpbf16ps<C, A, B>()                C[m][n] += sum_k a[m][2k] * b[k][2n] + a[m][2k+1] * b[k][2n+1]
// Tile numbers are template arguments: the instructions encode them, so they must be constants.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "unet_fast/amx/bf16.h"

namespace unet_fast {
namespace amx {

constexpr int kTiles = 8;         // tmm0..tmm7
constexpr int kTileRows = 16;     // palette 1: at most 16 rows ...
constexpr int kTileColsB = 64;    // ... of at most 64 bytes

// The 64-byte LDTILECFG operand, palette 1 (Intel SDM vol. 1, 3.2 "Tile configuration").
struct alignas(64) TileConfig {
  std::uint8_t palette_id = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};  // bytes per row of tile i (only 0..7 exist)
  std::uint8_t rows[16] = {};    // rows of tile i
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads exactly 64 bytes");

// Configure tile t (0..7: palette 1 has 8 tiles; bytes 32-47 and 56-63, the entries of tiles 8-15, must
// stay zero) as rows x colsb bytes.
inline void set_tile(TileConfig& cfg, int t, int rows, int colsb) {
  if (t < 0 || t >= 8) return;  // never written: LDTILECFG would raise #GP on a nonzero entry there
  cfg.rows[t] = static_cast<std::uint8_t>(rows);
  cfg.colsb[t] = static_cast<std::uint16_t>(colsb);
}

// The configurations the kernels load (amx/conv_bf16_body.h), here so that the bindings can hand their bytes
// to tests (bf16_tile_config_bytes) without a tile backend.
// The tile conv: all 8 tiles 16 rows x 64 bytes. C tmm0..3: 16 pixels x 16 fp32 channels; A tmm4/5: 16
// pixels x 32 bf16 input channels (16 K pairs); B tmm6/7: 16 K pairs x 16 output channels x 2 bf16.
inline TileConfig conv_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) set_tile(cfg, t, 16, 64);
  return cfg;
}
// One TDPBF16PS tmm0 += tmm1 . tmm2: C m x 4n bytes, A m x 4kp, B kp x 4n (m, kp, n in 1..16).
inline TileConfig tile_dot_config(int m, int kp, int n) {
  TileConfig cfg;
  set_tile(cfg, 0, m, 4 * n);
  set_tile(cfg, 1, m, 4 * kp);
  set_tile(cfg, 2, kp, 4 * n);
  return cfg;
}

// ---- the fault conditions of the hardware (Intel SDM vol. 2: LDTILECFG; AMX exception class AMX-E4 of
// TDPBF16PS; TILELOADD / TILESTORED / TILEZERO), checked by the emulator on every operation so that the
// tile program every test runs through it (the same kernel body the native build runs) is one the hardware
// would execute. Each returns "" when the hardware would not fault, else why it would. ----

// LDTILECFG: #GP for palette_id > 1 (palette 1 is the only one: 8 tiles of <= 16 rows x <= 64 bytes),
// nonzero reserved bytes (2-15, 32-47, 56-63), rows > 16, colsb > 64, or a tile with exactly one of rows
// and colsb zero. palette_id 0 is legal (it returns the tiles to the init state, unconfigured). start_row
// != 0 is legal (it is the restart point of an interrupted tile load / store) but a bug in a config built
// here: the next TILELOADD / TILESTORED would start at that row.
std::string tile_config_fault(const TileConfig& cfg);
// TILELOADD / TILESTORED / TILEZERO on tile t (`op` names it): #UD when the tiles are not configured or
// tile t is not (rows == 0); loads and stores also when its colsb is not a multiple of 4.
std::string tile_op_fault(const TileConfig& cfg, bool configured, const char* op, int t);
// TDPBF16PS tmm c += tmm a . tmm b: #UD when not configured, any of the three not configured or equal to
// another, any colsb not a multiple of 4, or the shapes do not chain: c.rows != a.rows (M),
// c.colsb != b.colsb (N), a.colsb / 4 != b.rows (K pairs), N > 16 (tmul_maxn), K > 16 (tmul_maxk).
std::string tile_dpbf16ps_fault(const TileConfig& cfg, bool configured, int c, int a, int b);

// ---- the portable emulator ----

// TDPBF16PS treats denormal inputs as zero (the bf16 elements, and the fp32 accumulator C read by the final
// addition: "DAZ, FTZ, RNE, SAE" on every step of the SDM's operation) and flushes denormal fp32 results to
// zero, whatever MXCSR says (Intel SDM vol. 2, TDPBF16PS); the emulator does the same. f32_ftz is also the
// DAZ of an fp32 input (a denormal reads as a zero of its sign).
inline float bf16_daz(std::uint16_t h) { return (h & 0x7F80u) == 0 ? 0.f * bf16_to_f32(h) : bf16_to_f32(h); }
inline float f32_ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.f, x) : x; }

struct EmuTile {
  alignas(64) unsigned char data[kTileRows * kTileColsB];
  int rows, colsb;
};

struct EmuState {
  EmuTile t[kTiles];
  TileConfig cfg;  // the last LDTILECFG operand (the fault checks read it)
  bool configured = false;
};

// One tile state per thread, like the hardware's (each OpenMP thread configures its own).
inline EmuState& emu_state() {
  thread_local EmuState s;
  return s;
}

// The operation of TDPBF16PS as the Intel SDM (vol. 2, "TDPBF16PS") states it, per output element
// c[m][n]: two fp32 accumulators, starting at zero, take the even and the odd products of the K pairs in
// increasing k, each step an FMA (DAZ = FTZ = 1, round to nearest even); then c += (even + odd), each
// addition rounded and flushed. (The Intrinsics Guide's shorter form, one chain of alternating even/odd
// additions into c, rounds differently.) Defined in csrc/cpu/amx/tile_emulator.cpp.
void emu_dpbf16ps(EmuTile& c, const EmuTile& a, const EmuTile& b);

// Where the hardware would fault (#GP / #UD: SIGSEGV / SIGILL), the emulator records why (the first such
// event in the process), skips the operation and carries on; every binding that runs the portable backend
// raises it as a RuntimeError after the call (throw_if_emulator_fault). Defined in tile_emulator.cpp.
void emu_fault(const std::string& why);
// The recorded fault ("" if none), cleared.
std::string take_emu_fault();
// Raises std::runtime_error naming the first recorded fault, if any (and clears it).
void throw_if_emulator_fault();

struct TilesPortable {
  static constexpr const char* kName = "portable";

  static void config(const TileConfig& cfg) {
    EmuState& s = emu_state();
    const std::string why = tile_config_fault(cfg);
    if (!why.empty()) {
      emu_fault("LDTILECFG: " + why);
      return;  // #GP: nothing changes
    }
    s.cfg = cfg;
    s.configured = cfg.palette_id != 0;  // palette 0: the init state, like TILERELEASE
    for (int t = 0; t < kTiles; ++t) {
      s.t[t].rows = s.configured ? cfg.rows[t] : 0;
      s.t[t].colsb = s.configured ? cfg.colsb[t] : 0;
      std::memset(s.t[t].data, 0, sizeof s.t[t].data);
    }
  }
  static void release() {
    EmuState& s = emu_state();
    s.configured = false;
    s.cfg = TileConfig{};
    for (int t = 0; t < kTiles; ++t) s.t[t].rows = s.t[t].colsb = 0;
  }

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kTiles, "tile number");
    if (!ok(tile_op_fault(emu_state().cfg, emu_state().configured, "TILEZERO", T))) return;
    std::memset(emu_state().t[T].data, 0, sizeof(EmuTile::data));
  }
  // Rows past `rows` and bytes past `colsb` of each row read as zero, like TILELOADD.
  template <int T>
  static void load(const void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    if (!ok(tile_op_fault(emu_state().cfg, emu_state().configured, "TILELOADD", T))) return;
    EmuTile& t = emu_state().t[T];
    std::memset(t.data, 0, sizeof t.data);
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(t.data + r * kTileColsB, static_cast<const unsigned char*>(p) + r * stride,
                  static_cast<std::size_t>(t.colsb));
  }
  template <int T>
  static void store(void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    if (!ok(tile_op_fault(emu_state().cfg, emu_state().configured, "TILESTORED", T))) return;
    const EmuTile& t = emu_state().t[T];
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(static_cast<unsigned char*>(p) + r * stride, t.data + r * kTileColsB,
                  static_cast<std::size_t>(t.colsb));
  }
  template <int C, int A, int B>
  static void dpbf16ps() {
    static_assert(C != A && C != B && A != B && C < kTiles && A < kTiles && B < kTiles, "tile numbers");
    EmuState& s = emu_state();
    if (!ok(tile_dpbf16ps_fault(s.cfg, s.configured, C, A, B))) return;
    emu_dpbf16ps(s.t[C], s.t[A], s.t[B]);
  }

 private:
  static bool ok(const std::string& why) {
    if (why.empty()) return true;
    emu_fault(why);
    return false;
  }
};

// Configures the tiles for the lifetime of a scope and releases them after (per thread: open one inside
// each parallel region), so the 8 KB tile state is not kept, and saved on every context switch, after a
// kernel.
template <class Tiles>
struct TileScope {
  explicit TileScope(const TileConfig& cfg) { Tiles::config(cfg); }
  ~TileScope() { Tiles::release(); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

}  // namespace amx
}  // namespace unet_fast
