// Winograd F(m x m, 3x3) kernel body (m = TM = 4 or 6), written once over a vector type and compiled once per
// variant; every function below is a template over TM, and F(4x4) and F(6x6) share all but the transforms.
//
// No include guard on purpose: cpu_kernel_body.h includes this file inside each variant's namespace, after
// the variant's `Vec`, its Winograd blocking (kWinoMR tiles x kWinoNR = kWinoNV vectors of output channels;
// NR = NV * kL below: kWinoNR, or one vector for a narrow conv)
// and cpu_gemm_kernels.h (gemm_tile, load_n / store_n, epilogue_v). It includes nothing itself: the variant
// file includes the standard headers and unet_fast/{winograd_conv,epilogue,resample}.h first.
//
// Work decomposition (docs/winograd.md): tiles are TM x TM output blocks, numbered over (n, tile_y, tile_x).
// With kA = TM + 2 (the input tile edge) and kP = kA * kA points: a block of T tiles is input-transformed into
// V[kP][T][ldv] (channels contiguous), then, per chunk of output channels, kP GEMMs V[p] (T x Cin) * U[p]
// (Cin x chunk) go into M[kP][T][chunk],
// and the output transform reads M back while it is still in cache and applies the fused epilogue
// (bias, residual, activation, channel-slot store, 2x2 max-pool).
//
// Every function is a template over the activations' element type T (winograd_conv.h): float, or bf16 bits
// (std::uint16_t). Loads widen to fp32 (load_n's overloads), V, M and all arithmetic stay fp32, and the
// output transform's stores round once to T (store_n). So the bf16 conv's only error beyond fp32 Winograd is
// the final store, as for the bf16 tile conv.

// ---- F(4x4, 3x3): points 0, +-1, +-2, infinity (Lavin & Gray's matrices) --------------------------------

// y = B^T x for one column (or row) of six vectors.
inline void bt6(const Vec& x0, const Vec& x1, const Vec& x2, const Vec& x3, const Vec& x4, const Vec& x5,
                Vec* y0, Vec* y1, Vec* y2, Vec* y3, Vec* y4, Vec* y5) {
  const Vec two = Vec::bcast(2.f), four = Vec::bcast(4.f), five = Vec::bcast(5.f);
  const Vec a = x4 - four * x2, b = x3 - four * x1;
  const Vec c = x4 - x2, e = two * (x3 - x1);
  *y0 = fmadd(four, x0, x4 - five * x2);
  *y1 = a + b;
  *y2 = a - b;
  *y3 = c + e;
  *y4 = c - e;
  *y5 = fmadd(four, x1, x5 - five * x3);
}

// y = A^T m for one column (or row) of six vectors.
inline void at6(const Vec& m0, const Vec& m1, const Vec& m2, const Vec& m3, const Vec& m4, const Vec& m5,
                Vec* y0, Vec* y1, Vec* y2, Vec* y3) {
  const Vec s = m1 + m2, d = m1 - m2, s2 = m3 + m4, d2 = m3 - m4;
  *y0 = m0 + s + s2;
  *y1 = fmadd(Vec::bcast(2.f), d2, d);
  *y2 = fmadd(Vec::bcast(4.f), s2, s);
  *y3 = fmadd(Vec::bcast(8.f), d2, d) + m5;
}

// ---- F(6x6, 3x3): points 0, +-1, +-2, +-1/2, infinity -----------------------------------------------------
// The points ncnn and NNPACK use for F(6, 3) (the best conditioned of the small-integer-and-halves sets:
// benchmarks/winograd_f6_accuracy.py measured 1.9x F(4x4)'s error, against 25x for 0, +-1, +-2, 4, 1/2). The
// output transform's columns of the points +-1/2 are scaled by 32 (and G's rows by 1/32, in float64 at pack
// time: unet_fast/kernels/cpu_winograd.py) so every coefficient of A^T is an integer; a power-of-two scale is
// exact in binary floating point, so it changes no rounding. Matrices (rows of B^T, A^T):
//   B^T = [1 0 -21/4 0 21/4 0 -1 0], [0 1 1 -17/4 -17/4 1 1 0], [0 -1 1 17/4 -17/4 -1 1 0],
//         [0 1/2 1/4 -5/2 -5/4 2 1 0], [0 -1/2 1/4 5/2 -5/4 -2 1 0], [0 2 4 -5/2 -5 1/2 1 0],
//         [0 -2 4 5/2 -5 -1/2 1 0], [0 -1 0 21/4 0 -21/4 0 1]
//   A^T = [1 1 1 1 1 32 32 0], [0 1 -1 2 -2 16 -16 0], [0 1 1 4 4 8 8 0], [0 1 -1 8 -8 4 -4 0],
//         [0 1 1 16 16 2 2 0], [0 1 -1 32 -32 1 -1 1]

