// The bf16 direct convolution, written once over a tile backend (amx/tile.h) and compiled per backend:
// csrc/cpu/amx/conv_bf16_portable.cpp (the emulator) and conv_bf16_amx.cpp (native, under UF_TARGET_AMX).
// No include guard on purpose: each backend file includes this inside its own namespace, after defining
// `Tiles` (TilesPortable or TilesAmx).
//
// Blocking. A block is 32 output pixels (two A tiles of 16 rows; pixels counted row-major over one image's
// Hout x Wout, so small images waste nothing; 2 rows x 16 columns when a 2x2 max-pool output is fused, see
// conv_bf16) x 32 output channels (two B tiles of 16 columns), held in the
// 2x2 accumulator tiles tmm0..3 while every tap (ky, kx) and 32-channel input chunk adds its product: the
// KxK taps are a batch of GEMMs accumulating into the same tiles, no im2col buffer. tmm4/5 hold A, tmm6/7 B.
//
// A tiles are read in place when they can be: 16 pixels of one output row whose taps all lie inside the
// image and a full 32-channel chunk are 16 input pixels at a constant distance (stride x the W stride), one
// strided tile load from the activation. Anything else (a row end, padding, a channel tail, a chunk across
// two sources of a virtual concat, a resampled source) is an edge tile, gathered into a zero-filled 1 KB
// staging tile: never reads outside the tensor or another op's channels (a_tile_source).
//
// The accumulators are stored to a 32 x 32 fp32 block, and the epilogue (bias, residual, activation, store
// as bf16 or fp32 into the output slot; then the fused 2x2 max-pool) runs on it while it is in L1.

// The tile configuration: amx/tile.h conv_tile_config (all 8 tiles 16 rows x 64 bytes).

// A run of m <= 16 output pixels p .. p + m - 1 (flat index over one image's Hout x Wout, row-major): the
// rows of one A tile. m == 0: the tile is empty (its dot products are skipped).
struct PixelRun {
  std::int64_t p;
  int m;
};

// The source holding virtual channel c (sources are in channel order).
inline const ConvSource& source_at(const ConvBf16& cv, int c) {
  int s = 0;
  while (s + 1 < cv.nsrc && c >= cv.src[s + 1].c_begin) ++s;
  return cv.src[s];
}

