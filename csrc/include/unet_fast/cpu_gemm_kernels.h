// The pieces of a register-blocked fp32 GEMM the CPU kernels share, written once over `Vec` and compiled
// once per variant: partial loads/stores, the MR x (NV vectors) microkernel, the vector conv epilogue.
//
// No include guard on purpose: included inside a variant's namespace by cpu_kernel_body.h, after the
// variant's Vec (cpu_vec_*.h) and `kL`. It includes nothing itself: the variant file includes <cstdint> and
// unet_fast/epilogue.h first.

UF_VEC_INLINE Vec load_n(const float* p, int n) { return Vec::load_n(p, n); }

// Partial stores never touch the lanes past n: the next view of a virtual concat lives there.
UF_VEC_INLINE void store_n(float* p, const Vec& v, int n) { v.store_n(p, n); }

// The same on bf16 storage (raw bits): exact widening on load, one round-to-nearest-even on store.
UF_VEC_INLINE Vec load_n(const std::uint16_t* p, int n) { return Vec::load_bf16_n(p, n); }
UF_VEC_INLINE void store_n(std::uint16_t* p, const Vec& v, int n) { v.store_bf16_n(p, n); }

// C[MR x NV*kL] = A[MR x k] * B[k x NV*kL] (B packed, contiguous), A[r][kk] at a + r * lda + kk * ka: rows
// lda apart (ka = 1), or a packed [k][MR] tile (lda = 1, ka = MR: one sequential stream for the broadcasts).
// MR * NV accumulators + NV B vectors + 1 broadcast must fit the register file (16 ymm: 6 x 2; 32 zmm: up to
// 14 x 2, 8 x 3, 6 x 4). The loops over MR and NV are fully unrolled, so the accumulator array is promoted
// to registers (checked in the assembly: no stack traffic in the k loop). Not inlined: inside the block
// loops the compiler ran out of integer registers and kept the row pointers on the stack.
// kAcc: C += A * B instead of C = A * B (a reduction split into chunks: each chunk's sum is added to C).
template <int MR, int NV, bool kAcc = false>
__attribute__((noinline)) void gemm_tile(const float* a, std::int64_t lda, const float* b, float* c,
                                          std::int64_t ldc, int k, std::int64_t ka = 1) {
  constexpr int NR = NV * kL;
  Vec acc[MR * NV];
#pragma GCC unroll 64
  for (int i = 0; i < MR * NV; ++i) acc[i] = Vec::zero();
  for (int kk = 0; kk < k; ++kk, a += ka, b += NR) {
    Vec bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = Vec::load(b + j * kL);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const Vec x = Vec::bcast(a[i * lda]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i * NV + j] = fmadd(x, bv[j], acc[i * NV + j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      if constexpr (kAcc) acc[i * NV + j] = Vec::load(c + i * ldc + j * kL) + acc[i * NV + j];
      acc[i * NV + j].store(c + i * ldc + j * kL);
    }
}

// The same product for `rows` < 16 rows (a block's last, partial micro-tile), as tiles of 8, 4, 2 and 1 rows:
// no work on rows that do not exist (with 14-row tiles, a 16-tile layer would otherwise compute 28 rows;
// with 6-row tiles, 18).
template <int NV, bool kAcc = false>
inline void gemm_rows(int rows, const float* a, std::int64_t lda, const float* b, float* c, std::int64_t ldc, int k,
                      std::int64_t ka = 1) {
  if (rows & 8) {
    gemm_tile<8, NV, kAcc>(a, lda, b, c, ldc, k, ka);
    a += 8 * lda, c += 8 * ldc;
  }
  if (rows & 4) {
    gemm_tile<4, NV, kAcc>(a, lda, b, c, ldc, k, ka);
    a += 4 * lda, c += 4 * ldc;
  }
  if (rows & 2) {
    gemm_tile<2, NV, kAcc>(a, lda, b, c, ldc, k, ka);
    a += 2 * lda, c += 2 * ldc;
  }
  if (rows & 1) gemm_tile<1, NV, kAcc>(a, lda, b, c, ldc, k, ka);
}

// y = act(acc + bias + residual) on kL lanes, the same math as unet_fast::epilogue (epilogue.h):
// relu and leaky relu as selects (NaN takes the "not > 0" branch there too), SiLU lane by lane. The residual
// is fp32 or bf16 bits (R = float or std::uint16_t), widened exactly.
template <typename R>
inline Vec epilogue_v(const Vec& acc, const Vec& bias, const R* res, int nl, const Epilogue& e) {
  Vec y = acc + bias;
  if (res) y = y + load_n(res, nl);
  switch (e.act) {
    case Act::kRelu:
      return select_pos(y, Vec::zero());
    case Act::kLeakyRelu:
      return select_pos(y, y * Vec::bcast(e.negative_slope));
    case Act::kSilu: {
      float t[kL];
      y.store(t);
      for (int l = 0; l < kL; ++l) t[l] = apply_act(t[l], e.act, e.negative_slope);
      return Vec::load(t);
    }
    default:
      return y;
  }
}
