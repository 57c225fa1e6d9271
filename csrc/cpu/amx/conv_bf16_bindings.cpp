// Bindings of the bf16 tile ops over the tile backends of the CPU variant table (unet_fast/cpu_isa.h: portable
// emulator, native AMX, AVX512-BF16): one tile dot product (tests of the arithmetic), the bf16 direct
// convolution and transposed convolution, and AMX's detection. The Python launcher
// (unet_fast/kernels/cpu_bf16.py) checks every argument first; this re-checks what could touch memory out
// of bounds or run AMX instructions where they fault.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <array>
#include <optional>
#include <tuple>
#include <string>
#include <vector>

#include "unet_fast/amx/conv_bf16.h"
#include "unet_fast/amx/detect.h"
#include "unet_fast/amx/tile.h"
#include "unet_fast/bf16/ops.h"
#include "unet_fast/checks.h"
#include "unet_fast/cpu_gather.h"
#include "unet_fast/cpu_isa.h"
#include "unet_fast/cpu_tensor.h"
#include "unet_fast/resample.h"

namespace py = pybind11;

namespace unet_fast {
namespace {

// The tile backend of row `index` of the CPU variant table (unet_fast/cpu_isa.h), checked: a tile row, and
// runnable here.
const amx::TileOps& backend_at(int index) { return tile_variant(index); }

py::dict support_dict(const amx::AmxSupport& s) {
  py::dict d;
  d["cpuid_amx_bf16"] = s.cpuid_amx_bf16;
  d["cpuid_amx_tile"] = s.cpuid_amx_tile;
  d["avx512_state"] = s.avx512_state;
  d["xcr0_tile_state"] = s.xcr0_tile_state;
  d["os_permission"] = s.os_permission;
  d["perm_errno"] = s.perm_errno;
  d["runnable"] = s.runnable();
  d["reason"] = s.reason();
  return d;
}

py::dict amx_support_info() { return support_dict(amx::amx_support()); }

// The detection's verdict for given check results (tests of the reason texts on a CPU without AMX).
py::dict amx_support_for(bool cpuid_amx_bf16, bool cpuid_amx_tile, bool avx512_state, bool xcr0_tile_state,
                         bool os_permission, int perm_errno) {
  amx::AmxSupport s;
  s.cpuid_amx_bf16 = cpuid_amx_bf16, s.cpuid_amx_tile = cpuid_amx_tile, s.avx512_state = avx512_state;
  s.xcr0_tile_state = xcr0_tile_state, s.os_permission = os_permission, s.perm_errno = perm_errno;
  return support_dict(s);
}

// The 64-byte LDTILECFG operand a kernel loads: "conv" (the tile conv) or "tile_dot" (m, kp, n).
py::bytes bf16_tile_config_bytes(const std::string& kind, int m, int kp, int n) {
  amx::TileConfig cfg;
  if (kind == "conv") {
    cfg = amx::conv_tile_config();
  } else {
    UF_CHECK(kind == "tile_dot", "kind must be 'conv' or 'tile_dot', got '" << kind << "'");
    UF_CHECK(m >= 1 && m <= 16 && kp >= 1 && kp <= 16 && n >= 1 && n <= 16,
             "tile shape m=" << m << " kp=" << kp << " n=" << n << " outside 1..16");
    cfg = amx::tile_dot_config(m, kp, n);
  }
  return py::bytes(reinterpret_cast<const char*>(&cfg), sizeof cfg);
}

// Why the hardware would fault on `op` ("ldtilecfg" of `config`; or, with `config` loaded, "tileloadd" /
// "tilestored" / "tilezero" of tiles[0], "tdpbf16ps" tiles[0] += tiles[1] . tiles[2]): "" if it would not.
// The emulator's own checks (amx/tile.h), for tests.
std::string bf16_tile_fault(const py::bytes& config, const std::string& op, const std::vector<int>& tiles) {
  const std::string raw = config;
  UF_CHECK(raw.size() == sizeof(amx::TileConfig), "config must be 64 bytes, got " << raw.size());
  amx::TileConfig cfg;
  std::memcpy(&cfg, raw.data(), sizeof cfg);
  const std::string bad = amx::tile_config_fault(cfg);
  if (op == "ldtilecfg") return bad;
  UF_CHECK(bad.empty(), "config would not load: " << bad);
  const bool configured = cfg.palette_id != 0;
  if (op == "tdpbf16ps") {
    UF_CHECK(tiles.size() == 3, "tdpbf16ps takes 3 tiles");
    return amx::tile_dpbf16ps_fault(cfg, configured, tiles[0], tiles[1], tiles[2]);
  }
  UF_CHECK(op == "tileloadd" || op == "tilestored" || op == "tilezero", "unknown tile op '" << op << "'");
  UF_CHECK(tiles.size() == 1, op << " takes 1 tile");
  const char* name = op == "tileloadd" ? "TILELOADD" : op == "tilestored" ? "TILESTORED" : "TILEZERO";
  return amx::tile_op_fault(cfg, configured, name, tiles[0]);
}

// Runs a tile program the hardware would fault on through the emulator, then the check every portable call
// ends with: raises RuntimeError. A test of that path. `fault`: "shape" (a TDPBF16PS whose A tile has 8
// rows, C 16) or "released" (a TILELOADD after the scope's TILERELEASE: what a thread that reuses a stale
// configuration, e.g. an OpenMP pool thread configured by an earlier call, would execute).
void bf16_emulator_fault_selftest(const std::string& fault) {
  UF_CHECK(fault == "shape" || fault == "released", "fault must be 'shape' or 'released', got '" << fault << "'");
  amx::TileConfig cfg = amx::conv_tile_config();
  if (fault == "shape") amx::set_tile(cfg, 4, 8, 64);
  alignas(64) std::uint16_t a[16 * 32] = {};
  {
    const amx::TileScope<amx::TilesPortable> scope(cfg);
    amx::TilesPortable::load<4>(a, 64);
    if (fault == "shape") amx::TilesPortable::dpbf16ps<0, 4, 6>();
  }
  if (fault == "released") amx::TilesPortable::load<4>(a, 64);
  amx::throw_if_emulator_fault();
}

void bf16_tile_dot(std::uintptr_t a, std::uintptr_t b, std::uintptr_t c, int m, int kp, int n, int backend) {
  UF_CHECK(a != 0 && b != 0 && c != 0, "null operand");
  UF_CHECK(m >= 1 && m <= 16 && kp >= 1 && kp <= 16 && n >= 1 && n <= 16,
           "tile shape m=" << m << " kp=" << kp << " n=" << n << " outside 1..16");
  const amx::TileOps& be = backend_at(backend);
  {
    py::gil_scoped_release release;
    be.dot(reinterpret_cast<const std::uint16_t*>(a), reinterpret_cast<const std::uint16_t*>(b),
           reinterpret_cast<float*>(c), m, kp, n);
  }
  amx::throw_if_emulator_fault();
}

float bf16_tile_peak(std::int64_t iters, int backend) {
  UF_CHECK_POSITIVE(iters);
  const amx::TileOps& be = backend_at(backend);
  float r;
  {
    py::gil_scoped_release release;
    r = be.peak(iters);
  }
  amx::throw_if_emulator_fault();
  return r;
}

amx::NhwcAny make_any(const DescArgs& d, bool f32, const char* name, bool output) {
  amx::NhwcAny t;
  if (f32) {
    t.elem = amx::Elem::kF32;
    t.f32 = make_nhwc<float>(d, name, output);
  } else {
    t.elem = amx::Elem::kBf16;
    t.b16 = make_nhwc<std::uint16_t>(d, name, output);
  }
  return t;
}

// One input view as the Python launcher passes it: (descriptor, resample mode (ResampleMode), resampled
// H, W, align_corners, window offset y, x).
using SourceArgs = std::tuple<DescArgs, int, std::int64_t, std::int64_t, bool, std::int64_t, std::int64_t>;

// The sources of cv (the conv's input views, a virtual concat in channel order) and their tap tables
// (`taps` owns them for the call). Returns Cin.
int set_sources(amx::ConvBf16& cv, const std::vector<SourceArgs>& sources, std::int64_t in_h, std::int64_t in_w,
                std::vector<std::vector<Tap>>& taps) {
  UF_CHECK(!sources.empty() && sources.size() <= static_cast<std::size_t>(amx::kMaxSources),
           "the bf16 tile conv reads 1 to " << amx::kMaxSources << " input views, got " << sources.size());
  UF_CHECK(in_h > 0 && in_w > 0 && in_h < (1 << 24) && in_w < (1 << 24), "view size " << in_h << "x" << in_w);
  taps.reserve(2 * sources.size());
  std::int64_t cin = 0;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    const auto& [desc, mode, rh, rw, align_corners, off_y, off_x] = sources[i];
    amx::ConvSource& s = cv.src[i];
    s.x = make_nhwc<const std::uint16_t>(desc, "input view");
    UF_CHECK(mode >= 0 && mode <= 2, "unknown resample mode " << mode);
    s.mode = static_cast<ResampleMode>(mode);
    if (s.mode == ResampleMode::kNone) {
      UF_CHECK(rh == s.x.h && rw == s.x.w, "without a resample the size must be the source's");
    }
    UF_CHECK(rh > 0 && rw > 0 && rh < (1 << 24) && rw < (1 << 24), "resampled size " << rh << "x" << rw);
    UF_CHECK(i == 0 || s.x.n == cv.src[0].x.n, "input views differ in batch");
    s.c_begin = static_cast<int>(cin);
    s.off_y = off_y, s.off_x = off_x;
    taps.push_back(make_taps(in_h, off_y, s.x.h, rh, s.mode, align_corners));
    s.ty = taps.back().data();
    taps.push_back(make_taps(in_w, off_x, s.x.w, rw, s.mode, align_corners));
    s.tx = taps.back().data();
    cin += s.x.c;
  }
  UF_CHECK(cin < (1 << 20), "too many input channels: " << cin);
  cv.nsrc = static_cast<int>(sources.size());
  cv.batch = cv.src[0].x.n, cv.in_h = in_h, cv.in_w = in_w;
  return static_cast<int>(cin);
}

// (N, H, W, C) of an NhwcAny.
std::array<std::int64_t, 4> dims(const amx::NhwcAny& t) {
  if (t.elem == amx::Elem::kF32) return {t.f32.n, t.f32.h, t.f32.w, t.f32.c};
  return {t.b16.n, t.b16.h, t.b16.w, t.b16.c};
}

void conv2d_bf16(const std::vector<SourceArgs>& sources, std::int64_t in_h, std::int64_t in_w, std::uintptr_t w_ptr,
                 std::int64_t w_numel, int kh, int kw, int stride, int pad, int cout, std::uintptr_t bias_ptr,
                 const std::optional<DescArgs>& residual_desc, bool residual_f32, const DescArgs& out_desc,
                 bool out_f32, const std::optional<DescArgs>& pool_desc, bool pool_f32, int act,
                 float negative_slope, int num_threads, int backend, bool tile_body) {
  amx::ConvBf16 cv{};
  cv.tile_body = tile_body;
  std::vector<std::vector<Tap>> taps;
  cv.cin = set_sources(cv, sources, in_h, in_w, taps);
  cv.out = make_any(out_desc, out_f32, "out", /*output=*/true);
  UF_CHECK(kh >= 1 && kw >= 1 && kh <= 16 && kw <= 16, "kernel " << kh << "x" << kw);
  UF_CHECK(stride >= 1 && pad >= 0, "stride " << stride << ", pad " << pad);
  UF_CHECK_POSITIVE(cout);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK(w_ptr != 0, "packed weight is a null pointer");
  cv.kh = kh, cv.kw = kw, cv.stride = stride, cv.pad = pad, cv.cout = cout;
  cv.kc = (cv.cin + amx::kChunkCin - 1) / amx::kChunkCin;
  cv.nb = 2 * ((cout + amx::kBlockCout - 1) / amx::kBlockCout);
  UF_CHECK(w_numel == static_cast<std::int64_t>(kh) * kw * cv.kc * cv.nb * 512,
           "packed weight has " << w_numel << " elements, the layout needs " << kh * kw * cv.kc * cv.nb * 512);
  cv.w = reinterpret_cast<const std::uint16_t*>(w_ptr);
  UF_CHECK(in_h + 2 * pad >= kh && in_w + 2 * pad >= kw, "input smaller than the kernel");
  const std::int64_t hout = (in_h + 2 * pad - kh) / stride + 1, wout = (in_w + 2 * pad - kw) / stride + 1;
  const auto od = dims(cv.out);
  UF_CHECK(od[0] == cv.batch && od[1] == hout && od[2] == wout && od[3] == cout,
           "out must be [" << cv.batch << ", " << hout << ", " << wout << ", " << cout << "]");
  cv.hout = hout, cv.wout = wout;
  if (residual_desc) {
    cv.residual = make_any(*residual_desc, residual_f32, "residual", /*output=*/false);
    UF_CHECK(dims(cv.residual) == od, "residual and out shapes differ");
  }
  if (pool_desc) {
    cv.pool = make_any(*pool_desc, pool_f32, "pool_out", /*output=*/true);
    const auto pd = dims(cv.pool);
    UF_CHECK(pd[0] == od[0] && pd[1] == hout / 2 && pd[2] == wout / 2 && pd[3] == cout && hout >= 2 && wout >= 2,
             "pool_out must be [" << od[0] << ", " << hout / 2 << ", " << wout / 2 << ", " << cout << "]");
  }
  cv.bias = reinterpret_cast<const float*>(bias_ptr);
  cv.act = static_cast<Act>(act);
  cv.negative_slope = negative_slope;
  cv.num_threads = num_threads;
  const amx::TileOps& be = backend_at(backend);
  {
    py::gil_scoped_release release;
    be.conv(cv);
  }
  amx::throw_if_emulator_fault();
}

void conv_transpose2x2_bf16(const DescArgs& x_desc, std::uintptr_t w_ptr, std::int64_t w_numel, int cout,
                            std::uintptr_t bias_ptr, const DescArgs& out_desc, bool out_f32, int act,
                            float negative_slope, int num_threads, int backend, bool tile_body) {
  amx::ConvBf16 cv{};
  cv.tile_body = tile_body;
  const Nhwc<const std::uint16_t> x = make_nhwc<const std::uint16_t>(x_desc, "x");
  std::vector<std::vector<Tap>> taps;
  set_sources(cv, {SourceArgs{x_desc, 0, x.h, x.w, false, 0, 0}}, x.h, x.w, taps);
  cv.out = make_any(out_desc, out_f32, "out", /*output=*/true);
  UF_CHECK_POSITIVE(cout);
  UF_CHECK_POSITIVE(num_threads);
  UF_CHECK(act >= 0 && act <= 3, "unknown activation index " << act);
  UF_CHECK(w_ptr != 0, "packed weight is a null pointer");
  cv.kh = cv.kw = cv.stride = 1, cv.pad = 0, cv.cin = static_cast<int>(x.c), cv.cout = 4 * cout;
  cv.kc = (cv.cin + amx::kChunkCin - 1) / amx::kChunkCin;
  cv.nb = 2 * ((cv.cout + amx::kBlockCout - 1) / amx::kBlockCout);
  UF_CHECK(w_numel == static_cast<std::int64_t>(cv.kc) * cv.nb * 512,
           "packed weight has " << w_numel << " elements, the layout needs " << cv.kc * cv.nb * 512);
  cv.w = reinterpret_cast<const std::uint16_t*>(w_ptr);
  const auto od = dims(cv.out);
  UF_CHECK(od[0] == x.n && od[1] == 2 * x.h && od[2] == 2 * x.w && od[3] == cout,
           "out must be [" << x.n << ", " << 2 * x.h << ", " << 2 * x.w << ", " << cout << "]");
  cv.hout = x.h, cv.wout = x.w;
  cv.bias = reinterpret_cast<const float*>(bias_ptr);
  cv.act = static_cast<Act>(act);
  cv.negative_slope = negative_slope;
  cv.num_threads = num_threads;
  cv.scatter_cout = cout;
  const amx::TileOps& be = backend_at(backend);
  {
    py::gil_scoped_release release;
    be.conv(cv);
  }
  amx::throw_if_emulator_fault();
}

}  // namespace

