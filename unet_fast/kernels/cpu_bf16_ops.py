"""The bf16 CPU ops besides the convolutions (issue 17): 2x2 max-pool, upsample / crop / concat into channel
slots, and the segmentation head, over NHWC bf16 tensors (csrc/cpu/bf16/).

- maxpool2x2: exact (the max of bf16 values is one of them), floored like F.max_pool2d, NaN propagates.
- upsample_concat: views (kernels/spec.InputView: nearest or bilinear resample with either align_corners,
  then a crop / zero-pad window) written side by side into a channel slot. Plain reads, nearest and the
  zero padding copy bits exactly; bilinear blends in fp32 (the fp32 kernel's taps and operation order) and
  rounds once to bf16.
- head: the 1x1 conv to K classes on the bf16 tile conv (kernels/cpu_bf16.py; bf16 operands, fp32
  accumulation, bias fused), then softmax / sigmoid / argmax / nothing per pixel in fp32 with the fp32 head's
  code, into fp32 or bf16 probabilities / logits, or an integer class map. Fused by default (per chunk of rows
  while the logits are in L1); `fused=False` runs the two-pass form (tile conv to an fp32 logits tensor, then
  the per-pixel pass).

Order of this file: float64 references, the launchers, the registry entries. Threads follow
torch.get_num_threads(); the tile backend of the head follows kernels/cpu_bf16.choose_backend (`isa=`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast._ext import require_cpu
from unet_fast.graph.ir import Concat, Head, Pool
from unet_fast.kernels import checks, cpu_bf16, registry
from unet_fast.kernels.cpu_desc import nhwc_desc as _desc
from unet_fast.kernels.cpu_desc import num_threads, view_source
from unet_fast.kernels.spec import HEAD_OPS, InputView, as_view, read_view

_BF16 = (torch.bfloat16,)
# Head output element types, in the C++ HeadOut order (csrc/include/unet_fast/bf16/ops.h).
_HEAD_OUT_KINDS = (torch.float32, torch.bfloat16, torch.uint8, torch.int32, torch.int64)
HEAD_OUT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
INDEX_DTYPES: tuple[torch.dtype, ...] = (torch.uint8, torch.int32, torch.int64)

# ---------------------------------------------------------------------------------------------------
# float64 references (from the same bf16 values the kernels read)
# ---------------------------------------------------------------------------------------------------


def maxpool2x2_reference(x: Tensor) -> Tensor:
    """float64 F.max_pool2d(2) of the bf16-rounded NHWC x [N, H, W, C] -> [N, H // 2, W // 2, C]."""
    xd = x.to(torch.bfloat16).double().permute(0, 3, 1, 2)
    return F.max_pool2d(xd, 2).permute(0, 2, 3, 1)


def upsample_concat_reference(inputs: Sequence[Tensor | InputView]) -> Tensor:
    """float64 concat along channels of the views of the bf16-rounded inputs (spec.read_view: F.interpolate,
    then the window, zeros outside) -> [N, H, W, sum C]."""
    parts = []
    for v in (as_view(i) for i in inputs):
        v64 = InputView(v.tensor.to(torch.bfloat16).double(), v.resample, v.offset, v.size)
        parts.append(read_view(v64, torch.float64))
    return torch.cat(parts, dim=3)


def head_reference(
    x: Tensor | InputView, weight: Tensor, bias: Tensor | None = None, op: str = "softmax"
) -> Tensor:
    """float64 head of the bf16-rounded input view and weight [K, C] / [K, C, 1, 1] (bias taken as given):
    logits / softmax / sigmoid [N, H, W, K] float64, or the argmax class map [N, H, W] int64 of the float64
    logits (first maximum on ties)."""
    if op not in HEAD_OPS:
        raise ValueError(f"unknown head op {op!r}; expected one of {HEAD_OPS}")
    v = as_view(x)
    xs = read_view(
        InputView(v.tensor.to(torch.bfloat16).double(), v.resample, v.offset, v.size), torch.float64
    )
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.bfloat16).double()
    logits = xs @ w.t()
    if bias is not None:
        logits = logits + bias.detach().double()
    if op == "argmax":
        return logits.argmax(dim=3)
    if op == "softmax":
        return torch.softmax(logits, dim=3)
    return torch.sigmoid(logits) if op == "sigmoid" else logits


# ---------------------------------------------------------------------------------------------------
# Argument checks of this module
# ---------------------------------------------------------------------------------------------------


def _check_bf16_cpu(named: dict[str, Tensor | None]) -> None:
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype != torch.bfloat16:
            raise TypeError(f"{name} has dtype {t.dtype}; the bf16 ops take torch.bfloat16 tensors")
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; the bf16 ops need CPU tensors")


def _is_plain(view: InputView) -> bool:
    t = view.tensor
    return view.resample is None and view.offset == (0, 0) and view.out_size == (t.shape[1], t.shape[2])


def _views(inputs: Sequence[Tensor | InputView]) -> list[InputView]:
    if isinstance(inputs, (Tensor, InputView)) or not isinstance(inputs, Sequence):
        raise TypeError(f"inputs must be a sequence of tensors / InputViews, got {type(inputs).__name__}")
    for i, v in enumerate(inputs):
        if not isinstance(v, (Tensor, InputView)):
            raise TypeError(f"inputs[{i}] must be a Tensor or an InputView, got {type(v).__name__}")
        t = v.tensor if isinstance(v, InputView) else v
        if isinstance(t, Tensor) and t.dtype != torch.bfloat16:
            raise TypeError(f"inputs[{i}] has dtype {t.dtype}; the bf16 ops take torch.bfloat16 tensors")
    return [as_view(v) for v in inputs]


# ---------------------------------------------------------------------------------------------------
# maxpool2x2
# ---------------------------------------------------------------------------------------------------


def maxpool2x2(x: Tensor, out: Tensor | None = None) -> Tensor:
    """2x2 stride-2 max-pool of NHWC bf16 `x` [N, H, W, C] (floored; NaN propagates) into `out`
    [N, H // 2, W // 2, C] bf16 (allocated if None; a channel slot of a wider buffer is fine: only the slot is
    written). Exact. Returns out. Raises TypeError for a non-bf16 tensor, ValueError for shapes, strides,
    devices outside this or an input smaller than 2x2."""
    if isinstance(x, Tensor):
        _check_bf16_cpu({"x": x})
    if isinstance(out, Tensor):
        _check_bf16_cpu({"out": out})
    out = checks.check_maxpool2x2(x, out)
    checks.check_no_overlap(out, "out", {"x": x})
    require_cpu().maxpool2x2_bf16(_desc(x), _desc(out), num_threads())
    return out


# ---------------------------------------------------------------------------------------------------
# upsample_concat
# ---------------------------------------------------------------------------------------------------


def _gather(views: Sequence[InputView], out: Tensor) -> Tensor:
    """Write the views side by side along out's channels (each through its resample and window)."""
    ext, threads = require_cpu(), num_threads()
    c0 = 0
    for v in views:
        c = v.channels
        src, *how = view_source(v)
        ext.gather_view_bf16(src, _desc(out[..., c0 : c0 + c]), *how, threads)
        c0 += c
    return out


def upsample_concat(inputs: Sequence[Tensor | InputView], out: Tensor | None = None) -> Tensor:
    """Materialise the bf16 views (spec.InputView: optional nearest / bilinear resample, then a window; zeros
    outside the resampled image) side by side along channels into `out` [N, H, W, sum C] bf16 (allocated if
    None; a channel slot is fine). Copies are exact; bilinear is computed in fp32 and rounded once. Returns
    out. Raises TypeError for non-bf16 tensors or a non-sequence, ValueError for views that disagree in batch
    or size, a bad out, or non-CPU tensors."""
    views = _views(inputs)
    if isinstance(out, Tensor):
        _check_bf16_cpu({"out": out})
    views, out = checks.check_upsample_concat(views, out)
    _check_bf16_cpu({f"inputs[{i}]": v.tensor for i, v in enumerate(views)} | {"out": out})
    checks.check_no_overlap(out, "out", {f"inputs[{i}]": v.tensor for i, v in enumerate(views)})
    return _gather(views, out)


# ---------------------------------------------------------------------------------------------------
# head
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadWeightBF16:
    """A head weight [K, C] packed once as a 1x1 tile conv (cpu_bf16.ConvWeightBF16, bf16)."""

    conv: cpu_bf16.ConvWeightBF16

    @property
    def num_classes(self) -> int:
        return self.conv.cout

    @property
    def shape(self) -> torch.Size:
        """The logical weight shape [K, C]."""
        return torch.Size((self.conv.cout, self.conv.cin))


def pack_head_weight(weight: Tensor) -> HeadWeightBF16:
    """Round a head weight [K, C] or [K, C, 1, 1] (any float dtype, CPU) to bf16 and pack it for the tile conv.
    The caller's tensor is not changed. Raises TypeError for a non-tensor or non-float weight, ValueError for
    another shape or device."""
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError("head weight must be a float tensor [K, C] or [K, C, 1, 1]")
    if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
    k, c = int(weight.shape[0]), int(weight.shape[1])
    return HeadWeightBF16(cpu_bf16.pack_conv_weight(weight.detach().reshape(k, c, 1, 1)))


def head(x: Tensor | InputView, weight: HeadWeightBF16, bias: Tensor | None = None, op: str = "softmax",
         out: Tensor | None = None, *, out_dtype: torch.dtype = torch.float32, fused: bool = True,
         isa: str | None = None, path: str = "auto") -> Tensor:  # fmt: skip
    """The segmentation head on bf16 activations.

    x: bf16 NHWC [N, H, W, C] or an InputView of one (resample / window: gathered to bf16 first).
    weight: from pack_head_weight. bias: [K] float (used as fp32) or None.
    op: "logits" | "softmax" | "sigmoid" | "argmax" (spec.HEAD_OPS). Logits = 1x1 tile conv (bf16 operands,
    fp32 accumulation) + bias; softmax / sigmoid / argmax of them in fp32.
    out: [N, H, W, K] fp32 or bf16 (a channel slot is fine), or for argmax an [N, H, W] uint8 / int32 / int64
    class map; else allocated: out_dtype (fp32 or bf16) for the scores, int64 for argmax.
    fused: per chunk of rows in one pass (default), or the two-pass form. isa: the tile backend
    (cpu_bf16.choose_backend). path: the avx512bf16 backend's 1x1 body, "direct" / "auto" (its direct conv) or
    "tile" (cpu_bf16.conv2d). Returns out. Raises TypeError for wrong types / dtypes, ValueError for shapes,
    devices or an op outside this.
    """
    if not isinstance(weight, HeadWeightBF16):
        raise TypeError(f"weight must be a HeadWeightBF16 from pack_head_weight, got {type(weight).__name__}")
    if not isinstance(x, (Tensor, InputView)):
        raise TypeError(f"x must be a Tensor or an InputView, got {type(x).__name__}")
    if op not in HEAD_OPS:
        raise ValueError(f"unknown head op {op!r}; expected one of {HEAD_OPS}")
    if out_dtype not in HEAD_OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {HEAD_OUT_DTYPES}, got {out_dtype}")
    view = as_view(x)
    _check_bf16_cpu({"x": view.tensor})
    if out is not None and not isinstance(out, Tensor):
        raise TypeError(f"out must be a Tensor or None, got {type(out).__name__}")
    if out is not None and out.dtype not in (INDEX_DTYPES if op == "argmax" else HEAD_OUT_DTYPES):
        want = INDEX_DTYPES if op == "argmax" else HEAD_OUT_DTYPES
        raise TypeError(f"out has dtype {out.dtype}; head op {op!r} writes one of {want}")
    if out is None and op != "argmax":
        n, (h, w) = view.tensor.shape[0], view.out_size
        out = torch.empty(n, h, w, weight.num_classes, dtype=out_dtype)
    view, out = checks.check_head(view, weight.conv.packed, bias, op, out, num_classes=weight.num_classes)
    if view.channels != weight.conv.cin:
        raise ValueError(f"input has {view.channels} channels but the head weight expects {weight.conv.cin}")
    if out.device.type != "cpu":
        raise ValueError(f"out is on {out.device}; the bf16 ops need CPU tensors")
    checks.check_no_overlap(out, "out", {"x": view.tensor})
    bias = cpu_bf16._bias(bias, weight.num_classes)
    backend = cpu_bf16.choose_backend(isa)
    tile_body = cpu_bf16._tile_body(path, ())  # the 1x1 reads a plain (gathered) input
    xs = view.tensor
    if not _is_plain(view):
        xs = _gather([view], torch.empty(xs.shape[0], *view.out_size, view.channels, dtype=torch.bfloat16))
    kind = _HEAD_OUT_KINDS.index(out.dtype)
    op_index = HEAD_OPS.index(op)
    if fused:
        packed = weight.conv.packed
        require_cpu().head_bf16(_desc(xs), packed.data_ptr(), packed.numel(), weight.num_classes,
                                0 if bias is None else bias.data_ptr(), op_index, _desc(out), kind,
                                num_threads(), backend.index, tile_body)  # fmt: skip
        return out
    if op == "logits":  # the tile conv's own epilogue stores fp32 or bf16 logits
        return cpu_bf16.conv2d(xs, weight.conv, bias, out=out, isa=backend.name, path=path)
    logits = cpu_bf16.conv2d(xs, weight.conv, bias, out_dtype=torch.float32, isa=backend.name, path=path)
    require_cpu().head_pixels_bf16(_desc(logits), op_index, _desc(out), kind, num_threads())
    return out


# ---------------------------------------------------------------------------------------------------
# Registry entries (kernels/registry.py): the head per tile backend, the max-pool and the gather
# ---------------------------------------------------------------------------------------------------


def _fp32_scores(dtype: torch.dtype) -> torch.dtype:
    """The bf16 head computes softmax / sigmoid / logits in fp32 and keeps them: the engine's output buffer of
    a Head is fp32 (the module boundary casts to the input's dtype), not rounded to bf16 first."""
    return torch.float32


def _head_run(backend: str, path: str):
    def run(x: Tensor | InputView, packed: HeadWeightBF16, bias: Tensor | None = None, op: str = "softmax",
            out: Tensor | None = None) -> Tensor:  # fmt: skip
        return head(x, packed, bias, op, out, isa=backend, path=path)

    return run


def _pack_head(weight: Tensor, dtype: torch.dtype) -> HeadWeightBF16:
    return pack_head_weight(weight.detach().to("cpu"))


def _pool_run(x: Tensor, out: Tensor | None = None) -> Tensor:
    return maxpool2x2(x, out)


def _concat_run(inputs: Sequence[Tensor | InputView], out: Tensor | None = None) -> Tensor:
    return upsample_concat(inputs, out)


def _register() -> None:
    bf16 = (torch.bfloat16,)
    for b in cpu_bf16.tile_backends():
        common = dict(backend="cpu", dtypes=bf16, isa=b.name, family="bf16", row=b.name, emulator=b.emulator,
                      pack=_pack_head, scores_dtype=_fp32_scores)  # fmt: skip
        registry.register(registry.Kernel(
            f"cpu.head.bf16_tiles.{b.name}", Head, run=_head_run(b.name, "tile"), algorithm="bf16 head on tiles",
            label=f"bf16 head: 1x1 on tiles ({b.name}), per-pixel op in fp32", rank=20, **common))  # type: ignore[arg-type]  # fmt: skip
        if b.direct_conv:
            registry.register(registry.Kernel(
                f"cpu.head.bf16_direct.{b.name}", Head, run=_head_run(b.name, "direct"),
                algorithm="bf16 head, direct 1x1", label=f"bf16 head: 1x1 direct ({b.name}), per-pixel op in fp32",
                rank=25, gate=cpu_bf16.direct_gate, **common))  # type: ignore[arg-type]  # fmt: skip
    registry.register(
        registry.Kernel("cpu.maxpool2x2.bf16", Pool, "cpu", bf16, _pool_run, algorithm="bf16 max-pool 2x2",
                        label="bf16 max-pool 2x2 (C++, exact)", rank=10),
        registry.Kernel("cpu.upsample_concat.bf16", Concat, "cpu", bf16, _concat_run,
                        algorithm="bf16 concat / resample gather", label="bf16 concat / resample gather (C++)",
                        rank=10),
    )  # fmt: skip


_register()


__all__ = [
    "HEAD_OUT_DTYPES",
    "INDEX_DTYPES",
    "HeadWeightBF16",
    "head",
    "head_reference",
    "maxpool2x2",
    "maxpool2x2_reference",
    "pack_head_weight",
    "upsample_concat",
    "upsample_concat_reference",
]
