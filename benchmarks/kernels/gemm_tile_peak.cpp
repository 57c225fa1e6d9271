// Peak of the CPU micro-GEMM tiles (csrc/include/unet_fast/cpu_gemm_kernels.h gemm_tile<MR, NV>) with A and B
// in L1/L2: GFLOP/s of one thread (CPU time, best of 5) for the AVX2 and AVX-512 register blockings tried
// for issue 16. Build and run from the repo root (needs an AVX-512 CPU for the avx512 columns):
//
//   g++ -O3 -std=c++17 -Icsrc/include benchmarks/kernels/gemm_tile_peak.cpp -o /tmp/gemm_tile_peak && /tmp/gemm_tile_peak
//
// The timing loop (gemm_tile_peak_run.inc) is written once and included in each ISA's namespace, as the
// kernels include their bodies (csrc/include/unet_fast/cpu_kernel_body.h).
//
// k = the reduction length (Cin); packedA = A as a packed [k][MR] tile (the transposed conv) instead of MR rows
// (Winograd's V).
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <vector>
#include <chrono>
#include <ctime>
#include "unet_fast/cpu_isa.h"
#include "unet_fast/epilogue.h"
static double now() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
UF_TARGET_BEGIN(UF_TARGET_AVX512)
namespace unet_fast { namespace z {
#include "unet_fast/cpu_vec_avx512.h"
constexpr int kL = 16;
#include "unet_fast/cpu_gemm_kernels.h"
#include "gemm_tile_peak_run.inc"
}}
UF_TARGET_END
UF_TARGET_BEGIN(UF_TARGET_AVX2)
namespace unet_fast { namespace y {
#include "unet_fast/cpu_vec_avx2.h"
constexpr int kL = 8;
#include "unet_fast/cpu_gemm_kernels.h"
#include "gemm_tile_peak_run.inc"
}}
UF_TARGET_END
int main() {
  for (int k : {64, 256}) for (bool pa : {false, true}) {
    int nt = 4;
    printf("k=%d packedA=%d  avx2 6x16 %.1f  4x24 %.1f | avx512 14x32 %.1f 12x32 %.1f 8x48 %.1f 6x64 %.1f 4x64 %.1f 6x32 %.1f 8x32 %.1f\n", k, pa,
      unet_fast::y::run<6,2>(k,nt,pa), unet_fast::y::run<4,3>(k,nt,pa), unet_fast::z::run<14,2>(k,nt,pa), unet_fast::z::run<12,2>(k,nt,pa), unet_fast::z::run<8,3>(k,nt,pa), unet_fast::z::run<6,4>(k,nt,pa), unet_fast::z::run<4,4>(k,nt,pa), unet_fast::z::run<6,2>(k,nt,pa), unet_fast::z::run<8,2>(k,nt,pa));
  }
}
