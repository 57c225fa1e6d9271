// `Vec`: 8 floats in an AVX register, with the interface of cpu_vec_portable.h. No include guard: included
// inside the avx2 variant's namespace under its target region (csrc/cpu/variants/avx2.cpp), after
// <immintrin.h> and <cstring>.
typedef float F8 __attribute__((vector_size(32)));

struct Vec {
  static constexpr int kLanes = 8;
  __m256 v;
  UF_VEC_INLINE static Vec zero() { return {_mm256_setzero_ps()}; }
  UF_VEC_INLINE static Vec bcast(float x) { return {_mm256_set1_ps(x)}; }
  UF_VEC_INLINE static Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  UF_VEC_INLINE void store(float* p) const { _mm256_storeu_ps(p, v); }
  // Through a stack copy, as measured faster than vmaskmov on Zen 3 for the rare partial vectors.
  UF_VEC_INLINE static Vec load_n(const float* p, int n) {
    if (n == 8) return load(p);
    float t[8] = {};
    for (int i = 0; i < n; ++i) t[i] = p[i];
    return load(t);
  }
  UF_VEC_INLINE void store_n(float* p, int n) const {
    if (n == 8) return store(p);
    float t[8];
    store(t);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }  // bf16 bits <-> fp32 lanes, as amx/bf16.h: widening is exact; narrowing rounds to nearest even and turns
  // every NaN into 0x7FC0. Partial vectors go through a stack copy, as above.
  UF_VEC_INLINE static Vec load_bf16_n(const std::uint16_t* p, int n) {
    std::uint16_t t[8] = {};
    if (n < 8) {
      for (int i = 0; i < n; ++i) t[i] = p[i];
      p = t;
    }
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
  }
  UF_VEC_INLINE void store_bf16_n(std::uint16_t* p, int n) const {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
    // Every lane is in [0, 0xFFFF], so the unsigned-saturating pack is exact.
    const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    if (n == 8) return _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    std::uint16_t t[8];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(t), h);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }
};
UF_VEC_INLINE Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
UF_VEC_INLINE Vec select_pos(Vec x, Vec y) {
  return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(x.v, _mm256_setzero_ps(), _CMP_GT_OQ))};
}
// max_nan (epilogue.h) per lane: a if a is NaN or a > b, else b (so a NaN in either propagates).
UF_VEC_INLINE Vec max_nan_v(Vec a, Vec b) {
  const __m256 take_a = _mm256_or_ps(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q), _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ));
  return {_mm256_blendv_ps(b.v, a.v, take_a)};
}
UF_VEC_INLINE void fold8(Vec a, F8* r) { *r = a.v; }
