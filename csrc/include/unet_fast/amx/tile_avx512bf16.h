// The tile interface (amx/tile.h) on AVX512-BF16: VDPBF16PS, 16 fp32 lanes += bf16-pair dot products,
// reads a B tile row (64 bytes = 16 columns x one K pair, VNNI-2) exactly as TDPBF16PS does, so the same
// kernel bodies run natively on CPUs with AVX512-BF16 but no usable AMX (AMD Zen 4, Intel Cooper Lake, a
// Sapphire Rapids whose OS refuses the tile state). Include ONLY inside a region compiled for
// UF_TARGET_AVX512BF16 (csrc/cpu/amx/conv_bf16_avx512bf16.cpp), and run only where
// avx512bf16_support().runnable() (amx/detect.h).
//
// Tiles live in a per-thread 8 KB state, like the emulator's (8 tiles of 16 rows x 64 bytes + the
// configured rows / colsb); load / store copy rows with byte-masked AVX-512 moves (bytes past `colsb` and
// rows past `rows` read as zero, like TILELOADD), and dpbf16ps keeps the K-pair rows of B in zmm
// registers, each C row in a zmm, and broadcasts A's pair k from memory ({1to16}), 8 C rows interleaved so
// 8 independent chains hide VDPBF16PS's latency.
//
// Arithmetic: NOT TDPBF16PS's. VDPBF16PS (Intel SDM vol. 2, "VDPBF16PS") does, per lane,
//   c += a[2k+1] * b[2k+1];  c += a[2k] * b[2k]      (odd product first; each addition rounded, RNE)
// with bf16 input denormals read as zero, fp32 denormal results flushed to zero (each addition), MXCSR
// neither consulted nor updated. Over a tile, dpbf16ps<C, A, B> runs that in increasing k, so per element
//   c[m][n] = (...((c + a1 b1) + a0 b0) + a3 b3) + a2 b2 ...  one fp32 chain into C, odd then even per pair
// (the TDPBF16PS emulation keeps separate even / odd chains from zero and adds them to C once). Observed on
// AMD EPYC Zen 4 (tests/kernels/cpu_bf16/test_bf16_avx512bf16.py): exactly that order, bit for bit, on
// random data; denormal bf16 inputs and a denormal fp32 accumulator read as zero; a product that is an fp32
// denormal is NOT flushed before its addition (2^-125 + 2^-63 * 2^-64 keeps the 2^-127), an addition whose
// result is denormal is flushed (to a zero of its sign); MXCSR's rounding / DAZ / FTZ bits change nothing.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "unet_fast/amx/tile.h"

namespace unet_fast {
namespace amx {

struct Avx512Bf16State {
  alignas(64) unsigned char data[kTiles][kTileRows * kTileColsB];
  int rows[kTiles];
  int colsb[kTiles];
};

// One tile state per thread (each OpenMP thread configures its own), like the hardware's.
inline Avx512Bf16State& avx512bf16_state() {
  thread_local Avx512Bf16State s;
  return s;
}

struct TilesAvx512Bf16 {
  static constexpr const char* kName = "avx512bf16";

  static void config(const TileConfig& cfg) {
    Avx512Bf16State& s = avx512bf16_state();
    for (int t = 0; t < kTiles; ++t) {
      s.rows[t] = cfg.rows[t];
      s.colsb[t] = cfg.colsb[t];
    }
    std::memset(s.data, 0, sizeof s.data);
  }
  static void release() {}

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kTiles, "tile number");
    unsigned char* d = avx512bf16_state().data[T];
    for (int r = 0; r < kTileRows; ++r) _mm512_store_si512(d + r * kTileColsB, _mm512_setzero_si512());
  }

  // Rows past `rows` and bytes past `colsb` of each row read as zero, like TILELOADD; never reads them.
  // The configuration is read into locals first: the row stores go through char-typed memory, which may
  // alias anything, and would otherwise make the compiler re-read it (and re-fetch the thread's state,
  // a __tls_get_addr call) for every row.
  template <int T>
  static void load(const void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    Avx512Bf16State& s = avx512bf16_state();
    const auto* src = static_cast<const unsigned char*>(p);
    unsigned char* const d = s.data[T];
    const int rows = s.rows[T], colsb = s.colsb[T];
    if (rows == kTileRows && colsb == kTileColsB) {  // the conv's tiles: 16 full rows
      __m512i v[kTileRows];
#pragma GCC unroll 16
      for (int r = 0; r < kTileRows; ++r) v[r] = _mm512_loadu_si512(src + r * stride);
#pragma GCC unroll 16
      for (int r = 0; r < kTileRows; ++r) _mm512_store_si512(d + r * kTileColsB, v[r]);
      return;
    }
    const __mmask64 m = byte_mask(colsb);
    for (int r = 0; r < kTileRows; ++r)
      _mm512_store_si512(d + r * kTileColsB, r < rows ? _mm512_maskz_loadu_epi8(m, src + r * stride) : _mm512_setzero_si512());
  }

