// The standalone bf16 CPU ops (csrc/cpu/bf16/): NHWC bf16 tensors cross the binding as uint16, every op
// computes in fp32 where it does arithmetic and copies bits where it does not. Baseline x86-64 (plain
// loops the compiler vectorises), OpenMP over output rows like the fp32 ops.
#pragma once

#include <cstdint>

#include "unet_fast/amx/bf16.h"
#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/cpu_tensor.h"

namespace unet_fast {
namespace bf16ops {

// Element type of a head output; matches unet_fast/kernels/cpu_bf16_ops.py _HEAD_OUT_KINDS.
enum class HeadOut : int { kF32 = 0, kBf16 = 1, kU8 = 2, kI32 = 3, kI64 = 4 };

// One head output: fp32 / bf16 [N, H, W, K] (probabilities or logits), or an [N, H, W] class map
// (described as NHWC with one channel). Exactly one pointer member is used, by `kind`.
struct HeadOutput {
  HeadOut kind;
  Nhwc<float> f32{};
  Nhwc<std::uint16_t> b16{};
  Nhwc<std::uint8_t> u8{};
  Nhwc<std::int32_t> i32{};
  Nhwc<std::int64_t> i64{};
};

}  // namespace bf16ops
}  // namespace unet_fast
