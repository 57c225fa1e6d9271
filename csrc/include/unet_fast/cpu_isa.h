// The CPU kernel variant table: every build of the kernel bodies, in one table (issue 24).
//
// Two kinds of rows, one table. A *vector* variant is the fp32 op bodies (csrc/include/unet_fast/
// cpu_kernel_body.h: Winograd on fp32 or bf16 activations, transposed conv, head, gather, max-pool,
// activation) written once over a vector type and a register blocking and compiled in its own translation
// unit (csrc/cpu/variants/<id>.cpp) under the row's `#pragma GCC target`. A *tiles* variant is a build of the
// bf16 tile ops (csrc/include/unet_fast/amx/conv_bf16_body.h: the bf16 conv, transposed conv and head's 1x1)
// over one tile interface: the portable emulator, native AMX, or AVX512-BF16. The wheel has no
// -march=native: a row runs only where `detect` says the CPU *and the OS* support it.
//
// Everything that lists variants reads this table: the dispatch (`cpu_variant(index)` for vector rows,
// `tile_variant(index)` for tile rows), `unet_fast._C.cpu_isa_table()` (name, kind, ISA, detection, dtypes,
// ops and blocking per row), its Python mirror unet_fast/kernels/cpu_isa.py (from which the kernel registry,
// kernels/registry.py, registers one implementation per row and op), `unet-fast info`, and the tests'
// parametrisation (every runnable row).
//
// Adding a vector variant = one row (+ its UF_TARGET_* macro) and one file csrc/cpu/variants/<id>.cpp that
// defines its Vec type and blocking and includes the shared body. Adding a tile backend (or an int8 one) =
// one row and the file that instantiates the tile body over its tile interface, defining tile_ops_<id>().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "unet_fast/amx/detect.h"
#include "unet_fast/checks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define UF_CPU_X86 1
#endif

// Compiler target options per variant: the only place they are spelled (variant files use these macros).
#define UF_TARGET_AVX2 "avx2,fma"
#define UF_TARGET_AVX512 "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"
// The AMX bf16 tile backend (amx/tile_amx.h; its detection also asks Linux for the tile state: amx/detect.h).
#define UF_TARGET_AMX "amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma"
// The bf16 tile backend on AVX512-BF16 (VDPBF16PS; amx/tile_avx512bf16.h).
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

// The table. X(id, name, kind, target, isa, rank, emulator, detect, reason):
//   id        the namespace / file / accessor (ops_<id> for VECTOR rows, tile_ops_<id> for TILES rows)
//   name      the Python-visible name (unique within a kind: "portable" names a vector and a tile row)
//   kind      VECTOR | TILES
//   target    compiler target options ("" = the baseline target)
//   isa       what the CPU must have, in words (named by `unet-fast info` and the report)
//   rank      the auto choice within a kind: the highest runnable wins (portable16 exists to test the
//             16-lane blocking everywhere, so it ranks below the 8-lane portable variant)
//   emulator  true for a build that computes what hardware it lacks would (the portable tile emulator):
//             tests run it everywhere, the kernel registry never picks it for speed
//   detect    a bool expression: this CPU and OS run the row
//   reason    a std::string expression: why not ("" when it runs)
// Order = the C++ `isa` / `backend` index the ops take.
// Vector rows first, so their index is the same whatever tile rows a platform has.
#define UF_NO_REASON(detect, text) ((detect) ? std::string() : std::string(text))
#ifdef UF_CPU_X86
#define UF_VECTOR_VARIANTS(X)                                                                                \
  X(portable, "portable", VECTOR, "", "baseline (SSE2)", 1, false, true, std::string())                    \
  X(portable16, "portable16", VECTOR, "", "baseline (SSE2)", 0, false, true, std::string())                \
  X(avx2, "avx2", VECTOR, UF_TARGET_AVX2, "AVX2 + FMA", 2, false, ::unet_fast::cpu_has_avx2(),              \
    UF_NO_REASON(::unet_fast::cpu_has_avx2(), "the CPU or OS lacks AVX2 + FMA (CPUID, XCR0 bits 1-2)"))     \
  X(avx512, "avx512", VECTOR, UF_TARGET_AVX512, "AVX-512 F/DQ/BW/VL", 3, false,                            \
    ::unet_fast::cpu_has_avx512(),                                                                           \
    UF_NO_REASON(::unet_fast::cpu_has_avx512(),                                                              \
                 "the CPU or OS lacks AVX-512 F/DQ/BW/VL (CPUID, XCR0 bits 5-7)"))
