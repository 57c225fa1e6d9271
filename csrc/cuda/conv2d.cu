// Fused conv2d (spec.conv2d): virtual concat of up to kMaxViews views (each with optional resample and
// crop/pad window) -> implicit GEMM -> bias + residual + activation -> out (a channel slot is fine) and the
// optional 2x2 max-pool output. Kernels: include/unet_fast/cuda_conv_kernel.h; index math:
// include/unet_fast/cuda_conv_tiles.h.
#include <cstdint>

#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_conv_kernel.h"

namespace unet_fast {

const char* launch_conv2d(int dtype, const ConvParams& p, std::uintptr_t stream) {
  const char* variant = launch_conv_kernels<false>(dtype, p, reinterpret_cast<cudaStream_t>(stream));
  UF_CUDA_CHECK(cudaGetLastError());
  return variant;
}

}  // namespace unet_fast
