// The bf16 direct convolution, written once over a tile backend (amx/tile.h) and compiled per backend:
// csrc/cpu/amx/conv_bf16_portable.cpp (the emulator) and conv_bf16_amx.cpp (native, under UF_TARGET_AMX).
// No include guard on purpose: each backend file includes this inside its own namespace, after defining
// `Tiles` (TilesPortable or TilesAmx).
//
// Blocking. A block is 32 output pixels (two A tiles of 16 rows; pixels counted row-major over one image's
// Hout x Wout, so small images waste nothing) x 32 output channels (two B tiles of 16 columns), held in the
// 2x2 accumulator tiles tmm0..3 while every tap (ky, kx) and 32-channel input chunk adds its product: the
// KxK taps are a batch of GEMMs accumulating into the same tiles, no im2col buffer. tmm4/5 hold A, tmm6/7 B.
//
// A tiles are read in place when they can be: 16 pixels of one output row whose taps all lie inside the
// image and a full 32-channel chunk are 16 input pixels at a constant distance (stride x the W stride), one
// strided tile load from the activation. Anything else (a row end, padding, a channel tail) is an edge tile,
// gathered into a zero-filled 1 KB staging tile: never reads outside the tensor or another op's channels.
//
// The accumulators are stored to a 32 x 32 fp32 block, and the epilogue (bias, residual, activation, store
// as bf16 or fp32 into the output slot) runs on it while it is in L1.

inline TileConfig conv_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 4; ++t) set_tile(cfg, t, 16, 64);  // C: 16 pixels x 16 fp32 channels
  set_tile(cfg, 4, 16, 64);                              // A: 16 pixels x 32 bf16 input channels (16 K pairs)
  set_tile(cfg, 5, 16, 64);
  set_tile(cfg, 6, 16, 64);                              // B: 16 K pairs x 16 output channels x 2
  set_tile(cfg, 7, 16, 64);
  return cfg;
}

// Where the A tile of 16 pixels p0.. (tap ky, kx; chunk kc) comes from: the activation itself (returns
// the pointer, *stride set) or the staging tile `stage` filled here.
inline const void* a_tile_source(const ConvBf16& cv, std::int64_t n, std::int64_t p0, int ky, int kx, int kc,
                                 std::uint16_t* stage, std::int64_t* stride) {
  const std::int64_t npix = cv.hout * cv.wout;
  const int c0 = kc * kChunkCin, cn = cv.cin - c0 < kChunkCin ? cv.cin - c0 : kChunkCin;
  if (p0 + 16 <= npix && cn == kChunkCin) {
    const std::int64_t oy = p0 / cv.wout, ox = p0 % cv.wout;
    const std::int64_t iy = oy * cv.stride + ky - cv.pad;
    const std::int64_t ix0 = ox * cv.stride + kx - cv.pad, ix1 = (ox + 15) * cv.stride + kx - cv.pad;
    if (ox + 16 <= cv.wout && iy >= 0 && iy < cv.x.h && ix0 >= 0 && ix1 < cv.x.w) {
      *stride = cv.stride * cv.x.sw * static_cast<std::int64_t>(sizeof(std::uint16_t));
      return cv.x.pixel(n, iy, ix0) + c0;
    }
  }
  // Row by row: a full chunk is one fixed 64-byte copy (inlined), a padding row or a pixel past the image a
  // fixed 64-byte zero fill, only a channel tail a zero fill plus a short copy.
  std::int64_t oy = p0 / cv.wout, ox = p0 % cv.wout;  // of pixel p0 + r, stepped (no division per row)
  for (int r = 0; r < 16; ++r, ++ox) {
    if (ox == cv.wout) ox = 0, ++oy;
    std::uint16_t* row = stage + r * 32;
    const std::int64_t iy = oy * cv.stride + ky - cv.pad, ix = ox * cv.stride + kx - cv.pad;
    if (p0 + r >= npix || iy < 0 || iy >= cv.x.h || ix < 0 || ix >= cv.x.w) {  // zero padding
      std::memset(row, 0, kTileColsB);
    } else if (cn == kChunkCin) {
      std::memcpy(row, cv.x.pixel(n, iy, ix) + c0, kTileColsB);
    } else {
      std::memset(row, 0, kTileColsB);
      std::memcpy(row, cv.x.pixel(n, iy, ix) + c0, static_cast<std::size_t>(cn) * sizeof(std::uint16_t));
    }
  }
  *stride = kTileColsB;
  return stage;
}

