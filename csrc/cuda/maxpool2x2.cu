// Standalone 2x2, stride-2 max-pool over NHWC (floored like F.max_pool2d; NaN propagates). Used only where
// the pool could not be fused into the producing conv's epilogue.
#include <cstdint>

#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_launch.h"
#include "unet_fast/cuda_elementwise.h"

namespace unet_fast {

// One thread per output element, channel fastest (coalesced along C for both input and output); the body is
// maxpool2x2_element (cuda_elementwise.h).
template <typename T>
__global__ void __launch_bounds__(256) maxpool2x2_kernel(const T* __restrict__ x, long long xsn, long long xsh,
                                                         long long xsw, T* __restrict__ out, long long osn,
                                                         long long osh, long long osw, int n, int ho, int wo,
                                                         int c) {
  const long long total = static_cast<long long>(n) * ho * wo * c;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    maxpool2x2_element(x, xsn, xsh, xsw, out, osn, osh, osw, ho, wo, c, i);
}

void launch_maxpool2x2(int dtype, std::uintptr_t x, long long xsn, long long xsh, long long xsw, std::uintptr_t out,
                       long long osn, long long osh, long long osw, int n, int ho, int wo, int c,
                       std::uintptr_t stream) {
  const long long total = static_cast<long long>(n) * ho * wo * c;
  if (total == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    maxpool2x2_kernel<T><<<grid_for(total, 256), 256, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(x), xsn, xsh, xsw, reinterpret_cast<T*>(out), osn, osh, osw, n, ho, wo, c);
  });
  UF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace unet_fast
