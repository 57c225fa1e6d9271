// The register-blocked direct bf16 convolution on AVX512-BF16 (issue 17): the avx512bf16 backend's fast
// path for plain (and nearest) sources, and the 2x2 transposed conv's 1x1 GEMM with its scatter epilogue
// (bilinear sources stay on the tile body, which stages their blend). Include ONLY inside namespace unet_fast::amx::avx512bf16 of
// csrc/cpu/amx/conv_bf16_avx512bf16.cpp (compiled under UF_TARGET_AVX512BF16), after the tile body
// (it reuses block_epilogue_avx512 and pool_block).
//
// Blocking (oneDNN's avx512_core_bf16 direct conv: "ur_w" output pixels x "oc_blocks"): one block is
// UR <= 14 consecutive output pixels of one output row x 32 output channels, 2 UR zmm accumulators that
// stay in registers across every tap (ky, kx) and every 32-channel input chunk of the block. Per K pair,
// the pair's two B rows (64 bytes each, the packed weight's VNNI-2 rows of output channels 0-15 / 16-31)
// are loaded into two zmm, and each pixel's input channel pair (one 32-bit word of the NHWC activation,
// read in place) is broadcast: acc = VDPBF16PS(acc, bcast(pair), b_row). No tile state, no staging copy.
//
// Bit-identical to the tile path over TilesAvx512Bf16: per output element one fp32 chain from zero, taps in
// order, then chunks, then pairs k increasing, each pair one VDPBF16PS (odd product, then even). The only
// products it leaves out are those whose A is zero in the tile path (a tap in the zero padding, pairs past
// Cin): adding an exact zero leaves a nonzero sum unchanged and can at most turn a -0 sum into +0, which
// the epilogue's "+ bias, + residual (a zero where there is none)" does anyway. A column inside the
// padding (a row end) is not skipped: its pixel reads a zero buffer, as the tile path's staged zero row.
//
// Channels: a K pair whose two channels lie in one source is one 32-bit read. A pair across two sources
// (an odd split of a virtual concat) or the last pair of an odd Cin (one real channel) is assembled from
// 16-bit reads (the missing half zero): never a read past Cin or into a neighbour's channels.
//
// Threads: OpenMP over (image, output row, or row pair with a fused 2x2 max-pool, 32-channel block), the
// channel block innermost so consecutive tasks of a thread reuse the same input rows (as the tile path).

// One run of K pairs of a chunk [k0, k1) whose channels all lie in source `src` (one 32-bit read per
// pair), or (special) the single pair k0 assembled from 16-bit reads: channel 2 k0 from source `src`,
// channel 2 k0 + 1 from source `src_hi` (-1: past Cin, zero).
struct DirectSeg {
  int src, src_hi;
  int k0, k1;
  bool special;
};

constexpr int kDirectMaxUr = 14;  // 28 accumulators + 2 B rows of the 32 zmm

// Per conv: the pair runs of each chunk (computed once).
struct DirectPlan {
  std::vector<DirectSeg> segs;   // all chunks' runs, chunk kc's are [first[kc], first[kc + 1])
  std::vector<int> first;
  std::vector<std::uint16_t> zeros;  // read by a pixel in the zero padding: indexed by virtual channel
};

inline DirectPlan direct_plan(const ConvBf16& cv) {
  DirectPlan p;
  p.zeros.assign(static_cast<std::size_t>(cv.cin) + 2, 0);
  auto src_of = [&](int c) {
    int s = 0;
    while (s + 1 < cv.nsrc && c >= cv.src[s + 1].c_begin) ++s;
    return s;
  };
  for (int kc = 0; kc < cv.kc; ++kc) {
    p.first.push_back(static_cast<int>(p.segs.size()));
    const int c0 = kc * kChunkCin, cn = cv.cin - c0 < kChunkCin ? cv.cin - c0 : kChunkCin;
    for (int k = 0; 2 * k < cn; ++k) {
      const int ch0 = c0 + 2 * k, ch1 = ch0 + 1;
      const int s0 = src_of(ch0), s1 = ch1 < cv.cin ? src_of(ch1) : -1;
      if (s0 == s1) {
        if (!p.segs.empty() && static_cast<int>(p.segs.size()) > p.first.back() && !p.segs.back().special &&
            p.segs.back().src == s0 && p.segs.back().k1 == k)
          p.segs.back().k1 = k + 1;
        else
          p.segs.push_back(DirectSeg{s0, s0, k, k + 1, false});
      } else {
        p.segs.push_back(DirectSeg{s0, s1, k, k + 1, true});
      }
    }
  }
  p.first.push_back(static_cast<int>(p.segs.size()));
  return p;
}

