// `Vec`: kL = 8 floats in an AVX register, with the interface of cpu_vec_portable.h (zero, bcast, load, store,
// +, -, *, fmadd, select_pos, max_nan_v). No include guard: included inside a per-ISA namespace under
// `#pragma GCC target("avx2,fma")`, after <immintrin.h> (unet_fast/cpu_isa.h).
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
