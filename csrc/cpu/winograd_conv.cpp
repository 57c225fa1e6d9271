// Winograd F(4x4, 3x3) and F(6x6, 3x3) convolution, stride 1, padding 0 or 1, NHWC fp32 or bf16, with the fused conv epilogue
// (bias, residual, activation, channel-slot store, 2x2 max-pool) and virtual-concat / resample-on-read
// inputs. Launcher, weight packing and argument checks: unet_fast/kernels/cpu_winograd.py; design:
// docs/winograd.md. The kernel body (csrc/include/unet_fast/winograd_kernels.h) is compiled once per CPU
// variant (cpu_isa.h); `isa` is the variant the weight was packed for.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "unet_fast/checks.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/cpu_variant.h"
#include "unet_fast/winograd_conv.h"

namespace py = pybind11;

namespace unet_fast {

// (descriptor, resample mode, resampled H, resampled W, align_corners, window offset y, x): spec.InputView.
using ViewArgs = std::tuple<DescArgs, int, std::int64_t, std::int64_t, bool, std::int64_t, std::int64_t>;

// The variant's kernel for the activations' element type.
inline void run(const CpuVariantOps& ops, const WinoConv& cv) { ops.winograd_conv(cv); }
inline void run(const CpuVariantOps& ops, const WinoConvBf16& cv) { ops.winograd_conv_bf16(cv); }

// The binding for fp32 (T = float) or bf16 (T = std::uint16_t: views, residual, out and pool_out are bf16
// descriptors, read as raw bits; bias and the transformed weight stay fp32, the compute fp32, each output
// rounded once to bf16): argument checks, the problem description, then the kernel of variant `isa`.
template <typename T>
void winograd_conv3x3(const std::vector<ViewArgs>& views, int h, int w, int cin, int cout, int cout_pad, int pad,
                      std::uintptr_t u_ptr, std::int64_t u_numel, std::uintptr_t bias_ptr,
                      const std::optional<DescArgs>& residual_desc, const DescArgs& out_desc,
                      const std::optional<DescArgs>& pool_desc, int act, float negative_slope, int num_threads,
                      int isa, int tile_block, int cout_chunk, int tile, int nr) {
  const CpuVariantOps& ops = cpu_variant(isa);  // checks isa
  UF_CHECK(!views.empty(), "at least one input view");
  UF_CHECK_POSITIVE(cin);
  UF_CHECK_POSITIVE(cout);
  UF_CHECK(pad == 0 || pad == 1, "padding must be 0 or 1, got " << pad);
  UF_CHECK(h > 0 && w > 0 && h + 2 * pad >= 3 && w + 2 * pad >= 3, "input " << h << "x" << w << " too small for a 3x3 conv");
  if (nr == 0) nr = ops.winograd.nr;
  UF_CHECK(nr == ops.winograd.nr || (nr == ops.lanes && cout <= ops.lanes),
           "nr must be this variant's Winograd block of " << ops.winograd.nr << " or, for Cout <= " << ops.lanes
           << ", one vector of " << ops.lanes << "; got " << nr << " for Cout " << cout);
  UF_CHECK(cout_pad % nr == 0 && cout_pad >= cout && cout_pad < cout + nr,
           "cout_pad " << cout_pad << " must be " << cout << " rounded up to the block of " << nr);
  UF_CHECK(tile == 4 || tile == 6, "Winograd output tile must be 4 (F(4x4, 3x3)) or 6 (F(6x6, 3x3)), got " << tile);
  const long long points = static_cast<long long>(tile + 2) * (tile + 2);
  UF_CHECK_PTR(u_ptr);
  UF_CHECK(u_numel == points * cout_pad * cin,
           "packed weight holds " << u_numel << " floats, expected " << points << " x " << cout_pad << " x " << cin);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK_NONNEG(tile_block);
  UF_CHECK_NONNEG(cout_chunk);

  WinoConvT<T> cv;
  cv.out = make_nhwc<T>(out_desc, "out", /*output=*/true);
  cv.h = h;
  cv.w = w;
  cv.cin = cin;
  cv.cout = cout;
  cv.cout_pad = cout_pad;
  cv.nr = nr;
  cv.pad = pad;
  cv.tile = tile;
  cv.ho = h + 2 * pad - 2;
  cv.wo = w + 2 * pad - 2;
  UF_CHECK(cv.out.n <= INT32_MAX, "batch must fit in int32");
  cv.n = static_cast<int>(cv.out.n);
  UF_CHECK(cv.out.h == cv.ho && cv.out.w == cv.wo && cv.out.c == cout,
           "out must be [" << cv.n << ", " << cv.ho << ", " << cv.wo << ", " << cout << "]");
  int c0 = 0;
  for (std::size_t i = 0; i < views.size(); ++i) {
    const auto& [desc, mode, rh, rw, align, off_y, off_x] = views[i];
    WinoViewT<T> v;
    const std::string name = "views[" + std::to_string(i) + "]";
    v.src = make_nhwc<const T>(desc, name.c_str());
    UF_CHECK(v.src.n == cv.out.n, "view " << i << " has batch " << v.src.n << ", out has " << cv.out.n);
    UF_CHECK(mode >= 0 && mode <= 2, "unknown resample mode " << mode);
    UF_CHECK(rh > 0 && rw > 0 && rh < (1 << 24) && rw < (1 << 24), "resampled size out of range");
    UF_CHECK(mode != 0 || (rh == v.src.h && rw == v.src.w), "a view without resample keeps its size");
    UF_CHECK(v.src.h < (1 << 24) && v.src.w < (1 << 24) && v.src.c <= INT32_MAX, "view too large");
    UF_CHECK(off_y > -(1 << 24) && off_y < (1 << 24) && off_x > -(1 << 24) && off_x < (1 << 24),
             "window offset out of range");
    v.c0 = c0;
    v.mode = mode;
    v.rh = static_cast<int>(rh);
    v.rw = static_cast<int>(rw);
    v.align_corners = align;
    v.off_y = static_cast<int>(off_y);
    v.off_x = static_cast<int>(off_x);
    c0 += static_cast<int>(v.src.c);
    cv.views.push_back(v);
  }
  UF_CHECK(c0 == cin, "views carry " << c0 << " channels, the weight expects " << cin);
  cv.residual = Nhwc<const T>{nullptr, 0, 0, 0, 0, 0, 0, 0};
  if (residual_desc) {
    cv.residual = make_nhwc<const T>(*residual_desc, "residual");
    UF_CHECK(cv.residual.n == cv.out.n && cv.residual.h == cv.ho && cv.residual.w == cv.wo && cv.residual.c == cout,
             "residual and out shapes differ");
  }
  cv.pool = Nhwc<T>{nullptr, 0, 0, 0, 0, 0, 0, 0};
  if (pool_desc) {
    UF_CHECK(cv.ho >= 2 && cv.wo >= 2, "a 2x2 pool needs an output of at least 2x2");
    cv.pool = make_nhwc<T>(*pool_desc, "pool_out", /*output=*/true);
    UF_CHECK(cv.pool.n == cv.out.n && cv.pool.h == cv.ho / 2 && cv.pool.w == cv.wo / 2 && cv.pool.c == cout,
             "pool_out must be [" << cv.n << ", " << cv.ho / 2 << ", " << cv.wo / 2 << ", " << cout << "]");
  }
  cv.u = reinterpret_cast<const float*>(u_ptr);
  cv.bias = reinterpret_cast<const float*>(bias_ptr);
  cv.ep = Epilogue{static_cast<Act>(act), negative_slope};
  cv.num_threads = num_threads;
  cv.tile_block = tile_block;
  cv.cout_chunk = cout_chunk;
  py::gil_scoped_release release;
  run(ops, cv);
}

template <typename T>
void def_winograd(py::module_& m, const char* name, const char* doc) {
  m.def(name, &winograd_conv3x3<T>, py::arg("views"), py::arg("h"), py::arg("w"), py::arg("cin"), py::arg("cout"),
        py::arg("cout_pad"), py::arg("pad"), py::arg("u_ptr"), py::arg("u_numel"), py::arg("bias_ptr"),
        py::arg("residual"), py::arg("out"), py::arg("pool_out"), py::arg("act"), py::arg("negative_slope"),
        py::arg("num_threads"), py::arg("isa"), py::arg("tile_block"), py::arg("cout_chunk"), py::arg("tile") = 4,
        py::arg("nr") = 0, doc);
}

void register_winograd(py::module_& m) {
  def_winograd<float>(m, "winograd_conv3x3_f32",
                      "Winograd F(tile x tile, 3x3) conv (tile 4 or 6), stride 1, NHWC fp32 descriptors, fused "
                      "epilogue. views: (descriptor, mode, resampled H, W, align_corners, offset y, x) each; isa: "
                      "index into cpu_isa_table() (the weight's variant).");
  def_winograd<std::uint16_t>(m, "winograd_conv3x3_bf16",
                              "winograd_conv3x3_f32 on bf16 activations (views, residual, out, pool_out are bf16 "
                              "NHWC descriptors; bias and the transformed weight fp32): fp32 compute, each output "
                              "rounded once to bf16.");
}

}  // namespace unet_fast
