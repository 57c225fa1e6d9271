// Variant "avx512": AVX-512 F/DQ/BW/VL, 16 lanes in zmm registers, masked partial loads/stores.
// Blocking measured on unet64's layers (docs/winograd.md, "AVX-512"): Winograd 8 tiles x 32 channels (16
// accumulators + 2 B vectors + 1 broadcast; 14 x 32 and 6 x 64 were tried: 14-row tiles waste a tail on
// the 16-tile layers, 64-channel blocks pad the 16- and 32-channel convs of smp decoders), transposed conv
// 8 pixels x 32 channels (row widths of 16, 32, 64 pixels split without waste). Registry: cpu_isa.h.
#include "variant_prelude.h"

#ifdef UF_CPU_X86
UF_TARGET_BEGIN(UF_TARGET_AVX512)
namespace unet_fast {
namespace avx512 {
#include "unet_fast/cpu_vec_avx512.h"
constexpr int kL = Vec::kLanes;
constexpr Blocking kWinoBlocking{8, 32};
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
