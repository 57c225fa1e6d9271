// Winograd F(4x4, 3x3) convolution over NHWC fp32 (csrc/cpu/winograd_conv.cpp): the problem description
// every ISA variant of the kernel (csrc/include/unet_fast/winograd_kernels.h) receives.
//
// Transforms (Lavin & Gray 2016, points 0, +-1, +-2, +-1/2): Y = A^T [(G g G^T) . (B^T d B)] A with a 6x6
// input tile d and a 4x4 output tile Y. The weight side U = G g G^T is computed once, in float64, by the
// Python launcher (unet_fast/kernels/cpu_winograd.py) and packed as U[p][cout/16][cin][16] for the 36
// points p = 6 * row + col, Cout zero-padded to a multiple of 16.
#pragma once

#include <cstdint>
#include <vector>

#include "unet_fast/epilogue.h"

namespace unet_fast {

// One input of a virtual concat, read through an optional resample and a window (spec.InputView).
struct WinoView {
  const float* base;                 // element [0, 0, 0, 0] of the NHWC tensor
  std::int64_t sn, sh, sw;           // strides in elements (channel stride is 1)
  int channels;                      // channels of this view
  int c0;                            // its first channel in the concatenated input
  int src_h, src_w;                  // tensor H, W
  int mode;                          // ResampleMode: 0 none, 1 nearest, 2 bilinear
  int rh, rw;                        // size after the resample (== src size without one)
  bool align_corners;
  int off_y, off_x;                  // window offset into the resampled image
};

struct WinoConv {
  std::vector<WinoView> views;
  int n, h, w;                       // batch, logical input size (the views' window size)
  int cin, cout, cout_pad;           // cout_pad: Cout rounded up to 16 (the packed weight's layout)
  int pad;                           // 0 or 1 (same on all sides)
  int ho, wo;                        // output size
  const float* u;                    // packed transformed weight [36][cout_pad/16][cin][16]
  const float* bias;                 // [cout] or nullptr
  const float* residual;             // NHWC or nullptr
  std::int64_t rsn, rsh, rsw;
  float* out;                        // NHWC (channel slot allowed)
  std::int64_t osn, osh, osw;
  float* pool;                       // NHWC [n, ho/2, wo/2, cout] or nullptr
  std::int64_t psn, psh, psw;
  Epilogue ep;
  int num_threads;
  int tile_block;                    // tiles per block, 0 = automatic
  int cout_chunk;                    // output channels per GEMM chunk (multiple of 16), 0 = automatic
};

// The ISA variants (same source, compiled under different target options).
namespace wino_portable {
void run(const WinoConv& cv);
}
namespace wino_avx2 {
void run(const WinoConv& cv);
}

}  // namespace unet_fast