#define UF_TILE_VARIANTS(X)                                                                                  \
  X(tiles_portable, "portable", TILES, "", "any CPU (emulates AMX TDPBF16PS)", 0, true, true, std::string()) \
  X(amx, "amx", TILES, UF_TARGET_AMX, "AMX-BF16 + AMX-TILE", 2, false,                                     \
    ::unet_fast::amx::amx_support().runnable(), ::unet_fast::amx::amx_support().reason())                    \
  X(avx512bf16, "avx512bf16", TILES, UF_TARGET_AVX512BF16, "AVX512-BF16 (VDPBF16PS)", 1, false,             \
    ::unet_fast::amx::avx512bf16_support().runnable(), ::unet_fast::amx::avx512bf16_support().reason())
#else
#define UF_VECTOR_VARIANTS(X)                                                                                \
  X(portable, "portable", VECTOR, "", "baseline", 1, false, true, std::string())                           \
  X(portable16, "portable16", VECTOR, "", "baseline", 0, false, true, std::string())
#define UF_TILE_VARIANTS(X)                                                                                  \
  X(tiles_portable, "portable", TILES, "", "any CPU (emulates AMX TDPBF16PS)", 0, true, true, std::string())
#endif
#define UF_CPU_VARIANTS(X) UF_VECTOR_VARIANTS(X) UF_TILE_VARIANTS(X)

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

struct CpuVariantOps;  // cpu_variant.h: the kernel entry points of one vector variant
namespace amx {
struct TileOps;  // amx/conv_bf16.h: the entry points and tile blocking of one tile backend
}

enum class VariantKind : int { kVector = 0, kTiles = 1 };

// One table row (see UF_CPU_VARIANTS).
struct CpuVariant {
  const char* name;
  VariantKind kind;
  const char* target;  // compiler target options ("" = baseline)
  const char* isa;     // what the CPU needs, in words
  int rank;
  bool emulator;
  bool (*detect)();
  std::string (*reason)();
  const CpuVariantOps* (*vector_ops)();  // kVector rows, else null
  const amx::TileOps* (*tile_ops)();     // kTiles rows, else null
};

// Each row's entry points: ops_<id>() in csrc/cpu/variants/<id>.cpp, tile_ops_<id>() beside its tile body.
#define UF_DECLARE_VECTOR(id) const CpuVariantOps& ops_##id();
#define UF_DECLARE_TILES(id) const amx::TileOps& tile_ops_##id();
#define UF_DECLARE_OPS(id, name, kind, target, isa, rank, emulator, detect, reason) UF_DECLARE_##kind(id)
UF_CPU_VARIANTS(UF_DECLARE_OPS)
#undef UF_DECLARE_OPS
#undef UF_DECLARE_TILES
#undef UF_DECLARE_VECTOR

// The table, in row order (defined in csrc/cpu/cpu_isa.cpp).
const std::vector<CpuVariant>& cpu_variants();

// Whether this CPU and OS can run row `index` (detected once).
bool cpu_variant_runnable(int index);

// The entry points of vector row `isa`; an unknown, non-vector or unrunnable index is a ValueError. Every
// fp32 op calls this before releasing the GIL.
const CpuVariantOps& cpu_variant(int isa);

// The entry points of tile row `backend`; an unknown, non-tile or unrunnable index is a ValueError. Every
// bf16 tile op calls this before releasing the GIL.
const amx::TileOps& tile_variant(int backend);

// Names of the runnable vector variants, table order.
std::vector<std::string> available_isas();

}  // namespace unet_fast
