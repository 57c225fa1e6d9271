// Winograd F(4x4, 3x3) kernel body, written once over a vector type and compiled once per variant.
//
// No include guard on purpose: cpu_kernel_body.h includes this file inside each variant's namespace, after
// the variant's `Vec`, its Winograd blocking (kWinoMR tiles x kWinoNR = kWinoNV vectors of output channels)
// and cpu_gemm_kernels.h (gemm_tile, load_n / store_n, epilogue_v). It includes nothing itself: the variant
// file includes the standard headers and unet_fast/{winograd_conv,epilogue,resample}.h first.
//
// Work decomposition (docs/winograd.md): tiles are 4x4 output blocks, numbered over (n, tile_y, tile_x).
// A block of T tiles is input-transformed into V[36][T][ldv] (the 36 points, channels contiguous), then,
// per chunk of output channels, 36 GEMMs V[p] (T x Cin) * U[p] (Cin x chunk) go into M[36][T][chunk],
// and the output transform reads M back while it is still in cache and applies the fused epilogue
// (bias, residual, activation, channel-slot store, 2x2 max-pool).
//
// Every function is a template over the activations' element type T (winograd_conv.h): float, or bf16 bits
// (std::uint16_t). Loads widen to fp32 (load_n's overloads), V, M and all arithmetic stay fp32, and the
// output transform's stores round once to T (store_n). So the bf16 conv's only error beyond fp32 Winograd is
// the final store, as for the bf16 tile conv.

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

