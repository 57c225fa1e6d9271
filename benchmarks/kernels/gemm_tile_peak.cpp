// Peak of the CPU micro-GEMM tiles (csrc/include/unet_fast/cpu_gemm_kernels.h gemm_tile<MR, NV>) with A and B
// in L1/L2: GFLOP/s of one thread (CPU time, best of 5) for the AVX2 and AVX-512 register blockings tried
// for issue 16. Build and run from the repo root (needs an AVX-512 CPU for the avx512 columns):
//
//   g++ -O3 -std=c++17 -Icsrc/include benchmarks/kernels/gemm_tile_peak.cpp -o /tmp/gemm_tile_peak && /tmp/gemm_tile_peak
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
template <int MR, int NV> double run(int k, int ntiles, bool packedA) {
  constexpr int NR = NV * kL;
  std::vector<float> a(ntiles * MR * k + 64, 1.0f), b(k * NR, 0.5f), c(ntiles * MR * NR);
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now();
    for (int it = 0; it < 200; ++it)
      for (int t = 0; t < ntiles; ++t)
        if (packedA) gemm_tile<MR, NV>(a.data() + t * MR * k, 1, b.data(), c.data() + t * MR * NR, NR, k, MR);
        else gemm_tile<MR, NV>(a.data() + t * MR * k, k, b.data(), c.data() + t * MR * NR, NR, k, 1);
    double dt = now() - t0; if (dt < best) best = dt;
  }
  return 2.0 * MR * NR * k * ntiles * 200 / best / 1e9;
}
}}
UF_TARGET_END
UF_TARGET_BEGIN(UF_TARGET_AVX2)
namespace unet_fast { namespace y {
#include "unet_fast/cpu_vec_avx2.h"
constexpr int kL = 8;
#include "unet_fast/cpu_gemm_kernels.h"
template <int MR, int NV> double run(int k, int ntiles, bool packedA) {
  constexpr int NR = NV * kL;
  std::vector<float> a(ntiles * MR * k + 64, 1.0f), b(k * NR, 0.5f), c(ntiles * MR * NR);
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now();
    for (int it = 0; it < 200; ++it)
      for (int t = 0; t < ntiles; ++t)
        if (packedA) gemm_tile<MR, NV>(a.data() + t * MR * k, 1, b.data(), c.data() + t * MR * NR, NR, k, MR);
        else gemm_tile<MR, NV>(a.data() + t * MR * k, k, b.data(), c.data() + t * MR * NR, NR, k, 1);
    double dt = now() - t0; if (dt < best) best = dt;
  }
  return 2.0 * MR * NR * k * ntiles * 200 / best / 1e9;
}
}}
UF_TARGET_END
int main() {
  for (int k : {64, 256}) for (bool pa : {false, true}) {
    int nt = 4;
    printf("k=%d packedA=%d  avx2 6x16 %.1f  4x24 %.1f | avx512 14x32 %.1f 12x32 %.1f 8x48 %.1f 6x64 %.1f 4x64 %.1f 6x32 %.1f 8x32 %.1f\n", k, pa,
      unet_fast::y::run<6,2>(k,nt,pa), unet_fast::y::run<4,3>(k,nt,pa), unet_fast::z::run<14,2>(k,nt,pa), unet_fast::z::run<12,2>(k,nt,pa), unet_fast::z::run<8,3>(k,nt,pa), unet_fast::z::run<6,4>(k,nt,pa), unet_fast::z::run<4,4>(k,nt,pa), unet_fast::z::run<6,2>(k,nt,pa), unet_fast::z::run<8,2>(k,nt,pa));
  }
}
