// `Vec`: 16 floats in an AVX-512 register, with the interface of cpu_vec_portable.h; partial loads and
// stores are masked (no stack round trip). No include guard: included inside the avx512 variant's
// namespace under its target region (csrc/cpu/variants/avx512.cpp), after <immintrin.h> and <cstring>.
typedef float F8 __attribute__((vector_size(32)));

struct Vec {
  static constexpr int kLanes = 16;
  __m512 v;
  UF_VEC_INLINE static Vec zero() { return {_mm512_setzero_ps()}; }
  UF_VEC_INLINE static Vec bcast(float x) { return {_mm512_set1_ps(x)}; }
  UF_VEC_INLINE static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  UF_VEC_INLINE void store(float* p) const { _mm512_storeu_ps(p, v); }
  // Masked: lanes past n are neither read (no fault past the end) nor written.
  UF_VEC_INLINE static Vec load_n(const float* p, int n) {
    return {_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p)};
  }
  UF_VEC_INLINE void store_n(float* p, int n) const { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v); }
  // bf16 bits <-> fp32 lanes, as amx/bf16.h: widening is exact; narrowing rounds to nearest even and turns
  // every NaN into 0x7FC0 (the integer form: AVX512-BF16's VCVTNEPS2BF16 is not in this variant's target).
  // The zero-masked forms with all lanes set: GCC 12's unmasked ones pass an undefined vector through and
  // trip -Wmaybe-uninitialized.
  UF_VEC_INLINE static Vec load_bf16_n(const std::uint16_t* p, int n) {
    const __mmask16 all = 0xFFFF;
    const __m256i h = _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1u), p);
    return {_mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, h), 16))};
  }
  UF_VEC_INLINE void store_bf16_n(std::uint16_t* p, int n) const {
    const __mmask16 all = 0xFFFF;
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_maskz_srli_epi32(all, u, 16), _mm512_set1_epi32(1));
    const __m512i biased = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    __m512i r = _mm512_maskz_srli_epi32(all, biased, 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
    _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1u), _mm512_maskz_cvtepi32_epi16(all, r));
  }
};
UF_VEC_INLINE Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
UF_VEC_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
UF_VEC_INLINE Vec select_pos(Vec x, Vec y) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_setzero_ps(), _CMP_GT_OQ), y.v, x.v)};
}
// max_nan (epilogue.h) per lane: a if a is NaN or a > b, else b.
UF_VEC_INLINE Vec max_nan_v(Vec a, Vec b) {
  const __mmask16 take_a = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ);
  return {_mm512_mask_blend_ps(take_a, b.v, a.v)};
}
// (Halves by memcpy: GCC 12's _mm512_castps512_ps256 trips -Wuninitialized on its _mm256_undefined_ps.)
UF_VEC_INLINE void fold8(Vec a, F8* r) {
  F8 hi;
  std::memcpy(r, &a.v, sizeof(F8));
  std::memcpy(&hi, reinterpret_cast<const char*>(&a.v) + sizeof(F8), sizeof(F8));
  *r += hi;
}