// y[k * ys] = (B^T x)[k] for one column (or row) of eight vectors x[k * xs].
inline void bt8(const Vec* x, int xs, Vec* y, int ys) {
  const Vec x0 = x[0], x1 = x[xs], x2 = x[2 * xs], x3 = x[3 * xs], x4 = x[4 * xs], x5 = x[5 * xs],
            x6 = x[6 * xs], x7 = x[7 * xs];
  const Vec c525 = Vec::bcast(5.25f), m425 = Vec::bcast(-4.25f), m125 = Vec::bcast(-1.25f),
            m25 = Vec::bcast(-2.5f), half = Vec::bcast(0.5f), two = Vec::bcast(2.f);
  const Vec t12a = fmadd(m425, x4, x2 + x6), t12b = fmadd(m425, x3, x1 + x5);
  const Vec t34a = fmadd(m125, x4, fmadd(Vec::bcast(0.25f), x2, x6));
  const Vec t34b = fmadd(two, x5, fmadd(m25, x3, half * x1));
  const Vec t56a = fmadd(Vec::bcast(4.f), fmadd(m125, x4, x2), x6);
  const Vec t56b = fmadd(half, x5, fmadd(m25, x3, two * x1));
  y[0] = fmadd(c525, x4 - x2, x0 - x6);
  y[ys] = t12a + t12b;
  y[2 * ys] = t12a - t12b;
  y[3 * ys] = t34a + t34b;
  y[4 * ys] = t34a - t34b;
  y[5 * ys] = t56a + t56b;
  y[6 * ys] = t56a - t56b;
  y[7 * ys] = fmadd(c525, x3 - x5, x7 - x1);
}

// y[k * ys] = (A^T m)[k], k < 6, for one column (or row) of eight vectors m[k * ms].
inline void at8(const Vec* m, int ms, Vec* y, int ys) {
  const Vec a = m[ms] + m[2 * ms], b = m[ms] - m[2 * ms];
  const Vec c = m[3 * ms] + m[4 * ms], d = m[3 * ms] - m[4 * ms];
  const Vec e = m[5 * ms] + m[6 * ms], f = m[5 * ms] - m[6 * ms];
  const Vec c2 = Vec::bcast(2.f), c4 = Vec::bcast(4.f), c8 = Vec::bcast(8.f), c16 = Vec::bcast(16.f),
            c32 = Vec::bcast(32.f);
  y[0] = m[0] + a + fmadd(c32, e, c);
  y[ys] = fmadd(c16, f, fmadd(c2, d, b));
  y[2 * ys] = fmadd(c8, e, fmadd(c4, c, a));
  y[3 * ys] = fmadd(c4, f, fmadd(c8, d, b));
  y[4 * ys] = fmadd(c2, e, fmadd(c16, c, a));
  y[5 * ys] = m[7 * ms] + b + fmadd(c32, d, f);
}

// ---- Both tile sizes ----------------------------------------------------------------------------------------

template <int TM>
struct WinoTile {
  static_assert(TM == 4 || TM == 6, "Winograd F(4x4, 3x3) or F(6x6, 3x3)");
  static constexpr int kA = TM + 2;   // input tile edge
  static constexpr int kP = kA * kA;  // points (GEMMs) per tile
};

// A full vector of activations, widened to fp32 (bf16: exactly).
UF_VEC_INLINE Vec load_full(const float* p) { return Vec::load(p); }
UF_VEC_INLINE Vec load_full(const std::uint16_t* p) { return Vec::load_bf16_n(p, kL); }

