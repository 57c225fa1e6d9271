"""bf16 convolution on the CPU's bf16 dot-product hardware (AMX tiles, or AVX512-BF16), with a portable tile
emulator beside it (issue 17).

The C++ side (csrc/cpu/amx/, csrc/include/unet_fast/amx/) writes one direct NHWC convolution over a small
tile interface (config, load, TDPBF16PS dot product, store, release) and compiles it once per *tile
backend*: "portable" (an emulator of exactly TDPBF16PS's arithmetic, any CPU), "amx" (the native tile
instructions) and "avx512bf16" (the tiles held in memory, each dot product run as VDPBF16PS zmm: native on
AMD Zen 4, Intel Cooper Lake, or an AMX CPU whose OS refuses the tile state). They are the *tile* rows of the
CPU variant table (kernels/cpu_isa.py), whose blocking this module reads from there. `isa=` forces one, else
UNET_FAST_KERNELS=bf16=<name> (kernels/registry.py; its deprecated alias UNET_FAST_CPU_BF16_ISA), else the
best this CPU runs (amx > avx512bf16 > portable). The engine's choice is the kernel registry's (the bottom
of this file registers one conv and one transposed-conv kernel per tile backend): it never picks the
portable emulator for speed.
portable and amx give the same bits (same blocking, same operation order), so every test of packing, edge
tiles and epilogue runs on any CPU; avx512bf16 has VDPBF16PS's own order (one fp32 chain into C, the odd
product of each K pair before the even one), so it equals them exactly only where every sum is exact, and
is otherwise held to the same float64 budgets; docs/amx_bf16.md.

Order of this file: the float64 reference, the tile backends, weight packing, the convolution launchers, the
registry entries.

Numerics: inputs and weights are bf16; products are exact in fp32 and accumulate in fp32 tiles; the
epilogue (bias, residual, activation) runs in fp32 and the result is stored once as bf16 (or fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast._ext import require_cpu
from unet_fast.graph.ir import Conv, ConvTranspose2x2, Step
from unet_fast.kernels import checks, cpu_isa, registry
from unet_fast.kernels.cpu_desc import nhwc_desc as _desc
from unet_fast.kernels.cpu_desc import num_threads, view_source
from unet_fast.kernels.cpu_isa import CpuVariant
from unet_fast.kernels.spec import (
    ACTIVATIONS,
    InputView,
    apply_activation,
    as_view,
    conv_output_size,
    read_view,
)

# The deprecated alias of UNET_FAST_KERNELS=bf16=<name> (kernels/registry.py), kept because users set it.
ISA_ENV = "UNET_FAST_CPU_BF16_ISA"
OUT_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float32)


def _layout() -> CpuVariant | None:
    """The tile rows' blocking, from the CPU variant table (the same for every tile backend; None without
    unet_fast._C)."""
    rows = cpu_isa.tile_variants()
    if not rows:
        return None
    if len({(r.chunk_cin, r.block_cout, r.tile_rows, r.max_sources) for r in rows}) != 1:
        raise RuntimeError("the bf16 tile backends of unet_fast._C disagree on the packed weight layout")
    return rows[0]


_LAYOUT = _layout()
_CHUNK_CIN = _LAYOUT.chunk_cin if _LAYOUT else 32  # input channels per tile dot product (16 K pairs)
_BLOCK_COUT = _LAYOUT.block_cout if _LAYOUT else 32  # output channels per block (two 16-column B tiles)
_TILE = _LAYOUT.tile_rows if _LAYOUT else 16

# ---------------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------------


def _bilinear_taps(out_len: int, in_len: int, resampled_len: int, off: int,
                   align_corners: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Per view row / column o: (valid, i0, i1, w0, w1) of resample.h linear_source in float32 arithmetic,
    one operation at a time, as the C++ tap tables hold them."""
    r = torch.arange(out_len) + off
    valid = (r >= 0) & (r < resampled_len)
    f = torch.float32
    if align_corners:
        scale = torch.tensor(in_len - 1, dtype=f) / torch.tensor(resampled_len - 1, dtype=f) \
            if resampled_len > 1 else torch.zeros((), dtype=f)  # fmt: skip
        src = scale * r.to(f)
    else:
        scale = torch.tensor(in_len, dtype=f) / torch.tensor(resampled_len, dtype=f)
        src = scale * (r.to(f) + 0.5) - 0.5
    src = src.clamp_min(0.0)
    i0 = src.to(torch.int64).clamp(0, in_len - 1)
    i1 = torch.where(i0 < in_len - 1, i0 + 1, i0)
    w1 = src - i0.to(f)
    return valid, i0, i1, 1.0 - w1, w1


