"""Argument checks shared by every backend's launchers, in one place.

Each `check_*` validates a call against the contract in kernels/spec.py, raises a ValueError that says
what was expected, allocates the outputs the caller did not pass, and returns the geometry the kernel
needs. Backends add only their own constraints (device, dtype support) on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unet_fast.kernels.spec import (
    ACTIVATIONS,
    FLOAT_DTYPES,
    HEAD_OPS,
    InputView,
    as_view,
    conv_output_size,
    pair,
)


def check_nhwc(t: Tensor, name: str, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be a 4-D NHWC tensor [N, H, W, C], got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}; expected one of {tuple(dtypes)}")
    if t.shape[3] > 1 and t.stride(3) != 1:
        raise ValueError(
            f"{name} must have channel stride 1 (NHWC or a channel slice of one), got strides {t.stride()}"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")


def check_same_device(named: dict[str, Tensor | None], device: torch.device | None = None) -> torch.device:
    present = {k: v for k, v in named.items() if v is not None}
    dev = device or next(iter(present.values())).device
    for k, v in present.items():
        if v.device != dev:
            raise ValueError(f"{k} is on {v.device}, expected {dev} (all tensors of one call on one device)")
    return dev


def check_out(out: Tensor | None, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
              *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> Tensor:  # fmt: skip
    """Allocate `out` if None, else check it is a writable [shape] tensor (a channel slot is fine). An
    allocation that fails (e.g. a huge padding asks for terabytes) is a ValueError naming the shape."""
    if out is None:
        try:
            return torch.empty(shape, dtype=dtype, device=device)
        except (RuntimeError, MemoryError) as e:
            gib = math.prod(shape) * torch.empty((), dtype=dtype).element_size() / 2**30
            raise ValueError(f"cannot allocate {name} of shape {tuple(shape)} ({gib:.3g} GiB of {dtype}): "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e  # fmt: skip
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {out.dtype}; expected one of {tuple(dtypes)}")
    if out.device != device:
        raise ValueError(f"{name} is on {out.device}, expected {device}")
    if len(shape) == 4 and shape[3] > 1 and out.stride(3) != 1:
        raise ValueError(
            f"{name} must have channel stride 1 (NHWC or a channel slice), got strides {out.stride()}"
        )
    return out


def _check_views(inputs: Sequence[Tensor | InputView]) -> list[InputView]:
    if len(inputs) == 0:
        raise ValueError("at least one input is required")
    views = [as_view(v) for v in inputs]
    n0 = views[0].tensor.shape[0] if views[0].tensor.dim() == 4 else None
    size0 = None
    for i, v in enumerate(views):
        check_nhwc(v.tensor, f"inputs[{i}]")
        if v.tensor.dtype != views[0].tensor.dtype:
            raise ValueError(f"inputs[{i}] has dtype {v.tensor.dtype}, inputs[0] has {views[0].tensor.dtype}")
        if v.tensor.shape[0] != n0:
            raise ValueError(f"inputs[{i}] has batch {v.tensor.shape[0]}, inputs[0] has {n0}")
        if v.resample is not None:
            if v.resample.mode not in ("nearest", "bilinear"):
                raise ValueError(f"inputs[{i}]: unknown resample mode {v.resample.mode!r}")
            if min(v.resample.size) < 1:
                raise ValueError(f"inputs[{i}]: resample size {v.resample.size} must be positive")
        if v.size is not None and min(v.size) < 1:
            raise ValueError(f"inputs[{i}]: window size {v.size} must be positive")
        size0 = size0 or v.out_size
        if v.out_size != size0:
            raise ValueError(
                f"inputs[{i}] reads as {v.out_size} (H, W), inputs[0] as {size0}: views must agree"
            )
    return views


@dataclass(frozen=True)
class ConvGeometry:
    views: tuple[InputView, ...]
    batch: int
    in_size: tuple[int, int]
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_size: tuple[int, int]
    act_index: int
    out: Tensor
    pool_out: Tensor | None
    residual: Tensor | None


def check_conv2d(inputs: Sequence[Tensor | InputView], weight: Tensor, bias: Tensor | None, *, stride, padding,
                 dilation, act: str, residual: Tensor | None, out: Tensor | None, pool_out: Tensor | None,
                 weight_shape: tuple[int, int, int, int] | None = None) -> ConvGeometry:  # fmt: skip
    """`weight_shape` is the logical OIHW shape when a backend passes a packed weight."""
    views = _check_views(inputs)
    cout, cin_w, kh, kw = weight_shape or tuple(weight.shape)
    if weight_shape is None and weight.dim() != 4:
        raise ValueError(f"weight must be OIHW [Cout, Cin, kH, kW], got shape {tuple(weight.shape)}")
    cin = sum(v.channels for v in views)
    if cin != cin_w:
        chans = " + ".join(str(v.channels) for v in views)
        raise ValueError(f"inputs carry {chans} = {cin} channels but the weight expects {cin_w}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    s, p, d = pair(stride), pair(padding), pair(dilation)
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(f"stride {s} and dilation {d} must be >= 1, padding {p} >= 0")
    n = views[0].tensor.shape[0]
    ho, wo = conv_output_size(views[0].out_size, (kh, kw), s, p, d)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"input {views[0].out_size} is too small for a {kh}x{kw} conv (padding {p}, dilation {d})"
        )
    x0 = views[0].tensor
    dev = check_same_device({"inputs[0]": x0, "weight": weight, "bias": bias, "residual": residual,
                             "out": out, "pool_out": pool_out})  # fmt: skip
    out = check_out(out, "out", (n, ho, wo, cout), x0.dtype, dev)
    if residual is not None:
        check_nhwc(residual, "residual")
        if tuple(residual.shape) != (n, ho, wo, cout):
            raise ValueError(f"residual has shape {tuple(residual.shape)}, expected {(n, ho, wo, cout)}")
    if pool_out is not None:
        if ho < 2 or wo < 2:
            raise ValueError(f"a 2x2 pool needs an output of at least 2x2, got {ho}x{wo}")
        pool_out = check_out(pool_out, "pool_out", (n, ho // 2, wo // 2, cout), x0.dtype, dev)
    return ConvGeometry(tuple(views), n, views[0].out_size, cin, cout, (kh, kw), s, p, d, (ho, wo),
                        ACTIVATIONS.index(act), out, pool_out, residual)  # fmt: skip


def check_conv_transpose2x2(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None,
                            weight_shape: tuple[int, int, int, int] | None = None) -> Tensor:  # fmt: skip
    """Returns the (allocated or checked) output [N, 2H, 2W, Cout]; weight is IOHW [Cin, Cout, 2, 2]."""
    check_nhwc(x, "x")
    cin, cout, kh, kw = weight_shape or tuple(weight.shape)
    if (kh, kw) != (2, 2):
        raise ValueError(f"conv_transpose2x2 needs a 2x2 kernel, got {kh}x{kw}")
    if x.shape[3] != cin:
        raise ValueError(f"x has {x.shape[3]} channels but the weight expects {cin}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
    dev = check_same_device({"x": x, "weight": weight, "bias": bias, "out": out})
    n, h, w, _ = x.shape
    return check_out(out, "out", (n, 2 * h, 2 * w, cout), x.dtype, dev)


def check_upsample_concat(
    inputs: Sequence[Tensor | InputView], out: Tensor | None
) -> tuple[list[InputView], Tensor]:
    views = _check_views(inputs)
    h, w = views[0].out_size
    x0 = views[0].tensor
    dev = check_same_device({f"inputs[{i}]": v.tensor for i, v in enumerate(views)} | {"out": out})
    out = check_out(out, "out", (x0.shape[0], h, w, sum(v.channels for v in views)), x0.dtype, dev)
    return views, out


def check_maxpool2x2(x: Tensor, out: Tensor | None) -> Tensor:
    check_nhwc(x, "x")
    n, h, w, c = x.shape
    if h < 2 or w < 2:
        raise ValueError(f"a 2x2 pool needs at least 2x2 input, got {h}x{w}")
    check_same_device({"x": x, "out": out})
    return check_out(out, "out", (n, h // 2, w // 2, c), x.dtype, x.device)


INDEX_DTYPES = (torch.uint8, torch.int32, torch.int64)


def check_head(x: Tensor | InputView, weight: Tensor, bias: Tensor | None, op: str, out: Tensor | None,
               num_classes: int | None = None) -> tuple[InputView, Tensor]:  # fmt: skip
    """Weight is [K, C] or [K, C, 1, 1]; returns (view, out)."""
    if op not in HEAD_OPS:
        raise ValueError(f"unknown head op {op!r}; expected one of {HEAD_OPS}")
    (view,) = _check_views([x])
    k = num_classes if num_classes is not None else weight.shape[0]
    if num_classes is None:
        if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
            raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
        if weight.shape[1] != view.channels:
            raise ValueError(
                f"input has {view.channels} channels but the head weight expects {weight.shape[1]}"
            )
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},), got {tuple(bias.shape)}")
    dev = check_same_device({"x": view.tensor, "weight": weight, "bias": bias, "out": out})
    n = view.tensor.shape[0]
    h, w = view.out_size
    if op == "argmax":
        if out is not None and out.dtype == torch.uint8 and k > 256:
            raise ValueError(f"a uint8 class map holds at most 256 classes, the head has {k}")
        return view, check_out(out, "out", (n, h, w), torch.int64, dev, dtypes=INDEX_DTYPES)
    return view, check_out(out, "out", (n, h, w, k), view.tensor.dtype, dev)


def may_overlap(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors can share an element. Exact for what the kernels pass: tensors of one storage whose
    byte ranges intersect overlap, unless both are NHWC channel slots ([N, H, W, C], channel stride 1, the
    same N/H/W strides, pixel stride p dividing the others) whose channel ranges within a pixel are disjoint
    (c_a <= r and r + c_b <= p, r = the element distance between their starts mod p) -- a decoder's skip
    and upsampled halves of one concat buffer. Anything else sharing bytes counts as overlapping."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.numel() == 0 or b.numel() == 0:
        return False

    def span(t: Tensor) -> tuple[int, int]:
        last = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) + 1
        return t.data_ptr(), t.data_ptr() + last * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    if not (a0 < b1 and b0 < a1):
        return False
    if a.dim() == b.dim() == 4 and a.dtype == b.dtype and a.stride() == b.stride() and a.stride(3) == 1:
        p = a.stride(2)
        if p > 0 and a.stride(1) % p == 0 and a.stride(0) % p == 0:
            if a0 > b0:
                a, b = b, a
                a0, b0 = b0, a0
            r = ((b0 - a0) // a.element_size()) % p
            if (b0 - a0) % a.element_size() == 0 and a.shape[3] <= r and r + b.shape[3] <= p:
                return False
    return True


def check_no_overlap(out: Tensor, name: str, inputs: dict[str, Tensor | None]) -> None:
    """ValueError when `out` can share an element with any of `inputs` (threads would read what others have
    already overwritten: a result that depends on timing)."""
    for what, t in inputs.items():
        if t is not None and may_overlap(out, t):
            raise ValueError(f"{name} overlaps {what}: the kernel would read elements it has already written; "
                             "pass separate memory")  # fmt: skip


def check_conv_outputs(inputs: object, residual: object, out: object, pool_out: object) -> None:
    """A conv's outputs against its inputs, for the CPU conv paths (fp32 direct and Winograd, the bf16
    Winograd): ValueError when out / pool_out share elements with an input view's tensor or the residual
    (Winograd reads inputs while other threads write outputs), or with each other (both written, by different
    threads: which value is left would depend on timing; the bf16 tile conv refuses it too); residual may be
    out itself (read, then written, by the same thread). Arguments not yet checked are skipped here: the
    shape checks name them."""
    if isinstance(out, Tensor) and isinstance(pool_out, Tensor) and may_overlap(pool_out, out):
        raise ValueError("pool_out overlaps out: the kernel writes both, so which value is left would depend on "
                         "timing; pass separate memory")  # fmt: skip
    if not isinstance(inputs, Sequence):
        return
    srcs = {f"inputs[{i}]": v.tensor if isinstance(v, InputView) else v for i, v in enumerate(inputs)}
    srcs = {k: t for k, t in srcs.items() if isinstance(t, Tensor)}
    res = residual if isinstance(residual, Tensor) else None
    for name, o in (("out", out), ("pool_out", pool_out)):
        if isinstance(o, Tensor):
            same = name == "out" and res is not None and res.data_ptr() == o.data_ptr() and res.stride() == o.stride()
            check_no_overlap(o, name, {**srcs, "residual": None if same else res})
