// Winograd F(4x4, 3x3) convolution, stride 1, padding 0 or 1, NHWC fp32, with the fused conv epilogue
// (bias, residual, activation, channel-slot store, 2x2 max-pool) and virtual-concat / resample-on-read
// inputs. Launcher and argument checks: unet_fast/kernels/cpu_winograd.py; design: docs/winograd.md.
//
// The kernel body (csrc/include/unet_fast/winograd_kernels.h) is compiled twice: a portable variant
// (8-lane GCC vector extensions, lowered to the baseline x86-64 SSE2 / any target's SIMD) and an AVX2+FMA variant
// under `#pragma GCC target`, chosen at run time with __builtin_cpu_supports (no -march=native: the wheel
// must run anywhere). The `isa` argument forces one, so tests check both against the reference.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/epilogue.h"
#include "unet_fast/resample.h"
#include "unet_fast/winograd_conv.h"

namespace py = pybind11;

namespace unet_fast {

namespace wino_portable {
#include "unet_fast/cpu_vec_portable.h"
#include "unet_fast/cpu_gemm_kernels.h"
#include "unet_fast/winograd_kernels.h"
}  // namespace wino_portable

#ifdef UF_CPU_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace wino_avx2 {
#include "unet_fast/cpu_vec_avx2.h"
#include "unet_fast/cpu_gemm_kernels.h"
#include "unet_fast/winograd_kernels.h"
}  // namespace wino_avx2
#pragma GCC pop_options
#endif

namespace {

constexpr int kViewFields = 14;

}  // namespace

// views: kViewFields integers per view (see WinoView; base is a data pointer). Strides are in elements.
void winograd_conv3x3_f32(const std::vector<std::int64_t>& views, int n, int h, int w, int cin, int cout,
                          int cout_pad, int pad, std::uintptr_t u_ptr, std::uintptr_t bias_ptr,
                          std::uintptr_t res_ptr, const std::vector<std::int64_t>& res_strides,
                          std::uintptr_t out_ptr, const std::vector<std::int64_t>& out_strides,
                          std::uintptr_t pool_ptr, const std::vector<std::int64_t>& pool_strides, int act,
                          float negative_slope, int num_threads, int isa, int tile_block, int cout_chunk) {
  UF_CHECK(!views.empty() && views.size() % kViewFields == 0,
           "views must hold " << kViewFields << " integers per view, got " << views.size());
  UF_CHECK_POSITIVE(n);
  UF_CHECK_POSITIVE(cin);
  UF_CHECK_POSITIVE(cout);
  UF_CHECK(pad == 0 || pad == 1, "padding must be 0 or 1, got " << pad);
  UF_CHECK(h + 2 * pad >= 3 && w + 2 * pad >= 3, "input " << h << "x" << w << " too small for a 3x3 conv");
  UF_CHECK(cout_pad % 16 == 0 && cout_pad >= cout, "cout_pad " << cout_pad << " must be a multiple of 16 >= "
                                                             << cout);
  UF_CHECK_PTR(u_ptr);
  UF_CHECK_PTR(out_ptr);
  UF_CHECK(res_strides.size() == 3 && out_strides.size() == 3 && pool_strides.size() == 3,
           "strides come as (N, H, W) triples");
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK_NONNEG(tile_block);
  UF_CHECK_NONNEG(cout_chunk);

  WinoConv cv;
  int c0 = 0;
  for (std::size_t i = 0; i < views.size(); i += kViewFields) {
    const std::int64_t* f = views.data() + i;
    WinoView v;
    v.base = reinterpret_cast<const float*>(static_cast<std::uintptr_t>(f[0]));
    v.sn = f[1];
    v.sh = f[2];
    v.sw = f[3];
    v.channels = static_cast<int>(f[4]);
    v.c0 = c0;
    v.src_h = static_cast<int>(f[5]);
    v.src_w = static_cast<int>(f[6]);
    v.mode = static_cast<int>(f[7]);
    v.rh = static_cast<int>(f[8]);
    v.rw = static_cast<int>(f[9]);
    v.align_corners = f[10] != 0;
    v.off_y = static_cast<int>(f[11]);
    v.off_x = static_cast<int>(f[12]);
    UF_CHECK(f[13] == 0, "reserved view field must be 0");
    UF_CHECK_PTR(v.base);
    UF_CHECK_POSITIVE(v.channels);
    UF_CHECK(v.mode >= 0 && v.mode <= 2, "unknown resample mode " << v.mode);
    UF_CHECK(v.src_h > 0 && v.src_w > 0 && v.rh > 0 && v.rw > 0, "view sizes must be positive");
    UF_CHECK(v.mode != 0 || (v.rh == v.src_h && v.rw == v.src_w), "a view without resample keeps its size");
    c0 += v.channels;
    cv.views.push_back(v);
  }
  UF_CHECK(c0 == cin, "views carry " << c0 << " channels, the weight expects " << cin);
  cv.n = n;
  cv.h = h;
  cv.w = w;
  cv.cin = cin;
  cv.cout = cout;
  cv.cout_pad = cout_pad;
  cv.pad = pad;
  cv.ho = h + 2 * pad - 2;
  cv.wo = w + 2 * pad - 2;
  UF_CHECK(pool_ptr == 0 || (cv.ho >= 2 && cv.wo >= 2), "a 2x2 pool needs an output of at least 2x2");
  cv.u = reinterpret_cast<const float*>(u_ptr);
  cv.bias = reinterpret_cast<const float*>(bias_ptr);
  cv.residual = reinterpret_cast<const float*>(res_ptr);
  cv.rsn = res_strides[0];
  cv.rsh = res_strides[1];
  cv.rsw = res_strides[2];
  cv.out = reinterpret_cast<float*>(out_ptr);
  cv.osn = out_strides[0];
  cv.osh = out_strides[1];
  cv.osw = out_strides[2];
  cv.pool = reinterpret_cast<float*>(pool_ptr);
  cv.psn = pool_strides[0];
  cv.psh = pool_strides[1];
  cv.psw = pool_strides[2];
  cv.ep = Epilogue{static_cast<Act>(act), negative_slope};
  cv.num_threads = num_threads;
  cv.tile_block = tile_block;
  cv.cout_chunk = cout_chunk;

  const bool avx2 = use_avx2(isa);
  py::gil_scoped_release release;
#ifdef UF_CPU_X86
  if (avx2) {
    wino_avx2::run(cv);
    return;
  }
#else
  (void)avx2;
#endif
  wino_portable::run(cv);
}

void register_winograd(py::module_& m) {
  m.def("winograd_conv3x3_f32", &winograd_conv3x3_f32, py::arg("views"), py::arg("n"), py::arg("h"),
        py::arg("w"), py::arg("cin"), py::arg("cout"), py::arg("cout_pad"), py::arg("pad"), py::arg("u_ptr"),
        py::arg("bias_ptr"), py::arg("res_ptr"), py::arg("res_strides"), py::arg("out_ptr"),
        py::arg("out_strides"), py::arg("pool_ptr"), py::arg("pool_strides"), py::arg("act"),
        py::arg("negative_slope"), py::arg("num_threads"), py::arg("isa"), py::arg("tile_block"),
        py::arg("cout_chunk"),
        "Winograd F(4x4,3x3) conv, stride 1, NHWC fp32, fused epilogue. isa: 0 auto, 1 portable, 2 avx2.");
}

}  // namespace unet_fast