// B^T d B for channels [c, c + nl) of one tile (nl = kL when kFull): ptr[p] = channel 0 of patch pixel p
// (never null: the padding reads a row of zeros), written to dst + p * pstride + c. Columns first, then
// rows, each 1-D transform on whole vectors; the loops are unrolled so the compiler sees kP independent
// loads and stores (the former version loaded each point through a null test and a partial-vector branch,
// and ran at ~4x the instructions of the arithmetic).
template <int TM, bool kFull, typename T>
UF_VEC_INLINE void input_transform_vec(const T* const* ptr, int c, int nl, float* dst, std::int64_t pstride) {
  constexpr int kA = WinoTile<TM>::kA, kP = WinoTile<TM>::kP;
  Vec t[kP];
#pragma GCC unroll 8
  for (int j = 0; j < kA; ++j) {
    Vec x[kA];
#pragma GCC unroll 8
    for (int i = 0; i < kA; ++i) x[i] = kFull ? load_full(ptr[kA * i + j] + c) : load_n(ptr[kA * i + j] + c, nl);
    if constexpr (TM == 4)
      bt6(x[0], x[1], x[2], x[3], x[4], x[5], &t[j], &t[6 + j], &t[12 + j], &t[18 + j], &t[24 + j], &t[30 + j]);
    else
      bt8(x, 1, t + j, kA);
  }
#pragma GCC unroll 8
  for (int i = 0; i < kA; ++i) {
    Vec y[kA];
    if constexpr (TM == 4) {
      const Vec* r = t + 6 * i;
      bt6(r[0], r[1], r[2], r[3], r[4], r[5], &y[0], &y[1], &y[2], &y[3], &y[4], &y[5]);
    } else {
      bt8(t + kA * i, 1, y, 1);
    }
    float* o = dst + kA * i * pstride + c;
#pragma GCC unroll 8
    for (int k = 0; k < kA; ++k, o += pstride) {
      if constexpr (kFull)
        y[k].store(o);
      else
        store_n(o, y[k], nl);
    }
  }
}

// B^T d B for the kP patch pixels of one tile, channels [0, channels).
template <int TM, typename T>
inline void input_transform_tile(const T* const* ptr, int channels, float* dst, std::int64_t pstride) {
  int c = 0;
  for (; c + kL <= channels; c += kL) input_transform_vec<TM, true>(ptr, c, kL, dst, pstride);
  if (c < channels) input_transform_vec<TM, false>(ptr, c, channels - c, dst, pstride);
}

// y[TM * i + j] = (A^T m A)[i][j] for kL channels of one tile: m + p * pstride holds point p.
template <int TM>
inline void output_transform_points(const float* m, std::int64_t pstride, Vec* y) {
  constexpr int kA = WinoTile<TM>::kA;
  if constexpr (TM == 4) {
    Vec s[24];
    for (int j = 0; j < 6; ++j)
      at6(Vec::load(m + j * pstride), Vec::load(m + (6 + j) * pstride), Vec::load(m + (12 + j) * pstride),
          Vec::load(m + (18 + j) * pstride), Vec::load(m + (24 + j) * pstride), Vec::load(m + (30 + j) * pstride),
          &s[j], &s[6 + j], &s[12 + j], &s[18 + j]);
    for (int i = 0; i < 4; ++i) {
      const Vec* r = s + 6 * i;
      at6(r[0], r[1], r[2], r[3], r[4], r[5], &y[4 * i], &y[4 * i + 1], &y[4 * i + 2], &y[4 * i + 3]);
    }
  } else {
    Vec x[kA], s[TM * kA];
    for (int j = 0; j < kA; ++j) {  // column j of M -> column j of A^T M (rows kA apart in s)
      for (int i = 0; i < kA; ++i) x[i] = Vec::load(m + (kA * i + j) * pstride);
      at8(x, 1, s + j, kA);
    }
    for (int i = 0; i < TM; ++i) at8(s + kA * i, 1, y + TM * i, 1);  // row i of (A^T M) A
  }
}

// A bilinear pixel of view source s (image n) into o[0, s.c): fp32 takes the fp32 gather's expression and
// order (cpu_kernel_body.h gather_row); bf16 stages exactly the bits the bf16 tile conv stages (the fp32 blend
// of the four bf16 neighbours rounded once, compiled once without FMA contraction: amx/conv_bf16.h), so the
// two bf16 conv algorithms see the same input.
inline void blend_bilinear(const Nhwc<const float>& s, int n, const LinearTap& ty, const LinearTap& tx, float* o) {
  const float* img = s.p + n * s.sn;
  const float* a = img + ty.i0 * s.sh + tx.i0 * s.sw;
  const float* b = img + ty.i0 * s.sh + tx.i1 * s.sw;
  const float* c = img + ty.i1 * s.sh + tx.i0 * s.sw;
  const float* d = img + ty.i1 * s.sh + tx.i1 * s.sw;
  for (std::int64_t k = 0; k < s.c; ++k)
    o[k] = ty.w0 * (tx.w0 * a[k] + tx.w1 * b[k]) + ty.w1 * (tx.w0 * c[k] + tx.w1 * d[k]);
}
inline void blend_bilinear(const Nhwc<const std::uint16_t>& s, int n, const LinearTap& ty, const LinearTap& tx,
                           std::uint16_t* o) {
  amx::stage_bilinear_bf16(s, n, Tap{true, ty.i0, ty.i1, ty.w0, ty.w1}, Tap{true, tx.i0, tx.i1, tx.w0, tx.w1}, 0,
                           static_cast<int>(s.c), o);
}