// Where the A tile of run `t` (tap ky, kx; chunk kc) comes from: the activation itself (returns the
// pointer, *stride set) or the staging tile `stage` filled here.
//
// In place: 16 pixels of one output row whose taps all lie inside the view, a full 32-channel chunk
// inside ONE plain source (a crop is a pointer offset), and inside that source's image. Everything else
// is gathered into the zero-filled staging tile: row ends and zero padding, channel tails, a chunk that
// straddles two sources of a virtual concat (each source copies its channel range), windows past a
// source's edge (zeros, milesial's F.pad), and resampled sources (nearest: a copy from the source pixel;
// bilinear: blended in fp32, rounded once to bf16). The packed weight keeps its dense K chunks: padding
// each source to whole chunks instead would save the straddle's staging but add a chunk of zeros per
// source whenever a channel count is not a multiple of 32 (17 + 33 = 2 chunks dense, 3 padded), and a
// U-Net's concat of two multiples of 32 never straddles anyway.
inline const void* a_tile_source(const ConvBf16& cv, std::int64_t n, PixelRun t, int ky, int kx, int kc,
                                 std::uint16_t* stage, std::int64_t* stride) {
  const int c0 = kc * kChunkCin, cn = cv.cin - c0 < kChunkCin ? cv.cin - c0 : kChunkCin;
  if (t.m == 16 && cn == kChunkCin) {
    const ConvSource& s = source_at(cv, c0);
    const std::int64_t oy = t.p / cv.wout, ox = t.p % cv.wout;
    const std::int64_t iy = oy * cv.stride + ky - cv.pad;
    const std::int64_t ix0 = ox * cv.stride + kx - cv.pad, ix1 = (ox + 15) * cv.stride + kx - cv.pad;
    if (s.mode == ResampleMode::kNone && c0 + kChunkCin <= s.c_begin + s.x.c && ox + 16 <= cv.wout &&
        iy >= 0 && iy < cv.in_h && ix0 >= 0 && ix1 < cv.in_w) {
      const std::int64_t sy = iy + s.off_y, sx0 = ix0 + s.off_x, sx1 = ix1 + s.off_x;
      if (sy >= 0 && sy < s.x.h && sx0 >= 0 && sx1 < s.x.w) {
        *stride = cv.stride * s.x.sw * static_cast<std::int64_t>(sizeof(std::uint16_t));
        return s.x.pixel(n, sy, sx0) + (c0 - s.c_begin);
      }
    }
  }
  // Row by row, the pixel stepped (no division per row): a row past the run or in the conv's zero padding
  // is a fixed 64-byte zero fill; a full chunk inside one source read by copy (plain or nearest) a fixed
  // 64-byte copy (inlined); anything else (a channel tail, a straddle, bilinear) a zero fill and per source
  // its channel range.
  const ConvSource& s0 = source_at(cv, c0);
  const bool one_copy = cn == kChunkCin && s0.mode != ResampleMode::kBilinear && c0 + kChunkCin <= s0.c_begin + s0.x.c;
  std::int64_t oy = t.p / cv.wout, ox = t.p % cv.wout;
  for (int r = 0; r < 16; ++r, ++ox) {
    if (ox == cv.wout) ox = 0, ++oy;
    std::uint16_t* row = stage + r * 32;
    const std::int64_t iy = oy * cv.stride + ky - cv.pad, ix = ox * cv.stride + kx - cv.pad;
    if (r >= t.m || iy < 0 || iy >= cv.in_h || ix < 0 || ix >= cv.in_w) {  // past the run, or zero padding
      std::memset(row, 0, kTileColsB);
      continue;
    }
    if (one_copy) {
      const Tap& ty = s0.ty[iy];
      const Tap& tx = s0.tx[ix];
      if (!ty.valid || !tx.valid)  // outside the window: zero
        std::memset(row, 0, kTileColsB);
      else
        std::memcpy(row, s0.x.pixel(n, ty.i0, tx.i0) + (c0 - s0.c_begin), kTileColsB);
      continue;
    }
    std::memset(row, 0, kTileColsB);
    for (int si = 0; si < cv.nsrc; ++si) {
      const ConvSource& s = cv.src[si];
      const int lo = c0 > s.c_begin ? c0 : s.c_begin;
      const int hi = c0 + cn < s.c_begin + s.x.c ? c0 + cn : static_cast<int>(s.c_begin + s.x.c);
      if (lo >= hi) continue;
      const Tap& ty = s.ty[iy];
      const Tap& tx = s.tx[ix];
      if (!ty.valid || !tx.valid) continue;  // outside the window: zero
      std::uint16_t* d = row + (lo - c0);
      if (s.mode == ResampleMode::kBilinear) {
        stage_bilinear_bf16(s.x, n, ty, tx, lo - s.c_begin, hi - lo, d);
      } else {
        std::memcpy(d, s.x.pixel(n, ty.i0, tx.i0) + (lo - s.c_begin),
                    static_cast<std::size_t>(hi - lo) * sizeof(std::uint16_t));
      }
    }
  }
  *stride = kTileColsB;
  return stage;
}

// The scalar epilogue of one run of m output pixels p .. p + m - 1 (flat over Hout x Wout), output channels
// co0 .. co0 + cn - 1, acc[r][j] their fp32 accumulators (rows kBlockCout apart): act(acc + bias +
// residual) stored into the output slot, or scattered to the 2x2 output pixels of a transposed conv. Every
// path (tile body, the avx512bf16 direct conv) ends in it, so their results agree element for element.
inline void epilogue_run(const ConvBf16& cv, std::int64_t n, std::int64_t p, int m, int co0, int cn,
                         const float* acc) {
  const Epilogue ep{cv.act, cv.negative_slope};
  for (int r = 0; r < m; ++r) {
    const float* a = acc + r * kBlockCout;
    const std::int64_t oy = (p + r) / cv.wout, ox = (p + r) % cv.wout;
    if (cv.scatter_cout > 0) {  // transposed 2x2/s2: column (2a + b) Ct + c -> pixel (2 oy + a, 2 ox + b), channel c
      for (int j = 0; j < cn; ++j) {
        const int ab = (co0 + j) / cv.scatter_cout, c = (co0 + j) % cv.scatter_cout;
        const float bias = cv.bias != nullptr ? cv.bias[c] : 0.f;
        cv.out.put(n, 2 * oy + ab / 2, 2 * ox + ab % 2, c, epilogue(a[j], bias, 0.f, ep));
      }
      continue;
    }
    for (int j = 0; j < cn; ++j) {
      const int co = co0 + j;
      const float bias = cv.bias != nullptr ? cv.bias[co] : 0.f;
      const float res = cv.residual.elem != Elem::kNone ? cv.residual.get(n, oy, ox, co) : 0.f;
      cv.out.put(n, oy, ox, co, epilogue(a[j], bias, res, ep));
    }
  }
}

