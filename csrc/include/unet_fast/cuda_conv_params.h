// Host side of the CUDA ops: turns the integers the Python launchers pass (views, pointers + strides, conv
// geometry) into ViewDesc / ConvParams, re-checking what could make a kernel read or write out of bounds.
// Shared by the pybind11 module and the g++ test harness (tests/kernels/cuda/), so the harness runs the
// kernels' index math on exactly the parameters the GPU would get.
#pragma once

#include <cstdint>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cuda_conv_tiles.h"
#include "unet_fast/cuda_view.h"

namespace unet_fast {

// A view as the launchers pass it: (ptr, sn, sh, sw, h, w, c, mode, rh, rw, align_corners, off_y, off_x).
using ViewInts = std::vector<long long>;
// An output or residual: (ptr, sn, sh, sw); ptr 0 = absent.
using PtrStrides = std::vector<long long>;

inline ViewDesc view_from_ints(const ViewInts& t) {
  UF_CHECK(t.size() == 13, "a view is 13 integers, got " << t.size());
  ViewDesc v;
  v.data = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(t[0]));
  v.sn = t[1];
  v.sh = t[2];
  v.sw = t[3];
  v.h = static_cast<int>(t[4]);
  v.w = static_cast<int>(t[5]);
  v.c = static_cast<int>(t[6]);
  v.mode = static_cast<int>(t[7]);
  v.rh = static_cast<int>(t[8]);
  v.rw = static_cast<int>(t[9]);
  v.align_corners = static_cast<int>(t[10]);
  v.off_y = static_cast<int>(t[11]);
  v.off_x = static_cast<int>(t[12]);
  UF_CHECK_PTR(v.data);
  UF_CHECK(v.h > 0 && v.w > 0 && v.c > 0, "view source " << v.h << "x" << v.w << "x" << v.c << " is empty");
  UF_CHECK(v.sn >= 0 && v.sh >= 0 && v.sw >= 0, "view strides must be non-negative");
  UF_CHECK(v.mode >= 0 && v.mode <= 2, "unknown resample mode " << v.mode);
  UF_CHECK(v.mode != 0 || (v.rh == v.h && v.rw == v.w), "a view without a resample keeps its size");
  UF_CHECK(v.rh > 0 && v.rw > 0, "resampled size must be positive");
  return v;
}

inline void unpack_ptr_strides(const PtrStrides& t, const char* what, const void** ptr, long long* sn, long long* sh,
                               long long* sw) {
  UF_CHECK(t.size() == 4, what << " is (ptr, sn, sh, sw), got " << t.size() << " integers");
  *ptr = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(t[0]));
  *sn = t[1];
  *sh = t[2];
  *sw = t[3];
  UF_CHECK(*sn >= 0 && *sh >= 0 && *sw >= 0, what << " strides must be non-negative");
}

inline void check_float_dtype(int dtype) { UF_CHECK(dtype >= 0 && dtype <= 2, "unknown float dtype code " << dtype); }

// The k-tile of each dtype's kernel: the packed weight pads every tap's channels to a multiple of it.
inline int conv_block_k(int dtype) { return dtype == 0 ? 16 : 32; }

// The packed weight's reduction layout (cuda_conv_tiles.h): per-tap padding, or taps packed.
inline void set_k_layout(ConvParams* p, int dtype, int taps_packed) {
  const int bk = conv_block_k(dtype);
  p->taps_packed = taps_packed != 0;
  if (p->taps_packed) {
    UF_CHECK(p->cin_pad == p->cin, "cin_pad " << p->cin_pad << " must equal cin " << p->cin << " with taps packed");
    p->k_row = (p->kh * p->kw * p->cin + bk - 1) / bk * bk;
  } else {
    UF_CHECK(p->cin_pad >= p->cin && p->cin_pad % bk == 0,
             "cin_pad " << p->cin_pad << " must be a multiple of " << bk << " and >= cin " << p->cin);
    p->k_row = p->kh * p->kw * p->cin_pad;
  }
}

inline void set_common(ConvParams* p, std::uintptr_t weight, std::uintptr_t bias, const PtrStrides& out, int act,
                       float slope) {
  const void* out_ptr;
  unpack_ptr_strides(out, "out", &out_ptr, &p->out_sn, &p->out_sh, &p->out_sw);
  UF_CHECK_PTR(out_ptr);
  p->out = const_cast<void*>(out_ptr);
  UF_CHECK_PTR(weight);
  p->weight = reinterpret_cast<const void*>(weight);
  p->bias = reinterpret_cast<const float*>(bias);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  p->ep = Epilogue{static_cast<Act>(act), slope};
}

