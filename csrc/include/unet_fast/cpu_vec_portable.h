// `Vec`: kL = 8 floats as a GCC/Clang vector extension, lowered to whatever the baseline target has (two SSE
// registers on x86-64, NEON on arm64). Vec parameters are const references: a 32-byte vector passed by value
// without AVX draws GCC's "ABI changed in GCC 4.6" note in every build log.
//
// No include guard on purpose: included inside a per-ISA namespace, before the kernel bodies that use Vec
// (cpu_gemm_kernels.h, winograd_kernels.h, conv_transpose_kernels.h); the .cpp includes <cstring> first.
// The AVX2 twin with the same interface is cpu_vec_avx2.h.
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