void register_conv_bf16(py::module_& m) {
  m.def("amx_support", &amx_support_info,
        "AMX detection: CPUID AMX-BF16/AMX-TILE bits, the AVX-512 the amx build also runs, XCR0 tile state, Linux "
        "tile permission (and the errno of a refusal), runnable, reason.");
  m.def("amx_support_for", &amx_support_for, py::arg("cpuid_amx_bf16"), py::arg("cpuid_amx_tile"),
        py::arg("avx512_state"), py::arg("xcr0_tile_state"), py::arg("os_permission"), py::arg("perm_errno"),
        "amx_support's verdict (runnable, reason) for the given check results: for tests of the reasons.");
  m.def("bf16_tile_config_bytes", &bf16_tile_config_bytes, py::arg("kind"), py::arg("m") = 0, py::arg("kp") = 0,
        py::arg("n") = 0,
        "The 64-byte LDTILECFG operand a bf16 tile kernel loads: kind 'conv', or 'tile_dot' with its m, kp, n.");
  m.def("bf16_tile_fault", &bf16_tile_fault, py::arg("config"), py::arg("op"), py::arg("tiles"),
        "Why AMX would fault on op ('ldtilecfg' of config, or with it loaded 'tileloadd' / 'tilestored' / "
        "'tilezero' [t] or 'tdpbf16ps' [c, a, b]); '' if it would not. The portable emulator's checks.");
  m.def("bf16_emulator_fault_selftest", &bf16_emulator_fault_selftest, py::arg("fault"),
        "Runs a tile program AMX would fault on ('shape' or 'released') through the portable emulator: raises "
        "RuntimeError (a test hook).");
  m.def("bf16_tile_dot", &bf16_tile_dot, py::arg("a_ptr"), py::arg("b_ptr"), py::arg("c_ptr"), py::arg("m"),
        py::arg("kp"), py::arg("n"), py::arg("backend"),
        "One TDPBF16PS: c[m][n] (fp32, in place) += a[m][2kp] (bf16) . b[kp][2n] (bf16, K pairs interleaved).");
  m.def("bf16_tile_peak", &bf16_tile_peak, py::arg("iters"), py::arg("backend"),
        "iters rounds of 4 TDPBF16PS (16x16x32 multiply-adds each) on resident tiles, one thread (avx512bf16: "
        "the same FLOPs as 1024 register-resident VDPBF16PS zmm per round): time it for the peak. Returns "
        "iters * 32 / 2^20.");
  m.def("conv2d_bf16", &conv2d_bf16, py::arg("sources"), py::arg("in_h"), py::arg("in_w"), py::arg("w_ptr"),
        py::arg("w_numel"), py::arg("kh"), py::arg("kw"), py::arg("stride"), py::arg("pad"), py::arg("cout"),
        py::arg("bias_ptr"), py::arg("residual"), py::arg("residual_f32"), py::arg("out"), py::arg("out_f32"),
        py::arg("pool_out"), py::arg("pool_f32"), py::arg("act"), py::arg("negative_slope"), py::arg("num_threads"),
        py::arg("backend"), py::arg("tile_body"),
        "bf16 direct NHWC convolution on tiles: input views (a virtual concat of (descriptor, resample mode, "
        "resampled H, W, align_corners, offset y, x), read at in_h x in_w), fused epilogue and optional 2x2 "
        "max-pool output; backend: a tile row of cpu_isa_table(); tile_body: the avx512bf16 backend's tile body instead of "
        "its direct conv (raw descriptors; use unet_fast.kernels.cpu_bf16.conv2d).");
  m.def("conv_transpose2x2_bf16", &conv_transpose2x2_bf16, py::arg("x"), py::arg("w_ptr"), py::arg("w_numel"),
        py::arg("cout"), py::arg("bias_ptr"), py::arg("out"), py::arg("out_f32"), py::arg("act"),
        py::arg("negative_slope"), py::arg("num_threads"), py::arg("backend"), py::arg("tile_body"),
        "bf16 2x2 stride-2 transposed conv on tiles, scatter epilogue into the output slot (raw descriptors; use "
        "unet_fast.kernels.cpu_bf16.conv_transpose2x2).");
}

}  // namespace unet_fast
