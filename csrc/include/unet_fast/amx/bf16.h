// bf16 <-> fp32, bit for bit like PyTorch (c10/util/BFloat16.h): widening is exact (the bf16 bits become
// the upper half of the fp32), narrowing rounds to nearest even and turns every NaN into the quiet NaN
// 0x7FC0. bf16 tensors cross the binding as raw uint16_t, so no compiler bf16 type is needed.
#pragma once

#include <cstdint>
#include <cstring>

namespace unet_fast {

inline float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The NaN case is a select, not a branch, so channel loops over it vectorise.
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const std::uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // round to nearest, ties to even
  return static_cast<std::uint16_t>(nan ? 0x7FC0u : r);
}

}  // namespace unet_fast
