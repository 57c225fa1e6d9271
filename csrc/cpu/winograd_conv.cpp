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

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define UF_WINO_X86 1
#endif

#include "unet_fast/checks.h"
#include "unet_fast/epilogue.h"
#include "unet_fast/resample.h"
#include "unet_fast/winograd_conv.h"

namespace py = pybind11;

namespace unet_fast {

// GCC/Clang vector extensions: 8 floats lowered to whatever the baseline target has (two SSE registers
// on x86-64, NEON on arm64). Vec parameters are const references (here and in the kernel body): a
// 32-byte vector passed by value without AVX draws GCC's "ABI changed in GCC 4.6" note in every build log.
namespace wino_portable {
constexpr int kL = 8;
typedef float F8 __attribute__((vector_size(32)));
struct Vec {
  F8 v;
  static Vec zero() { return {F8{}}; }
  static Vec bcast(float x) { return {F8{x, x, x, x, x, x, x, x}}; }
  static Vec load(const float* p) {
    Vec r;
    std::memcpy(&r.v, p, sizeof(F8));
    return r;
  }
  void store(float* p) const { std::memcpy(p, &v, sizeof(F8)); }
};
inline Vec operator+(const Vec& a, const Vec& b) { return {a.v + b.v}; }
inline Vec operator-(const Vec& a, const Vec& b) { return {a.v - b.v}; }
inline Vec operator*(const Vec& a, const Vec& b) { return {a.v * b.v}; }
inline Vec fmadd(const Vec& a, const Vec& b, const Vec& c) { return {a.v * b.v + c.v}; }
// x > 0 ? x : y per lane (apply_act's relu / leaky relu branch; NaN takes y, as there).
inline Vec select_pos(const Vec& x, const Vec& y) { return {x.v > 0.f ? x.v : y.v}; }
// max_nan (epilogue.h) per lane: a if a is NaN or a > b, else b.
inline Vec max_nan_v(const Vec& a, const Vec& b) { return {(a.v != a.v) | (a.v > b.v) ? a.v : b.v}; }
#include "unet_fast/winograd_kernels.h"
}  // namespace wino_portable

#ifdef UF_WINO_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace wino_avx2 {
constexpr int kL = 8;
struct Vec {
  __m256 v;
  static Vec zero() { return {_mm256_setzero_ps()}; }
  static Vec bcast(float x) { return {_mm256_set1_ps(x)}; }
  static Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
inline Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vec fmadd(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec select_pos(Vec x, Vec y) {
  return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(x.v, _mm256_setzero_ps(), _CMP_GT_OQ))};
}
// max_nan (epilogue.h) per lane: a if a is NaN or a > b, else b (so a NaN in either propagates).
inline Vec max_nan_v(Vec a, Vec b) {
  const __m256 take_a = _mm256_or_ps(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q), _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ));
  return {_mm256_blendv_ps(b.v, a.v, take_a)};
}
#include "unet_fast/winograd_kernels.h"
}  // namespace wino_avx2
#pragma GCC pop_options
#endif

namespace {

enum class Isa : int { kAuto = 0, kPortable = 1, kAvx2 = 2 };

bool has_avx2() {
#ifdef UF_WINO_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

std::vector<std::string> winograd_isas() {
  std::vector<std::string> isas{"portable"};
  if (has_avx2()) isas.emplace_back("avx2");
  return isas;
}

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
  UF_CHECK(isa >= 0 && isa <= 2, "unknown isa " << isa);
  UF_CHECK(isa != static_cast<int>(Isa::kAvx2) || has_avx2(), "the avx2 path needs a CPU with AVX2 and FMA");
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

  const bool avx2 = isa == static_cast<int>(Isa::kAvx2) || (isa == static_cast<int>(Isa::kAuto) && has_avx2());
  py::gil_scoped_release release;
#ifdef UF_WINO_X86
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
  m.def("winograd_isas", &winograd_isas, "Winograd kernel variants this CPU can run.");
}

}  // namespace unet_fast