// One block: the pixel runs t0 (A tile tmm4, accumulators tmm0/1) and t1 (tmm5, tmm2/3) of image n,
// output channels 32 nb2 .. 32 nb2 + 31.
inline void conv_block(const ConvBf16& cv, std::int64_t n, PixelRun t0, PixelRun t1, int nb2,
                       std::uint16_t* stage0, std::uint16_t* stage1, float* acc) {
  Tiles::template zero<0>();
  Tiles::template zero<1>();
  Tiles::template zero<2>();
  Tiles::template zero<3>();
  const bool two_m = t1.m > 0;  // the second A tile has a pixel at all
  for (int ky = 0; ky < cv.kh; ++ky) {
    for (int kx = 0; kx < cv.kw; ++kx) {
      const int tap = ky * cv.kw + kx;
      for (int kc = 0; kc < cv.kc; ++kc) {
        // B tiles nb = 2 nb2, 2 nb2 + 1 of (tap, kc): adjacent 1 KB tiles, rows of 64 bytes.
        const std::uint16_t* b = cv.w + ((static_cast<std::int64_t>(tap) * cv.kc + kc) * cv.nb + 2 * nb2) * 512;
        std::int64_t s0 = 0, s1 = 0;
        const void* a0 = a_tile_source(cv, n, t0, ky, kx, kc, stage0, &s0);
        Tiles::template load<4>(a0, s0);
        Tiles::template load<6>(b, kTileColsB);
        Tiles::template load<7>(b + 512, kTileColsB);
        Tiles::template dpbf16ps<0, 4, 6>();
        Tiles::template dpbf16ps<1, 4, 7>();
        if (two_m) {
          const void* a1 = a_tile_source(cv, n, t1, ky, kx, kc, stage1, &s1);
          Tiles::template load<5>(a1, s1);
          Tiles::template dpbf16ps<2, 5, 6>();
          Tiles::template dpbf16ps<3, 5, 7>();
        }
      }
    }
  }
  // acc[16 i + r][j]: pixel r of run t_i, channel 32 nb2 + j.
  constexpr std::int64_t kRow = kBlockCout * sizeof(float);
  Tiles::template store<0>(acc, kRow);
  Tiles::template store<1>(acc + 16, kRow);
  if (two_m) {
    Tiles::template store<2>(acc + 16 * kBlockCout, kRow);
    Tiles::template store<3>(acc + 16 * kBlockCout + 16, kRow);
  }
  const int co0 = nb2 * kBlockCout, cn = cv.cout - co0 < kBlockCout ? cv.cout - co0 : kBlockCout;
  for (int i = 0; i < 2; ++i) {
    const PixelRun t = i == 0 ? t0 : t1;
    const float* a = acc + 16 * i * kBlockCout;
#ifdef UF_BF16_BLOCK_EPILOGUE
    // A backend's vectorised epilogue of one run (same per-element arithmetic as epilogue_run), which
    // returns false, having written nothing, for the cases it leaves to that loop (conv_bf16_avx512bf16.cpp).
    if (t.m > 0 && UF_BF16_BLOCK_EPILOGUE(cv, n, t.p, t.m, co0, cn, a)) continue;
#endif
    epilogue_run(cv, n, t.p, t.m, co0, cn, a);
  }
}

// The fused 2x2/s2 max-pool of the block of output rows 2 py, 2 py + 1, columns x0 .. x0 + 15 just written:
// pool pixels (py, x0 / 2 ..), floored like F.max_pool2d (an odd last row / column has no pool pixel). It
// reads back the values `out` stored (bf16-rounded when out is bf16), so the pool is exactly the max of the
// stored conv outputs, NaN-propagating like the fp32 path (epilogue.h max_nan); the rows are in L1.
inline void pool_block(const ConvBf16& cv, std::int64_t n, std::int64_t py, std::int64_t x0, int nb2) {
  if (2 * py + 1 >= cv.hout) return;
  const int co0 = nb2 * kBlockCout, cn = cv.cout - co0 < kBlockCout ? cv.cout - co0 : kBlockCout;
  const std::int64_t pw = cv.wout / 2, px_end = x0 / 2 + 8 < pw ? x0 / 2 + 8 : pw;
  for (std::int64_t px = x0 / 2; px < px_end; ++px) {
    for (int j = 0; j < cn; ++j) {
      const int c = co0 + j;
      const float a = cv.out.get(n, 2 * py, 2 * px, c), b = cv.out.get(n, 2 * py, 2 * px + 1, c);
      const float d = cv.out.get(n, 2 * py + 1, 2 * px, c), e = cv.out.get(n, 2 * py + 1, 2 * px + 1, c);
      cv.pool.put(n, py, px, c, max_nan(max_nan(a, b), max_nan(d, e)));
    }
  }
}

