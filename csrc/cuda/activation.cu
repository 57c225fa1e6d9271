// The CUDA module's first op: an activation over a contiguous fp32 buffer on a given stream, using the
// same per-element math as csrc/cpu/activation.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/cuda_check.h"

namespace unet_fast {

__global__ void activation_f32_kernel(const float* __restrict__ x, float* __restrict__ out, std::int64_t n,
                                      Act act, float negative_slope) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = apply_act(x[i], act, negative_slope);
  }
}

void launch_activation_f32(std::uintptr_t x, std::uintptr_t out, std::int64_t n, int act, float negative_slope,
                           std::uintptr_t stream) {
  if (n == 0) return;
  const int threads = 256;
  const std::int64_t blocks64 = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(blocks64 < 65535 ? blocks64 : 65535);
  activation_f32_kernel<<<blocks, threads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(x), reinterpret_cast<float*>(out), n, static_cast<Act>(act), negative_slope);
  UF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace unet_fast
