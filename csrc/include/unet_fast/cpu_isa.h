// Run-time choice between the two builds of a CPU kernel body (portable Vec, AVX2+FMA Vec): the wheel has no
// -march=native, so the AVX2 body is compiled under `#pragma GCC target` and picked when the CPU has it.
// The launchers' `isa` argument can force either, so tests check both against the reference.
#pragma once

#include <string>
#include <vector>

#include "unet_fast/checks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define UF_CPU_X86 1
#endif

namespace unet_fast {

enum class Isa : int { kAuto = 0, kPortable = 1, kAvx2 = 2 };

inline bool has_avx2() {
#ifdef UF_CPU_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// Names of the variants this CPU can run, in Isa order: what the Python launchers offer as `isa`.
inline std::vector<std::string> available_isas() {
  std::vector<std::string> isas{"portable"};
  if (has_avx2()) isas.emplace_back("avx2");
  return isas;
}

// The AVX2 body for kAvx2, or for kAuto on a CPU that has it. Checks `isa` first (every op taking it calls
// this before releasing the GIL, so a bad value is a ValueError).
inline bool use_avx2(int isa) {
  UF_CHECK(isa >= 0 && isa <= 2, "unknown isa " << isa);
  UF_CHECK(isa != static_cast<int>(Isa::kAvx2) || has_avx2(), "the avx2 path needs a CPU with AVX2 and FMA");
  return isa == static_cast<int>(Isa::kAvx2) || (isa == static_cast<int>(Isa::kAuto) && has_avx2());
}

}  // namespace unet_fast