def read_view_bf16(view: InputView) -> Tensor:
    """What the bf16 tile conv stages for one input view, materialised: bf16 NHWC [N, h, w, C] of the
    view's output size. Plain reads, windows and nearest resampling copy bf16 values (zeros outside the
    window); bilinear blends the four bf16 neighbours in float32 in the fp32 gather's order,
    w0y (w0x a + w1x b) + w1y (w0x c + w1x d), one rounding per operation, and rounds the result once to
    bf16 (the tile's A operand is bf16). Raises ValueError for a non-bf16 view."""
    x = view.tensor
    if x.dtype != torch.bfloat16:
        raise ValueError(f"read_view_bf16 reads bf16 views, got {x.dtype}")
    r = view.resample
    if r is None or r.mode == "nearest":
        return read_view(view, torch.float32).to(torch.bfloat16)  # copies only: exact
    (top, left), (h, w) = view.offset, view.out_size
    vy, y0, y1, wy0, wy1 = _bilinear_taps(h, x.shape[1], r.size[0], top, r.align_corners)
    vx, x0, x1, wx0, wx1 = _bilinear_taps(w, x.shape[2], r.size[1], left, r.align_corners)
    xf = x.float()

    def rows(i: Tensor) -> Tensor:  # [N, h, W, C]
        return xf[:, i]

    def blend(t: Tensor) -> Tensor:  # along W: wx0 a + wx1 b, each product and the sum rounded in fp32
        return wx0[:, None] * t[:, :, x0] + wx1[:, None] * t[:, :, x1]

    y = wy0[:, None, None] * blend(rows(y0)) + wy1[:, None, None] * blend(rows(y1))
    y = torch.where(vy[:, None, None] & vx[:, None], y, 0.0)  # outside the window: zero
    return y.to(torch.bfloat16)


def conv2d_reference(x: Tensor | Sequence[Tensor | InputView], weight: Tensor, bias: Tensor | None = None, *,
                     stride: int = 1, padding: int = 0, act: str = "none", negative_slope: float = 0.01,
                     residual: Tensor | None = None) -> Tensor:  # fmt: skip
    """The exact result the bf16 conv approximates: float64 act(conv(x, w) + bias + residual) of the
    bf16-rounded x [N, H, W, Cin] and weight [Cout, Cin, KH, KW] (both rounded here; bias and residual
    taken as given). x may be a list of bf16 input views (a virtual concat): each is read as the kernel
    stages it (read_view_bf16). Returns float64 NHWC [N, Hout, Wout, Cout]."""
    if not isinstance(x, Tensor):
        x = torch.cat([read_view_bf16(as_view(v)) for v in x], dim=3)
    xd = x.to(torch.bfloat16).double().permute(0, 3, 1, 2)
    wd = weight.to(torch.bfloat16).double()
    y = F.conv2d(xd, wd, None if bias is None else bias.double(), stride=stride, padding=padding)
    y = y.permute(0, 2, 3, 1)
    if residual is not None:
        y = y + residual.double()
    return apply_activation(y, act, negative_slope)


def conv_transpose2x2_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, act: str = "none",
                                negative_slope: float = 0.01) -> Tensor:  # fmt: skip
    """float64 act(conv_transpose2d(x, w, stride 2) + bias) of the bf16-rounded x [N, H, W, Cin] and
    weight [Cin, Cout, 2, 2]. Returns float64 NHWC [N, 2H, 2W, Cout]."""
    xd = x.to(torch.bfloat16).double().permute(0, 3, 1, 2)
    wd = weight.to(torch.bfloat16).double()
    y = F.conv_transpose2d(xd, wd, None if bias is None else bias.double(), stride=2).permute(0, 2, 3, 1)
    return apply_activation(y, act, negative_slope)


# ---------------------------------------------------------------------------------------------------
# Tile backends
# ---------------------------------------------------------------------------------------------------


# A tile backend is a tile row of the CPU variant table: name, index (the C++ `backend` argument), rank,
# runnable, reason (why it cannot run here; '' when it can), emulator, ...
TileBackend = CpuVariant


def tile_backends() -> tuple[TileBackend, ...]:
    """Every compiled tile backend ("portable", and "amx", "avx512bf16" on x86-64), in table order; () if
    unet_fast._C is not built."""
    return cpu_isa.tile_variants()


