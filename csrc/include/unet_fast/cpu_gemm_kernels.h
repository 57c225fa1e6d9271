// The pieces of a register-blocked fp32 GEMM the CPU kernels share, written once over `Vec` and compiled
// once per ISA: partial loads/stores, the 6x16 microkernel, the vector conv epilogue.
//
// No include guard on purpose: included inside a per-ISA namespace after cpu_vec_{portable,avx2}.h, like the
// kernel bodies that use it (winograd_kernels.h, conv_transpose_kernels.h). It includes nothing itself: the
// .cpp includes <cstdint> and unet_fast/epilogue.h first.

constexpr int kMR = 6;   // tiles per microkernel call: 6 x 2 accumulators + 2 B vectors + 1 broadcast
constexpr int kNR = 16;  // output channels per microkernel call (two vectors; the packed weight's block)

inline Vec load_n(const float* p, int n) {
  if (n == kL) return Vec::load(p);
  float t[kL] = {};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return Vec::load(t);
}

// Partial stores never touch the lanes past n: the next view of a virtual concat lives there.
inline void store_n(float* p, const Vec& v, int n) {
  if (n == kL) {
    v.store(p);
    return;
  }
  float t[kL];
  v.store(t);
  for (int i = 0; i < n; ++i) p[i] = t[i];
}

// C[kMR x 16] = A[kMR x k] * B[k x 16] (packed, contiguous), A[r][kk] at a + r * lda + kk * ka: rows lda
// apart (ka = 1), or a packed [k][kMR] tile (lda = 1, ka = kMR: one sequential stream for the broadcasts).
// Not inlined: inside the block loops the compiler ran out of integer registers and kept the row pointers
// on the stack.
__attribute__((noinline)) void gemm_6x16(const float* a, std::int64_t lda, const float* b, float* c,
                                          std::int64_t ldc, int k, std::int64_t ka = 1) {
  // Twelve named accumulators, not arrays: GCC zeroed accumulator arrays with `rep stos` on the stack
  // (~10% of a Cin = 128 call) before promoting them to registers.
  Vec c00 = Vec::zero(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  Vec c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int kk = 0; kk < k; ++kk, a += ka, b += kNR) {
    const Vec b0 = Vec::load(b), b1 = Vec::load(b + kL);
    Vec x = Vec::bcast(a[0]);
    c00 = fmadd(x, b0, c00);
    c01 = fmadd(x, b1, c01);
    x = Vec::bcast(a[lda]);
    c10 = fmadd(x, b0, c10);
    c11 = fmadd(x, b1, c11);
    x = Vec::bcast(a[2 * lda]);
    c20 = fmadd(x, b0, c20);
    c21 = fmadd(x, b1, c21);
    x = Vec::bcast(a[3 * lda]);
    c30 = fmadd(x, b0, c30);
    c31 = fmadd(x, b1, c31);
    x = Vec::bcast(a[4 * lda]);
    c40 = fmadd(x, b0, c40);
    c41 = fmadd(x, b1, c41);
    x = Vec::bcast(a[5 * lda]);
    c50 = fmadd(x, b0, c50);
    c51 = fmadd(x, b1, c51);
  }
  c00.store(c);
  c01.store(c + kL);
  c10.store(c + ldc);
  c11.store(c + ldc + kL);
  c20.store(c + 2 * ldc);
  c21.store(c + 2 * ldc + kL);
  c30.store(c + 3 * ldc);
  c31.store(c + 3 * ldc + kL);
  c40.store(c + 4 * ldc);
  c41.store(c + 4 * ldc + kL);
  c50.store(c + 5 * ldc);
  c51.store(c + 5 * ldc + kL);
}

// y = act(acc + bias + residual) on kL lanes, the same math as unet_fast::epilogue (epilogue.h):
// relu and leaky relu as selects (NaN takes the "not > 0" branch there too), SiLU lane by lane.
inline Vec epilogue_v(const Vec& acc, const Vec& bias, const float* res, int nl, const Epilogue& e) {
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

