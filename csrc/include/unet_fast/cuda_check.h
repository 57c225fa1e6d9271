// CUDA error checking for host code: a failed CUDA call becomes a C++ exception (a Python RuntimeError).
#pragma once

#include <cuda_runtime.h>

#include <sstream>
#include <stdexcept>

#define UF_CUDA_CHECK(expr)                                                               \
  do {                                                                                    \
    cudaError_t uf_err_ = (expr);                                                         \
    if (uf_err_ != cudaSuccess) {                                                         \
      std::ostringstream uf_os_;                                                          \
      uf_os_ << #expr << " failed: " << cudaGetErrorName(uf_err_) << ": "                 \
             << cudaGetErrorString(uf_err_) << " (" << __FILE__ << ":" << __LINE__ << ")"; \
      throw std::runtime_error(uf_os_.str());                                             \
    }                                                                                     \
  } while (0)
