"""Pieces every Triton op shares: device-side helpers (activation, view reads through a resample or a
window) and launcher-side helpers (interpreter detection, device/dtype checks, view parameters).

Views follow kernels/spec.py: a consumer's pixel (y, x) is first shifted by the window offset into the
resampled image (outside it reads zero: the crop / F.pad of valid and milesial U-Nets), then mapped to
source pixels exactly as F.interpolate does (UpSample.h: nearest_idx, area_pixel_compute_source_index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels.spec import InputView

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
RESAMPLE_MODES = {None: 0, "nearest": 1, "bilinear": 2}

# ------------------------------------------------------------------------------------------------------
# Device-side helpers
# ------------------------------------------------------------------------------------------------------


@triton.jit
def apply_act(y, ACT: tl.constexpr, negative_slope):
    """ACT is the index into spec.ACTIVATIONS: none, relu, leaky_relu, silu."""
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = tl.where(y > 0, y, y * negative_slope)
    elif ACT == 3:
        y = y / (1.0 + tl.exp(-y))  # PyTorch's silu formula: x / (1 + exp(-x))
    return y


@triton.jit
def view_rows(vy, vx, ok, off_y, off_x, RH, RW, H, W, s_h, s_w, RESAMPLE: tl.constexpr, ALIGN: tl.constexpr):
    """Map view pixels (vy, vx) (vectors over rows) to source addresses: returns the row offsets of the
    four bilinear corners, their weights (ly, lx) and the in-bounds mask; corners coincide unless bilinear.

    One flat function on purpose: the interpreter pays ~1 ms per nested @jit call, so the per-tap math is
    not split further. Nearest is PyTorch's nearest_idx (exact paths for 1x and 2x, else
    floor(dst * in / out) in fp32); bilinear is area_pixel_compute_source_index in fp32."""
    ry = vy + off_y
    rx = vx + off_x
    ok = ok & (ry >= 0) & (ry < RH) & (rx >= 0) & (rx < RW)
    ry = tl.where(ok, ry, 0)
    rx = tl.where(ok, rx, 0)
    ly = (ry * 0).to(tl.float32)  # not tl.zeros_like: a nested @jit call, slow to interpret
    lx = (rx * 0).to(tl.float32)
    if RESAMPLE == 2:
        if ALIGN:
            scale_y = tl.where(RH > 1, (H - 1).to(tl.float32) / (RH - 1).to(tl.float32), 0.0)
            scale_x = tl.where(RW > 1, (W - 1).to(tl.float32) / (RW - 1).to(tl.float32), 0.0)
            src_y = scale_y * ry.to(tl.float32)
            src_x = scale_x * rx.to(tl.float32)
        else:
            src_y = (H.to(tl.float32) / RH.to(tl.float32)) * (ry.to(tl.float32) + 0.5) - 0.5
            src_x = (W.to(tl.float32) / RW.to(tl.float32)) * (rx.to(tl.float32) + 0.5) - 0.5
        src_y = tl.maximum(src_y, 0.0)
        src_x = tl.maximum(src_x, 0.0)
        y0 = src_y.to(tl.int32)  # src >= 0: truncation is floor
        x0 = src_x.to(tl.int32)
        ly = src_y - y0.to(tl.float32)
        lx = src_x - x0.to(tl.float32)
        y1 = tl.where(y0 < H - 1, y0 + 1, y0)
        x1 = tl.where(x0 < W - 1, x0 + 1, x0)
    elif RESAMPLE == 1:
        y0 = tl.minimum(
            tl.floor(ry.to(tl.float32) * (H.to(tl.float32) / RH.to(tl.float32))).to(tl.int32), H - 1
        )
        x0 = tl.minimum(
            tl.floor(rx.to(tl.float32) * (W.to(tl.float32) / RW.to(tl.float32))).to(tl.int32), W - 1
        )
        y0 = tl.where(RH == H, ry, tl.where(RH == 2 * H, ry // 2, y0))
        x0 = tl.where(RW == W, rx, tl.where(RW == 2 * W, rx // 2, x0))
        y1 = y0
        x1 = x0
    else:
        y0 = ry
        x0 = rx
        y1 = y0
        x1 = x0
    y0 = y0.to(tl.int64) * s_h
    y1 = y1.to(tl.int64) * s_h
    x0 = x0.to(tl.int64) * s_w
    x1 = x1.to(tl.int64) * s_w
    return y0 + x0, y0 + x1, y1 + x0, y1 + x1, ly, lx, ok


@triton.jit
def load_view_tile(ptr, base, p00, p01, p10, p11, ly, lx, mask, cs, RESAMPLE: tl.constexpr):
    """One [rows, channels] tile of a view in the source dtype; `base` = per-row batch offsets.
    Bilinear blends in fp32 in PyTorch's order (h0 * (w0 x00 + w1 x01) + h1 * (w0 x10 + w1 x11)).
    (conv2d inlines this in its hot loop: see view_rows on nested-call cost in the interpreter.)"""
    c = cs[None, :]
    b = base[:, None]
    if RESAMPLE == 2:
        x00 = tl.load(ptr + b + p00[:, None] + c, mask=mask, other=0.0).to(tl.float32)
        x01 = tl.load(ptr + b + p01[:, None] + c, mask=mask, other=0.0).to(tl.float32)
        x10 = tl.load(ptr + b + p10[:, None] + c, mask=mask, other=0.0).to(tl.float32)
        x11 = tl.load(ptr + b + p11[:, None] + c, mask=mask, other=0.0).to(tl.float32)
        wy = ly[:, None]
        wx = lx[:, None]
        top = (1.0 - wx) * x00 + wx * x01
        bot = (1.0 - wx) * x10 + wx * x11
        a = ((1.0 - wy) * top + wy * bot).to(ptr.dtype.element_ty)
    else:
        a = tl.load(ptr + b + p00[:, None] + c, mask=mask, other=0.0)
    return a


@triton.jit
def dot_acc(a, b, acc, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    """acc += a @ b. DOT_F32 upcasts bf16 operands (the interpreter multiplies raw bf16 bits)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


