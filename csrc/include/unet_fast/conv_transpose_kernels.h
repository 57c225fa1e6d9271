// ConvTranspose2d(kernel 2, stride 2) kernel body, written once over `Vec` and compiled once per ISA.
//
// No include guard on purpose: csrc/cpu/conv_transpose2x2.cpp includes this file inside each per-ISA
// namespace, after unet_fast/cpu_vec_{portable,avx2}.h and unet_fast/cpu_gemm_kernels.h; CtConv is defined
// by the .cpp before it.
//
// Each output pixel (2i + a, 2j + b) depends on the one input pixel (i, j) and the kernel tap (a, b), so the
// op is one GEMM, [input pixels, Cin] x [Cin, 4 * Cout]. The packed weight holds it as panels of 16 output
// channels of one tap, q = tap * ncb + block, so a kMR x 16 tile of the GEMM is kMR consecutive input pixels
// of one row and 16 channels of one tap: its epilogue (bias, activation) stores each row of the tile
// straight into its output pixel, a channel slot of a concat buffer included. No intermediate [.., 4 Cout]
// tensor is written or read back.

// Packs input rows [r0, r1) (r = n * H + i) as kMR-pixel tiles [tile][Cin][kMR], pixels past the end of
// a row zero: the microkernel then reads one sequential stream, and never past the row.
inline void ct_pack_rows(const CtConv& cv, std::int64_t r0, std::int64_t r1, int tiles_w, float* apack) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* xrow = cv.x + (r / cv.h) * cv.xsn + (r % cv.h) * cv.xsh;
    for (int t = 0; t < tiles_w; ++t) {
      float* dst = apack + ((r - r0) * tiles_w + t) * static_cast<std::int64_t>(cv.cin) * kMR;
      for (int p = 0; p < kMR; ++p) {
        const int j = t * kMR + p;
        const float* src = j < cv.w ? xrow + j * cv.xsw : nullptr;
        for (int k = 0; k < cv.cin; ++k) dst[k * kMR + p] = src ? src[k] : 0.f;
      }
    }
  }
}

// Tile t of input row r (packed at a) against panel q: the kMR x 16 GEMM, then its epilogue stored at the
// output pixels (2i + a, 2j + b), channels of block q.
inline void ct_tile_panel(const CtConv& cv, std::int64_t r, int t, int q, const float* a) {
  const int n = static_cast<int>(r / cv.h), i = static_cast<int>(r % cv.h);
  const int tap = q / cv.ncb, ta = tap / 2, tb = tap % 2;
  const int co0 = (q % cv.ncb) * kNR;
  const int nvalid = cv.cout - co0 < kNR ? cv.cout - co0 : kNR;
  const int n0 = nvalid < kL ? nvalid : kL, n1 = nvalid - n0;  // valid lanes of the tile's two vectors
  float c[kMR * kNR];
  gemm_6x16(a, 1, cv.panels + static_cast<std::int64_t>(q) * cv.cin * kNR, c, kNR, cv.cin, kMR);
  const Vec bias0 = cv.bias ? load_n(cv.bias + co0, n0) : Vec::zero();
  const Vec bias1 = cv.bias && n1 > 0 ? load_n(cv.bias + co0 + kL, n1) : Vec::zero();
  float* o = cv.out + n * cv.osn + (2 * i + ta) * cv.osh + (2 * t * kMR + tb) * cv.osw + co0;
  const int nj = cv.w - t * kMR < kMR ? cv.w - t * kMR : kMR;
  for (int p = 0; p < nj; ++p, o += 2 * cv.osw) {
    store_n(o, epilogue_v(Vec::load(c + p * kNR), bias0, nullptr, n0, cv.ep), n0);
    if (n1 > 0) store_n(o + kL, epilogue_v(Vec::load(c + p * kNR + kL), bias1, nullptr, n1, cv.ep), n1);
  }
}

// Work items are (row block, panel group) pairs: a row block is as many input rows as pack into ~128 KiB, a
// panel group as many panels as fit in ~512 KiB (the whole weight of the upper decoder levels). A thread
// runs every tile of its block against every panel of its group, all panels of one tile in turn, so the
// output pixels a tile writes are still in L1 when the next panel adds its channels. (On Zen 3, 1 thread,
// 32-256 KiB row blocks x 64-512 KiB panel groups were all within 5% of each other.)
inline void run(const CtConv& cv) {
  const std::int64_t rows = static_cast<std::int64_t>(cv.n) * cv.h;
  const int tiles_w = (cv.w + kMR - 1) / kMR;
  const std::int64_t row_floats = static_cast<std::int64_t>(tiles_w) * kMR * cv.cin;
  const std::int64_t tile_floats = static_cast<std::int64_t>(kMR) * cv.cin;
  const std::int64_t rb_max = (128 << 10) / (row_floats * static_cast<std::int64_t>(sizeof(float)));
  const std::int64_t rb = rb_max < 1 ? 1 : (rb_max < rows ? rb_max : rows);
  const std::int64_t nrb = (rows + rb - 1) / rb;
  const int npanels = 4 * cv.ncb;
  const std::int64_t pg_max = (512 << 10) / (static_cast<std::int64_t>(cv.cin) * kNR * sizeof(float));
  const int pg = pg_max < 1 ? 1 : (pg_max < npanels ? static_cast<int>(pg_max) : npanels);
  const int npg = (npanels + pg - 1) / pg;
#pragma omp parallel num_threads(cv.num_threads)
  {
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