// B^T d B for the 36 patch pixels of one tile (ptr[p] = channel 0 of pixel p, nullptr = zero), channels
// [0, channels), written to dst + p * pstride + c.
template <typename T>
inline void input_transform_tile(const T* const* ptr, int channels, float* dst, std::int64_t pstride) {
  for (int c = 0; c < channels; c += kL) {
    const int nl = channels - c < kL ? channels - c : kL;
    Vec d[36], t[36];
    for (int p = 0; p < 36; ++p) d[p] = ptr[p] ? load_n(ptr[p] + c, nl) : Vec::zero();
    for (int j = 0; j < 6; ++j)
      bt6(d[j], d[6 + j], d[12 + j], d[18 + j], d[24 + j], d[30 + j], &t[j], &t[6 + j], &t[12 + j],
          &t[18 + j], &t[24 + j], &t[30 + j]);
    for (int i = 0; i < 6; ++i) {
      const Vec* r = t + 6 * i;
      bt6(r[0], r[1], r[2], r[3], r[4], r[5], &d[6 * i], &d[6 * i + 1], &d[6 * i + 2], &d[6 * i + 3],
          &d[6 * i + 4], &d[6 * i + 5]);
    }
    for (int p = 0; p < 36; ++p) store_n(dst + p * pstride + c, d[p], nl);
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

// The 36 patch pixels of one view for the tile whose patch starts at (y0, x0) in view coordinates.
// Bilinear pixels are interpolated into scratch ([36][channels]); all others are pointers into the tensor.
template <typename T>
inline void gather_view(const WinoConvT<T>& cv, const WinoViewT<T>& v, int n, int y0, int x0, const T** ptr,
                        T* scratch) {
  const Nhwc<const T>& s = v.src;
  const T* img = s.p + n * s.sn;
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 6; ++j) {
      const int p = 6 * i + j, y = y0 + i, x = x0 + j;
      ptr[p] = nullptr;
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

// A^T m A for one tile and channels [c0, c0 + nvalid) of the chunk, then the fused epilogue.
// m + p * pstride + cc holds point p of chunk channel cc; the tile's output starts at (oy0, ox0).
template <typename T>
inline void output_transform_tile(const WinoConvT<T>& cv, const float* m, std::int64_t pstride, int n, int oy0,
                                  int ox0, int c0, int nvalid) {
  T* out_img = cv.out.p + n * cv.out.sn;
  const T* res_img = cv.residual.p ? cv.residual.p + n * cv.residual.sn : nullptr;
  const int ni = cv.ho - oy0 < 4 ? cv.ho - oy0 : 4, nj = cv.wo - ox0 < 4 ? cv.wo - ox0 : 4;
  for (int cc = 0; cc < nvalid; cc += kL) {
    const int nl = nvalid - cc < kL ? nvalid - cc : kL;
    const int c = c0 + cc;
    Vec s[24], y[16];
    for (int j = 0; j < 6; ++j)
      at6(Vec::load(m + j * pstride + cc), Vec::load(m + (6 + j) * pstride + cc),
          Vec::load(m + (12 + j) * pstride + cc), Vec::load(m + (18 + j) * pstride + cc),
          Vec::load(m + (24 + j) * pstride + cc), Vec::load(m + (30 + j) * pstride + cc), &s[j], &s[6 + j],
          &s[12 + j], &s[18 + j]);
    for (int i = 0; i < 4; ++i) {
      const Vec* r = s + 6 * i;
      at6(r[0], r[1], r[2], r[3], r[4], r[5], &y[4 * i], &y[4 * i + 1], &y[4 * i + 2], &y[4 * i + 3]);
    }
    const Vec bias = cv.bias ? load_n(cv.bias + c, nl) : Vec::zero();
    for (int i = 0; i < ni; ++i) {
      for (int j = 0; j < nj; ++j) {
        const std::int64_t oy = oy0 + i, ox = ox0 + j;
        const T* r = res_img ? res_img + oy * cv.residual.sh + ox * cv.residual.sw + c : nullptr;
        y[4 * i + j] = epilogue_v(y[4 * i + j], bias, r, nl, cv.ep);
        store_n(out_img + oy * cv.out.sh + ox * cv.out.sw + c, y[4 * i + j], nl);
      }
    }
    if (!cv.pool.p) continue;
    // A 4x4 tile at an even origin holds exactly four 2x2 pool windows; a window exists (floor mode)
    // only when both its rows and columns are inside the output, and then all four values were computed.
    // (bf16: the max of the fp32 values rounds to the max of the stored values: rounding is monotonic.)
    for (int pi = 0; pi < 2 && oy0 / 2 + pi < cv.ho / 2; ++pi) {
      for (int pj = 0; pj < 2 && ox0 / 2 + pj < cv.wo / 2; ++pj) {
        const Vec* q = y + 8 * pi + 2 * pj;
        T* o = cv.pool.p + n * cv.pool.sn + (oy0 / 2 + pi) * cv.pool.sh + (ox0 / 2 + pj) * cv.pool.sw + c;
        store_n(o, max_nan_v(max_nan_v(q[0], q[1]), max_nan_v(q[4], q[5])), nl);
      }
    }
  }
}

struct Plan {
  int tiles_w, tiles_hw;
  std::int64_t ntiles, nblocks;
  int t, tpad;       // tiles per block, rounded up to kWinoMR
  std::int64_t ldv;  // V row length: Cin rounded up to kL, + 16 floats where that is a multiple of 512
  int nc;            // output channels per chunk (multiple of kWinoNR)
  bool shared;       // threads share one block and split its output channels (few tiles, big weights)
  int scratch;       // elements (of T) of bilinear scratch per thread
};

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Block sizes (docs/winograd.md; measured on Zen 3, 512 KiB L2 per core, 16 MiB L3). Small weights
// (the transformed U fits in L2/L3 comfortably): short blocks of 12 tiles keep V and M in L2. Big weights:
// long blocks so each weight panel, streamed from L3 or DRAM, is reused by many tiles; then the threads
// share each block (input transform split by tiles, GEMMs split by output channels), so the weights are
// read once per block instead of once per thread.
template <typename T>
inline Plan make_plan(const WinoConvT<T>& cv) {
  Plan pl{};
  const int th = (cv.ho + 3) / 4;
  pl.tiles_w = (cv.wo + 3) / 4;
  pl.tiles_hw = th * pl.tiles_w;
  pl.ntiles = static_cast<std::int64_t>(cv.n) * pl.tiles_hw;
  pl.ldv = round_up(cv.cin, kL);
  // A row stride that is a multiple of 2 KiB puts the micro-tile's rows of V in one or two L1 sets (64 sets
  // of 64 B): 14 rows 4 KiB apart (Cin 1024) exceeded the 8 ways and made a 14-row AVX-512 tile 1.6x
  // slower on the 16 px layers (8-row tiles fill the 8 ways exactly). One extra cache line per row spreads them over distinct sets.
  if (pl.ldv % 512 == 0) pl.ldv += 16;
  const int nthreads = cv.num_threads;
  const double weight_bytes = 36.0 * cv.cin * cv.cout_pad * sizeof(float);
  const bool big = weight_bytes > 6.0 * (1 << 20);
  int t = cv.tile_block;
  if (t <= 0) {
    t = big ? 36864 / round_up(cv.cin, kL) : 12;
    t = t < 24 && big ? 24 : (t > 144 ? 144 : t);
  }
  std::int64_t nblocks = (pl.ntiles + t - 1) / t;
  pl.shared = nthreads > 1 && cv.cout_pad >= kWinoNR * nthreads && (big || nblocks < 2 * nthreads);
  if (cv.tile_block <= 0) {  // equal blocks, each a multiple of kWinoMR tiles
    t = round_up(static_cast<int>((pl.ntiles + nblocks - 1) / nblocks), kWinoMR);
    nblocks = (pl.ntiles + t - 1) / t;
  }
  pl.t = t;
  pl.tpad = round_up(t, kWinoMR);
  pl.nblocks = nblocks;
  int nc = cv.cout_chunk;
  if (nc <= 0) {
    nc = big ? 256 : 64;
    if (pl.shared) {  // at least two chunks per thread, for the dynamic schedule to balance
      const int per = round_up((cv.cout_pad + 2 * nthreads - 1) / (2 * nthreads), kWinoNR);
      nc = per < nc ? per : nc;
    }
  }
  nc = round_up(nc, kWinoNR);
  pl.nc = nc < cv.cout_pad ? nc : cv.cout_pad;
  pl.scratch = 0;
  for (const WinoViewT<T>& v : cv.views)
    if (v.mode == 2 && 36 * static_cast<int>(v.src.c) > pl.scratch) pl.scratch = 36 * static_cast<int>(v.src.c);
  return pl;
}

// Input transform of tiles [lo, hi) of block b into V.
template <typename T>
inline void input_block(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, int lo, int hi, float* v,
                        T* scratch) {
  const std::int64_t pstride = pl.tpad * pl.ldv;
  const T* ptr[36];
  for (int t = lo; t < hi; ++t) {
    const std::int64_t g = b * pl.t + t;
    float* row = v + t * pl.ldv;
    if (t >= pl.t || g >= pl.ntiles) {  // padding rows of the last microkernel: zeros, never stored
      for (int p = 0; p < 36; ++p)
        for (int k = 0; k < cv.cin; ++k) row[p * pstride + k] = 0.f;
      continue;
    }
    const int n = static_cast<int>(g / pl.tiles_hw), r = static_cast<int>(g % pl.tiles_hw);
    const int y0 = 4 * (r / pl.tiles_w) - cv.pad, x0 = 4 * (r % pl.tiles_w) - cv.pad;
    for (const WinoViewT<T>& view : cv.views) {
      gather_view(cv, view, n, y0, x0, ptr, scratch);
      input_transform_tile(ptr, static_cast<int>(view.src.c), row + view.c0, pstride);
    }
  }
}

// GEMMs and output transform of block b for output channel blocks [jb0, jb1) (kWinoNR channels each).
template <typename T>
inline void gemm_output_chunk(const WinoConvT<T>& cv, const Plan& pl, std::int64_t b, const float* v, float* m,
                              int jb0, int jb1) {
  const int nc = (jb1 - jb0) * kWinoNR;
  const int njb = cv.cout_pad / kWinoNR;
  const std::int64_t vstride = pl.tpad * pl.ldv, mstride = static_cast<std::int64_t>(pl.tpad) * nc;
  // Tiles of this block that exist: only their rows of M are computed (and read back below).
  const int rows = static_cast<int>(pl.ntiles - b * pl.t < pl.t ? pl.ntiles - b * pl.t : pl.t);
  for (int p = 0; p < 36; ++p) {
    const float* a = v + p * vstride;
    for (int jb = jb0; jb < jb1; ++jb) {
      const float* u = cv.u + (static_cast<std::int64_t>(p) * njb + jb) * cv.cin * kWinoNR;
      float* c = m + p * mstride + (jb - jb0) * kWinoNR;
      int i = 0;
      for (; i + kWinoMR <= rows; i += kWinoMR)
        gemm_tile<kWinoMR, kWinoNV>(a + i * pl.ldv, pl.ldv, u, c + i * nc, nc, cv.cin);
      if (i < rows) gemm_rows<kWinoNV>(rows - i, a + i * pl.ldv, pl.ldv, u, c + i * nc, nc, cv.cin);
    }
  }
  const int c0 = jb0 * kWinoNR;
  const int nvalid = (cv.cout < jb1 * kWinoNR ? cv.cout : jb1 * kWinoNR) - c0;
  for (int t = 0; t < pl.t; ++t) {
    const std::int64_t g = b * pl.t + t;
    if (g >= pl.ntiles) break;
    const int n = static_cast<int>(g / pl.tiles_hw), r = static_cast<int>(g % pl.tiles_hw);
    output_transform_tile(cv, m + t * nc, mstride, n, 4 * (r / pl.tiles_w), 4 * (r % pl.tiles_w), c0, nvalid);
  }
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

template <typename T>
inline void winograd_conv(const WinoConvT<T>& cv) {
  const Plan pl = make_plan(cv);
  const int njb = cv.cout_pad / kWinoNR, jchunk = pl.nc / kWinoNR;
  const int nchunks = (njb + jchunk - 1) / jchunk;
  const std::size_t vsize = static_cast<std::size_t>(36) * pl.tpad * pl.ldv;
  const std::size_t msize = static_cast<std::size_t>(36) * pl.tpad * pl.nc;
  if (!pl.shared) {
#pragma omp parallel num_threads(cv.num_threads)
    {
      [[maybe_unused]] const ThreadState state;
      float* v = thread_scratch<0, float>(vsize);
      float* m = thread_scratch<1, float>(msize);
      T* scratch = thread_scratch<2, T>(pl.scratch);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t b = 0; b < pl.nblocks; ++b) {
        input_block(cv, pl, b, 0, pl.tpad, v, scratch);
        for (int q = 0; q < nchunks; ++q) {
          const int jb0 = q * jchunk, jb1 = jb0 + jchunk < njb ? jb0 + jchunk : njb;
          gemm_output_chunk(cv, pl, b, v, m, jb0, jb1);
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
    for (std::int64_t b = 0; b < pl.nblocks; ++b) {
#pragma omp for schedule(static)
      for (int t = 0; t < pl.tpad; ++t) input_block(cv, pl, b, t, t + 1, v, scratch);
#pragma omp for schedule(dynamic, 1)
      for (int q = 0; q < nchunks; ++q) {
        const int jb0 = q * jchunk, jb1 = jb0 + jchunk < njb ? jb0 + jchunk : njb;
        gemm_output_chunk(cv, pl, b, v, m, jb0, jb1);
      }
    }
  }
}
