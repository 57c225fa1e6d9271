// Launch helpers shared by the CUDA ops (nvcc only): storage-dtype dispatch and grid sizing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "unet_fast/cuda_view.h"

namespace unet_fast {

// Dtype codes passed by unet_fast/kernels/cuda.py (DTYPE_CODES there).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kUInt8 = 3, kInt32 = 4, kInt64 = 5 };

// Calls f(T{}) with T the storage type of a float dtype code.
template <typename F>
void dispatch_float(int dtype, F&& f) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32:
      f(float{});
      return;
    case DType::kFloat16:
      f(__half{});
      return;
    case DType::kBFloat16:
      f(__nv_bfloat16{});
      return;
    default:
      throw std::invalid_argument("unsupported float dtype code " + std::to_string(dtype));
  }
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Blocks for a grid-stride loop over n items: enough to fill any current GPU, never more than needed.
inline unsigned grid_for(std::int64_t n, int threads) {
  const std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace unet_fast
