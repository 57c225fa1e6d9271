// The conv implicit-GEMM kernels (nvcc only), instantiated by csrc/cuda/conv2d.cu (kScatter = false) and
// csrc/cuda/conv_transpose2x2.cu (kScatter = true). All index math is in cuda_conv_tiles.h.
//
// Both kernels: 64-pixel (8 x 8) by 64-channel output tiles, two shared-memory stages (the next k-tile is
// fetched while the current one is multiplied, one __syncthreads per k-tile), and an epilogue that parks
// the fp32 tile in shared memory so stores are coalesced along channels and the fused 2x2 pool reads its
// quads from there.
//   conv_simt_kernel: fp32, 256 threads, a 4 x 4 register micro-tile per thread, FMA.
//   conv_mma_kernel:  fp16/bf16, 128 threads (2 x 2 warps of 32 x 32), mma.sync.m16n8k16 with fp32
//                     accumulators; B (packed weights) always by cp.async, A by cp.async when every view
//                     is plain and 16-byte aligned (kAsyncA), else by the generic view loader.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "unet_fast/cuda_conv_params.h"
#include "unet_fast/cuda_conv_tiles.h"

namespace unet_fast {

constexpr int kConvTH = 8, kConvTW = 8, kConvBM = kConvTH * kConvTW, kConvBN = 64;
constexpr int kSimtBK = 16, kSimtThreads = 256;
constexpr int kMmaBK = 32, kMmaThreads = 128;

// ---- cp.async (sm_80+): 16-byte global -> shared copies; src_bytes = 0 writes zeros ----

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// ---- fp32 SIMT ----

template <bool kScatter>
__global__ void __launch_bounds__(kSimtThreads) conv_simt_kernel(const ConvParams p) {
  constexpr int BM = kConvBM, BN = kConvBN, BK = kSimtBK, TW = kConvTW, TH = kConvTH;
  __shared__ __align__(16) float As[2][BK][BM + 4];  // [k][m]: a thread reads 4 consecutive rows as a float4
  __shared__ __align__(16) float Bs[2][BK][BN + 4];  // [k][n]
  __shared__ float Cs[BM][BN + 1];
  const ConvTile t = conv_tile<TH, TW, BN>(p, blockIdx.x, blockIdx.y, blockIdx.z);
  const int tid = threadIdx.x;
  const int ld_row = tid >> 2, ld_k = (tid & 3) * 4;  // loaders: one row (A) / column (B), 4 k each
  const int tm = tid >> 4, tn = tid & 15;             // compute: rows tm*4.., columns tn*4..
  const float* w = static_cast<const float*>(p.weight);
  const int nk = conv_k_tiles<BK>(p);

  auto load = [&](int kt, int buf) {
    load_a_run<float, TW, BK>(p, t, ld_row, kt, ld_k, 4, [&](int i, float v) { As[buf][ld_k + i][ld_row] = v; });
    const int col = t.col0 + ld_row;
    float4 b = make_float4(0.f, 0.f, 0.f, 0.f);
    if (col < p.gemm_n) b = *reinterpret_cast<const float4*>(w + b_offset<BK>(p, col, kt, ld_k));
    Bs[buf][ld_k + 0][ld_row] = b.x;
    Bs[buf][ld_k + 1][ld_row] = b.y;
    Bs[buf][ld_k + 2][ld_row] = b.z;
    Bs[buf][ld_k + 3][ld_row] = b.w;
  };

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  load(0, 0);
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < nk) load(kt + 1, buf ^ 1);  // the other stage was last read before the previous barrier
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&As[buf][k][tm * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[buf][k][tn * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) Cs[tm * 4 + i][tn * 4 + j] = acc[i][j];
  __syncthreads();
  for (int e = tid; e < BM * BN; e += kSimtThreads) {
    const int m = e / BN, c = e % BN;
    Cs[m][c] = conv_store<float, TW, kScatter>(p, t, m, t.col0 + c, Cs[m][c]);
  }
  if (!kScatter && p.pool != nullptr) {
    __syncthreads();
    for (int e = tid; e < (BM / 4) * BN; e += kSimtThreads)
      conv_store_pool<float, TH, TW>(p, t, e / BN, t.col0 + e % BN, &Cs[0][0], BN + 1);
  }
}

// ---- fp16 / bf16 tensor cores ----

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const std::uint32_t (&a)[4],
                                                  const std::uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const std::uint32_t (&a)[4],
                                                         const std::uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T>
__device__ __forceinline__ std::uint32_t lds32(const T* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}

template <typename T, bool kAsyncA, bool kScatter>
__global__ void __launch_bounds__(kMmaThreads) conv_mma_kernel(const ConvParams p) {
  constexpr int BM = kConvBM, BN = kConvBN, BK = kMmaBK, TW = kConvTW, TH = kConvTH;
  constexpr int LDS = BK + 8;  // +16 bytes per row: the fragment loads below hit 32 distinct banks
  __shared__ __align__(16) T As[2][BM][LDS];  // [m][k]
  __shared__ __align__(16) T Bs[2][BN][LDS];  // [n][k]: a B fragment's k-pairs are contiguous
  __shared__ float Cs[BM][BN + 4];
  const ConvTile t = conv_tile<TH, TW, BN>(p, blockIdx.x, blockIdx.y, blockIdx.z);
  const int tid = threadIdx.x;
  const int a_row = tid >> 1, a_k = (tid & 1) * 16;  // A loader: one row, 16 k
  const T* w = static_cast<const T*>(p.weight);
  const int nk = conv_k_tiles<BK>(p);

  auto load = [&](int kt, int buf) {
    if constexpr (kAsyncA) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const T* src = a_chunk_src<T, TW, BK>(p, t, a_row, kt, a_k + 8 * h);
        cp_async16(&As[buf][a_row][a_k + 8 * h], src != nullptr ? src : w, src != nullptr);
      }
    } else {
      load_a_run<T, TW, BK>(p, t, a_row, kt, a_k, 16,
                            [&](int i, float v) { As[buf][a_row][a_k + i] = from_float<T>(v); });
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // B: 64 columns x 4 chunks of 8 k = 256 chunks, 2 per thread
      const int chunk = tid + h * kMmaThreads;
      const int col = chunk >> 2, k = (chunk & 3) * 8;
      const bool ok = t.col0 + col < p.gemm_n;
      cp_async16(&Bs[buf][col][k], ok ? w + b_offset<BK>(p, t.col0 + col, kt, k) : w, ok);
    }
    cp_async_commit();
  };

  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  load(0, 0);
  cp_async_wait_all();
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < nk) load(kt + 1, buf ^ 1);  // in flight while this stage is multiplied
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      std::uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {  // m16n8k16 A fragment: rows g, g + 8; k pairs 2tq, 2tq + 8
        const T* s = &As[buf][wm + mi * 16 + g][ks + 2 * tq];
        a[mi][0] = lds32(s);
        a[mi][1] = lds32(s + 8 * LDS);
        a[mi][2] = lds32(s + 8);
        a[mi][3] = lds32(s + 8 * LDS + 8);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {  // B fragment: column g; k pairs 2tq, 2tq + 8
        const T* s = &Bs[buf][wn + ni * 8 + g][ks + 2 * tq];
        b[ni][0] = lds32(s);
        b[ni][1] = lds32(s + 8);
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_16816<T>(acc[mi][ni], a[mi], b[ni]);
    }
    cp_async_wait_all();
    __syncthreads();
  }

