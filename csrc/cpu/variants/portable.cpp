// Variant "portable": 8-lane GCC vectors for the baseline target (SSE2 on x86-64, NEON on arm64), the
// AVX2 variant's blocking. Runs on any CPU. Registry: unet_fast/cpu_isa.h.
#include "variant_prelude.h"

namespace unet_fast {
namespace portable {
#include "unet_fast/cpu_vec_portable.h"
using Vec = VecP<8>;
constexpr int kL = Vec::kLanes;
constexpr Blocking kWinoBlocking{6, 16};
constexpr Blocking kCtBlocking{6, 16};
struct ThreadState {};
#include "unet_fast/cpu_kernel_body.h"
}  // namespace portable

const CpuVariantOps& ops_portable() { return portable::kOps; }

}  // namespace unet_fast
