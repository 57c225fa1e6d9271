// Segmentation head: 1x1 conv to K classes + a per-pixel op (logits / softmax / sigmoid / argmax) in one
// pass. One thread per pixel; the K scores live in the thread's row of shared memory so the per-pixel math
// is pixel_ops.h itself (the same code as the CPU twin), not a copy. The body is head_pixel
// (cuda_elementwise.h).
#include <cstdint>

#include "unet_fast/cuda_check.h"
#include "unet_fast/cuda_launch.h"
#include "unet_fast/cuda_elementwise.h"

namespace unet_fast {

// Scores are fp32; weight is [K][C] fp32 (every thread of a warp reads the same weight: a broadcast).
// O is the output storage: a float type for logits/softmax/sigmoid, an integer type for argmax (which
// then writes [N, H, W] through osn/osh/osw and ignores the class axis).
template <typename T, typename O>
__global__ void __launch_bounds__(128) head_kernel(const ViewDesc v, const float* __restrict__ weight,
                                                   const float* __restrict__ bias, int k, HeadOp op,
                                                   O* __restrict__ out, long long osn, long long osh,
                                                   long long osw, int n, int h, int w) {
  extern __shared__ float scores_smem[];
  float* scores = scores_smem + static_cast<long long>(threadIdx.x) * k;
  const long long total = static_cast<long long>(n) * h * w;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    head_pixel<T, O>(v, weight, bias, k, op, out, osn, osh, osw, h, w, i, scores);
}

// Threads per block such that each thread's K scores fit in 48 KiB of shared memory.
int head_threads(int k) {
  const int fit = (48 * 1024) / (4 * k);
  return fit >= 128 ? 128 : (fit / 32) * 32;
}

template <typename T, typename O>
void launch_head_typed(const ViewDesc& v, const float* weight, const float* bias, int k, int op, O* out,
                       long long osn, long long osh, long long osw, int n, int h, int w, cudaStream_t stream) {
  const int threads = head_threads(k);
  if (threads < 32) throw std::invalid_argument("head: too many classes for the CUDA head kernel");
  const long long total = static_cast<long long>(n) * h * w;
  const size_t smem = static_cast<size_t>(threads) * k * sizeof(float);
  head_kernel<T, O><<<grid_for(total, threads), threads, smem, stream>>>(v, weight, bias, k, static_cast<HeadOp>(op),
                                                                         out, osn, osh, osw, n, h, w);
}

// The float output has the input's storage type; the argmax output is one of the integer types.
void launch_head(int in_dtype, int out_dtype, const ViewDesc& v, std::uintptr_t weight, std::uintptr_t bias, int k,
                 int op, std::uintptr_t out, long long osn, long long osh, long long osw, int n, int h, int w,
                 std::uintptr_t stream) {
  if (static_cast<long long>(n) * h * w == 0) return;
  const auto* wp = reinterpret_cast<const float*>(weight);
  const auto* bp = reinterpret_cast<const float*>(bias);
  const cudaStream_t s = as_stream(stream);
  dispatch_float(in_dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (static_cast<DType>(out_dtype)) {
      case DType::kUInt8:
        launch_head_typed<T>(v, wp, bp, k, op, reinterpret_cast<std::uint8_t*>(out), osn, osh, osw, n, h, w, s);
        break;
      case DType::kInt32:
        launch_head_typed<T>(v, wp, bp, k, op, reinterpret_cast<std::int32_t*>(out), osn, osh, osw, n, h, w, s);
        break;
      case DType::kInt64:
        launch_head_typed<T>(v, wp, bp, k, op, reinterpret_cast<std::int64_t*>(out), osn, osh, osw, n, h, w, s);
        break;
      default:
        if (out_dtype != in_dtype) throw std::invalid_argument("head: out dtype must match the input dtype");
        launch_head_typed<T>(v, wp, bp, k, op, reinterpret_cast<T*>(out), osn, osh, osw, n, h, w, s);
    }
  });
  UF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace unet_fast