// The kP patch pixels of one view for the tile whose patch starts at (y0, x0) in view coordinates.
// Bilinear pixels are interpolated into scratch ([kP][channels]); padding pixels point at `zeros` (a row of
// at least the view's channels); all others are pointers into the tensor.
template <int TM, typename T>
inline void gather_view(const WinoConvT<T>& cv, const WinoViewT<T>& v, int n, int y0, int x0, const T** ptr,
                        T* scratch, const T* zeros) {
  constexpr int kA = WinoTile<TM>::kA;
  const Nhwc<const T>& s = v.src;
  const T* img = s.p + n * s.sn;
  for (int i = 0; i < kA; ++i) {
    for (int j = 0; j < kA; ++j) {
      const int p = kA * i + j, y = y0 + i, x = x0 + j;
      ptr[p] = zeros;
      int ry, rx;
      if (y < 0 || y >= cv.h || x < 0 || x >= cv.w) continue;  // the conv's zero padding
      if (!view_to_resampled(y, x, v.off_y, v.off_x, v.rh, v.rw, &ry, &rx)) continue;  // window past edge
      if (v.mode == 0) {
        ptr[p] = img + ry * s.sh + rx * s.sw;
      } else if (v.mode == 1) {
        ptr[p] = img + nearest_source(ry, static_cast<int>(s.h), v.rh) * s.sh +
                 nearest_source(rx, static_cast<int>(s.w), v.rw) * s.sw;
      } else {
        const LinearTap ty = linear_source(ry, static_cast<int>(s.h), v.rh, v.align_corners);
        const LinearTap tx = linear_source(rx, static_cast<int>(s.w), v.rw, v.align_corners);
        T* o = scratch + p * s.c;
        blend_bilinear(s, n, ty, tx, o);
        ptr[p] = o;
      }
    }
  }
}

// act(y + bias (+ residual)) on kL lanes for a compile-time activation: epilogue_v's math without its
// switch, which cost more instructions than the output transform's arithmetic when run per output vector.
template <Act A, typename R>
UF_VEC_INLINE Vec epilogue_act(const Vec& acc, const Vec& bias, const R* res, int nl, float negative_slope) {
  Vec y = acc + bias;
  if (res) y = y + load_n(res, nl);
  if constexpr (A == Act::kRelu) {
    return select_pos(y, Vec::zero());
  } else if constexpr (A == Act::kLeakyRelu) {
    return select_pos(y, y * Vec::bcast(negative_slope));
  } else if constexpr (A == Act::kSilu) {
    float t[kL];
    y.store(t);
    for (int l = 0; l < kL; ++l) t[l] = apply_act(t[l], A, negative_slope);
    return Vec::load(t);
  } else {
    return y;
  }
}