// One block: pixels p0 .. p0+31 of image n, output channels 32 nb2 .. 32 nb2 + 31.
inline void conv_block(const ConvBf16& cv, std::int64_t n, std::int64_t p0, int nb2, std::uint16_t* stage0,
                       std::uint16_t* stage1, float* acc) {
  Tiles::template zero<0>();
  Tiles::template zero<1>();
  Tiles::template zero<2>();
  Tiles::template zero<3>();
  const std::int64_t npix = cv.hout * cv.wout;
  const bool two_m = p0 + 16 < npix;  // the second A tile has a pixel at all
  for (int ky = 0; ky < cv.kh; ++ky) {
    for (int kx = 0; kx < cv.kw; ++kx) {
      const int tap = ky * cv.kw + kx;
      for (int kc = 0; kc < cv.kc; ++kc) {
        // B tiles nb = 2 nb2, 2 nb2 + 1 of (tap, kc): adjacent 1 KB tiles, rows of 64 bytes.
        const std::uint16_t* b = cv.w + ((static_cast<std::int64_t>(tap) * cv.kc + kc) * cv.nb + 2 * nb2) * 512;
        std::int64_t s0 = 0, s1 = 0;
        const void* a0 = a_tile_source(cv, n, p0, ky, kx, kc, stage0, &s0);
        Tiles::template load<4>(a0, s0);
        Tiles::template load<6>(b, kTileColsB);
        Tiles::template load<7>(b + 512, kTileColsB);
        Tiles::template dpbf16ps<0, 4, 6>();
        Tiles::template dpbf16ps<1, 4, 7>();
        if (two_m) {
          const void* a1 = a_tile_source(cv, n, p0 + 16, ky, kx, kc, stage1, &s1);
          Tiles::template load<5>(a1, s1);
          Tiles::template dpbf16ps<2, 5, 6>();
          Tiles::template dpbf16ps<3, 5, 7>();
        }
      }
    }
  }
  // acc[r][j]: pixel p0 + r, channel 32 nb2 + j.
  constexpr std::int64_t kRow = kBlockCout * sizeof(float);
  Tiles::template store<0>(acc, kRow);
  Tiles::template store<1>(acc + 16, kRow);
  if (two_m) {
    Tiles::template store<2>(acc + 16 * kBlockCout, kRow);
    Tiles::template store<3>(acc + 16 * kBlockCout + 16, kRow);
  }
  const int co0 = nb2 * kBlockCout, cn = cv.cout - co0 < kBlockCout ? cv.cout - co0 : kBlockCout;
#ifdef UF_BF16_BLOCK_EPILOGUE
  // A backend's vectorised epilogue (same per-element arithmetic as the loop below), which returns false,
  // having written nothing, for the cases it leaves to that loop (conv_bf16_avx512bf16.cpp).
  if (UF_BF16_BLOCK_EPILOGUE(cv, n, p0, co0, cn, acc)) return;
#endif
  const Epilogue ep{cv.act, cv.negative_slope};
  for (int r = 0; r < kBlockPixels && p0 + r < npix; ++r) {
    const std::int64_t oy = (p0 + r) / cv.wout, ox = (p0 + r) % cv.wout;
    if (cv.scatter_cout > 0) {  // transposed 2x2/s2: column (2a + b) Ct + c -> pixel (2 oy + a, 2 ox + b), channel c
      for (int j = 0; j < cn; ++j) {
        const int ab = (co0 + j) / cv.scatter_cout, c = (co0 + j) % cv.scatter_cout;
        const float bias = cv.bias != nullptr ? cv.bias[c] : 0.f;
        cv.out.put(n, 2 * oy + ab / 2, 2 * ox + ab % 2, c, epilogue(acc[r * kBlockCout + j], bias, 0.f, ep));
      }
      continue;
    }
    for (int j = 0; j < cn; ++j) {
      const int co = co0 + j;
      const float bias = cv.bias != nullptr ? cv.bias[co] : 0.f;
      const float res = cv.residual.elem != Elem::kNone ? cv.residual.get(n, oy, ox, co) : 0.f;
      cv.out.put(n, oy, ox, co, epilogue(acc[r * kBlockCout + j], bias, res, ep));
    }
  }
}

inline void conv_bf16(const ConvBf16& cv) {
  const std::int64_t npix = cv.hout * cv.wout;
  const std::int64_t mblocks = (npix + kBlockPixels - 1) / kBlockPixels, nblocks = cv.nb / 2;
  const std::int64_t tasks = cv.x.n * mblocks * nblocks;
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
      conv_block(cv, n, mb * kBlockPixels, nb2, stage0, stage1, acc);
    }
  }
}

// One TDPBF16PS on operands given as contiguous rows (m x 2kp bf16, kp x 2n bf16, m x n fp32).
inline void tile_dot(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n) {
  TileConfig cfg;
  set_tile(cfg, 0, m, 4 * n);
  set_tile(cfg, 1, m, 4 * kp);
  set_tile(cfg, 2, kp, 4 * n);
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