def available_tile_backends() -> tuple[str, ...]:
    """Names of the tile backends this CPU and OS can run."""
    return tuple(b.name for b in tile_backends() if b.runnable)


def choose_backend(isa: str | None = None) -> TileBackend:
    """The tile backend for `isa` ("portable", "amx", "avx512bf16" or "auto"; None: what UNET_FAST_KERNELS
    forces with bf16=<name> (or its alias UNET_FAST_CPU_BF16_ISA; "none" counts as auto here), else auto = the
    highest-ranked one this CPU runs: amx > avx512bf16 > portable). The kernel-level choice of a direct call,
    which asked for the tile ops, so auto may give the emulator; the engine's is the registry's (the "bf16"
    family at the bottom of this file), which never does. Raises ValueError for an unknown name, or for "amx" /
    "avx512bf16" on a CPU / OS without it (the message says which check failed: the CPUID bit, the XCR0
    state, or for amx the Linux tile permission)."""
    require_cpu()
    forced = registry.Choices.from_env().get("bf16") if isa is None else None
    name = (isa or (forced if forced != "none" else None) or "auto").lower()
    backends = tile_backends()
    if name == "auto":
        return max((b for b in backends if b.runnable), key=lambda b: b.rank)
    return _runnable_backend(name)


def _runnable_backend(name: str) -> TileBackend:
    by_name = {b.name: b for b in tile_backends()}
    if name not in by_name:
        raise ValueError(f"unknown bf16 tile isa {name!r}; expected 'auto' or one of {tuple(by_name)} "
                         f"(argument, or UNET_FAST_KERNELS=bf16=<name>)")  # fmt: skip
    if not by_name[name].runnable:
        raise ValueError(f"bf16 tile isa {name!r} cannot run on this machine: {by_name[name].reason}")
    return by_name[name]