#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {  // accumulator: rows g, g + 8; columns 2tq, 2tq + 1
      const int r = wm + mi * 16 + g, c = wn + ni * 8 + 2 * tq;
      Cs[r][c] = acc[mi][ni][0];
      Cs[r][c + 1] = acc[mi][ni][1];
      Cs[r + 8][c] = acc[mi][ni][2];
      Cs[r + 8][c + 1] = acc[mi][ni][3];
    }
  __syncthreads();
  for (int e = tid; e < BM * BN; e += kMmaThreads) {
    const int m = e / BN, c = e % BN;
    Cs[m][c] = conv_store<T, TW, kScatter>(p, t, m, t.col0 + c, Cs[m][c]);
  }
  if (!kScatter && p.pool != nullptr) {
    __syncthreads();
    for (int e = tid; e < (BM / 4) * BN; e += kMmaThreads)
      conv_store_pool<T, TH, TW>(p, t, e / BN, t.col0 + e % BN, &Cs[0][0], BN + 4);
  }
}

// Grid: spatial tiles x column tiles x batch. Returns the variant that ran (tests and `info` report it).
template <bool kScatter>
const char* launch_conv_kernels(int dtype, ConvParams p, cudaStream_t stream) {
  const ConvGrid g = conv_grid(&p, kConvTH, kConvTW, kConvBN);
  const dim3 grid(g.x, g.y, g.z);
  const bool async_a = conv_async_a_ok(p, 2);
  switch (dtype) {
    case 0:
      conv_simt_kernel<kScatter><<<grid, kSimtThreads, 0, stream>>>(p);
      return "simt_f32";
    case 1:
      if (async_a) {
        conv_mma_kernel<__half, true, kScatter><<<grid, kMmaThreads, 0, stream>>>(p);
        return "mma_f16_async";
      }
      conv_mma_kernel<__half, false, kScatter><<<grid, kMmaThreads, 0, stream>>>(p);
      return "mma_f16";
    default:
      if (async_a) {
        conv_mma_kernel<__nv_bfloat16, true, kScatter><<<grid, kMmaThreads, 0, stream>>>(p);
        return "mma_bf16_async";
      }
      conv_mma_kernel<__nv_bfloat16, false, kScatter><<<grid, kMmaThreads, 0, stream>>>(p);
      return "mma_bf16";
  }
}

}  // namespace unet_fast
