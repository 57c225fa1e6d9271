// Standalone upsample + concat: materialises one InputView (resample, crop/pad window) into its channel
// slot of the output. The launcher calls it once per view; the concat itself is just the slot offsets.
#include <cstdint>

#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_launch.h"
#include "unet_fast/cuda_elementwise.h"

namespace unet_fast {

// One thread per output element (view_copy_element, cuda_elementwise.h), channel fastest: the view's taps are recomputed per element, which is
// cheap next to the memory traffic of this purely bandwidth-bound op.
template <typename T>
__global__ void __launch_bounds__(256) view_copy_kernel(const ViewDesc v, T* __restrict__ out, long long osn,
                                                        long long osh, long long osw, int n, int h, int w) {
  const long long total = static_cast<long long>(n) * h * w * v.c;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    view_copy_element(v, out, osn, osh, osw, h, w, i);
}

void launch_view_copy(int dtype, const ViewDesc& v, std::uintptr_t out, long long osn, long long osh, long long osw,
                      int n, int h, int w, std::uintptr_t stream) {
  const long long total = static_cast<long long>(n) * h * w * v.c;
  if (total == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    view_copy_kernel<T><<<grid_for(total, 256), 256, 0, as_stream(stream)>>>(v, reinterpret_cast<T*>(out), osn, osh,
                                                                             osw, n, h, w);
  });
  UF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace unet_fast
