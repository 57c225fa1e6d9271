// AMX detection (amx/detect.h): CPUID, XCR0, and the Linux permission for the tile data state.
#include "unet_fast/amx/detect.h"

#include <string>

#include "unet_fast/cpu_isa.h"

#include <cerrno>
#include <cstdint>

#if defined(UF_CPU_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace unet_fast {
namespace amx {

std::string AmxSupport::reason() const {
  if (!cpuid_amx_tile) return "the CPU has no AMX-TILE (CPUID.(7,0):EDX bit 24)";
  if (!cpuid_amx_bf16) return "the CPU has no AMX-BF16 (CPUID.(7,0):EDX bit 22)";
  if (!avx512_state)
    return "the amx build also runs AVX-512 code (F/DQ/BW/VL and AVX512_BF16: CPUID.(7,0):EBX, CPUID.(7,1):EAX bit 5), "
           "which this CPU or OS lacks (or XCR0 bits 5-7 are off)";
  if (!xcr0_tile_state) return "the OS does not enable the tile state (XCR0 bits 17-18)";
  if (!os_permission) {
    std::string why = "Linux refused the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA))";
    if (perm_errno == ENOSPC)
      why += ": ENOSPC, a thread's sigaltstack is smaller than the AMX signal frame (getauxval(AT_MINSIGSTKSZ); "
             "e.g. the faulthandler of a CPython without the fix of bpo-46968)";
    else if (perm_errno == EINVAL)
      why += ": EINVAL, the kernel does not support dynamic AMX state (Linux >= 5.16 does) or not this feature";
    else if (perm_errno == EPERM)
      why += ": EPERM";
    else if (perm_errno == -1)
      why += ": granted, but ARCH_GET_XCOMP_PERM does not list XTILEDATA (bit 18)";
    else if (perm_errno != 0)
      why += ": errno " + std::to_string(perm_errno);
    return why;
  }
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
  s.avx512_state = cpu_has_avx512() && cpuid_avx512_bf16();
  if (!s.avx512_state) return s;
  s.xcr0_tile_state = (xcr0() & (3ull << 17)) == (3ull << 17);
#ifdef __linux__
  // Only after the CPUID and XCR0 checks: the request is meaningless (and fails) elsewhere. Idempotent
  // (oneDNN in the same process asks too); per process, so one request covers every thread, and it runs
  // (amx_support() is a magic static every binding reaches through backend_at) before any tile instruction.
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (s.xcr0_tile_state) {
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      s.perm_errno = errno;
    } else {
      // Confirm, as the kernel's selftest (tools/testing/selftests/x86/amx.c) does.
      std::uint64_t perm = 0;
      const bool got = syscall(SYS_arch_prctl, kArchGetXcompPerm, &perm) == 0;
      s.os_permission = got && ((perm >> kXfeatureXtiledata) & 1u);
      if (!s.os_permission) s.perm_errno = got ? -1 : errno;
    }
  }
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
