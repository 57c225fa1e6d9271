// Variant "avx512": AVX-512 F/DQ/BW/VL, 16 lanes in zmm registers, masked partial loads/stores.
// Blocking chosen for 32 zmm registers (docs/winograd.md, "AVX-512 blocking"): Winograd 14 tiles x 32
// channels (28 accumulators + 2 B vectors + 1 broadcast), transposed conv 8 pixels x 32 channels (row
// widths of 16, 32, 64 pixels split without waste). Registry: unet_fast/cpu_isa.h.
#include "variant_prelude.h"

#ifdef UF_CPU_X86
UF_TARGET_BEGIN(UF_TARGET_AVX512)
namespace unet_fast {
namespace avx512 {
#include "unet_fast/cpu_vec_avx512.h"
constexpr int kL = Vec::kLanes;
constexpr Blocking kWinoBlocking{14, 32};
constexpr Blocking kCtBlocking{8, 32};
struct ThreadState {};
#include "unet_fast/cpu_kernel_body.h"
}  // namespace avx512
}  // namespace unet_fast
UF_TARGET_END

namespace unet_fast {
// Outside the target region: reading the table must not execute AVX-512 code on a CPU without it.
const CpuVariantOps& ops_avx512() { return avx512::kOps; }
}  // namespace unet_fast
#endif
