// NHWC tensor descriptors for the CPU ops. The Python launchers pass each tensor as a 9-tuple
// (data pointer, N, H, W, C, stride N, stride H, stride W, extent): strides are in elements, the channel
// stride is 1, and `extent` is how many elements the storage holds from the data pointer on. Building a
// descriptor checks that every element it addresses lies inside that extent, so a wrong size or stride
// from Python cannot make a kernel read or write out of bounds.
#pragma once

#include <array>
#include <cstdint>

#include "unet_fast/checks.h"

namespace unet_fast {

using DescArgs = std::array<std::int64_t, 9>;

template <typename T>
struct Nhwc {
  T* p;
  std::int64_t n, h, w, c, sn, sh, sw;

  T* pixel(std::int64_t in, std::int64_t iy, std::int64_t ix) const { return p + in * sn + iy * sh + ix * sw; }
};

template <typename T>
Nhwc<T> make_nhwc(const DescArgs& d, const char* name, bool output = false) {
  Nhwc<T> t{reinterpret_cast<T*>(static_cast<std::uintptr_t>(d[0])), d[1], d[2], d[3], d[4], d[5], d[6], d[7]};
  const std::int64_t extent = d[8];
  UF_CHECK(t.p != nullptr, name << " is a null pointer");
  UF_CHECK(t.n > 0 && t.h > 0 && t.w > 0 && t.c > 0,
           name << " has a non-positive size " << t.n << "x" << t.h << "x" << t.w << "x" << t.c);
  UF_CHECK(t.sn >= 0 && t.sh >= 0 && t.sw >= 0, name << " has a negative stride");
  if (output) {  // distinct elements must not alias, or parallel writers would race
    UF_CHECK(t.w == 1 || t.sw >= t.c, name << ": W stride " << t.sw << " < C " << t.c);
    UF_CHECK(t.h == 1 || t.sh >= t.w * t.sw, name << ": H stride " << t.sh << " overlaps its rows");
    UF_CHECK(t.n == 1 || t.sn >= t.h * t.sh, name << ": N stride " << t.sn << " overlaps its images");
  }
  const std::int64_t last = (t.n - 1) * t.sn + (t.h - 1) * t.sh + (t.w - 1) * t.sw + (t.c - 1);
  UF_CHECK(last < extent, name << " addresses element " << last << " but its storage holds " << extent);
  return t;
}

}  // namespace unet_fast