# ------------------------------------------------------------------------------------------------------
# Launcher-side helpers
# ------------------------------------------------------------------------------------------------------


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device_dtype(named: dict[str, Tensor | None], dtypes: Sequence[torch.dtype] = SUPPORTED_DTYPES,
                       dtype_names: Sequence[str] = ()) -> None:  # fmt: skip
    """Triton runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1); `dtype_names` are the
    tensors whose dtype must be one of `dtypes`."""
    want = "cpu" if interpreting() else "cuda"
    for name, t in named.items():
        if t is None:
            continue
        if t.device.type != want:
            raise ValueError(
                f"{name} is on {t.device}; the Triton backend expects {want} tensors"
                + (
                    " (TRITON_INTERPRET=1 is set)"
                    if want == "cpu"
                    else " (or set TRITON_INTERPRET=1 for CPU)"
                )
            )
        if name in dtype_names and t.dtype not in dtypes:
            raise ValueError(f"{name} has dtype {t.dtype}; the Triton backend supports {tuple(dtypes)}")


def check_packed(packed: Tensor, dtype: torch.dtype, pack_fn: str) -> None:
    """A packed weight must be what `pack_fn` returned for the inputs' dtype (cast once, laid out once)."""
    if packed.dtype != dtype:
        raise ValueError(f"packed weight has dtype {packed.dtype} but the inputs are {dtype}: "
                         f"pack with {pack_fn}(w, dtype=<the inputs' dtype>)")  # fmt: skip
    if not packed.is_contiguous():
        raise ValueError(f"packed weight must be contiguous (as {pack_fn} returns it)")


def dot_flags(dtype: torch.dtype, allow_tf32: bool) -> dict:
    """DOT_F32 (bf16 under the interpreter) and PRECISION (tf32 only when asked, for fp32)."""
    return {
        "DOT_F32": interpreting() and dtype == torch.bfloat16,
        "PRECISION": "tf32" if (allow_tf32 and dtype == torch.float32 and not interpreting()) else "ieee",
    }


def view_args(v: InputView) -> tuple[tuple, dict]:
    """Runtime args (ptr, C, H, W, s_n, s_h, s_w, RH, RW, off_y, off_x) and constexprs of one view."""
    x = v.tensor
    rh, rw = v.source_size
    args = (x, x.shape[3], x.shape[1], x.shape[2], x.stride(0), x.stride(1), x.stride(2), rh, rw,
            v.offset[0], v.offset[1])  # fmt: skip
    mode = RESAMPLE_MODES[v.resample.mode if v.resample else None]
    return args, {"RESAMPLE": mode, "ALIGN": bool(v.resample.align_corners) if v.resample else False}


def device_arch(t: Tensor) -> int:
    """Compute capability as 80, 90, ... (0 under the interpreter)."""
    if t.device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor
