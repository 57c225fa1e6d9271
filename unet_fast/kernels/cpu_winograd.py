"""Winograd F(4x4, 3x3) and F(6x6, 3x3) convolution for the cpu backend (C++ kernel: csrc/cpu/winograd_conv.cpp,
one body templated over the output tile).

Reference: `unet_fast.kernels.spec.conv2d` (stride 1, dilation 1, 3x3, padding 0 or 1). This module packs the
weight once (`pack_winograd_weight`, the transform U = G g G^T in float64, then fp32) and launches the
kernel (`conv3x3_winograd`), which takes the same arguments as spec.conv2d, views included: virtual
concat, nearest/bilinear resample on read, windows/crops, residual, activation, channel-slot outputs and
the fused 2x2 max-pool. `winograd_decision` is the rule that says where Winograd profits; the engine applies it
through the registry entries at the bottom of this file (kernels/registry.py: chosen once per step), and
`f6_decision` the rule of F(6x6) vs F(4x4) from the conv's output size in the plan (F6_MAX_WORK_RATIO;
UNET_FAST_KERNELS winograd=4 / 6 forces one). Accuracy and design: docs/winograd.md.

The kernel variant (kernels/cpu_isa.py) is chosen when the weight is packed, because each variant wants its
own layout (its micro-GEMM's block width): `pack_winograd_weight(w, isa=...)` forces one (tests run every
runnable variant), else UNET_FAST_KERNELS=cpu=<name>, else the best the CPU runs. The packed weight remembers
it. The registry holds one fp32 and one bf16 Winograd kernel per vector variant.

bf16 activations (`pack_winograd_weight(w, io_dtype=torch.bfloat16)`): the weight is rounded to bf16 first
(the bf16 engine's weights), the views / residual / out / pool_out are bf16, and the kernel computes in fp32
exactly as for fp32 tensors, rounding each output once to bf16. Its error is the fp32 Winograd's (rel-L2
~1e-6 per layer) plus that one rounding. That is not quite the bf16 tile conv's per-element contract (issue
17: within one bf16 rounding of the float64 conv of the same bf16 inputs and weights, plus the direct conv's
fp32 accumulation bound): the fp32 Winograd's error can exceed that bound on outputs that cancel where a 6x6
patch spans a wide dynamic range (docs/winograd.md, "bf16 activations"); exact=True keeps a conv off it.
`bf16_gate` says when the cpu backend's bf16 convs take it instead of the bf16 tile conv.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unet_fast._ext import require_cpu
from unet_fast.graph.ir import Conv, Step
from unet_fast.kernels import cpu_isa, registry
from unet_fast.kernels.checks import check_conv2d, check_conv_outputs
from unet_fast.kernels.cpu_desc import nhwc_desc as _desc
from unet_fast.kernels.cpu_desc import num_threads, view_source
from unet_fast.kernels.cpu_isa import available_isas
from unet_fast.kernels.spec import InputView, as_view, pair

TILES = (4, 6)  # the output tile edges m of the kernel's F(m x m, 3x3)


def winograd_matrices(dtype: torch.dtype = torch.float64, tile: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """(B^T, G, A^T) of F(tile x tile, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A, as the C++ kernel computes them
    (csrc/include/unet_fast/winograd_kernels.h). tile 4: the points 0, +-1, +-2 and infinity (Lavin & Gray);
    tile 6: 0, +-1, +-2, +-1/2 and infinity (ncnn's and NNPACK's F(6, 3)), with A^T's columns of +-1/2 scaled by
    32 and G's rows by 1/32 so A^T is integral (power-of-two scales round nothing). Raises ValueError for
    another tile."""
    bt: list[list[float]]
    g: list[list[float]]
    at: list[list[float]]
    if tile == 4:
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]  # fmt: skip
        g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # fmt: skip
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    elif tile == 6:
        bt = [[1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0], [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
              [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0], [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
              [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0], [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
              [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0], [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1]]  # fmt: skip
        g = [[1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9], [1 / 90, 1 / 45, 2 / 45],
             [1 / 90, -1 / 45, 2 / 45], [1 / 45, 1 / 90, 1 / 180], [1 / 45, -1 / 90, 1 / 180], [0, 0, 1]]  # fmt: skip
        at = [[1, 1, 1, 1, 1, 32, 32, 0], [0, 1, -1, 2, -2, 16, -16, 0], [0, 1, 1, 4, 4, 8, 8, 0],
              [0, 1, -1, 8, -8, 4, -4, 0], [0, 1, 1, 16, 16, 2, 2, 0], [0, 1, -1, 32, -32, 1, -1, 1]]  # fmt: skip
    else:
        raise ValueError(f"tile must be one of {TILES} (F(4x4, 3x3) or F(6x6, 3x3)), got {tile}")
    return tuple(torch.tensor(m, dtype=dtype) for m in (bt, g, at))  # type: ignore[return-value]


IO_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class WinogradWeight:
    """The transformed weight of F(tile x tile, 3x3) for CPU kernel variant `isa`: [(tile + 2)^2, ceil(Cout/nr),
    Cin, nr] fp32 (Cout zero-padded; nr = the variant's Winograd block width, or one vector for Cout <= one
    vector: winograd_nr), plus its OIHW shape, the dtype of
    the activations it runs on (`io_dtype`: fp32, or bf16 with the weight rounded to bf16 before the
    transform) and the output tile edge (`tile`: 4 or 6). A plain dataclass of one tensor and ints / strings."""

    data: Tensor
    out_channels: int
    in_channels: int
    isa: str
    nr: int
    io_dtype: torch.dtype = torch.float32
    tile: int = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, 3, 3)

    @property
    def points(self) -> int:
        """(tile + 2)^2: the GEMMs per tile (36 for F(4x4), 64 for F(6x6))."""
        return (self.tile + 2) ** 2


def winograd_nr(variant: cpu_isa.CpuVariant, out_channels: int) -> int:
    """The block width (output channels per micro-GEMM column block, the packed weight's nr) of a Winograd conv
    with `out_channels` on `variant`: one vector (`variant.lanes`) when Cout fits in one, else the variant's
    Winograd block (`variant.winograd_nr`, two vectors on every variant). A head (Cout = classes) or a last
    decoder stage (Cout 16 on smp's U-Net) padded to two vectors computed up to 2 x 16 / Cout times the outputs it
    keeps; a one-vector block computes at most one vector per tile and point."""
    if 0 < variant.lanes < variant.winograd_nr and out_channels <= variant.lanes:
        return variant.lanes
    return variant.winograd_nr


def pack_winograd_weight(weight: Tensor, *, isa: str | None = None, io_dtype: torch.dtype = torch.float32,
                         tile: int = 4, nr: int | None = None) -> WinogradWeight:  # fmt: skip
    """OIHW [Cout, Cin, 3, 3] -> WinogradWeight of F(tile x tile, 3x3) (tile 4 or 6) for variant `isa` (None:
    UNET_FAST_KERNELS cpu=, else the best runnable one) and activations of `io_dtype` (fp32 or bf16; bf16 rounds
    the weight to bf16 first, so the conv is that of the bf16 weight the bf16 tile conv uses), in column blocks
    of `nr` output channels (None: winograd_nr's rule; else the variant's Winograd block, or, for Cout <= one
    vector, one vector). Run once at optimize time: U = G g G^T in float64, rounded once to fp32. Raises
    ValueError for a weight that is not a floating-point OIHW 3x3 tensor, an io_dtype other than fp32 / bf16, a
    tile other than 4 / 6, an nr the variant does not run for this Cout, or an isa this CPU cannot run."""
    if not isinstance(weight, Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be OIHW [Cout, Cin, 3, 3], got {shape}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be floating point, got {weight.dtype}")
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be torch.float32 or torch.bfloat16, got {io_dtype}")
    _, g, _ = winograd_matrices(tile=tile)
    variant = cpu_isa.choose(isa, what="Winograd")
    cout, cin = weight.shape[:2]
    nr = winograd_nr(variant, cout) if nr is None else nr
    why = _nr_reason(variant, nr, cout)
    if why:
        raise ValueError(why)
    points = (tile + 2) ** 2
    w = weight.detach().cpu()
    w = w.to(torch.bfloat16) if io_dtype == torch.bfloat16 else w
    u = torch.einsum("ak,oikl,bl->abio", g, w.double(), g).reshape(points, cin, cout)
    cout_pad = -(-cout // nr) * nr
    u = torch.nn.functional.pad(u, (0, cout_pad - cout))
    u = u.reshape(points, cin, cout_pad // nr, nr).permute(0, 2, 1, 3)
    return WinogradWeight(u.float().contiguous(), int(cout), int(cin), variant.name, nr, io_dtype, tile)


def _nr_reason(variant: cpu_isa.CpuVariant, nr: int, out_channels: int) -> str:
    """'' when variant runs column blocks of nr for a conv with out_channels, else why not."""
    if nr == variant.winograd_nr or (nr == variant.lanes and out_channels <= variant.lanes):
        return ""
    return (f"nr {nr} is neither variant {variant.name!r}'s Winograd block of {variant.winograd_nr} nor, for "
            f"Cout <= {variant.lanes}, one vector of {variant.lanes} (Cout {out_channels})")  # fmt: skip


def _logical_shape(weight: Tensor | WinogradWeight | Sequence[int]) -> tuple[int, ...]:
    if isinstance(weight, Sequence):
        return tuple(weight)
    return weight.shape if isinstance(weight, WinogradWeight) else tuple(weight.shape)


def geometry_reason(stride: int | Sequence[int], padding: int | Sequence[int],
                    dilation: int | Sequence[int]) -> str:  # fmt: skip
    """Why the kernel cannot take this conv geometry ('' when it can: stride 1, dilation 1, padding 0 or 1,
    the same on both axes). Part of unsupported_reason; also how the report tells, from a plan step alone,
    whether a conv carrying a Winograd weight runs it."""
    if pair(stride) != (1, 1) or pair(dilation) != (1, 1):
        return f"needs stride 1 and dilation 1, got stride {pair(stride)}, dilation {pair(dilation)}"
    if pair(padding) not in ((0, 0), (1, 1)):
        return f"needs padding 0 or 1 (equal on both axes), got {pair(padding)}"
    return ""


def unsupported_reason(inputs: Sequence[Tensor | InputView], weight: Tensor | WinogradWeight | Sequence[int], *,
                       stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                       dilation: int | Sequence[int] = 1, residual: Tensor | None = None,
                       out: Tensor | None = None, pool_out: Tensor | None = None, **_: object) -> str:  # fmt: skip
    """Why conv3x3_winograd cannot run this conv ('' when it can). Shape errors are left to check_conv2d."""
    if not available_isas():
        return "unet_fast._C has no Winograd kernel (not built)"
    shape = _logical_shape(weight)
    if len(shape) != 4 or tuple(shape[2:]) != (3, 3):
        return f"needs a 3x3 kernel, got weight shape {tuple(shape)}"
    why = geometry_reason(stride, padding, dilation)
    if why:
        return why
    tensors = [as_view(v).tensor for v in inputs] + [t for t in (residual, out, pool_out) if t is not None]
    for t in tensors:
        if not isinstance(t, Tensor) or t.dtype not in IO_DTYPES or t.device.type != "cpu":
            what = f"{t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
            return f"needs float32 or bfloat16 CPU tensors, got {what}"
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        return f"needs one dtype for inputs, residual, out and pool_out, got {sorted(map(str, dtypes))}"
    if isinstance(weight, WinogradWeight) and dtypes and weight.io_dtype not in dtypes:
        return f"the weight was packed for {weight.io_dtype} activations, these are {dtypes.pop()}"
    return ""


def is_supported(
    inputs: Sequence[Tensor | InputView], weight: Tensor | WinogradWeight, **kwargs: object
) -> bool:
    """True when conv3x3_winograd computes this spec.conv2d call (takes spec.conv2d's keyword arguments)."""
    return not unsupported_reason(inputs, weight, **kwargs)  # type: ignore[arg-type]


# Below this many input channels the transforms cost more than the GEMM saves: at 256x256 -> 64 channels,
# one thread, Winograd / oneDNN time was 2.3 (Cin 3), 1.0 (Cin 8), 0.8 (Cin 16), 0.55 (Cin 32).
MIN_PROFITABLE_CIN = 16


def winograd_decision(weight: Tensor | WinogradWeight | Sequence[int], *, exact: bool = False,
                      inputs: Sequence[Tensor | InputView] | None = None, **call: object) -> str:  # fmt: skip
    """The rule of Winograd vs direct convolution: '' when Winograd runs this conv, else why not. From the
    weight alone (`inputs` None; what the registry entries' `supports` use, with geometry_reason for the
    step's stride / padding / dilation): exact=True forbids Winograd, and only 3x3 weights with >=
    MIN_PROFITABLE_CIN input channels profit. With `inputs` and spec.conv2d's keyword arguments (a direct
    call of cpu.conv2d) it also checks that the call fits the kernel (stride 1, padding 0/1, fp32 or bf16 CPU
    tensors of one dtype, the one the weight was packed for)."""
    if exact:
        return "exact=True: direct convolution only"
    shape = _logical_shape(weight)
    if len(shape) != 4 or tuple(shape[2:]) != (3, 3):
        return f"needs a 3x3 kernel, got weight shape {shape}"
    if shape[1] < MIN_PROFITABLE_CIN:
        return f"{shape[1]} input channels < {MIN_PROFITABLE_CIN}: direct convolution is faster"
    if not available_isas():
        return "unet_fast._C has no Winograd kernel (not built)"
    if inputs is None:
        return ""
    return unsupported_reason(inputs, weight, **call)  # type: ignore[arg-type]


# F(6x6, 3x3) or F(4x4, 3x3), per conv, from its output size (issue 25). F(6x6) does 64 multiplies per 36
# outputs where F(4x4) does 36 per 16 (0.79x), but its 6-pixel tiles waste work where the output is not a multiple
# of 6, and its 8x8 transforms cost more per output. Measured (benchmarks/bench_winograd_tiles.py --isa avx512
# --repeats 5: conv + bias + ReLU, batch 1, Cin = Cout = 64 .. 1024, 1 thread, median CPU time of 5 interleaved
# rounds; AMD EPYC Zen 4, 2026-12-05, ON A SHARED MACHINE (load average 2.5-3.3 from other jobs: +-5% is noise)),
# F(6x6) / F(4x4) time against r = F(6x6)'s GEMM multiplies / F(4x4)'s (`gemm_work_ratio`):
#   16 px (r 1.00): 1.20-1.34 | 24 px (r 0.79): 0.78-1.02 | 32 px (r 1.00): 1.03-1.15 | 40 px (r 0.87): 0.95-1.03
#   48 px (r 0.79): 0.87-0.91 | 56 px (r 0.91): 0.96-1.01 | 64 px (r 0.84): 0.92-0.97 | 96 px (r 0.79): 0.82-0.89
#   128 px (r 0.84): 0.87-0.97
# So the time follows r plus 0.05-0.15: F(6x6) wherever r <= 0.9 (unet64's 64-256 px layers at 256 input, every
# layer from 64 px at 512), F(4x4) on the 16 and 32 px layers (r = 1), where F(6x6) was 3-34% slower. Between
# r 0.87 and 0.91 the two are within the noise either way.
F6_MAX_WORK_RATIO = 0.9


def gemm_work_ratio(out_size: Sequence[int]) -> float:
    """F(6x6, 3x3)'s GEMM multiplies over F(4x4, 3x3)'s for an output of `out_size` (H, W): edge tiles are
    computed whole, so r = ceil(H/6) ceil(W/6) 64 / (ceil(H/4) ceil(W/4) 36)."""
    h, w = (int(v) for v in out_size)
    return (-(-h // 6)) * (-(-w // 6)) * 64 / ((-(-h // 4)) * (-(-w // 4)) * 36)


def f6_decision(out_size: Sequence[int]) -> str:
    """'' when F(6x6, 3x3) is the faster Winograd for a conv with this output size (H, W), else why not
    (F6_MAX_WORK_RATIO). Only the choice between the two tiles: winograd_decision says whether Winograd runs."""
    r = gemm_work_ratio(out_size)
    if r > F6_MAX_WORK_RATIO:
        return (f"output {out_size[0]}x{out_size[1]}: F(6x6)'s GEMM work is {r:.2f}x F(4x4)'s "
                f"(> {F6_MAX_WORK_RATIO}): F(4x4) is faster")  # fmt: skip
    return ""


def should_use(
    inputs: Sequence[Tensor | InputView], weight: Tensor | WinogradWeight, **kwargs: object
) -> bool:
    """is_supported, and measured faster than direct convolution on this layer's shape (winograd_decision)."""
    return not winograd_decision(weight, inputs=inputs, **kwargs)


def conv3x3_winograd(inputs: Sequence[Tensor | InputView], packed: WinogradWeight | Tensor,
                     bias: Tensor | None = None, *, stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, act: str = "none",
                     negative_slope: float = 0.01, residual: Tensor | None = None, out: Tensor | None = None,
                     pool_out: Tensor | None = None, isa: str | None = None, tile_block: int = 0,
                     cout_chunk: int = 0) -> Tensor:  # fmt: skip
    """spec.conv2d for stride 1, dilation 1, 3x3, padding 0/1, float32 or bfloat16 CPU tensors (one dtype
    for inputs, residual, out and pool_out; bias float32), by Winograd F(4x4, 3x3) or F(6x6, 3x3) (the
    packed weight's `tile`), computed in fp32.

    `packed` comes from pack_winograd_weight and runs on the variant and activation dtype it was packed for
    (an OIHW tensor is packed on the fly for `isa` and the inputs' dtype: slow, for tests; with a packed
    weight, `isa` must be None or its variant).
    `tile_block` (tiles per block) and `cout_chunk` (output channels per GEMM chunk) override the
    automatic blocking, for benchmarks; 0 = automatic. Returns `out` (allocated if None)."""
    if isinstance(packed, Tensor):
        first = as_view(inputs[0]).tensor if len(inputs) else None
        bf16 = isinstance(first, Tensor) and first.dtype == torch.bfloat16
        packed = pack_winograd_weight(packed, isa=isa, io_dtype=torch.bfloat16 if bf16 else torch.float32)
    if not isinstance(packed, WinogradWeight):
        raise ValueError(f"packed must be a WinogradWeight or an OIHW tensor, got {type(packed).__name__}")
    if isa is not None and isa != packed.isa:
        raise ValueError(f"the weight was packed for isa {packed.isa!r}, not {isa!r}: repack it")
    variant = cpu_isa.choose(packed.isa, what="Winograd")
    why = _nr_reason(variant, packed.nr, packed.out_channels)
    if why:
        raise ValueError(f"packed.nr: {why}")
    if packed.tile not in TILES:
        raise ValueError(f"packed.tile must be one of {TILES}, got {packed.tile}")
    expected = (packed.points, -(-packed.out_channels // packed.nr), packed.in_channels, packed.nr)
    d = packed.data
    if (
        tuple(d.shape) != expected
        or d.dtype != torch.float32
        or not d.is_contiguous()
        or d.device.type != "cpu"
    ):
        raise ValueError(f"packed.data must be a contiguous float32 CPU tensor of shape {expected} "
                         f"(from pack_winograd_weight), got {d.dtype} {tuple(d.shape)} on {d.device}")  # fmt: skip
    geo = check_conv2d(inputs, packed.data, bias, stride=stride, padding=padding, dilation=dilation, act=act,
                       residual=residual, out=out, pool_out=pool_out, weight_shape=packed.shape)  # fmt: skip
    why = unsupported_reason(inputs, packed, stride=stride, padding=padding, dilation=dilation,
                             residual=residual, out=geo.out, pool_out=geo.pool_out)  # fmt: skip
    if why:
        raise ValueError(f"conv3x3_winograd: {why}")
    if bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"):
        raise ValueError(f"bias must be a float32 CPU tensor, got {bias.dtype} on {bias.device}")
    if tile_block < 0 or cout_chunk < 0:
        raise ValueError(f"tile_block and cout_chunk must be >= 0, got {tile_block}, {cout_chunk}")
    bias_c = None if bias is None else bias.contiguous()
    views = [view_source(v) for v in geo.views]
    h, w = geo.in_size
    d = packed.data
    ext = require_cpu()
    launch = ext.winograd_conv3x3_bf16 if packed.io_dtype == torch.bfloat16 else ext.winograd_conv3x3_f32
    launch(
        views, h, w, geo.in_channels, geo.out_channels, d.shape[1] * packed.nr, geo.padding[0], d.data_ptr(),
        d.numel(), 0 if bias_c is None else bias_c.data_ptr(), None if residual is None else _desc(residual),
        _desc(geo.out), None if geo.pool_out is None else _desc(geo.pool_out), geo.act_index,
        float(negative_slope), num_threads(), variant.index, int(tile_block), int(cout_chunk), packed.tile,
        packed.nr,
    )  # fmt: skip
    return geo.out


# ---------------------------------------------------------------------------------------------------
# Registry entries (kernels/registry.py): per vector variant, the Winograd conv on fp32 and on bf16 activations
# ---------------------------------------------------------------------------------------------------


def supports(step: Step, dtype: torch.dtype) -> str | None:
    """None when the Winograd kernel runs this Conv step (3x3, >= MIN_PROFITABLE_CIN input channels, stride 1,
    dilation 1, padding 0 or 1), else why not. exact=True is the registry's (the kernels are `approximate`)."""
    assert isinstance(step, Conv)
    why = winograd_decision(tuple(step.weight.shape)) or geometry_reason(step.stride, step.padding, step.dilation)
    return why or None


def forced_tile(choices: registry.Choices) -> int | None:
    """The output tile UNET_FAST_KERNELS winograd=4 / 6 forces (None: auto, the size rule decides). The value
    was checked when the variable was parsed (registry.VALUES)."""
    value = choices.get("winograd")
    return None if value is None else int(value)


def tile_gate(tile: int):
    """The gate of the F(tile x tile) kernels: None (eligible) unless UNET_FAST_KERNELS winograd= forces the
    other tile."""

    def gate(context: registry.Context) -> str | None:
        forced = forced_tile(context.choices)
        if forced is not None and forced != tile:
            return f"UNET_FAST_KERNELS winograd={forced}: F({forced}x{forced},3x3) only"
        return None

    return gate


def fits_f6(step: Step, dtype: torch.dtype, sizes: Mapping[str, tuple[int, int]] | None,
            context: registry.Context) -> str | None:  # fmt: skip
    """The F(6x6) kernels' size rule (registry.Kernel.fits): None where f6_decision takes the step's output size
    in this plan (or UNET_FAST_KERNELS winograd=6 forces F(6x6)), else why not ('' without sizes: a caller
    without a plan then sees F(4x4))."""
    assert isinstance(step, Conv)
    if forced_tile(context.choices) == 6:
        return None
    size = step.out.size or (None if sizes is None else sizes.get(step.out.buffer))
    if size is None:
        return "" if sizes is None else f"the size of output buffer {step.out.buffer!r} is unknown"
    return f6_decision(size) or None


def bf16_gate(context: registry.Context) -> str | None:
    """Whether the bf16 convs take the Winograd on bf16 activations instead of the bf16 tile conv (None: they
    do, where `supports` takes the step); UNET_FAST_KERNELS bf16_winograd=on / off forces it.

    auto: everywhere but on the AMX tile backend. Why (measured on AMD EPYC Zen 4, 2 threads, unet64-256's
    3x3 layers, benchmarks/results/avx512bf16-zen4-2c-layers-256.json): the fp32 Winograd took 0.66-0.93x the
    time of the register-blocked VDPBF16PS direct conv on every layer with Cin >= 64, because it does 4x
    fewer multiplies at half VDPBF16PS's rate; without bf16 hardware (AMD Zen 2 / 3) there is no tile
    backend to compare with. On AMX, a modelled figure: ~3 TFLOP/s bf16 per core (the issue's measurement)
    against at most 4x the fp32 FMA peak (~0.5 TFLOP/s effective per AVX-512 core) for Winograd, so the
    tile conv stays there. exact=True forbids Winograd, as for fp32. Memory: the fp32 transformed weight
    takes 16 bytes per weight against the bf16 tile layout's 2 (unet64: 490 MiB of prepared weights instead
    of 59), so bf16_winograd=off is the choice where weight memory matters more than latency."""
    mode = context.choices.switch("bf16_winograd")
    if mode == "off":
        return "UNET_FAST_KERNELS bf16_winograd=off: the bf16 tile conv only"
    if mode == "auto" and context.row("bf16") == "amx":
        return "the AMX tile conv is faster than an fp32 Winograd (modelled)"
    return None


def _run(inputs: Sequence[Tensor | InputView], packed: WinogradWeight, bias: Tensor | None = None, *,
         stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
         act: str = "none", negative_slope: float = 0.01, residual: Tensor | None = None, out: Tensor | None = None,
         pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
    """The registry's run function: conv3x3_winograd after the overlap checks every conv path makes. On bf16
    activations a bias of any float dtype is used as fp32, as the bf16 tile conv takes it."""
    check_conv_outputs(inputs, residual, out, pool_out)
    if isinstance(packed, WinogradWeight) and packed.io_dtype == torch.bfloat16 and isinstance(bias, Tensor) \
            and bias.is_floating_point() and bias.dtype != torch.float32:  # fmt: skip
        bias = bias.detach().to(torch.float32)
    return conv3x3_winograd(inputs, packed, bias, stride=stride, padding=padding, dilation=dilation, act=act,
                            negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out)  # fmt: skip


def _packer(isa: str, io_dtype: torch.dtype, tile: int):
    def pack(weight: Tensor, dtype: torch.dtype) -> WinogradWeight:
        return pack_winograd_weight(weight, isa=isa, io_dtype=io_dtype, tile=tile)

    return pack


def _register() -> None:
    # Per variant: F(4x4) and, ranked above it where its size rule (fits_f6) takes the step, F(6x6); each on
    # fp32 and on bf16 activations (the bf16 engine's 3x3 convs take the fp32 engine's algorithm: on a CPU
    # without bf16 hardware bf16 must not be slower than fp32). UNET_FAST_KERNELS winograd=4 / 6 forces one tile
    # (tile_gate); exact=True refuses both (approximate).
    for v in cpu_isa.registry():
        common = dict(backend="cpu", run=_run, supports=supports, isa=v.name, family="cpu", row=v.name,
                      approximate=True)  # fmt: skip
        for tile, name, rank, fits in ((4, "winograd", 0, None), (6, "winograd6", 5, fits_f6)):
            algo = f"Winograd F({tile}x{tile},3x3)"
            only = tile_gate(tile)

            def bf16_and_tile(context: registry.Context, only=only) -> str | None:
                return bf16_gate(context) or only(context)

            registry.register(
                registry.Kernel(f"cpu.conv2d.{name}.{v.name}", Conv, dtypes=(torch.float32,),
                                pack=_packer(v.name, torch.float32, tile), algorithm=algo, label=f"{algo}, {v.name}",
                                rank=20 + rank, gate=only, fits=fits, **common),  # type: ignore[arg-type]
                registry.Kernel(f"cpu.conv2d.bf16_{name}.{v.name}", Conv, dtypes=(torch.bfloat16,),
                                pack=_packer(v.name, torch.bfloat16, tile), algorithm=f"{algo} on bf16, fp32 compute",
                                label=f"{algo} on bf16, fp32 compute, {v.name}", rank=30 + rank, gate=bf16_and_tile,
                                fits=fits, **common),  # type: ignore[arg-type]
            )  # fmt: skip


_register()