// geom = (n, hi, wi, cin, cin_pad, cout, kh, kw, sy, sx, py, px, dy, dx, ho, wo, taps_packed).
inline ConvParams make_conv_params(int dtype, const std::vector<ViewInts>& views, std::uintptr_t weight,
                                   std::uintptr_t bias, const PtrStrides& residual, const PtrStrides& out,
                                   const PtrStrides& pool, const std::vector<int>& geom, int act, float slope) {
  check_float_dtype(dtype);
  UF_CHECK(!views.empty() && views.size() <= static_cast<size_t>(kMaxViews),
           "1 to " << kMaxViews << " views, got " << views.size());
  UF_CHECK(geom.size() == 17, "geometry is 17 integers, got " << geom.size());
  ConvParams p{};
  p.num_views = static_cast<int>(views.size());
  p.batch = geom[0], p.hi = geom[1], p.wi = geom[2], p.cin = geom[3], p.cin_pad = geom[4];
  p.gemm_n = p.out_channels = geom[5];
  p.kh = geom[6], p.kw = geom[7], p.stride_y = geom[8], p.stride_x = geom[9];
  p.pad_y = geom[10], p.pad_x = geom[11], p.dil_y = geom[12], p.dil_x = geom[13];
  p.ho = geom[14], p.wo = geom[15];
  int c = 0;
  for (size_t i = 0; i < views.size(); ++i) {
    p.views[i] = view_from_ints(views[i]);
    c += p.views[i].c;
    p.c_end[i] = c;
  }
  UF_CHECK(c == p.cin, "views carry " << c << " channels, geometry says " << p.cin);
  UF_CHECK(p.batch > 0 && p.hi > 0 && p.wi > 0 && p.out_channels > 0 && p.kh > 0 && p.kw > 0, "empty geometry");
  UF_CHECK(p.batch <= 65535, "batch " << p.batch << " exceeds the grid's z limit (65535)");
  UF_CHECK(p.stride_y > 0 && p.stride_x > 0 && p.dil_y > 0 && p.dil_x > 0 && p.pad_y >= 0 && p.pad_x >= 0,
           "stride/dilation must be positive, padding non-negative");
  // The output extent bounds the kernel's writes: it must be the conv's, not just the caller's word.
  UF_CHECK(p.ho == (p.hi + 2 * p.pad_y - p.dil_y * (p.kh - 1) - 1) / p.stride_y + 1 &&
               p.wo == (p.wi + 2 * p.pad_x - p.dil_x * (p.kw - 1) - 1) / p.stride_x + 1 && p.ho > 0 && p.wo > 0,
           "output size " << p.ho << "x" << p.wo << " does not match the conv geometry");
  set_k_layout(&p, dtype, geom[16]);
  set_common(&p, weight, bias, out, act, slope);
  unpack_ptr_strides(residual, "residual", &p.residual, &p.res_sn, &p.res_sh, &p.res_sw);
  const void* pool_ptr;
  unpack_ptr_strides(pool, "pool_out", &pool_ptr, &p.pool_sn, &p.pool_sh, &p.pool_sw);
  p.pool = const_cast<void*>(pool_ptr);
  UF_CHECK(p.pool == nullptr || (p.ho >= 2 && p.wo >= 2), "a pooled output needs at least 2x2 pixels");
  return p;
}

// geom = (n, h, w, cin, cin_pad, cout): a 1x1 GEMM over x's pixels with 4 * cout columns.
inline ConvParams make_conv_transpose_params(int dtype, const ViewInts& x, std::uintptr_t weight, std::uintptr_t bias,
                                             const PtrStrides& out, const std::vector<int>& geom, int act,
                                             float slope) {
  check_float_dtype(dtype);
  UF_CHECK(geom.size() == 6, "geometry is (n, h, w, cin, cin_pad, cout), got " << geom.size());
  ConvParams p{};
  p.num_views = 1;
  p.views[0] = view_from_ints(x);
  UF_CHECK(p.views[0].mode == 0 && p.views[0].off_y == 0 && p.views[0].off_x == 0,
           "the transposed conv reads a plain tensor");
  p.batch = geom[0], p.hi = p.ho = geom[1], p.wi = p.wo = geom[2], p.cin = geom[3], p.cin_pad = geom[4];
  p.out_channels = geom[5];
  p.gemm_n = 4 * p.out_channels;
  UF_CHECK(p.views[0].h == p.hi && p.views[0].w == p.wi && p.views[0].c == p.cin, "x does not match the geometry");
  UF_CHECK(p.batch > 0 && p.batch <= 65535 && p.out_channels > 0, "empty geometry or batch over 65535");
  p.c_end[0] = p.cin;
  p.kh = p.kw = p.stride_y = p.stride_x = p.dil_y = p.dil_x = 1;
  set_k_layout(&p, dtype, 0);
  set_common(&p, weight, bias, out, act, slope);
  return p;
}

struct ConvGrid {
  unsigned x, y, z;
};

// Spatial tiles x column tiles x batch; sets p->tiles_x (which conv_tile() decodes).
inline ConvGrid conv_grid(ConvParams* p, int th, int tw, int bn) {
  const int tiles_y = (p->ho + th - 1) / th;
  p->tiles_x = (p->wo + tw - 1) / tw;
  return ConvGrid{static_cast<unsigned>(tiles_y * p->tiles_x), static_cast<unsigned>((p->gemm_n + bn - 1) / bn),
                  static_cast<unsigned>(p->batch)};
}

}  // namespace unet_fast
