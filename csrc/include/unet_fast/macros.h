// Portability macros shared by the CPU (.cpp, host compiler) and CUDA (.cu, nvcc) sources.
#pragma once

#if defined(__CUDACC__)
#define UF_HD __host__ __device__ __forceinline__
#else
#define UF_HD inline
#endif

// A CPU function compiled twice, baseline x86-64 and x86-64-v3 (AVX2, FMA, BMI2), the second picked at load
// time (ifunc) on CPUs that support it: the wheel has no -march=native. Not "arch=haswell": that clone is
// chosen by CPU *model* (__builtin_cpu_is), so it never ran on AMD or on Intel cores after Haswell.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && __GNUC__ >= 12
#define UF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define UF_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define UF_CPU_CLONES
#endif
