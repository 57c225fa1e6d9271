// ConvTranspose2d(kernel 2, stride 2) (spec.conv_transpose2x2): a GEMM over the input pixels against the
// packed [4 * Cout, Cin] weight, whose epilogue scatters each pixel's 2x2 output block (+ bias, activation)
// straight into `out` (a channel slot of the decoder's concat buffer). Same kernels as conv2d with
// kScatter = true (include/unet_fast/cuda_conv_kernel.h).
#include <cstdint>

#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_conv_kernel.h"

namespace unet_fast {

const char* launch_conv_transpose2x2(int dtype, const ConvParams& p, std::uintptr_t stream) {
  const char* variant = launch_conv_kernels<true>(dtype, p, reinterpret_cast<cudaStream_t>(stream));
  UF_CUDA_CHECK(cudaGetLastError());
  return variant;
}

}  // namespace unet_fast
