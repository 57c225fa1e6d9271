// ConvTranspose2d(kernel 2, stride 2) kernel body, written once over `Vec` and compiled once per variant.
//
// No include guard on purpose: cpu_kernel_body.h includes this file inside each variant's namespace, after
// the variant's `Vec`, its blocking (kCtMR pixels x kCtNR = kCtNV vectors of channels) and
// cpu_gemm_kernels.h; CtConv is unet_fast/conv_transpose2x2.h.
//
// Each output pixel (2i + a, 2j + b) depends on the one input pixel (i, j) and the kernel tap (a, b), so the
// op is one GEMM, [input pixels, Cin] x [Cin, 4 * Cout]. The packed weight holds it as panels of kCtNR output
// channels of one tap, q = tap * ncb + block, so a kCtMR x kCtNR tile of the GEMM is kCtMR consecutive input pixels
// of one row and kCtNR channels of one tap: its epilogue (bias, activation) stores each row of the tile
// straight into its output pixel, a channel slot of a concat buffer included. No intermediate [.., 4 Cout]
// tensor is written or read back.

// Packs input rows [r0, r1) (r = n * H + i) as kCtMR-pixel tiles [tile][Cin][kCtMR], pixels past the end of
// a row zero: the microkernel then reads one sequential stream, and never past the row.
inline void ct_pack_rows(const CtConv& cv, std::int64_t r0, std::int64_t r1, int tiles_w, float* apack) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* xrow = cv.x + (r / cv.h) * cv.xsn + (r % cv.h) * cv.xsh;
    for (int t = 0; t < tiles_w; ++t) {
      float* dst = apack + ((r - r0) * tiles_w + t) * static_cast<std::int64_t>(cv.cin) * kCtMR;
      for (int p = 0; p < kCtMR; ++p) {
        const int j = t * kCtMR + p;
        const float* src = j < cv.w ? xrow + j * cv.xsw : nullptr;
        for (int k = 0; k < cv.cin; ++k) dst[k * kCtMR + p] = src ? src[k] : 0.f;
      }
    }
  }
}

// Tile t of input row r (packed at a) against panel q: the kCtMR x kCtNR GEMM, then its epilogue stored at
// the output pixels (2i + a, 2j + b), channels of block q.
inline void ct_tile_panel(const CtConv& cv, std::int64_t r, int t, int q, const float* a) {
  const int n = static_cast<int>(r / cv.h), i = static_cast<int>(r % cv.h);
  const int tap = q / cv.ncb, ta = tap / 2, tb = tap % 2;
  const int co0 = (q % cv.ncb) * kCtNR;
  const int nvalid = cv.cout - co0 < kCtNR ? cv.cout - co0 : kCtNR;
  const int nvec = (nvalid + kL - 1) / kL;  // vectors of the tile holding valid channels
  float c[kCtMR * kCtNR];
  gemm_tile<kCtMR, kCtNV>(a, 1, cv.panels + static_cast<std::int64_t>(q) * cv.cin * kCtNR, c, kCtNR, cv.cin, kCtMR);
  Vec bias[kCtNV];
  for (int j = 0; j < nvec; ++j) {
    const int nl = nvalid - j * kL < kL ? nvalid - j * kL : kL;
    bias[j] = cv.bias ? load_n(cv.bias + co0 + j * kL, nl) : Vec::zero();
  }
  float* o = cv.out + n * cv.osn + (2 * i + ta) * cv.osh + (2 * t * kCtMR + tb) * cv.osw + co0;
  const int nj = cv.w - t * kCtMR < kCtMR ? cv.w - t * kCtMR : kCtMR;
  for (int p = 0; p < nj; ++p, o += 2 * cv.osw) {
    for (int j = 0; j < nvec; ++j) {
      const int nl = nvalid - j * kL < kL ? nvalid - j * kL : kL;
      const float* no_residual = nullptr;
      store_n(o + j * kL, epilogue_v(Vec::load(c + p * kCtNR + j * kL), bias[j], no_residual, nl, cv.ep), nl);
    }
  }
}

// Work items are (row block, panel group) pairs: a row block is as many input rows as pack into ~128 KiB, a
// panel group as many panels as fit in ~512 KiB (the whole weight of the upper decoder levels). A thread
// runs every tile of its block against every panel of its group, all panels of one tile in turn, so the
// output pixels a tile writes are still in L1 when the next panel adds its channels. (On Zen 3, 1 thread,
// 32-256 KiB row blocks x 64-512 KiB panel groups were all within 5% of each other.)
inline void conv_transpose2x2(const CtConv& cv) {
  const std::int64_t rows = static_cast<std::int64_t>(cv.n) * cv.h;
  const int tiles_w = (cv.w + kCtMR - 1) / kCtMR;
  const std::int64_t row_floats = static_cast<std::int64_t>(tiles_w) * kCtMR * cv.cin;
  const std::int64_t tile_floats = static_cast<std::int64_t>(kCtMR) * cv.cin;
  const std::int64_t rb_max = (128 << 10) / (row_floats * static_cast<std::int64_t>(sizeof(float)));
  const std::int64_t rb = rb_max < 1 ? 1 : (rb_max < rows ? rb_max : rows);
  const std::int64_t nrb = (rows + rb - 1) / rb;
  const int npanels = 4 * cv.ncb;
  const std::int64_t pg_max = (512 << 10) / (static_cast<std::int64_t>(cv.cin) * kCtNR * sizeof(float));
  const int pg = pg_max < 1 ? 1 : (pg_max < npanels ? static_cast<int>(pg_max) : npanels);
  const int npg = (npanels + pg - 1) / pg;
#pragma omp parallel num_threads(cv.num_threads)
  {
    [[maybe_unused]] const ThreadState state;
    std::vector<float> apack(static_cast<std::size_t>(rb * row_floats));
    std::int64_t packed = -1;  // the row block apack holds
#pragma omp for collapse(2) schedule(static)
    for (std::int64_t g = 0; g < nrb; ++g) {
      for (int pgi = 0; pgi < npg; ++pgi) {
        const std::int64_t r0 = g * rb, r1 = r0 + rb < rows ? r0 + rb : rows;
        const int q0 = pgi * pg, q1 = q0 + pg < npanels ? q0 + pg : npanels;
        if (packed != g) {
          ct_pack_rows(cv, r0, r1, tiles_w, apack.data());
          packed = g;
        }
        for (std::int64_t r = r0; r < r1; ++r)
          for (int t = 0; t < tiles_w; ++t)
            for (int q = q0; q < q1; ++q)
              ct_tile_panel(cv, r, t, q, apack.data() + (r - r0) * row_floats + t * tile_floats);
      }
    }
  }
}