  // Writes rows x colsb bytes, nothing else.
  template <int T>
  static void store(void* p, std::int64_t stride) {
    static_assert(T >= 0 && T < kTiles, "tile number");
    const Avx512Bf16State& s = avx512bf16_state();
    auto* dst = static_cast<unsigned char*>(p);
    const unsigned char* const d = s.data[T];
    const int rows = s.rows[T], colsb = s.colsb[T];
    if (rows == kTileRows && colsb == kTileColsB) {
      __m512i v[kTileRows];
#pragma GCC unroll 16
      for (int r = 0; r < kTileRows; ++r) v[r] = _mm512_load_si512(d + r * kTileColsB);
#pragma GCC unroll 16
      for (int r = 0; r < kTileRows; ++r) _mm512_storeu_si512(dst + r * stride, v[r]);
      return;
    }
    const __mmask64 m = byte_mask(colsb);
    for (int r = 0; r < rows; ++r) _mm512_mask_storeu_epi8(dst + r * stride, m, _mm512_load_si512(d + r * kTileColsB));
  }

  // C[m][n] += sum_k (a[m][2k+1] b[k][2n+1], then a[m][2k] b[k][2n]) as VDPBF16PS does (header comment),
  // m < rows(C), n < colsb(C) / 4, k < colsb(A) / 4; columns of C past colsb(C) / 4 stay zero.
  template <int C, int A, int B>
  static void dpbf16ps() {
    static_assert(C != A && C != B && A != B && C < kTiles && A < kTiles && B < kTiles, "tile numbers");
    Avx512Bf16State& s = avx512bf16_state();
    const int m_rows = s.rows[C], n_cols = s.colsb[C] / 4, k_pairs = s.colsb[A] / 4;
    if (m_rows == kTileRows && n_cols == 16 && k_pairs == 16)
      dot_full(s.data[C], s.data[A], s.data[B]);
    else
      dot_partial(s.data[C], s.data[A], s.data[B], m_rows, n_cols, k_pairs);
  }

 private:
  static __mmask64 byte_mask(int bytes) { return bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1; }

  static __m512bh pair(const unsigned char* a_row, int k) {
    std::int32_t v;
    std::memcpy(&v, a_row + 4 * k, sizeof v);
    return reinterpret_cast<__m512bh>(_mm512_set1_epi32(v));  // folds into vdpbf16ps's {1to16} operand
  }

  // The full 16 x 16 x 16-pair tile: B's 16 rows in registers, 8 C rows (8 independent chains) at a time.
  static void dot_full(unsigned char* c, const unsigned char* a, const unsigned char* b) {
    __m512bh bk[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) bk[k] = reinterpret_cast<__m512bh>(_mm512_load_si512(b + k * kTileColsB));
    for (int m0 = 0; m0 < kTileRows; m0 += 8) {
      __m512 acc[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm512_load_ps(c + (m0 + i) * kTileColsB);
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], pair(a + (m0 + i) * kTileColsB, k), bk[k]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) _mm512_store_ps(c + (m0 + i) * kTileColsB, acc[i]);
    }
  }

  // Any configured shape (tile_dot's tests, partial tiles): rows past m_rows untouched, columns past n_cols
  // written as zero (B's columns there are zero already, but 0 * Inf in A would not be).
  static void dot_partial(unsigned char* c, const unsigned char* a, const unsigned char* b, int m_rows, int n_cols,
                          int k_pairs) {
    const __mmask16 cols = static_cast<__mmask16>((1u << n_cols) - 1u);
    for (int m = 0; m < m_rows; ++m) {
      __m512 acc = _mm512_maskz_load_ps(cols, c + m * kTileColsB);
      for (int k = 0; k < k_pairs; ++k)
        acc = _mm512_dpbf16_ps(acc, pair(a + m * kTileColsB, k),
                               reinterpret_cast<__m512bh>(_mm512_load_si512(b + k * kTileColsB)));
      _mm512_store_ps(c + m * kTileColsB, _mm512_maskz_mov_ps(cols, acc));
    }
  }
};

}  // namespace amx
}  // namespace unet_fast
