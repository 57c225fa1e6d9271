// ConvTranspose2d(kernel 2, stride 2) over NHWC fp32 (csrc/cpu/conv_transpose2x2.cpp): the problem
// description every variant of the kernel body (conv_transpose_kernels.h) receives.
#pragma once

#include <cstdint>

#include "unet_fast/epilogue.h"

namespace unet_fast {

struct CtConv {
  const float* x;                // NHWC input [n, h, w, cin]
  std::int64_t xsn, xsh, xsw;
  int n, h, w, cin, cout;
  int nr;                        // panel width: the variant's conv_transpose.nr
  int ncb;                       // nr-channel blocks per tap: ceil(cout / nr)
  const float* panels;           // [4 * ncb][cin][nr]: tap (a, b) = 2a + b, channels zero-padded past cout
  const float* bias;             // [cout] or nullptr
  float* out;                    // NHWC [n, 2h, 2w, cout] (channel slot allowed)
  std::int64_t osn, osh, osw;
  Epilogue ep;
  int num_threads;
};

}  // namespace unet_fast
