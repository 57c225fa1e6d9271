// The CPU kernel variant registry: every build of the kernel bodies, in one table.
//
// Each C++ CPU kernel body is written once (csrc/include/unet_fast/cpu_kernel_body.h) over a vector type
// and a register blocking, and compiled once per registry entry in its own translation unit
// (csrc/cpu/variants/<id>.cpp) under the entry's `#pragma GCC target`. The wheel has no -march=native: the
// variant runs only when `detect` says the CPU *and the OS* support it. Everything that lists variants
// reads this table: the dispatch (`cpu_variant(index)`), `unet_fast._C.cpu_isa_table()` / `cpu_isas()`,
// unet_fast/kernels/cpu_isa.py, `unet-fast info`, and the tests' parametrisation.
//
// Adding a variant = one UF_CPU_VARIANTS line (+ its target macro) and one file csrc/cpu/variants/<id>.cpp
// that defines its Vec type and blocking and includes the shared body.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "unet_fast/checks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define UF_CPU_X86 1
#endif

// Compiler target options per variant: the only place they are spelled (variant files use these macros).
#define UF_TARGET_AVX2 "avx2,fma"
#define UF_TARGET_AVX512 "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"
// Reserved for issue 17 (not registered yet: no kernels): AMX bf16 tiles, whose detection must also ask
// Linux for the tile state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) and check XCR0 bits 17-18.
#define UF_TARGET_AMX "amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma"
// The bf16 tile backend on AVX512-BF16 (VDPBF16PS; amx/tile_avx512bf16.h): a tile backend, not an fp32 variant.
#define UF_TARGET_AVX512BF16 "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"

// Every Vec operation (cpu_vec_*.h) is forced inline: the head's row functions carry
// optimize("no-trapping-math") (pixel_ops.h UF_NO_TRAP), and GCC does not otherwise inline across differing
// optimize attributes, which left each vector load and FMA a call (3x slower).
#define UF_VEC_INLINE __attribute__((always_inline)) inline

// Open and close a variant's target region (the `target` is one of the macros above; portable variants
// use no region: they compile for the baseline target).
#define UF_PRAGMA(x) _Pragma(#x)
#define UF_TARGET_BEGIN(flags) _Pragma("GCC push_options") UF_PRAGMA(GCC target(flags))
#define UF_TARGET_END _Pragma("GCC pop_options")

// The registry. X(id, target, rank, detect): `id` names the namespace/file and the Python-visible name;
// `rank` orders the auto choice (highest runnable wins; the portable 16-lane variant exists to test the
// 16-lane blocking everywhere, so it ranks below the 8-lane portable one); `detect` is a bool expression.
// Order = the C++ `isa` index. An entry's kernels must exist (csrc/cpu/variants/<id>.cpp).
#ifdef UF_CPU_X86
#define UF_CPU_VARIANTS(X)                                         \
  X(portable, "", 1, true)                                         \
  X(portable16, "", 0, true)                                       \
  X(avx2, UF_TARGET_AVX2, 2, ::unet_fast::cpu_has_avx2())          \
  X(avx512, UF_TARGET_AVX512, 3, ::unet_fast::cpu_has_avx512())
// X(amx, UF_TARGET_AMX, 4, ::unet_fast::cpu_has_amx())  -- issue 17
#else
#define UF_CPU_VARIANTS(X) \
  X(portable, "", 1, true) \
  X(portable16, "", 0, true)
#endif

namespace unet_fast {

#ifdef UF_CPU_X86
// XCR0: which register states the OS saves on a context switch (read with xgetbv; valid only when
// CPUID.1:ECX.OSXSAVE says the OS enabled it). Without those bits the instructions fault even on a CPU
// that has them (e.g. a kernel booted with AVX-512 state disabled).
inline std::uint64_t xcr0() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

// The AVX-512 register state: XMM, YMM, opmask (bit 5), ZMM0-15 upper halves (6), ZMM16-31 (7).
inline bool xcr0_has_zmm_state() { return (xcr0() & 0xE6) == 0xE6; }

inline bool cpu_has_avx2() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 12))) return false;  // FMA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 5))) return false;  // AVX2
  return (xcr0() & 0x6) == 0x6;  // XMM (bit 1) and YMM (bit 2) state
}

inline bool cpu_has_avx512() {
  if (!cpu_has_avx2()) return false;
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const unsigned need = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);  // F, DQ, BW, VL
  if ((b & need) != need) return false;
  return xcr0_has_zmm_state();
}

// CPUID.(7,1):EAX bit 5: AVX512_BF16 (VCVTNE2PS2BF16, VCVTNEPS2BF16, VDPBF16PS). Only the CPUID bit; the
// bf16 tile backend's full check (AVX-512F/BW/VL and the XCR0 state too) is amx::avx512bf16_support().
inline bool cpuid_avx512_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1) return false;  // leaf 7's highest subleaf
  return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1u);
}
#endif

struct CpuVariantOps;  // cpu_variant.h: the kernel entry points of one variant

// One registry entry with what its kernels report about themselves (vector width and register blocking:
// the packed weight layouts follow the blocking, so Python packs per variant).
struct CpuVariant {
  const char* name;
  const char* target;  // compiler target options ("" = baseline)
  int rank;
  bool (*detect)();
  const CpuVariantOps& (*ops)();
};

// Each variant's entry points, defined in csrc/cpu/variants/<id>.cpp.
#define UF_DECLARE_OPS(id, target, rank, detect) const CpuVariantOps& ops_##id();
UF_CPU_VARIANTS(UF_DECLARE_OPS)
#undef UF_DECLARE_OPS

// The table, in registry order (defined in csrc/cpu/cpu_isa.cpp).
const std::vector<CpuVariant>& cpu_variants();

// Whether this CPU and OS can run variant `isa` (detected once).
bool cpu_variant_runnable(int isa);

// The entry points of variant `isa` (an index into cpu_variants()); an unknown or unrunnable index is a
// ValueError. Every op calls this before releasing the GIL.
const CpuVariantOps& cpu_variant(int isa);

// Names of the runnable variants, registry order.
std::vector<std::string> available_isas();

}  // namespace unet_fast
