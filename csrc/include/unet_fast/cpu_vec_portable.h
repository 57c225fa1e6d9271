// `VecP<L>`: L floats as a GCC/Clang vector extension, lowered to whatever the target has (on a baseline
// x86-64 build: SSE2 registers, two per 8 lanes, four per 16; NEON on arm64). The portable variants use
// VecP<8> and VecP<16>: the 16-lane one runs the AVX-512 variant's blocking and edge handling on any CPU.
// Interface shared with cpu_vec_avx2.h / cpu_vec_avx512.h: zero, bcast, load, store, load_n, store_n,
// load_bf16_n, store_bf16_n,
// +, -, *, fmadd, select_pos, max_nan_v, fold8. Parameters are const references: a vector wider than
// the baseline's registers passed by value draws GCC's "ABI changed" note in every build log.
//
// No include guard on purpose: included inside a variant's namespace (csrc/cpu/variants/*.cpp) after
// <cstring>.
typedef float F8 __attribute__((vector_size(32)));

template <int L>
struct VecP {
  static constexpr int kLanes = L;
  typedef float T __attribute__((vector_size(4 * L)));
  T v;
  UF_VEC_INLINE static VecP zero() { return {T{}}; }
  UF_VEC_INLINE static VecP bcast(float x) { return {T{} + x}; }
  UF_VEC_INLINE static VecP load(const float* p) {
    VecP r;
    std::memcpy(&r.v, p, sizeof(T));
    return r;
  }
  UF_VEC_INLINE void store(float* p) const { std::memcpy(p, &v, sizeof(T)); }
  // Lanes [0, n) from p, the rest zero; never reads past p + n.
  UF_VEC_INLINE static VecP load_n(const float* p, int n) {
    if (n == L) return load(p);
    float t[L] = {};
    for (int i = 0; i < n; ++i) t[i] = p[i];
    return load(t);
  }
  // Stores lanes [0, n) only: the next view of a virtual concat may live past them.
  UF_VEC_INLINE void store_n(float* p, int n) const {
    if (n == L) return store(p);
    float t[L];
    store(t);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }  // bf16 bits <-> fp32 lanes (amx/bf16.h, included by variant_prelude.h): exact widening; narrowing to
  // nearest even, NaN -> 0x7FC0. Lanes past n are zero on load and untouched on store.
  UF_VEC_INLINE static VecP load_bf16_n(const std::uint16_t* p, int n) {
    float t[L] = {};
    for (int i = 0; i < n; ++i) t[i] = bf16_to_f32(p[i]);
    return load(t);
  }
  UF_VEC_INLINE void store_bf16_n(std::uint16_t* p, int n) const {
    float t[L];
    store(t);
    for (int i = 0; i < n; ++i) p[i] = f32_to_bf16(t[i]);
  }
};
template <int L>
UF_VEC_INLINE VecP<L> operator+(const VecP<L>& a, const VecP<L>& b) { return {a.v + b.v}; }
template <int L>
UF_VEC_INLINE VecP<L> operator-(const VecP<L>& a, const VecP<L>& b) { return {a.v - b.v}; }
template <int L>
UF_VEC_INLINE VecP<L> operator*(const VecP<L>& a, const VecP<L>& b) { return {a.v * b.v}; }
template <int L>
UF_VEC_INLINE VecP<L> fmadd(const VecP<L>& a, const VecP<L>& b, const VecP<L>& c) { return {a.v * b.v + c.v}; }
// x > 0 ? x : y per lane (apply_act's relu / leaky relu branch; NaN takes y, as there).
template <int L>
UF_VEC_INLINE VecP<L> select_pos(const VecP<L>& x, const VecP<L>& y) { return {x.v > 0.f ? x.v : y.v}; }
// max_nan (epilogue.h) per lane: a if a is NaN or a > b, else b.
template <int L>
UF_VEC_INLINE VecP<L> max_nan_v(const VecP<L>& a, const VecP<L>& b) { return {(a.v != a.v) | (a.v > b.v) ? a.v : b.v}; }
// The lanes folded to 8 by adding the 8-lane halves (the head's reduction tree works on 8 lanes).
// (An out-parameter: returning a 32-byte vector without AVX changes the ABI.)
template <int L>
UF_VEC_INLINE void fold8(const VecP<L>& a, F8* r) {
  static_assert(L % 8 == 0, "8 or 16 lanes");
  F8 h;
  std::memcpy(r, &a.v, sizeof(F8));
  for (int q = 1; q < L / 8; ++q) {
    std::memcpy(&h, reinterpret_cast<const char*>(&a.v) + q * sizeof(F8), sizeof(F8));
    *r += h;
  }
}
