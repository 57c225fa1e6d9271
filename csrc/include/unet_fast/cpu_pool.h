// One output row of the 2x2, stride-2 max-pool over NHWC (epilogue.h's NaN-propagating max), shared by
// the standalone maxpool2x2 op and the conv epilogue's fused pool output.
#pragma once

#include <cstdint>

#include "unet_fast/cpu_tensor.h"
#include "unet_fast/epilogue.h"

namespace unet_fast {

// out[n, oy, :, :] = max over x[n, 2oy..2oy+1, 2ox..2ox+1, :]. Takes the descriptors by value so the
// compiler sees no aliasing between them and the stores (it then vectorizes the channel loop). Always
// inlined, so each CPU variant's maxpool_row (cpu_kernel_body.h) compiles it for its own target.
__attribute__((always_inline)) inline void maxpool2x2_row(const Nhwc<const float> x, const Nhwc<float> out, std::int64_t n, std::int64_t oy) {
  const std::int64_t c = out.c;
  for (std::int64_t ox = 0; ox < out.w; ++ox) {
    const float* a = x.pixel(n, 2 * oy, 2 * ox);
    const float* b = a + x.sw;
    const float* d = a + x.sh;
    const float* e = d + x.sw;
    float* o = out.pixel(n, oy, ox);
    // Load all four first: unconditional loads keep max_nan's short-circuit from becoming masked loads.
#pragma omp simd
    for (std::int64_t k = 0; k < c; ++k) {
      const float va = a[k], vb = b[k], vd = d[k], ve = e[k];
      o[k] = max_nan(max_nan(va, vb), max_nan(vd, ve));
    }
  }
}

}  // namespace unet_fast