def tile_dot(a: Tensor, b: Tensor, c: Tensor, *, isa: str | None = None) -> Tensor:
    """One TDPBF16PS on one tile: returns c + a . b with c [M, N] fp32, a [M, 2 KP] bf16, b [KP, 2 N] bf16 in
    the K-pair interleaved layout (b[k, 2n + j] is B[2k + j, n]), M, KP, N <= 16, computed as the Intel SDM
    states it: even = sum_k a[m, 2k] b[k, 2n] and odd = sum_k a[m, 2k + 1] b[k, 2n + 1] in two fp32 chains
    (FMA steps in increasing k), then out[m, n] = c[m, n] + (even + odd); denormals read as zero and flush.
    On the "avx512bf16" backend the order is VDPBF16PS's instead: one fp32 chain from c, per k first
    + a[m, 2k + 1] b[k, 2n + 1] then + a[m, 2k] b[k, 2n], each addition rounded (RNE) and flushed; bf16
    input denormals and a denormal c read as zero (docs/amx_bf16.md). For tests of the tile arithmetic.
    Raises ValueError on shapes / dtypes outside that."""
    for name, t, dt in (("a", a, torch.bfloat16), ("b", b, torch.bfloat16), ("c", c, torch.float32)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.dtype != dt or t.device.type != "cpu":
            raise ValueError(f"{name} must be a 2-D {dt} CPU tensor")
    m, n, kp = c.shape[0], c.shape[1], b.shape[0]
    if (
        tuple(a.shape) != (m, 2 * kp)
        or tuple(b.shape) != (kp, 2 * n)
        or not (0 < m <= 16 and 0 < n <= 16 and 0 < kp <= 16)
    ):
        raise ValueError(f"shapes a {tuple(a.shape)}, b {tuple(b.shape)}, c {tuple(c.shape)}: need a [M, 2KP], "
                         "b [KP, 2N], c [M, N], each of M, KP, N in 1..16")  # fmt: skip
    backend = choose_backend(isa)
    out = c.contiguous().clone()
    a, b = a.contiguous(), b.contiguous()
    require_cpu().bf16_tile_dot(a.data_ptr(), b.data_ptr(), out.data_ptr(), m, kp, n, backend.index)
    return out


def tile_peak(iters: int, *, isa: str | None = None) -> float:
    """Run `iters` rounds of 4 TDPBF16PS (each 16 x 16 x 32 multiply-adds = 16384 FLOP) on resident tiles in
    the calling thread; time it for the tile peak (benchmarks/bench_amx_bf16.py). On "avx512bf16" a round is
    the same FLOPs as 1024 VDPBF16PS zmm on 16 independent register accumulators with both operands in
    registers (no loads, no stores: the core's bf16 dot-product peak, not the tile interface's speed); on
    "portable" it is the emulator through the tile interface. Returns one element of an accumulator,
    iters * 32 / 2^20 (all operands 2^-10), so the work is observable."""
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    return require_cpu().bf16_tile_peak(iters, choose_backend(isa).index)


# ---------------------------------------------------------------------------------------------------
# Weight packing
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvWeightBF16:
    """A conv weight packed once into the tile layout (csrc/include/unet_fast/amx/conv_bf16.h):
    `packed` is bf16 [KH*KW, KC, NB, 16, 16, 2], KC = ceil(Cin/32), NB = 2 ceil(Cout/32): per tap, 32-channel
    input chunk and 16-channel output block one B tile whose row k, column n holds the pair
    w[co, 2k], w[co, 2k + 1] of that chunk (VNNI-2); channels past Cin / Cout are zeros. The layout is the
    same for both tile backends."""

    packed: Tensor
    cout: int
    cin: int
    kh: int
    kw: int

    @property
    def shape(self) -> torch.Size:
        """The logical weight shape [Cout, Cin, KH, KW]."""
        return torch.Size((self.cout, self.cin, self.kh, self.kw))


def pack_conv_weight(weight: Tensor) -> ConvWeightBF16:
    """Round weight [Cout, Cin, KH, KW] (any float dtype, CPU) to bf16 and pack it for conv2d. The caller's
    tensor is not changed. Raises ValueError for a non-4-D, non-float, empty or non-CPU weight."""
    if not isinstance(weight, Tensor) or weight.dim() != 4 or not weight.is_floating_point():
        raise ValueError("weight must be a 4-D float tensor [Cout, Cin, KH, KW]")
    if weight.device.type != "cpu" or weight.numel() == 0:
        raise ValueError(
            f"weight must be a non-empty CPU tensor, got {tuple(weight.shape)} on {weight.device}"
        )
    cout, cin, kh, kw = weight.shape
    if kh > 16 or kw > 16:
        raise ValueError(f"kernel {kh}x{kw} is larger than 16x16")
    kc, nb = -(-cin // _CHUNK_CIN), 2 * -(-cout // _BLOCK_COUT)
    w = torch.zeros(nb * _TILE, kc * _CHUNK_CIN, kh, kw, dtype=torch.bfloat16)
    with torch.no_grad():
        w[:cout, :cin] = weight.detach().to(torch.bfloat16)
    # [NB, 16 n, KC, 16 k, 2 j, KH, KW] -> [KH, KW, KC, NB, 16 k, 16 n, 2 j]
    w = w.view(nb, _TILE, kc, _TILE, 2, kh, kw).permute(5, 6, 2, 0, 3, 1, 4)
    packed = w.reshape(kh * kw, kc, nb, _TILE, _TILE, 2).contiguous()
    return ConvWeightBF16(packed, int(cout), int(cin), int(kh), int(kw))


@dataclass(frozen=True)
class ConvTransposeWeightBF16:
    """A 2x2 stride-2 transposed-conv weight packed for conv_transpose2x2: the GEMM [pixels, Cin] x
    [Cin, 4 Cout] as a 1x1 ConvWeightBF16 whose output channel (2a + b) Cout + c is w[:, c, a, b]."""

    gemm: ConvWeightBF16
    cin: int
    cout: int

    @property
    def shape(self) -> torch.Size:
        """The logical weight shape [Cin, Cout, 2, 2] (nn.ConvTranspose2d's)."""
        return torch.Size((self.cin, self.cout, 2, 2))


def pack_conv_transpose_weight(weight: Tensor) -> ConvTransposeWeightBF16:
    """Round a ConvTranspose2d(kernel 2, stride 2) weight [Cin, Cout, 2, 2] to bf16 and pack it for
    conv_transpose2x2. The caller's tensor is not changed. Raises ValueError for another shape."""
    if not isinstance(weight, Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (2, 2):
        raise ValueError("weight must be a [Cin, Cout, 2, 2] tensor (ConvTranspose2d, kernel 2)")
    cin, cout = int(weight.shape[0]), int(weight.shape[1])
    gemm = weight.detach().permute(2, 3, 1, 0).reshape(4 * cout, cin, 1, 1)  # [(a, b, c), ci]
    return ConvTransposeWeightBF16(pack_conv_weight(gemm), cin, cout)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------


def _bias(bias: Tensor | None, cout: int) -> Tensor | None:
    """The bias as a contiguous fp32 CPU vector [cout] (a copy when the caller's is not one), or None."""
    if bias is None:
        return None
    if not isinstance(bias, Tensor) or tuple(bias.shape) != (cout,) or not bias.is_floating_point():
        raise ValueError(f"bias must be a float tensor of shape ({cout},)")
    if bias.device.type != "cpu":
        raise ValueError(f"bias is on {bias.device}; the bf16 tile conv needs CPU tensors")
    return bias.detach().to(torch.float32).contiguous()


def _check_input(x: Tensor, cin: int) -> tuple[int, int, int]:
    """(N, H, W) of a bf16 NHWC CPU input with the weight's `cin` channels; ValueError otherwise."""
    checks.check_nhwc(x, "x", dtypes=(torch.bfloat16,))
    if x.device.type != "cpu":
        raise ValueError(f"x is on {x.device}; the bf16 tile conv needs CPU tensors")
    n, h, w, c = x.shape
    if c != cin:
        raise ValueError(f"x has {c} channels, the weight expects {cin}")
    return n, h, w


MAX_INPUTS = _LAYOUT.max_sources if _LAYOUT else 8  # views of one virtual concat (C++ amx::kMaxSources)
PATHS = ("auto", "direct", "tile")


def direct_reason(views: Sequence[InputView]) -> str | None:
    """Why the avx512bf16 backend's register-blocked direct conv cannot read these input views (None when it
    can: plain, windowed and nearest views; a bilinear one needs the tile body's staging)."""
    if any(v.resample is not None and v.resample.mode == "bilinear" for v in views):
        return "a bilinear input view (the avx512bf16 direct conv reads plain and nearest ones)"
    return None


def _tile_body(path: str, views: Sequence[InputView]) -> bool:
    """The C++ `tile_body` flag of a call: `path` "tile", or "auto" where the direct conv cannot read the views
    (only the avx512bf16 backend has two bodies; the others ignore the flag). ValueError for another path."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return path == "tile" or (path == "auto" and direct_reason(views) is not None)


def _check_views(x: Tensor | Sequence[Tensor | InputView], cin: int) -> list[InputView]:
    """The conv's input as a list of bf16 CPU views that agree in batch and view size and carry `cin`
    channels in all; ValueError otherwise."""
    inputs = [x] if isinstance(x, (Tensor, InputView)) else list(x)
    if len(inputs) > MAX_INPUTS:
        raise ValueError(f"the bf16 tile conv reads at most {MAX_INPUTS} input views, got {len(inputs)}")
    views = checks._check_views(inputs)  # batch, view sizes, resample modes, channel stride
    for i, v in enumerate(views):
        name = "x" if len(views) == 1 else f"inputs[{i}]"
        if v.tensor.dtype != torch.bfloat16:
            raise ValueError(f"{name} has dtype {v.tensor.dtype}; the bf16 tile conv reads torch.bfloat16")
        if v.tensor.device.type != "cpu":
            raise ValueError(f"{name} is on {v.tensor.device}; the bf16 tile conv needs CPU tensors")
    total = sum(v.channels for v in views)
    if total != cin:
        chans = " + ".join(str(v.channels) for v in views)
        raise ValueError(f"inputs carry {chans} = {total} channels, the weight expects {cin}")
    # A 1-channel tensor seen through a permute has any channel stride: copy it (the list keeps it alive
    # for the call, the C++ side takes raw pointers).
    return [replace(v, tensor=v.tensor.contiguous()) if v.tensor.stride(3) != 1 else v for v in views]


def conv2d(x: Tensor | Sequence[Tensor | InputView], weight: ConvWeightBF16, bias: Tensor | None = None, *,
           stride: int = 1, padding: int = 0, act: str = "none", negative_slope: float = 0.01,
           residual: Tensor | None = None, out: Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
           pool_out: Tensor | None = None, isa: str | None = None, path: str = "auto") -> Tensor:  # fmt: skip
    """bf16 direct convolution on tiles: out = act(conv(x, w) + bias + residual), NHWC, with the fp32 conv's
    fusions (spec.conv2d): a virtual concat of input views read on the fly and a 2x2 max-pool output.

    x: bf16 [N, H, W, Cin] (channel stride 1; a channel slice of a wider buffer is fine), or a list of up to
    MAX_INPUTS bf16 tensors / spec.InputView (the virtual concat, in channel order: each a channel slice,
    optionally resampled (nearest, or bilinear with align_corners, exactly as F.interpolate with an explicit
    size) and windowed (a centre crop; a window past the edge reads zeros), all of the same view size (H, W)
    and batch; channels sum to Cin). Never materialised: a 32-channel K chunk inside one plain view loads
    in place, others are gathered per tile; a bilinear value is blended in fp32 and rounded once to bf16
    (read_view_bf16).
    weight: from pack_conv_weight. bias: [Cout] fp32 or bf16 (used as fp32), or None.
    stride, padding: ints (same in H and W); zero padding. act: one of spec.ACTIVATIONS.
    residual: [N, Hout, Wout, Cout] bf16 or fp32, added before the activation, or None.
    out: [N, Hout, Wout, Cout] bf16 or fp32 to write into (a channel slot of a wider buffer: only the slot
    is written); else a new tensor of out_dtype. Accumulation is fp32; a bf16 output is one rounding of it.
    pool_out: [N, Hout // 2, Wout // 2, Cout] bf16 or fp32 (a slot is fine), or None: the 2x2 stride-2
    max-pool (floored like F.max_pool2d, NaN-propagating) of the values stored in out.
    isa: tile backend (choose_backend). path: the avx512bf16 backend's body: "direct" (its register-blocked
    direct conv; ValueError for a bilinear view: direct_reason), "tile" (its tile body) or "auto" (direct where
    it can read the views); the other backends have one body. Returns out. Raises ValueError on any argument
    outside this.
    """
    cpu = require_cpu()
    if not isinstance(weight, ConvWeightBF16):
        raise ValueError(
            f"weight must be a ConvWeightBF16 from pack_conv_weight, got {type(weight).__name__}"
        )
    views = _check_views(x, weight.cin)
    n = views[0].tensor.shape[0]
    h, w = views[0].out_size
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    if h + 2 * padding < weight.kh or w + 2 * padding < weight.kw:
        raise ValueError(
            f"input {h}x{w} with padding {padding} is smaller than the {weight.kh}x{weight.kw} kernel"
        )
    hout, wout = conv_output_size((h, w), (weight.kh, weight.kw), stride, padding)
    shape = (n, hout, wout, weight.cout)
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    out = checks.check_out(out, "out", shape, out_dtype, torch.device("cpu"), dtypes=OUT_DTYPES)
    if residual is not None:
        checks.check_nhwc(residual, "residual", dtypes=OUT_DTYPES)
        if tuple(residual.shape) != shape or residual.device.type != "cpu":
            raise ValueError(f"residual must be a CPU tensor of shape {shape}, got {tuple(residual.shape)}")
    if pool_out is not None:
        if hout < 2 or wout < 2:
            raise ValueError(f"a 2x2 pool needs an output of at least 2x2, got {hout}x{wout}")
        pool_shape = (n, hout // 2, wout // 2, weight.cout)
        checks.check_out(pool_out, "pool_out", pool_shape, out_dtype, torch.device("cpu"), dtypes=OUT_DTYPES)
        if _overlaps(pool_out, out):
            raise ValueError("pool_out overlaps out (the pool reads out after writing it)")
    sources = {f"input view {i}": v.tensor for i, v in enumerate(views)}
    # residual may be out itself (each element read, then written, by one thread), not a shifted overlap
    same = residual is not None and residual.data_ptr() == out.data_ptr() and residual.stride() == out.stride()
    checks.check_no_overlap(out, "out", {**sources, "residual": None if same else residual})
    if pool_out is not None:
        checks.check_no_overlap(pool_out, "pool_out", {**sources, "residual": residual})
    bias = _bias(bias, weight.cout)
    backend = choose_backend(isa)
    cpu.conv2d_bf16(
        [view_source(v) for v in views], h, w, weight.packed.data_ptr(), weight.packed.numel(), weight.kh, weight.kw,
        stride, padding, weight.cout, 0 if bias is None else bias.data_ptr(),
        None if residual is None else _desc(residual), residual is not None and residual.dtype == torch.float32,
        _desc(out), out.dtype == torch.float32, None if pool_out is None else _desc(pool_out),
        pool_out is not None and pool_out.dtype == torch.float32, ACTIVATIONS.index(act), float(negative_slope),
        num_threads(), backend.index, _tile_body(path, views),
    )  # fmt: skip
    return out


def _overlaps(a: Tensor, b: Tensor) -> bool:
    """True when the memory spans of a and b intersect (conservative: same storage, overlapping byte ranges)."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t: Tensor) -> tuple[int, int]:
        last = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) + 1
        return t.data_ptr(), t.data_ptr() + last * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def conv_transpose2x2(x: Tensor, weight: ConvTransposeWeightBF16, bias: Tensor | None = None, *, act: str = "none",
                      negative_slope: float = 0.01, out: Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
                      isa: str | None = None, path: str = "auto") -> Tensor:  # fmt: skip
    """bf16 2x2 stride-2 transposed convolution on tiles: out = act(conv_transpose2d(x, w, stride=2) + bias),
    NHWC, one GEMM [N H W, Cin] x [Cin, 4 Cout] whose epilogue writes each result straight to its output
    pixel (2i + a, 2j + b) (an upsampling into a concat slot costs no extra pass).

    x: bf16 [N, H, W, Cin] (channel stride 1). weight: from pack_conv_transpose_weight. bias: [Cout] float
    or None. act: one of spec.ACTIVATIONS. out: [N, 2H, 2W, Cout] bf16 or fp32 (a channel slot of a wider
    buffer: only the slot is written), else a new tensor of out_dtype. isa: tile backend (choose_backend).
    path: the avx512bf16 backend's body, "direct" / "auto" (its direct conv) or "tile" (as in conv2d).
    Returns out. Raises ValueError on any argument outside this.
    """
    cpu = require_cpu()
    if not isinstance(weight, ConvTransposeWeightBF16):
        raise ValueError(f"weight must come from pack_conv_transpose_weight, got {type(weight).__name__}")
    n, h, w = _check_input(x, weight.cin)
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    out = checks.check_out(out, "out", (n, 2 * h, 2 * w, weight.cout), out_dtype, x.device, dtypes=OUT_DTYPES)
    checks.check_no_overlap(out, "out", {"x": x})
    bias = _bias(bias, weight.cout)
    backend = choose_backend(isa)
    packed = weight.gemm.packed
    cpu.conv_transpose2x2_bf16(
        _desc(x), packed.data_ptr(), packed.numel(), weight.cout, 0 if bias is None else bias.data_ptr(),
        _desc(out), out.dtype == torch.float32, ACTIVATIONS.index(act), float(negative_slope), num_threads(),
        backend.index, _tile_body(path, ()),
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# Registry entries (kernels/registry.py): the "bf16" family (which tile backend an engine uses) and, per
# tile backend, the conv and the transposed conv (the head is cpu_bf16_ops'; the Winograd on bf16
# activations, cpu_winograd's)
# ---------------------------------------------------------------------------------------------------


def _resolve_tiles(choices: registry.Choices) -> str | None:
    """The engine's tile backend: forced (bf16=<name>; bf16=none: none), else the best-ranked one this CPU runs
    natively. Never the emulator unless forced: on a CPU without bf16 hardware (AMD Zen 2 / 3) it ran unet64
    7x slower than the fp32 engine (issue 25), so bf16 steps run fp32 kernels over bf16 storage there
    (kernels/cpu.py) and the 3x3 convs the Winograd on bf16 activations."""
    forced = choices.get("bf16")
    if forced == "none":
        return None
    if forced is not None:
        return _runnable_backend(forced).name
    native = [b for b in tile_backends() if b.runnable and not b.emulator]
    return max(native, key=lambda b: b.rank).name if native else None


def _why_no_tiles(choices: registry.Choices) -> str:
    if choices.get("bf16") == "none":
        return "UNET_FAST_KERNELS bf16=none: no bf16 tile backend"
    return "no bf16 hardware here (AMX or AVX512-BF16); the portable tile emulator is never picked for speed"


registry.register_family(registry.Family("bf16", _resolve_tiles, _why_no_tiles,
                                         lambda name: cpu_isa.variant(name, "tiles").reason))


def _square(v: int | Sequence[int]) -> int | None:
    """v as one int when it is the same in H and W, else None."""
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    return int(a) if a == b else None


def conv_supports(step: Step, dtype: torch.dtype) -> str | None:
    """What the tile conv takes of a Conv step (None: all of it): every fusion the fp32 conv has (a virtual
    concat of up to MAX_INPUTS views, each a channel slot read plainly, through a window / crop or a nearest /
    bilinear resample; bias, activation, residual, the 2x2 max-pool output), with one stride / padding for H
    and W, dilation 1, a kernel of at most 16x16 and a residual read as is."""
    assert isinstance(step, Conv)
    if len(step.inputs) > MAX_INPUTS:
        return f"bf16 tile conv reads up to {MAX_INPUTS} input views, this step {len(step.inputs)}"
    if step.residual is not None and not step.residual.plain:
        return "bf16 tile conv reads the residual as is"
    if _square(step.stride) is None or _square(step.padding) is None:
        return f"bf16 tile conv takes one stride / padding for H and W, not {step.stride} / {step.padding}"
    if tuple(step.dilation) != (1, 1):
        return f"bf16 tile conv has no dilation {tuple(step.dilation)}"
    if max(step.weight.shape[2:]) > 16:
        return f"bf16 tile conv takes kernels up to 16x16, not {tuple(step.weight.shape[2:])}"
    return None


def _direct_supports(step: Step, dtype: torch.dtype) -> str | None:
    why = conv_supports(step, dtype)
    return why if why is not None else direct_reason(step.inputs)  # type: ignore[attr-defined, arg-type]


def _transpose_supports(step: Step, dtype: torch.dtype) -> str | None:
    assert isinstance(step, ConvTranspose2x2)
    return None if step.input.plain else "bf16 tile transposed conv reads its input as is"


def direct_gate(context: registry.Context) -> str | None:
    """The direct body of a tile backend that has one runs unless UNET_FAST_KERNELS avx512bf16_conv=tile."""
    value = context.choices.get("avx512bf16_conv")
    if value not in (None, "direct", "tile"):
        raise ValueError(f"{registry.KERNELS_ENV}: avx512bf16_conv must be direct or tile, got {value!r}")
    return "UNET_FAST_KERNELS avx512bf16_conv=tile: the tile body" if value == "tile" else None


def _conv_run(backend: str, path: str):
    def run(inputs: Sequence[Tensor | InputView], packed: ConvWeightBF16, bias: Tensor | None = None, *,
            stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
            act: str = "none", negative_slope: float = 0.01, residual: Tensor | None = None,
            out: Tensor | None = None, pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
        return conv2d(list(inputs), packed, bias, stride=_square(stride), padding=_square(padding), act=act,  # type: ignore[arg-type]
                      negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out, isa=backend,
                      path=path)  # fmt: skip

    return run


def _transpose_run(backend: str, path: str):
    def run(x: Tensor, packed: ConvTransposeWeightBF16, bias: Tensor | None = None, *, act: str = "none",
            negative_slope: float = 0.01, out: Tensor | None = None) -> Tensor:  # fmt: skip
        return conv_transpose2x2(x, packed, bias, act=act, negative_slope=negative_slope, out=out, isa=backend,
                                 path=path)  # fmt: skip

    return run


def _pack_conv(weight: Tensor, dtype: torch.dtype) -> ConvWeightBF16:
    return pack_conv_weight(weight.detach().to("cpu"))


def _pack_transpose(weight: Tensor, dtype: torch.dtype) -> ConvTransposeWeightBF16:
    return pack_conv_transpose_weight(weight.detach().to("cpu"))


def _register() -> None:
    bf16 = (torch.bfloat16,)
    for b in tile_backends():
        common = dict(backend="cpu", dtypes=bf16, isa=b.name, family="bf16", row=b.name, emulator=b.emulator)
        registry.register(
            registry.Kernel(f"cpu.conv2d.bf16_tiles.{b.name}", Conv, run=_conv_run(b.name, "tile"),
                            supports=conv_supports, pack=_pack_conv, algorithm="bf16 tiles",
                            label=f"bf16 tiles ({b.name})", rank=20, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.conv_transpose2x2.bf16_tiles.{b.name}", ConvTranspose2x2,
                            run=_transpose_run(b.name, "tile"), supports=_transpose_supports, pack=_pack_transpose,
                            algorithm="bf16 tiles", label=f"bf16 tiles ({b.name})", rank=20, **common),  # type: ignore[arg-type]
        )  # fmt: skip
        if b.direct_conv:
            registry.register(
                registry.Kernel(f"cpu.conv2d.bf16_direct.{b.name}", Conv, run=_conv_run(b.name, "direct"),
                                supports=_direct_supports, pack=_pack_conv, algorithm="bf16 direct",
                                label=f"bf16 direct ({b.name})", rank=25, gate=direct_gate, **common),  # type: ignore[arg-type]
                registry.Kernel(f"cpu.conv_transpose2x2.bf16_direct.{b.name}", ConvTranspose2x2,
                                run=_transpose_run(b.name, "direct"), supports=_transpose_supports,
                                pack=_pack_transpose, algorithm="bf16 direct", label=f"bf16 direct ({b.name})",
                                rank=25, gate=direct_gate, **common),  # type: ignore[arg-type]
            )  # fmt: skip


_register()