// A^T m A for one tile and channels [c0, c0 + nvalid) of the chunk, then the fused epilogue with activation A.
// m + p * pstride + cc holds point p of chunk channel cc; the tile's output starts at (oy0, ox0).
template <int TM, Act A, typename T>
inline void output_transform_tile_act(const WinoConvT<T>& cv, const float* m, std::int64_t pstride, int n,
                                      int oy0, int ox0, int c0, int nvalid) {
  const std::int64_t osh = cv.out.sh, osw = cv.out.sw, rsh = cv.residual.sh, rsw = cv.residual.sw;
  T* const out_tile = cv.out.p + n * cv.out.sn + oy0 * osh + ox0 * osw + c0;
  const T* const res_tile = cv.residual.p ? cv.residual.p + n * cv.residual.sn + oy0 * rsh + ox0 * rsw + c0 : nullptr;
  const float* const bias_p = cv.bias ? cv.bias + c0 : nullptr;
  const float slope = cv.ep.negative_slope;
  const int ni = cv.ho - oy0 < TM ? cv.ho - oy0 : TM, nj = cv.wo - ox0 < TM ? cv.wo - ox0 : TM;
  for (int cc = 0; cc < nvalid; cc += kL) {
    const int nl = nvalid - cc < kL ? nvalid - cc : kL;
    Vec y[TM * TM];
    output_transform_points<TM>(m + cc, pstride, y);
    const Vec bias = bias_p ? load_n(bias_p + cc, nl) : Vec::zero();
    for (int i = 0; i < ni; ++i) {
      T* o = out_tile + i * osh + cc;
      const T* r = res_tile ? res_tile + i * rsh + cc : nullptr;
      for (int j = 0; j < nj; ++j, o += osw) {
        y[TM * i + j] = epilogue_act<A>(y[TM * i + j], bias, r, nl, slope);
        if (r) r += rsw;
        if constexpr (sizeof(T) == sizeof(float)) {  // fp32: a whole vector without store_n's branch
          if (nl == kL) {
            y[TM * i + j].store(o);
            continue;
          }
        }
        store_n(o, y[TM * i + j], nl);
      }
    }
    if (!cv.pool.p) continue;
    // A TM x TM tile at an even origin (TM is even) holds exactly (TM/2)^2 2x2 pool windows; a window exists
    // (floor mode) only when both its rows and columns are inside the output, and then all four values were
    // computed. (bf16: the max of the fp32 values rounds to the max of the stored values: rounding is
    // monotonic.)
    const int c = c0 + cc;
    for (int pi = 0; pi < TM / 2 && oy0 / 2 + pi < cv.ho / 2; ++pi) {
      for (int pj = 0; pj < TM / 2 && ox0 / 2 + pj < cv.wo / 2; ++pj) {
        const Vec* q = y + 2 * TM * pi + 2 * pj;
        T* o = cv.pool.p + n * cv.pool.sn + (oy0 / 2 + pi) * cv.pool.sh + (ox0 / 2 + pj) * cv.pool.sw + c;
        store_n(o, max_nan_v(max_nan_v(q[0], q[1]), max_nan_v(q[TM], q[TM + 1])), nl);
      }
    }
  }
}

template <int TM, typename T>
inline void output_transform_tile(const WinoConvT<T>& cv, const float* m, std::int64_t pstride, int n, int oy0,
                                  int ox0, int c0, int nvalid) {
  switch (cv.ep.act) {
    case Act::kRelu:
      return output_transform_tile_act<TM, Act::kRelu>(cv, m, pstride, n, oy0, ox0, c0, nvalid);
    case Act::kLeakyRelu:
      return output_transform_tile_act<TM, Act::kLeakyRelu>(cv, m, pstride, n, oy0, ox0, c0, nvalid);
    case Act::kSilu:
      return output_transform_tile_act<TM, Act::kSilu>(cv, m, pstride, n, oy0, ox0, c0, nvalid);
    default:
      return output_transform_tile_act<TM, Act::kNone>(cv, m, pstride, n, oy0, ox0, c0, nvalid);
  }
}

struct Plan {
  int tiles_w, tiles_hw;
  std::int64_t ntiles, nblocks;
  int t, tpad;       // tiles per block, rounded up to kWinoMR
  std::int64_t ldv;  // V row length: Cin rounded up to kL, + 16 floats where that is a multiple of 512
  std::int64_t vstride;  // floats between two points of V: tpad * ldv + kPointSkew
  int nc;            // output channels per chunk (multiple of NR)
  bool shared;       // threads share one block and split its output channels (few tiles, big weights)
  int scratch;       // elements (of T) of bilinear scratch per thread
  int zeros;         // elements (of T) of the zero row the padding pixels point at: the widest view
};

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// F(6x6) tiles per block for small weights (see make_plan).
constexpr int kF6SmallBlock = 8;

// F(6x6) sums over the input channels in chunks of this many (gemm_output_chunk).
constexpr int kF6KChunk = 64;

// The transforms read or write one vector of each of the kP points of a tile: kP addresses one point stride
// apart. With a point stride of a multiple of 4 KiB (T = 16 tiles x 64 channels, or 128 x 256: most blocks)
// they all fall into one set of the 8-way L1 (64 sets of 64 B), so 36 or 64 of them evict each other, and
// the loads alias the stores 4 KiB apart. One extra cache line per point puts the points of a tile into
// consecutive sets.
constexpr int kPointSkew = 16;

// Floats between two points of M for a chunk of nc output channels.
inline std::int64_t m_stride(const Plan& pl, int nc) { return static_cast<std::int64_t>(pl.tpad) * nc + kPointSkew; }

