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

// Configure tile t as rows x colsb bytes.
inline void set_tile(TileConfig& cfg, int t, int rows, int colsb) {
  cfg.rows[t] = static_cast<std::uint8_t>(rows);
  cfg.colsb[t] = static_cast<std::uint16_t>(colsb);
}

// ---- the portable emulator ----

// TDPBF16PS treats denormal bf16 inputs as zero and flushes denormal fp32 results to zero, whatever MXCSR
// says (Intel SDM, TDPBF16PS "Exceptions"/operation notes); the emulator does the same.
inline float bf16_daz(std::uint16_t h) { return (h & 0x7F80u) == 0 ? 0.f * bf16_to_f32(h) : bf16_to_f32(h); }
inline float f32_ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.f, x) : x; }

struct EmuTile {
  alignas(64) unsigned char data[kTileRows * kTileColsB];
  int rows, colsb;
};

struct EmuState {
  EmuTile t[kTiles];
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

struct TilesPortable {
  static constexpr const char* kName = "portable";

  static void config(const TileConfig& cfg) {
    EmuState& s = emu_state();
    for (int t = 0; t < kTiles; ++t) {
      s.t[t].rows = cfg.rows[t];
      s.t[t].colsb = cfg.colsb[t];
      std::memset(s.t[t].data, 0, sizeof s.t[t].data);
    }
    s.configured = true;
  }
  static void release() { emu_state().configured = false; }

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kTiles, "tile number");
    std::memset(emu_state().t[T].data, 0, sizeof(EmuTile::data));
  }
  // Rows past `rows` and bytes past `colsb` of each row read as zero, like TILELOADD.
  template <int T>
  static void load(const void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    EmuTile& t = emu_state().t[T];
    std::memset(t.data, 0, sizeof t.data);
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(t.data + r * kTileColsB, static_cast<const unsigned char*>(p) + r * stride,
                  static_cast<std::size_t>(t.colsb));
  }
  template <int T>
  static void store(void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    const EmuTile& t = emu_state().t[T];
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(static_cast<unsigned char*>(p) + r * stride, t.data + r * kTileColsB,
                  static_cast<std::size_t>(t.colsb));
  }
  template <int C, int A, int B>
  static void dpbf16ps() {
    static_assert(C != A && C != B && A != B && C < kTiles && A < kTiles && B < kTiles, "tile numbers");
    EmuState& s = emu_state();
    emu_dpbf16ps(s.t[C], s.t[A], s.t[B]);
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
