// AMX detection (amx/detect.h): CPUID, XCR0, and the Linux permission for the tile data state.
#include "unet_fast/amx/detect.h"

#include <string>

#include "unet_fast/cpu_isa.h"

#if defined(UF_CPU_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace unet_fast {
namespace amx {

std::string AmxSupport::reason() const {
  if (!cpuid_amx_tile) return "the CPU has no AMX-TILE (CPUID.(7,0):EDX bit 24)";
  if (!cpuid_amx_bf16) return "the CPU has no AMX-BF16 (CPUID.(7,0):EDX bit 22)";
  if (!xcr0_tile_state) return "the OS does not enable the tile state (XCR0 bits 17-18)";
  if (!os_permission) return "Linux refused the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA))";
  return "";
}

static AmxSupport detect() {
  AmxSupport s;
#ifdef UF_CPU_X86
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    s.cpuid_amx_bf16 = (d >> 22) & 1u;
    s.cpuid_amx_tile = (d >> 24) & 1u;
  }
  if (!s.cpuid_amx_tile || !s.cpuid_amx_bf16) return s;  // xgetbv's tile bits mean nothing without AMX
  s.xcr0_tile_state = (xcr0() & (3ull << 17)) == (3ull << 17);
#ifdef __linux__
  // Only after the CPUID and XCR0 checks: the request is meaningless (and fails) elsewhere.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (s.xcr0_tile_state) s.os_permission = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#endif
#endif
  return s;
}

const AmxSupport& amx_support() {
  static const AmxSupport s = detect();  // C++11 magic static: once per process, thread-safe
  return s;
}

std::string Avx512Bf16Support::reason() const {
  if (!cpuid_avx512_fbwvl) return "the CPU has no AVX-512F/BW/VL (CPUID.(7,0):EBX bits 16, 30, 31)";
  if (!xcr0_zmm_state) return "the OS does not enable the AVX-512 state (XCR0 bits 1, 2, 5, 6, 7)";
  if (!cpuid_avx512_bf16) return "the CPU has no AVX512_BF16 (CPUID.(7,1):EAX bit 5)";
  return "";
}

static Avx512Bf16Support detect_avx512bf16() {
  Avx512Bf16Support s;
#ifdef UF_CPU_X86
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    const unsigned need = (1u << 16) | (1u << 30) | (1u << 31);  // F, BW, VL
    s.cpuid_avx512_fbwvl = (b & need) == need;
  }
  s.xcr0_zmm_state = xcr0_has_zmm_state();
  s.cpuid_avx512_bf16 = cpuid_avx512_bf16();
#endif
  return s;
}

const Avx512Bf16Support& avx512bf16_support() {
  static const Avx512Bf16Support s = detect_avx512bf16();
  return s;
}

}  // namespace amx
}  // namespace unet_fast
