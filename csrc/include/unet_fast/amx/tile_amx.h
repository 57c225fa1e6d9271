// The native AMX implementation of the tile interface (amx/tile.h). Include ONLY inside a region compiled
// for UF_TARGET_AMX (csrc/cpu/amx/conv_bf16_amx.cpp), and run only where cpu_has_amx() (amx/detect.h) said
// yes, in a process where it requested the tile state from Linux.
//
// Two GCC 12 traps shape this file (shared/CPU_NOTES.md): its _tile_loadconfig declares an 8-byte memory
// operand (*(const void**)p), so at -O2 the stores that fill the other 56 bytes of the config may be
// dropped as dead (ldtilecfg then reads stale bytes and faults) -- so ldtilecfg is written here as inline
// asm whose "m" operand is the whole 64-byte TileConfig: the compiler then knows the instruction reads
// every byte, by the operand's type, not by an escape analysis a barrier would rely on (a plain
// `asm("" ::: "memory")` before the intrinsic does not cover a local whose address never escapes); and its
// _tile_loadd / _tile_stored macros stringify their tile
// argument (a template parameter would become "tmmT") and declare no memory access, so the tile operations
// are written here as inline asm whose tile number is an "i" constant (%c prints it bare) and which clobber
// memory (a staging buffer written just before a tile load, or read just after a tile store, stays ordered).
#pragma once

#include <cstdint>

#include "unet_fast/amx/tile.h"

namespace unet_fast {
namespace amx {

struct TilesAmx {
  static constexpr const char* kName = "amx";

  static void config(const TileConfig& cfg) { __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory"); }
  static void release() { __asm__ volatile("tilerelease" ::: "memory"); }

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kTiles, "tile number");
    __asm__ volatile("tilezero %%tmm%c0" ::"i"(T));
  }
  template <int T>
  static void load(const void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int T>
  static void store(void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int C, int A, int B>
  static void dpbf16ps() {
    static_assert(C != A && C != B && A != B && C < kTiles && A < kTiles && B < kTiles, "tile numbers");
    __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
  }
};

}  // namespace amx
}  // namespace unet_fast