// Block sizes (docs/winograd.md; F(4x4) measured on Zen 3, 512 KiB L2 per core, 16 MiB L3). Small weights
// (the transformed U fits in L2/L3 comfortably): short blocks of 12 tiles keep V and M in L2. Big weights:
// long blocks so each weight panel, streamed from L3 or DRAM, is reused by many tiles; then the threads
// share each block (input transform split by tiles, GEMMs split by output channels), so the weights are
// read once per block instead of once per thread. F(6x6) keeps the same bytes of V per block (T scaled by
// 36 / 64, i.e. about the same outputs per block) and the same weight threshold per point.
template <int TM, int NV, typename T>
inline Plan make_plan(const WinoConvT<T>& cv) {
  constexpr int kP = WinoTile<TM>::kP, NR = NV * kL;
  Plan pl{};
  const int th = (cv.ho + TM - 1) / TM;
  pl.tiles_w = (cv.wo + TM - 1) / TM;
  pl.tiles_hw = th * pl.tiles_w;
  pl.ntiles = static_cast<std::int64_t>(cv.n) * pl.tiles_hw;
  pl.ldv = round_up(cv.cin, kL);
  // A row stride that is a multiple of 2 KiB puts the micro-tile's rows of V in one or two L1 sets (64 sets
  // of 64 B): 14 rows 4 KiB apart (Cin 1024) exceeded the 8 ways and made a 14-row AVX-512 tile 1.6x
  // slower on the 16 px layers (8-row tiles fill the 8 ways exactly). One extra cache line per row spreads them over distinct sets.
  if (pl.ldv % 512 == 0) pl.ldv += 16;
  const int nthreads = cv.num_threads;
  const double weight_bytes = static_cast<double>(kP) * cv.cin * cv.cout_pad * sizeof(float);
  const bool big = weight_bytes > kP / 36.0 * 6.0 * (1 << 20);
  int t = cv.tile_block;
  if (t <= 0) {
    if (TM == 4) {
      t = big ? 36864 / round_up(cv.cin, kL) : 12;
      t = t < 24 && big ? 24 : (t > 144 ? 144 : t);
    } else {
      t = big ? 20736 / round_up(cv.cin, kL) : kF6SmallBlock;
      t = t < 16 && big ? 16 : (t > 96 ? 96 : t);
    }
  }
  std::int64_t nblocks = (pl.ntiles + t - 1) / t;
  pl.shared = nthreads > 1 && cv.cout_pad >= NR * nthreads && (big || nblocks < 2 * nthreads);
  if (cv.tile_block <= 0) {  // equal blocks, each a multiple of kWinoMR tiles
    t = round_up(static_cast<int>((pl.ntiles + nblocks - 1) / nblocks), kWinoMR);
    nblocks = (pl.ntiles + t - 1) / t;
  }
  pl.t = t;
  pl.tpad = round_up(t, kWinoMR);
  pl.vstride = pl.tpad * pl.ldv + kPointSkew;
  pl.nblocks = nblocks;
  int nc = cv.cout_chunk;
  if (nc <= 0) {
    nc = big ? 256 : 64;
    if (pl.shared) {  // at least two chunks per thread, for the dynamic schedule to balance
      const int per = round_up((cv.cout_pad + 2 * nthreads - 1) / (2 * nthreads), NR);
      nc = per < nc ? per : nc;
    }
  }
  nc = round_up(nc, NR);
  pl.nc = nc < cv.cout_pad ? nc : cv.cout_pad;
  pl.scratch = 0;
  pl.zeros = 0;
  for (const WinoViewT<T>& v : cv.views) {
    if (v.mode == 2 && kP * static_cast<int>(v.src.c) > pl.scratch) pl.scratch = kP * static_cast<int>(v.src.c);
    if (static_cast<int>(v.src.c) > pl.zeros) pl.zeros = static_cast<int>(v.src.c);
  }
  return pl;
}

// Input transform of tiles [lo, hi) of block b into V.
template <int TM, typename T>
inline void input_block(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, int lo, int hi, float* v,
                        T* scratch, const T* zeros) {
  constexpr int kP = WinoTile<TM>::kP;
  const std::int64_t pstride = pl.vstride;
  const T* ptr[kP];
  for (int t = lo; t < hi; ++t) {
    const std::int64_t g = b * pl.t + t;
    float* row = v + t * pl.ldv;
    if (t >= pl.t || g >= pl.ntiles) {  // padding rows of the last microkernel: zeros, never stored
      for (int p = 0; p < kP; ++p)
        for (int k = 0; k < cv.cin; ++k) row[p * pstride + k] = 0.f;
      continue;
    }
    const int n = static_cast<int>(g / pl.tiles_hw), r = static_cast<int>(g % pl.tiles_hw);
    const int y0 = TM * (r / pl.tiles_w) - cv.pad, x0 = TM * (r % pl.tiles_w) - cv.pad;
    for (const WinoViewT<T>& view : cv.views) {
      gather_view<TM>(cv, view, n, y0, x0, ptr, scratch, zeros);
      input_transform_tile<TM>(ptr, static_cast<int>(view.src.c), row + view.c0, pstride);
    }
  }
}

