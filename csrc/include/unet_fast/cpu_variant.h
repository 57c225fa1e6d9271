// The entry points one CPU kernel variant provides (the registry, cpu_isa.h, lists the variants). The
// bodies behind them are written once (cpu_kernel_body.h) and compiled per variant; the bindings in
// csrc/cpu/*.cpp check arguments, build the problem descriptors below, and call
// cpu_variant(isa).<op>(...).
#pragma once

#include <cstdint>

#include "unet_fast/activation.h"
#include "unet_fast/conv_transpose2x2.h"
#include "unet_fast/cpu_gather.h"
#include "unet_fast/cpu_head.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/winograd_conv.h"

namespace unet_fast {

// A micro-GEMM's register blocking: mr rows (tiles or pixels) x nr output channels per call. nr is also
// the block width of the op's packed weight (Python packs with the chosen variant's nr).
struct Blocking {
  int mr, nr;
};

struct CpuVariantOps {
  int lanes;                // floats per vector
  Blocking winograd;        // Winograd's batched GEMM: tiles x channels; U is packed [36][Cout/nr][Cin][nr]
  Blocking conv_transpose;  // the 2x2 transposed conv: input pixels x channels; panels are [Cin][nr]
  void (*winograd_conv)(const WinoConv& cv);
  // The same conv on bf16 activations (bf16 bits in and out, fp32 compute: winograd_conv.h).
  void (*winograd_conv_bf16)(const WinoConvBf16& cv);
  void (*conv_transpose2x2)(const CtConv& cv);
  // Head row (n, y): its [W, K] scores into s, then the head op in place (cpu_head.h).
  void (*head_row)(const HeadArgs& h, std::int64_t n, std::int64_t y, float* s, HeadOp op);
  // One output row of gather_view (cpu_gather.h).
  void (*gather_row)(const GatherArgs& g, std::int64_t n, std::int64_t oy);
  // One output row of the 2x2 max-pool (cpu_pool.h's math).
  void (*maxpool_row)(const Nhwc<const float>& x, const Nhwc<float>& out, std::int64_t n, std::int64_t oy);
  // out[i] = act(x[i]), i < n, with num_threads OpenMP threads.
  void (*activation)(const float* x, float* out, std::int64_t n, Act act, float negative_slope, int num_threads);
};

}  // namespace unet_fast
