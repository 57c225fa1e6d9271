// The bf16 direct convolution on tiles (NHWC): its problem descriptor, the packed weight layout, and the
// entry points of the tile backends (portable emulator, native AMX, AVX512-BF16).
//
// Packed weight (built in Python, unet_fast/kernels/cpu_bf16.py::pack_conv_weight): bf16 as uint16,
//   [KH*KW][KC][NB][16][16][2]      KC = ceil(Cin / 32), NB = 2 * ceil(Cout / 32)
// one 1 KB B tile per (tap, 32-channel input chunk kc, 16-channel output block nb): row k (a K pair),
// column n holds w[co = 16 nb + n][ci = 32 kc + 2k + j] for j = 0, 1 (the VNNI-2 interleave TDPBF16PS
// reads); input / output channels past Cin / Cout are zeros.
#pragma once

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/amx/bf16.h"
#include "unet_fast/cpu_gather.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/resample.h"

namespace unet_fast {
namespace amx {

constexpr int kBlockPixels = 32;   // output pixels per block (2 A tiles of 16 rows)
constexpr int kBlockCout = 32;     // output channels per block (2 B tiles of 16 columns)
constexpr int kChunkCin = 32;      // input channels per tile dot product (16 K pairs)
constexpr int kMaxSources = 8;     // sources of one virtual concat (a U-Net decoder conv reads 2)

enum class Elem : int { kNone = 0, kBf16 = 1, kF32 = 2 };

// An NHWC tensor of bf16 (as uint16) or fp32: the output, or the residual (only read).
struct NhwcAny {
  Elem elem = Elem::kNone;
  Nhwc<std::uint16_t> b16{};  // elem == kBf16
  Nhwc<float> f32{};          // elem == kF32

  float get(std::int64_t n, std::int64_t y, std::int64_t x, std::int64_t c) const {
    return elem == Elem::kBf16 ? bf16_to_f32(b16.pixel(n, y, x)[c]) : f32.pixel(n, y, x)[c];
  }
  void put(std::int64_t n, std::int64_t y, std::int64_t x, std::int64_t c, float v) const {
    if (elem == Elem::kBf16)
      b16.pixel(n, y, x)[c] = f32_to_bf16(v);
    else
      f32.pixel(n, y, x)[c] = v;
  }
};

// One source of the conv's input (spec.InputView): channels [c_begin, c_begin + x.c) of the virtual concat,
// read as x resampled (none / nearest / bilinear) then windowed. The conv sees every source at the view
// size (in_h, in_w); ty / tx map each view row / column to source rows / columns and weights (built by the
// bindings with resample.h, PyTorch-exact coordinates; `valid` false = outside the window: reads zero).
// A plain source (mode kNone) reads view pixel (y, x) at source pixel (y + off_y, x + off_x): a crop is a
// pointer offset, and its interior A tiles still load in place.
struct ConvSource {
  Nhwc<const std::uint16_t> x{};  // [N, Hs, Ws, Cs] bf16 (a channel slot of a wider buffer is fine)
  int c_begin = 0;
  ResampleMode mode = ResampleMode::kNone;
  std::int64_t off_y = 0, off_x = 0;
  const Tap* ty = nullptr;  // [in_h]
  const Tap* tx = nullptr;  // [in_w]
};

// Stage `count` channels (from c_first on) of source pixel taps (ty, tx) of a bilinear source: fp32 blend of
// the four bf16 neighbours in the fp32 gather's order (cpu_kernel_body.h gather_row), rounded once to bf16.
// Compiled once, outside the backends' target regions and without FMA contraction
// (conv_bf16_gather.cpp), so every tile backend stages the same bits.
void stage_bilinear_bf16(const Nhwc<const std::uint16_t>& x, std::int64_t n, const Tap& ty, const Tap& tx,
                         std::int64_t c_first, int count, std::uint16_t* dst);

struct ConvBf16 {
  ConvSource src[kMaxSources];   // the input: nsrc sources in channel order, Cin = sum of their channels
  int nsrc = 0;
  std::int64_t batch = 0, in_h = 0, in_w = 0;  // N and the view size (H, W) every source is read at
  const std::uint16_t* w;        // packed weight (layout above)
  int kh, kw, stride, pad;
  std::int64_t hout, wout;       // output size (= out's H, W)
  int cin, cout, kc, nb;         // kc, nb: chunk / block counts of the packed weight
  const float* bias;             // [Cout] fp32, or null
  NhwcAny residual;              // [N, Hout, Wout, Cout] added before the activation, or elem == kNone
  NhwcAny out;                   // [N, Hout, Wout, Cout], bf16 or fp32 (a channel slot is fine)
  NhwcAny pool;                  // [N, Hout/2, Wout/2, Cout]: 2x2/s2 max of out's stored values, or kNone
  Act act;
  float negative_slope;
  int num_threads;
  // The 2x2 stride-2 transposed conv: runs as the 1x1 conv above to cout = 4 Ct channels, GEMM column
  // (2a + b) Ct + c, and the epilogue scatters that column to output pixel (2y + a, 2x + b), channel c.
  // scatter_cout = Ct (0: a plain conv); out is then [N, 2 H, 2 W, Ct], hout x wout stays the input grid.
  int scatter_cout = 0;
  // The AVX512-BF16 backend only: false runs its register-blocked direct conv (the caller's choice, made once
  // by the kernel registry: a ValueError where it cannot run, i.e. a bilinear source, or a transposed conv
  // with a pool output); true runs the tile body. The other backends have one body and ignore it.
  bool tile_body = false;
};

// One TDPBF16PS on tiles loaded from memory: c [m][n] fp32 += a [m][2 kp] bf16 . b [kp][2 n] bf16 (rows
// contiguous), m, kp, n <= 16. For tests of the tile arithmetic itself.
using TileDotFn = void (*)(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n);
using ConvFn = void (*)(const ConvBf16& cv);
// `iters` rounds of 4 TDPBF16PS on resident tiles (the tile peak); returns one result element.
using TilePeakFn = float (*)(std::int64_t iters);

// A tile backend's entry points and the tile blocking its packed weights follow (the same for every backend:
// the layout above), one row of the CPU variant table (unet_fast/cpu_isa.h, kind TILES).
struct TileOps {
  ConvFn conv;
  TileDotFn dot;
  TilePeakFn peak;
  // The backend also has a register-blocked direct conv beside its tile body (ConvBf16::tile_body selects).
  bool direct_conv = false;
  int chunk_cin = kChunkCin, block_cout = kBlockCout, block_pixels = kBlockPixels, tile_rows = 16,
      max_sources = kMaxSources;
};

void conv_bf16_portable(const ConvBf16& cv);
void tile_dot_portable(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n);
float tile_peak_portable(std::int64_t iters);
#if defined(__x86_64__)
void conv_bf16_amx(const ConvBf16& cv);
void tile_dot_amx(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n);
float tile_peak_amx(std::int64_t iters);
// AVX512-BF16 (VDPBF16PS; amx/tile_avx512bf16.h). Its tile_peak is a register-resident VDPBF16PS loop of the
// same FLOP count per iteration (the dot-product peak of a core), not the tile interface.
void conv_bf16_avx512bf16(const ConvBf16& cv);
void tile_dot_avx512bf16(const std::uint16_t* a, const std::uint16_t* b, float* c, int m, int kp, int n);
float tile_peak_avx512bf16(std::int64_t iters);
#endif

}  // namespace amx
}  // namespace unet_fast
