// Variant "portable16": 16-lane GCC vectors for the baseline target, with the AVX-512 variant's blocking.
// Not fast (four SSE registers per vector): it exists so the 16-lane blocking, partial vectors and packed
// layouts of the AVX-512 variant are tested on every CPU. Registry: unet_fast/cpu_isa.h.
#include "variant_prelude.h"

namespace unet_fast {
namespace portable16 {
#include "unet_fast/cpu_vec_portable.h"
using Vec = VecP<16>;
constexpr int kL = Vec::kLanes;
// Keep equal to avx512.cpp's blocking: this variant is its portable twin.
constexpr Blocking kWinoBlocking{14, 32};
constexpr Blocking kCtBlocking{8, 32};
struct ThreadState {};
#include "unet_fast/cpu_kernel_body.h"
}  // namespace portable16

const CpuVariantOps& ops_portable16() { return portable16::kOps; }

}  // namespace unet_fast
