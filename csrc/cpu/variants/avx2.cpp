// Variant "avx2": AVX2 + FMA, 8 lanes in ymm registers; micro-GEMM 6 x 16 (12 accumulators + 2 B vectors
// + 1 broadcast of the 16 ymm registers). Registry: unet_fast/cpu_isa.h.
#include "variant_prelude.h"

#ifdef UF_CPU_X86
UF_TARGET_BEGIN(UF_TARGET_AVX2)
namespace unet_fast {
namespace avx2 {
#include "unet_fast/cpu_vec_avx2.h"
constexpr int kL = Vec::kLanes;
constexpr Blocking kWinoBlocking{6, 16};
constexpr Blocking kCtBlocking{6, 16};
struct ThreadState {};
#include "unet_fast/cpu_kernel_body.h"
}  // namespace avx2
}  // namespace unet_fast
UF_TARGET_END

namespace unet_fast {
// Outside the target region: reading the table must not execute AVX2 code on a CPU without it.
const CpuVariantOps& ops_avx2() { return avx2::kOps; }
}  // namespace unet_fast
#endif