// Where the conv can run here: no bilinear source, no pool output of a transposed conv's scatter (the
// transposed conv itself runs here: a 1x1 conv whose epilogue scatters, as in the tile body).
inline bool direct_supported(const ConvBf16& cv) {
  if (cv.scatter_cout != 0 && cv.pool.elem != Elem::kNone) return false;
  for (int s = 0; s < cv.nsrc; ++s)
    if (cv.src[s].mode == ResampleMode::kBilinear) return false;
  return true;
}

inline __m512bh bcast_pair(const std::uint16_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(v));
}

// Block of UR pixels (ox0 .. ox0 + UR - 1 of output row oy, image n) x output channels 32 nb2 .. + 31,
// kernel rows ky0 .. ky1 - 1. acc_io: UR x kBlockCout fp32, the accumulators: read first unless `first`
// (then they start at zero), written at the end (an fp32 store and reload is exact, so a chain split over
// calls in tap order is the same chain).
template <int UR>
void direct_block(const ConvBf16& cv, const DirectPlan& plan, std::int64_t n, std::int64_t oy, std::int64_t ox0,
                  int nb2, float* acc_io, int ky0, int ky1, bool first) {
  __m512 acc[UR][2];
#pragma GCC unroll 14
  for (int i = 0; i < UR; ++i) {
    acc[i][0] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc_io + i * kBlockCout);
    acc[i][1] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc_io + i * kBlockCout + 16);
  }
  const std::uint16_t* const zeros = plan.zeros.data();
  for (int ky = ky0; ky < ky1; ++ky) {
    const std::int64_t iy = oy * cv.stride + ky - cv.pad;
    if (iy < 0 || iy >= cv.in_h) continue;  // zero padding: the whole tap adds nothing
    for (int kx = 0; kx < cv.kw; ++kx) {
      const int tap = ky * cv.kw + kx;
      const std::int64_t ix0 = ox0 * cv.stride + kx - cv.pad, ix_last = ix0 + (UR - 1) * cv.stride;
      // Per source: `base` (channel c of pixel i at base[i * step + c]) when all UR pixels read the
      // source in place at a constant step, else per pixel pointers (`pix`, the zero buffer where the
      // pixel reads zero), both indexed by virtual channel.
      const std::uint16_t* base[kMaxSources];
      std::int64_t step[kMaxSources];
      bool fast[kMaxSources];
      const std::uint16_t* pix[kMaxSources][UR];
      for (int s = 0; s < cv.nsrc; ++s) {
        const ConvSource& src = cv.src[s];
        const Tap& ty = src.ty[iy];
        fast[s] = src.mode == ResampleMode::kNone && ty.valid && ix0 >= 0 && ix_last < cv.in_w &&
                  src.tx[ix0].valid && src.tx[ix_last].valid;
        if (fast[s]) {  // plain: tx[ix].i0 = ix + off_x, valid on one interval
          base[s] = src.x.pixel(n, ty.i0, src.tx[ix0].i0) - src.c_begin;
          step[s] = cv.stride * src.x.sw;
          continue;
        }
        for (int i = 0; i < UR; ++i) {
          const std::int64_t ix = ix0 + i * cv.stride;
          pix[s][i] = ty.valid && ix >= 0 && ix < cv.in_w && src.tx[ix].valid
                          ? src.x.pixel(n, ty.i0, src.tx[ix].i0) - src.c_begin
                          : zeros;
        }
      }
      for (int kc = 0; kc < cv.kc; ++kc) {
        // B tiles nb = 2 nb2, 2 nb2 + 1 of (tap, kc): row k (a K pair) at b + 32 k and b + 512 + 32 k.
        const std::uint16_t* b = cv.w + ((static_cast<std::int64_t>(tap) * cv.kc + kc) * cv.nb + 2 * nb2) * 512;
        const int c0 = kc * kChunkCin;
        for (int si = plan.first[kc]; si < plan.first[kc + 1]; ++si) {
          const DirectSeg& sg = plan.segs[si];
          if (sg.special) {  // one pair from 16-bit reads, the missing half zero
            const int c = c0 + 2 * sg.k0;
            const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32 * sg.k0));
            const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 512 + 32 * sg.k0));
            if (sg.src_hi < 0 && fast[sg.src]) {  // the last pair of an odd Cin, in place (the RGB stem's)
              const std::uint16_t* const p = base[sg.src] + c;
              const std::int64_t st = step[sg.src];
#pragma GCC unroll 14
              for (int i = 0; i < UR; ++i) {
                // the channel in the even 16-bit lanes, zero in the odd ones: the pair (c, 0)
                const __m512bh a = reinterpret_cast<__m512bh>(
                    _mm512_maskz_set1_epi16(static_cast<__mmask32>(0x55555555u), static_cast<short>(p[i * st])));
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
              }
              continue;
            }
#pragma GCC unroll 14
            for (int i = 0; i < UR; ++i) {
              const std::uint16_t* plo = fast[sg.src] ? base[sg.src] + i * step[sg.src] : pix[sg.src][i];
              std::uint32_t v = plo[c];
              if (sg.src_hi >= 0) {
                const std::uint16_t* phi = fast[sg.src_hi] ? base[sg.src_hi] + i * step[sg.src_hi] : pix[sg.src_hi][i];
                v |= static_cast<std::uint32_t>(phi[c + 1]) << 16;
              }
              const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<std::int32_t>(v)));
              acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
              acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
            }
            continue;
          }
          const int s = sg.src;
          if (fast[s] && sg.k0 == 0 && sg.k1 == kChunkCin / 2) {
            // The common case, a whole chunk in place: the 16 pairs unrolled, so each pixel's pair k is its
            // own pointer + a constant displacement (one pointer per pixel, no per-pair address arithmetic).
            const std::uint16_t* pp[UR];
#pragma GCC unroll 14
            for (int i = 0; i < UR; ++i) pp[i] = base[s] + c0 + i * step[s];
#pragma GCC unroll 16
            for (int k = 0; k < kChunkCin / 2; ++k) {
              const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32 * k));
              const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 512 + 32 * k));
