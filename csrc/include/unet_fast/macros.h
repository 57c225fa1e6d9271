// Portability macros shared by the CPU (.cpp, host compiler) and CUDA (.cu, nvcc) sources.
#pragma once

#if defined(__CUDACC__)
#define UF_HD __host__ __device__ __forceinline__
#else
#define UF_HD inline
#endif
