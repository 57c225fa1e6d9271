// Index math of the conv's implicit GEMM, shared by the CUDA kernels (cuda_conv_kernel.h) and a host-side
// test harness (tests/kernels/cuda/conv_tiles_harness.cpp, compiled with g++), so tile decomposition,
// im2col addressing through views (virtual concat, resample, crop/pad) and the epilogue's output mapping
// are checked against PyTorch on machines without a GPU.
//
// The GEMM: rows = output pixels of one image, tiled spatially TH x TW (so a tile holds whole 2x2 pool
// quads: the pool output is computed in the same epilogue); columns = output channels (for the transposed
// conv: 4 x out channels, one block of columns per 2x2 output position); reduction = kH * kW taps x the
// virtual concat's channels, each tap's channels padded to cin_pad (a multiple of the k-tile BK) so a
// k-tile never straddles two taps and its pixel coordinates are computed once per row. Convs with fewer
// channels than BK (a U-Net's first layer: 1 or 3) use the "taps packed" layout instead, k = tap * cin + c
// padded once at the end, so they do not multiply mostly zeros.
#pragma once

#include "unet_fast/cuda_view.h"
#include "unet_fast/epilogue.h"
#include "unet_fast/macros.h"

namespace unet_fast {

constexpr int kMaxViews = 4;  // inputs of one virtual concat (unet_fast/kernels/cuda.py: MAX_VIEWS)

struct ConvParams {
  ViewDesc views[kMaxViews];
  int num_views;
  int c_end[kMaxViews];  // channel end of each view in the virtual concat (prefix sums)
  const void* weight;    // packed [gemm_n][k_row], storage dtype
  const float* bias;     // [out_channels] or nullptr
  const void* residual;  // [batch, ho, wo, out_channels] or nullptr (conv only)
  long long res_sn, res_sh, res_sw;
  void* out;
  long long out_sn, out_sh, out_sw;
  void* pool;  // [batch, ho / 2, wo / 2, out_channels] or nullptr (conv only)
  long long pool_sn, pool_sh, pool_sw;
  int batch, hi, wi;  // hi, wi: the size every view reads as
  int cin, cin_pad;      // cin_pad == cin in the taps-packed layout
  int taps_packed;       // 1: k = tap * cin + c over all taps (k_row = that, rounded up to BK)
  int k_row;             // packed weight row length: kh * kw * cin_pad, or round_up(kh * kw * cin, BK)
  int gemm_n;        // out_channels (conv) or 4 * out_channels (transposed conv)
  int out_channels;
  int kh, kw, stride_y, stride_x, pad_y, pad_x, dil_y, dil_x;
  int ho, wo;        // GEMM rows are the pixels of a ho x wo image (the input's, for the transposed conv)
  int tiles_x;       // spatial tiles along W; blockIdx.x = tile_y * tiles_x + tile_x
  Epilogue ep;
};

struct ConvTile {
  int n, oy0, ox0, col0;
};

template <int TH, int TW, int BN>
UF_HD ConvTile conv_tile(const ConvParams& p, int bx, int by, int bz) {
  ConvTile t;
  t.n = bz;
  t.oy0 = (bx / p.tiles_x) * TH;
  t.ox0 = (bx % p.tiles_x) * TW;
  t.col0 = by * BN;
  return t;
}

// Row m of a tile is output pixel (oy, ox); false past the image edge (the row then reads zeros and is
// never stored).
template <int TW>
UF_HD bool tile_pixel(const ConvParams& p, const ConvTile& t, int m, int* oy, int* ox) {
  *oy = t.oy0 + m / TW;
  *ox = t.ox0 + m % TW;
  return *oy < p.ho && *ox < p.wo;
}

template <int BK>
UF_HD int conv_k_tiles(const ConvParams& p) {
  return p.k_row / BK;
}

// k-tile kt covers channels [c0, c0 + BK) of filter tap `tap`.
template <int BK>
UF_HD void k_tile_origin(const ConvParams& p, int kt, int* tap, int* c0) {
  const int chunks = p.cin_pad / BK;
  *tap = kt / chunks;
  *c0 = (kt - *tap * chunks) * BK;
}

// The input pixel (in the views' common coordinates) that row m reads for `tap`; false in the padding.
template <int TW>
UF_HD bool tap_input_pixel(const ConvParams& p, const ConvTile& t, int m, int tap, int* iy, int* ix) {
  int oy, ox;
  const bool row_ok = tile_pixel<TW>(p, t, m, &oy, &ox);
  const int ky = tap / p.kw;
  const int kx = tap - ky * p.kw;
  *iy = oy * p.stride_y - p.pad_y + ky * p.dil_y;
  *ix = ox * p.stride_x - p.pad_x + kx * p.dil_x;
  return row_ok && *iy >= 0 && *iy < p.hi && *ix >= 0 && *ix < p.wi;
}

// A(m, k) for `count` consecutive k = k0 .. k0 + count - 1 of k-tile kt, passed to sink(i, value) in fp32:
// the generic im2col loader (any view, any alignment). Each view's taps are computed once per run.
// Taps-packed layout: every k of the run has its own tap, so the pixel and view are found per element
// (cheap next to the padding it saves: only used when cin < BK).
template <typename T, int TW, int BK, typename Sink>
UF_HD void load_a_run_packed(const ConvParams& p, const ConvTile& t, int m, int kt, int k0, int count,
                             Sink&& sink) {
  const int k_end = p.kh * p.kw * p.cin;
  for (int i = 0; i < count; ++i) {
    const int k = kt * BK + k0 + i;
    float value = 0.f;
    int iy, ix;
    const int tap = k / p.cin;
    const int c = k - tap * p.cin;
    if (k < k_end && tap_input_pixel<TW>(p, t, m, tap, &iy, &ix)) {
      int cb = 0;
UF_UNROLL
      for (int v = 0; v < kMaxViews; ++v) {
        if (v < p.num_views && c >= cb && c < p.c_end[v])
          value = sample_channel<T>(p.views[v], view_sample(p.views[v], t.n, iy, ix), c - cb);
        if (v < p.num_views) cb = p.c_end[v];
      }
    }
    sink(i, value);
  }
}

template <typename T, int TW, int BK, typename Sink>
UF_HD void load_a_run(const ConvParams& p, const ConvTile& t, int m, int kt, int k0, int count, Sink&& sink) {
  if (p.taps_packed) {
    load_a_run_packed<T, TW, BK>(p, t, m, kt, k0, count, sink);
    return;
  }
  int tap, c0, iy, ix;
  k_tile_origin<BK>(p, kt, &tap, &c0);
  const int c = c0 + k0;
  int i = 0;
  if (tap_input_pixel<TW>(p, t, m, tap, &iy, &ix)) {
    int cb = 0;
UF_UNROLL
    for (int v = 0; v < kMaxViews; ++v) {  // unrolled: static indices keep p.views out of local memory
      if (v < p.num_views && i < count && c + i < p.c_end[v]) {
        const ViewSample s = view_sample(p.views[v], t.n, iy, ix);
        for (; i < count && c + i < p.c_end[v]; ++i) sink(i, sample_channel<T>(p.views[v], s, c + i - cb));
      }
      if (v < p.num_views) cb = p.c_end[v];
    }
  }
  for (; i < count; ++i) sink(i, 0.f);  // padding pixels and channels past cin
}

// Fast-path eligibility for 16-byte async copies of A (8 fp16/bf16 channels): no resample, every view's
// base 16-byte aligned, its strides and channel count multiples of 8 (so an 8-channel chunk never
// straddles two views and never leaves its pixel).
UF_HD bool conv_async_a_ok(const ConvParams& p, int elem_bytes) {
  if (16 % elem_bytes != 0 || p.taps_packed) return false;
  const int vec = 16 / elem_bytes;
  for (int v = 0; v < p.num_views; ++v) {
    const ViewDesc& d = p.views[v];
    const unsigned long long addr = reinterpret_cast<unsigned long long>(d.data);
    if (d.mode != static_cast<int>(ResampleMode::kNone) || addr % 16 != 0 || d.sn % vec != 0 || d.sh % vec != 0 ||
        d.sw % vec != 0 || d.c % vec != 0)
      return false;
  }
  return true;
}

// Source of the `vec`-channel chunk of A(m, k0 .. k0 + vec) in k-tile kt for the fast path, or nullptr
// where it reads zeros (padding pixel, window outside the image, channels past cin).
template <typename T, int TW, int BK>
UF_HD const T* a_chunk_src(const ConvParams& p, const ConvTile& t, int m, int kt, int k0) {
  int tap, c0, iy, ix;
  k_tile_origin<BK>(p, kt, &tap, &c0);
  const int c = c0 + k0;
  if (c >= p.cin || !tap_input_pixel<TW>(p, t, m, tap, &iy, &ix)) return nullptr;
  int cb = 0;
UF_UNROLL
  for (int v = 0; v < kMaxViews; ++v) {
    if (v < p.num_views && c < p.c_end[v]) {
      const ViewDesc& d = p.views[v];
      const int ry = iy + d.off_y, rx = ix + d.off_x;
      if (ry < 0 || ry >= d.rh || rx < 0 || rx >= d.rw) return nullptr;
      return static_cast<const T*>(d.data) + t.n * d.sn + ry * d.sh + rx * d.sw + (c - cb);
    }
    if (v < p.num_views) cb = p.c_end[v];
  }
  return nullptr;
}

// Element offset of B(k0, col) of k-tile kt in the packed weight ([gemm_n][k_row]); the k-tile's
// reduction indices are contiguous there, so B chunks are aligned vector loads.
template <int BK>
UF_HD long long b_offset(const ConvParams& p, int col, int kt, int k0) {
  return static_cast<long long>(col) * p.k_row + static_cast<long long>(kt) * BK + k0;
}

// Epilogue of GEMM element (row m, column col = absolute GEMM column): y = act(acc + bias + residual),
// stored to its output pixel and channel (for kScatter, column q * out_channels + co goes to pixel
// (2 oy + q / 2, 2 ox + q % 2), channel co). Returns y; rows/columns outside the output store nothing.
template <typename T, int TW, bool kScatter>
UF_HD float conv_store(const ConvParams& p, const ConvTile& t, int m, int col, float acc) {
  int oy, ox;
  if (!tile_pixel<TW>(p, t, m, &oy, &ox) || col >= p.gemm_n) return acc;
  int ch = col;
  if (kScatter) {
    const int q = col / p.out_channels;
    ch = col - q * p.out_channels;
    oy = 2 * oy + (q >> 1);
    ox = 2 * ox + (q & 1);
  }
  const float b = p.bias != nullptr ? p.bias[ch] : 0.f;
  float r = 0.f;
  if (!kScatter && p.residual != nullptr)
    r = to_float(static_cast<const T*>(p.residual)[t.n * p.res_sn + oy * p.res_sh + ox * p.res_sw + ch]);
  const float y = epilogue(acc, b, r, p.ep);
  static_cast<T*>(p.out)[t.n * p.out_sn + oy * p.out_sh + ox * p.out_sw + ch] = from_float<T>(y);
  return y;
}

// Pool output of pooled pixel pm (of the tile's TH/2 x TW/2) and column col, from the tile's y values
// (y_tile[m * ld + col - col0]). Floored like F.max_pool2d: quads past the last full one are skipped.
template <typename T, int TH, int TW>
UF_HD void conv_store_pool(const ConvParams& p, const ConvTile& t, int pm, int col, const float* y_tile, int ld) {
  const int ly = pm / (TW / 2), lx = pm % (TW / 2);
  const int py = t.oy0 / 2 + ly, px = t.ox0 / 2 + lx;
  if (ly >= TH / 2 || py >= p.ho / 2 || px >= p.wo / 2 || col >= p.gemm_n) return;
  const float* y = y_tile + (col - t.col0);
  const int m = 2 * ly * TW + 2 * lx;
  const float v = max_nan(max_nan(y[m * ld], y[(m + 1) * ld]), max_nan(y[(m + TW) * ld], y[(m + TW + 1) * ld]));
  static_cast<T*>(p.pool)[t.n * p.pool_sn + py * p.pool_sh + px * p.pool_sw + col] = from_float<T>(v);
}

}  // namespace unet_fast