#pragma GCC unroll 14
              for (int i = 0; i < UR; ++i) {
                const __m512bh a = bcast_pair(pp[i] + 2 * k);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
              }
            }
          } else if (fast[s]) {
            const std::uint16_t* const p = base[s] + c0;
            const std::int64_t st = step[s];
            for (int k = sg.k0; k < sg.k1; ++k) {
              const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32 * k));
              const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 512 + 32 * k));
#pragma GCC unroll 14
              for (int i = 0; i < UR; ++i) {
                const __m512bh a = bcast_pair(p + i * st + 2 * k);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
              }
            }
          } else {
            for (int k = sg.k0; k < sg.k1; ++k) {
              const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32 * k));
              const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 512 + 32 * k));
#pragma GCC unroll 14
              for (int i = 0; i < UR; ++i) {
                const __m512bh a = bcast_pair(pix[s][i] + c0 + 2 * k);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
              }
            }
          }
        }
      }
    }
  }
#pragma GCC unroll 14
  for (int i = 0; i < UR; ++i) {
    _mm512_storeu_ps(acc_io + i * kBlockCout, acc[i][0]);
    _mm512_storeu_ps(acc_io + i * kBlockCout + 16, acc[i][1]);
  }
}

using DirectBlockFn = void (*)(const ConvBf16&, const DirectPlan&, std::int64_t, std::int64_t, std::int64_t, int,
                               float*, int, int, bool);

template <int... URs>
constexpr std::array<DirectBlockFn, sizeof...(URs)> direct_block_table(std::integer_sequence<int, URs...>) {
  return {&direct_block<URs + 1>...};
}

// One output row of image n, channel block nb2, kernel rows ky0 .. ky1 - 1: the row cut into
// ceil(Wout / 14) blocks of near-equal width (16 -> 8 + 8, not 14 + 2: a narrow tail block would reload B
// for few pixels). acc: the row's Wout x kBlockCout accumulators when `whole_row` (kept between calls of
// successive kernel-row ranges), else a kDirectMaxUr x kBlockCout scratch. The epilogue runs when `last`.
inline void direct_row(const ConvBf16& cv, const DirectPlan& plan, std::int64_t n, std::int64_t oy, int nb2,
                       float* acc_row, bool whole_row, int ky0, int ky1, bool first, bool last) {
  static constexpr auto table = direct_block_table(std::make_integer_sequence<int, kDirectMaxUr>{});
  const std::int64_t nblk = (cv.wout + kDirectMaxUr - 1) / kDirectMaxUr;
  const int co0 = nb2 * kBlockCout, cn = cv.cout - co0 < kBlockCout ? cv.cout - co0 : kBlockCout;
  std::int64_t ox0 = 0;
  for (std::int64_t bi = 0; bi < nblk; ++bi) {
    const int ur = static_cast<int>((cv.wout - ox0 + (nblk - bi) - 1) / (nblk - bi));  // ceil(rest / blocks left)
    float* const acc = whole_row ? acc_row + ox0 * kBlockCout : acc_row;
    table[ur - 1](cv, plan, n, oy, ox0, nb2, acc, ky0, ky1, first);
    if (last && !block_epilogue_avx512(cv, n, oy * cv.wout + ox0, ur, co0, cn, acc))
      epilogue_run(cv, n, oy * cv.wout + ox0, ur, co0, cn, acc);
    ox0 += ur;
  }
}