// The GEMMs of block b for output channel blocks [jb0, jb1) (NR channels each): M[p] = V[p] U[p].
template <int TM, int NV, typename T>
inline void gemm_block(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, const float* v, float* m, int jb0,
                       int jb1) {
  constexpr int kP = WinoTile<TM>::kP, NR = NV * kL;
  const int nc = (jb1 - jb0) * NR;
  const int njb = cv.cout_pad / NR;
  const std::int64_t vstride = pl.vstride, mstride = m_stride(pl, nc);
  // Tiles of this block that exist: only their rows of M are computed (and read back by output_block).
  const int rows = static_cast<int>(pl.ntiles - b * pl.t < pl.t ? pl.ntiles - b * pl.t : pl.t);
  // F(4x4): each output's sum over Cin runs in one chain (bit-identical to the kernel before F(6x6) existed).
  // F(6x6): in chunks of kF6KChunk channels, each chunk's sum added to M: a long fp32 chain was half the error
  // (F(6x6) at Cin 1024: 1.1e-5 sequential, 3.4e-6 in chunks of 64, against float64; F(4x4) 5.6e-6).
  const int kc = TM == 6 ? kF6KChunk : cv.cin;
  for (int p = 0; p < kP; ++p) {
    const float* a = v + p * vstride;
    for (int jb = jb0; jb < jb1; ++jb) {
      const float* u = cv.u + (static_cast<std::int64_t>(p) * njb + jb) * cv.cin * NR;
      float* c = m + p * mstride + (jb - jb0) * NR;
      int i = 0;
      for (; i + kWinoMR <= rows; i += kWinoMR) {
        const float* ai = a + i * pl.ldv;
        float* ci = c + i * nc;
        gemm_tile<kWinoMR, NV>(ai, pl.ldv, u, ci, nc, kc < cv.cin ? kc : cv.cin);
        for (int k0 = kc; k0 < cv.cin; k0 += kc)
          gemm_tile<kWinoMR, NV, true>(ai + k0, pl.ldv, u + k0 * NR, ci, nc,
                                            cv.cin - k0 < kc ? cv.cin - k0 : kc);
      }
      if (i < rows) {
        const float* ai = a + i * pl.ldv;
        float* ci = c + i * nc;
        gemm_rows<NV>(rows - i, ai, pl.ldv, u, ci, nc, kc < cv.cin ? kc : cv.cin);
        for (int k0 = kc; k0 < cv.cin; k0 += kc)
          gemm_rows<NV, true>(rows - i, ai + k0, pl.ldv, u + k0 * NR, ci, nc,
                                   cv.cin - k0 < kc ? cv.cin - k0 : kc);
      }
    }
  }
}

// The output transform and epilogue of block b for output channel blocks [jb0, jb1), from M.
template <int TM, int NV, typename T>
inline void output_block(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, const float* m, int jb0, int jb1) {
  constexpr int NR = NV * kL;
  const int nc = (jb1 - jb0) * NR;
  const std::int64_t mstride = m_stride(pl, nc);
  const int c0 = jb0 * NR;
  const int nvalid = (cv.cout < jb1 * NR ? cv.cout : jb1 * NR) - c0;
  for (int t = 0; t < pl.t; ++t) {
    const std::int64_t g = b * pl.t + t;
    if (g >= pl.ntiles) break;
    const int n = static_cast<int>(g / pl.tiles_hw), r = static_cast<int>(g % pl.tiles_hw);
    output_transform_tile<TM>(cv, m + t * nc, mstride, n, TM * (r / pl.tiles_w), TM * (r % pl.tiles_w), c0,
                              nvalid);
  }
}

// GEMMs and output transform of block b for output channel blocks [jb0, jb1) (NR channels each).
template <int TM, int NV, typename T>
inline void gemm_output_chunk(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, const float* v, float* m,
                              int jb0, int jb1) {
  gemm_block<TM, NV>(cv, pl, b, v, m, jb0, jb1);
  output_block<TM, NV>(cv, pl, b, m, jb0, jb1);
}