inline void conv_bf16(const ConvBf16& cv) {
  const std::int64_t npix = cv.hout * cv.wout, nblocks = cv.nb / 2;
  const bool pooled = cv.pool.elem != Elem::kNone;
  // Blocking of the output pixels. Without a pool output: 32 consecutive pixels (row-major; the two A tiles
  // may span rows, so narrow layers waste no tile rows). With one: 2 output rows x 16 columns (A tile 0 =
  // row 2 py, A tile 1 = row 2 py + 1, same columns x0 .. x0 + 15, x0 even), so every 2x2 pool window lies
  // in one block and its max is taken right after the block's epilogue, from rows still in L1, with no
  // second pass and no window shared by two threads. Row-major 32-pixel blocks do not align to 2x2
  // windows (a window's two rows are Wout pixels apart); the cost is idle tile rows when Wout < 16.
  const std::int64_t row_pairs = (cv.hout + 1) / 2, col_blocks = (cv.wout + 15) / 16;
  const std::int64_t mblocks = pooled ? row_pairs * col_blocks : (npix + kBlockPixels - 1) / kBlockPixels;
  const std::int64_t tasks = cv.batch * mblocks * nblocks;
  const TileConfig cfg = conv_tile_config();
#pragma omp parallel num_threads(cv.num_threads)
  {
    const TileScope<Tiles> scope(cfg);  // per thread: ldtilecfg here, tilerelease at the end
    alignas(64) std::uint16_t stage0[16 * 32], stage1[16 * 32];
    alignas(64) float acc[kBlockPixels * kBlockCout];
    // Output-channel blocks innermost: consecutive tasks of a thread reuse the same input pixels.
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const int nb2 = static_cast<int>(t % nblocks);
      const std::int64_t mb = (t / nblocks) % mblocks, n = t / (nblocks * mblocks);
      if (!pooled) {
        const std::int64_t p0 = mb * kBlockPixels;
        const auto m0 = static_cast<int>(npix - p0 < 16 ? npix - p0 : 16);
        const std::int64_t rest = npix - p0 - 16;
        const PixelRun t1{p0 + 16, static_cast<int>(rest <= 0 ? 0 : rest < 16 ? rest : 16)};
        conv_block(cv, n, PixelRun{p0, m0}, t1, nb2, stage0, stage1, acc);
      } else {
        const std::int64_t py = mb / col_blocks, x0 = (mb % col_blocks) * 16;
        const auto m = static_cast<int>(cv.wout - x0 < 16 ? cv.wout - x0 : 16);
        const PixelRun t0{2 * py * cv.wout + x0, m};
        const PixelRun t1{(2 * py + 1) * cv.wout + x0, 2 * py + 1 < cv.hout ? m : 0};
        conv_block(cv, n, t0, t1, nb2, stage0, stage1, acc);
        pool_block(cv, n, py, x0, nb2);
      }
    }
  }
}

// One TDPBF16PS on operands given as contiguous rows (m x 2kp bf16, kp x 2n bf16, m x n fp32).
inline void tile_dot(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  const TileConfig cfg = tile_dot_config(m, kp, n);
  const TileScope<Tiles> scope(cfg);
  Tiles::template load<0>(c, 4 * n);
  Tiles::template load<1>(a, 4 * kp);
  Tiles::template load<2>(b, 4 * n);
  Tiles::template dpbf16ps<0, 1, 2>();
  Tiles::template store<0>(c, 4 * n);
}

// A tight TDPBF16PS loop: 4 independent accumulators (the dot product's latency hidden), operands resident
// in tiles, no memory traffic: the tile peak per-layer figures are measured against (benchmarks/
// bench_amx_bf16.py). iters x 4 instructions x 16 x 16 x 32 multiply-adds. Returns an element of the
// result so the work is observable.
inline float tile_peak(std::int64_t iters) {
  const TileConfig cfg = conv_tile_config();
  const TileScope<Tiles> scope(cfg);
  alignas(64) std::uint16_t ab[16 * 32];
  for (int i = 0; i < 16 * 32; ++i) ab[i] = f32_to_bf16(1.f / 1024.f);
  alignas(64) float c[16 * 16] = {};
  Tiles::template zero<0>();
  Tiles::template zero<1>();
  Tiles::template zero<2>();
  Tiles::template zero<3>();
  Tiles::template load<4>(ab, kTileColsB);
  Tiles::template load<5>(ab, kTileColsB);
  Tiles::template load<6>(ab, kTileColsB);
  Tiles::template load<7>(ab, kTileColsB);
  for (std::int64_t i = 0; i < iters; ++i) {
    Tiles::template dpbf16ps<0, 4, 6>();
    Tiles::template dpbf16ps<1, 4, 7>();
    Tiles::template dpbf16ps<2, 5, 6>();
    Tiles::template dpbf16ps<3, 5, 7>();
  }
  Tiles::template store<3>(c, kTileColsB);
  return c[0];
}
