// Whether this CPU and OS can run AMX bf16 tiles (csrc/cpu/amx/detect.cpp). Four conditions, all needed:
// CPUID.(7,0):EDX has AMX-BF16 (bit 22) and AMX-TILE (bit 24); the AVX-512 the amx build's code also uses
// (it is compiled under UF_TARGET_AMX, which includes AVX-512F/DQ/BW/VL/BF16, and GCC does emit zmm moves
// there: cpu_has_avx512() and AVX512_BF16, CPUID and XCR0 bits 5-7); XCR0 has TILECFG and TILEDATA (bits
// 17-18, the OS saves the tile state); and Linux grants this process the tile data state
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once per process, before any tile
// instruction in any thread, and confirmed with ARCH_GET_XCOMP_PERM; without it the first tile instruction
// raises SIGILL). The permission is the process's: inherited on fork, cleared on exec
// (Documentation/arch/x86/xstate.rst).
#pragma once

#include <string>

namespace unet_fast {
namespace amx {

struct AmxSupport {
  bool cpuid_amx_bf16 = false, cpuid_amx_tile = false, avx512_state = false, xcr0_tile_state = false,
       os_permission = false;
  int perm_errno = 0;  // errno of a refused ARCH_REQ_XCOMP_PERM (0: granted, or not asked)
  bool runnable() const {
    return cpuid_amx_bf16 && cpuid_amx_tile && avx512_state && xcr0_tile_state && os_permission;
  }
  std::string reason() const;  // "" when runnable, else the first condition that failed
};

// Detected (and the permission requested) once per process; thread-safe.
const AmxSupport& amx_support();

inline bool cpu_has_amx() { return amx_support().runnable(); }

// Whether this CPU and OS can run the AVX512-BF16 tile backend (amx/tile_avx512bf16.h): CPUID.(7,0):EBX
// AVX-512F (bit 16), BW (bit 30), VL (bit 31); XCR0 bits 1, 2, 5, 6, 7 (XMM, YMM, opmask, ZMM state: the
// OS saves the AVX-512 registers); CPUID.(7,1):EAX AVX512_BF16 (bit 5).
struct Avx512Bf16Support {
  bool cpuid_avx512_fbwvl = false, xcr0_zmm_state = false, cpuid_avx512_bf16 = false;
  bool runnable() const { return cpuid_avx512_fbwvl && xcr0_zmm_state && cpuid_avx512_bf16; }
  std::string reason() const;  // "" when runnable, else the first condition that failed
};

// Detected once per process; thread-safe.
const Avx512Bf16Support& avx512bf16_support();

}  // namespace amx
}  // namespace unet_fast