inline void conv_bf16_direct(const ConvBf16& cv) {
  const DirectPlan plan = direct_plan(cv);
  const bool pooled = cv.pool.elem != Elem::kNone;
  const std::int64_t nblocks = cv.nb / 2;
  // Task order. Channel block innermost (consecutive tasks reuse the same input rows, B of every block
  // streamed per row) while the packed weight is smaller than one input image; rows innermost when it is
  // larger (deep layers: 16x16 x 1024 -> 1024 is 18 MB of B against a 0.5 MB image), so one block's B
  // (taps x chunks x 2 KB) stays in L2 across the rows instead of being re-read from memory per row.
  const std::int64_t w_bytes = static_cast<std::int64_t>(cv.kh) * cv.kw * cv.kc * cv.nb * 1024;
  const std::int64_t block_b = w_bytes / nblocks;
  const bool rows_inner = w_bytes > cv.in_h * cv.in_w * cv.cin * 2;
  // Where even one block's B is too large for L2 next to the image (1024 -> 1024: 576 KB per block, the
  // image 512 KB; Zen 4's L2 is 1 MB), a task is a whole image x one channel block, run one kernel row
  // at a time (a third of B), its accumulators for every pixel kept in memory between kernel rows
  // (Hout x Wout x 32 fp32: capped at 128 KB here). Only with a task per thread at least (the tasks are
  // images x channel blocks).
  const bool by_ky = rows_inner && cv.kh > 1 && block_b > 384 * 1024 && cv.hout * cv.wout <= 1024 &&
                     cv.batch * nblocks >= cv.num_threads;
  if (by_ky) {
    const std::int64_t tasks = cv.batch * nblocks;
#pragma omp parallel num_threads(cv.num_threads)
    {
      std::vector<float> acc(static_cast<std::size_t>(cv.hout * cv.wout * kBlockCout));
#pragma omp for schedule(static)
      for (std::int64_t t = 0; t < tasks; ++t) {
        const int nb2 = static_cast<int>(t % nblocks);
        const std::int64_t n = t / nblocks;
        for (int ky = 0; ky < cv.kh; ++ky)
          for (std::int64_t oy = 0; oy < cv.hout; ++oy)
            direct_row(cv, plan, n, oy, nb2, acc.data() + oy * cv.wout * kBlockCout, true, ky, ky + 1, ky == 0,
                       ky == cv.kh - 1);
        if (pooled)
          for (std::int64_t py = 0; 2 * py + 1 < cv.hout; ++py)
            for (std::int64_t x0 = 0; x0 < cv.wout; x0 += 16) pool_block(cv, n, py, x0, nb2);
      }
    }
    return;
  }
  // With a fused pool: a task is the output row pair 2 py, 2 py + 1 (then pool_block of its 16-column runs,
  // from rows still in cache); without: one output row.
  const std::int64_t rows = pooled ? (cv.hout + 1) / 2 : cv.hout;
  const std::int64_t tasks = cv.batch * rows * nblocks;
#pragma omp parallel num_threads(cv.num_threads)
  {
    alignas(64) float acc[kDirectMaxUr * kBlockCout];
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t n = t / (nblocks * rows), tr = t % (nblocks * rows);
      const int nb2 = static_cast<int>(rows_inner ? tr / rows : tr % nblocks);
      const std::int64_t r = rows_inner ? tr % rows : tr / nblocks;
      if (!pooled) {
        direct_row(cv, plan, n, r, nb2, acc, false, 0, cv.kh, true, true);
      } else {
        direct_row(cv, plan, n, 2 * r, nb2, acc, false, 0, cv.kh, true, true);
        if (2 * r + 1 < cv.hout) direct_row(cv, plan, n, 2 * r + 1, nb2, acc, false, 0, cv.kh, true, true);
        for (std::int64_t x0 = 0; x0 < cv.wout; x0 += 16) pool_block(cv, n, r, x0, nb2);
      }
    }
  }
}
