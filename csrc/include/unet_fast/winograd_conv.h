// Winograd F(4x4, 3x3) and F(6x6, 3x3) convolution over NHWC fp32 or bf16 (csrc/cpu/winograd_conv.cpp): the
// problem description every variant of the kernel body (csrc/include/unet_fast/winograd_kernels.h) receives.
//
// Element type T of the activations (views, residual, out, pool): float, or std::uint16_t holding bf16 bits
// ("bf16 storage, fp32 compute": each value is widened exactly on load, the transforms, GEMMs and epilogue
// run in fp32 as for float, and each output is rounded once to bf16 on store, like the bf16 tile conv's
// epilogue). Bias and the transformed weight U are fp32 for both.
//
// Transforms (Lavin & Gray 2016): Y = A^T [(G g G^T) . (B^T d B)] A with an a x a input tile d and an m x m
// output tile Y, a = m + 2: F(4x4, 3x3) (m = 4, points 0, +-1, +-2) or F(6x6, 3x3) (m = 6, points 0, +-1, +-2,
// +-1/2; winograd_kernels.h has the matrices). The weight side U = G g G^T is computed once, in float64, by
// the Python launcher (unet_fast/kernels/cpu_winograd.py) and packed as U[p][cout/nr][cin][nr] for the a * a
// points p = a * row + col, Cout zero-padded to a multiple of nr (the variant's Winograd block width, or one vector
// for a conv with at most a vector of output channels: a head or a last decoder stage, which would otherwise compute
// up to nr / Cout times the outputs it keeps).
//
// Every tensor arrives as a bounds-checked NHWC descriptor (cpu_tensor.h): the binding checks that each
// view, out, residual and pool lies inside its storage and has the shape the conv implies.
#pragma once

#include <cstdint>
#include <vector>

#include "unet_fast/cpu_tensor.h"
#include "unet_fast/epilogue.h"

namespace unet_fast {

// One input of a virtual concat, read through an optional resample and a window (spec.InputView).
template <typename T>
struct WinoViewT {
  Nhwc<const T> src;             // the tensor (its H, W are the source size of a resample)
  int c0;                            // its first channel in the concatenated input
  int mode;                          // ResampleMode: 0 none, 1 nearest, 2 bilinear
  int rh, rw;                        // size after the resample (== src size without one)
  bool align_corners;
  int off_y, off_x;                  // window offset into the resampled image
};

template <typename T>
struct WinoConvT {
  std::vector<WinoViewT<T>> views;
  int n, h, w;                       // batch, logical input size (the views' window size)
  int cin, cout, cout_pad;           // cout_pad: Cout rounded up to nr (the packed weight's layout)
  int nr;                            // the packed weight's block width: the variant's Winograd nr, or one
                                     // vector (lanes) for a conv with Cout <= lanes (cpu_winograd.winograd_nr)
  int pad;                           // 0 or 1 (same on all sides)
  int ho, wo;                        // output size
  int tile;                          // m: 4 (F(4x4, 3x3)) or 6 (F(6x6, 3x3))
  const float* u;                    // packed transformed weight [(m+2)^2][cout_pad/nr][cin][nr]
  const float* bias;                 // [cout] or nullptr
  Nhwc<const T> residual;            // [n, ho, wo, cout]; p == nullptr: none
  Nhwc<T> out;                       // [n, ho, wo, cout] (a channel slot is fine)
  Nhwc<T> pool;                      // [n, ho/2, wo/2, cout]; p == nullptr: none
  Epilogue ep;
  int num_threads;
  int tile_block;                    // tiles per block, 0 = automatic
  int cout_chunk;                    // output channels per GEMM chunk (multiple of nr), 0 = automatic
};

using WinoView = WinoViewT<float>;
using WinoConv = WinoConvT<float>;
using WinoConvBf16 = WinoConvT<std::uint16_t>;  // bf16 activations as raw bits (amx/bf16.h conversions)

}  // namespace unet_fast