// Scratch of n elements of E for the calling thread, kept between calls (Slot 0: V, 1: M, 2: bilinear
// staging), so a call pays neither a zero fill nor fresh pages. A fresh std::vector per call zero-filled V and
// M: at 64 px 256 -> 256 (avx2, 1 thread) that memset was 5.4% of the conv's instructions (callgrind), plus the
// page faults of ~10 MB of new memory. Uninitialised is safe: every element read is written first in the same
// call (input_block writes V's rows [0, tpad) x channels [0, cin) before the GEMMs read them, padding rows as
// zeros; the GEMMs write the rows and channels of M that the output transform reads). Held per thread until
// the thread exits: the plan bounds each of V and M to ~6 MB (T x Cin <= ~37k for big weights, T = 12 else).
template <int Slot, typename E>
inline E* thread_scratch(std::size_t n) {
  thread_local std::vector<E> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// A row of n zeros of E for the calling thread, kept between calls: nothing writes it, so it stays zero.
template <typename E>
inline const E* zero_row(std::size_t n) {
  thread_local std::vector<E> buf;
  if (buf.size() < n) buf.assign(n, E{});
  return buf.data();
}

template <int TM, int NV, typename T>
inline void winograd_conv_tiles(const WinoConvT<T>& cv) {
  constexpr int kP = WinoTile<TM>::kP, NR = NV * kL;
  const Plan pl = make_plan<TM, NV>(cv);
  const int njb = cv.cout_pad / NR, jchunk = pl.nc / NR;
  const int nchunks = (njb + jchunk - 1) / jchunk;
  const std::size_t vsize = static_cast<std::size_t>(kP) * pl.vstride;
  const std::size_t msize = static_cast<std::size_t>(kP) * m_stride(pl, pl.nc);
  if (!pl.shared) {
#pragma omp parallel num_threads(cv.num_threads)
    {
      [[maybe_unused]] const ThreadState state;
      float* v = thread_scratch<0, float>(vsize);
      float* m = thread_scratch<1, float>(msize);
      T* scratch = thread_scratch<2, T>(pl.scratch);
      const T* zeros = zero_row<T>(pl.zeros);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t b = 0; b < pl.nblocks; ++b) {
        input_block<TM>(cv, pl, b, 0, pl.tpad, v, scratch, zeros);
        for (int q = 0; q < nchunks; ++q) {
          const int jb0 = q * jchunk, jb1 = jb0 + jchunk < njb ? jb0 + jchunk : njb;
          gemm_output_chunk<TM, NV>(cv, pl, b, v, m, jb0, jb1);
        }
      }
    }
    return;
  }
  float* v = thread_scratch<0, float>(vsize);  // the calling thread's, shared by the team
#pragma omp parallel num_threads(cv.num_threads)
  {
    [[maybe_unused]] const ThreadState state;
    float* m = thread_scratch<1, float>(msize);
    T* scratch = thread_scratch<2, T>(pl.scratch);
    const T* zeros = zero_row<T>(pl.zeros);
    for (std::int64_t b = 0; b < pl.nblocks; ++b) {
#pragma omp for schedule(static)
      for (int t = 0; t < pl.tpad; ++t) input_block<TM>(cv, pl, b, t, t + 1, v, scratch, zeros);
#pragma omp for schedule(dynamic, 1)
      for (int q = 0; q < nchunks; ++q) {
        const int jb0 = q * jchunk, jb1 = jb0 + jchunk < njb ? jb0 + jchunk : njb;
        gemm_output_chunk<TM, NV>(cv, pl, b, v, m, jb0, jb1);
      }
    }
  }
}

// The variant's entry point (CpuVariantOps::winograd_conv / winograd_conv_bf16): F(cv.tile x cv.tile, 3x3).
// Blocks of kWinoNV vectors of output channels, or of one vector for a conv with Cout <= kL (cv.nr == kL: the
// launcher packs those so: cpu_winograd.winograd_nr), whose GEMMs would otherwise compute kWinoNV times the
// channels they keep.
template <typename T>
inline void winograd_conv(const WinoConvT<T>& cv) {
  const bool narrow = kWinoNV > 1 && cv.nr == kL;
  if (cv.tile == 6)
    narrow ? winograd_conv_tiles<6, 1>(cv) : winograd_conv_tiles<6, kWinoNV>(cv);
  else
    narrow ? winograd_conv_tiles<4, 1>(cv) : winograd_conv_tiles<4, kWinoNV>(cv);
}
