"""Exact tiles: which models give, tile by tile, exactly what they give on the whole image, and the tile
grid and halo that make it so.

A convolutional U-Net is translation-equivariant at the alignment of its total stride: shift the input by a
multiple of `align` pixels and every feature map shifts with it, so the output shifts too. A tile cut from
the image computes the same values as the whole image, except where a layer reads past the tile's edge: there
the tile sees its own zero padding (or clamped / missing neighbours) where the whole image has real pixels.
That error spreads inward layer by layer. This module derives from the captured graph how far, per side and
per axis (`margin`, in output pixels), and lays tiles out so that every output pixel kept comes from a tile
whose contaminated margin it is not in; at the image's own border the tile's border *is* the image's border
(same padding, same size residues), so nothing is lost there.

The rule, op by op (`TilingAnalysis`; each refusal names the op and why):

- exact: convolutions (any kernel, stride, dilation, padding, groups), transposed convolutions, max / average
  pooling, nearest upsampling and bilinear upsampling with align_corners=False by a power-of-two factor,
  crops and pads whose left offset does not depend on the image size (valid-padding U-Nets' centre crops,
  milesial's pad of the upsampled path), concatenation, residual adds, BatchNorm in eval mode (a per-channel
  affine map), InstanceNorm with running statistics, pointwise activations, softmax / sigmoid / argmax over
  channels.
- not exact: InstanceNorm / GroupNorm / LayerNorm with statistics of the input (nnU-Net's and MONAI's default
  InstanceNorm: its mean and variance are taken over the whole image, so a tile normalises differently),
  global pooling and spatial reductions (squeeze-excitation, ASPP's image pooling), bilinear upsampling with
  align_corners=True (source coordinate j * (n_in - 1) / (n_out - 1) depends on the image size), resampling by
  a factor that is not a power of two, anything that reshapes pixels into tokens (attention), a model output
  at another resolution than its input, and any op this module does not know. Those models get blended
  windows (`sliding_window.py`), with the difference to whole-image inference measured where it can be.

The margins are computed from the graph instantiated at the crop size the tiles use, and the equivariance is
checked between that graph and the whole image's (every feature map's size differs by the crop offset over
its stride; every crop / pad offset is the same), so size-dependent code (milesial's diff // 2, smp's
interpolate-to-the-skip's-size) is taken as the model actually runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.graph.opgraph import AtenCall, Node, OpGraph, _Ref

__all__ = [
    "AxisTiles",
    "NotExact",
    "TileBox",
    "TileGrid",
    "TilingAnalysis",
    "TilingGeometry",
    "axis_tiles",
    "graph_geometry",
    "tile_grid",
]


class NotExact(ValueError):
    """The model (or this image size) cannot be tiled exactly; the message says which op and why."""


# -- per-node geometry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """One spatial axis of one feature map: `scale` input pixels per feature pixel, `size` feature pixels,
    and how many of its first (`lead`) and last (`trail`) pixels may differ from the whole image's when the
    crop's edge on that side is inside the image."""

    scale: Fraction
    size: int
    lead: int
    trail: int


def _windowed(ax: _Axis, size_out: int, stride: int, start: int, extent: int) -> tuple[int, int]:
    """(lead, trail) of an op whose output j reads input positions [j*stride + start, j*stride + start + extent]
    (a conv / pool: start = -padding, extent = dilation * (kernel - 1)); an input position outside the
    feature map or in its contaminated margin contaminates the output."""
    lo_ok = ax.lead  # first clean input position
    hi_ok = ax.size - 1 - ax.trail  # last clean input position
    first = max(0, -((start - lo_ok) // stride))  # smallest j with j*stride + start >= lo_ok
    last = (hi_ok - start - extent) // stride  # largest j with j*stride + start + extent <= hi_ok
    return first, max(0, size_out - 1 - last)


def _transposed(ax: _Axis, size_out: int, stride: int, padding: int, extent: int) -> tuple[int, int]:
    """(lead, trail) of a transposed conv: output j = i*stride - padding + k*dilation gathers inputs
    i in [ceil((j + padding - extent) / stride), floor((j + padding) / stride)]; every one of them (also those
    outside the map, which the whole image would have) must be clean."""
    lo_ok, hi_ok = ax.lead, ax.size - 1 - ax.trail
    first = max(0, (lo_ok - 1) * stride + extent - padding + 1)  # smallest j whose lowest input >= lo_ok
    last = (hi_ok + 1) * stride - padding - 1  # largest j whose highest input <= hi_ok
    return first, max(0, size_out - 1 - last)


def _resampled(ax: _Axis, size_out: int, factor: int, mode: str) -> tuple[int, int]:
    lo_ok, hi_ok = ax.lead, ax.size - 1 - ax.trail
    if mode == "nearest":  # j reads floor(j / factor)
        return lo_ok * factor, max(0, size_out - (hi_ok + 1) * factor)
    # bilinear, align_corners=False: j reads floor(s) and floor(s) + 1, s = (j + 0.5) / factor - 0.5 (clamped
    # to the map at its edges, which the whole image does not do at a tile's inner edge)
    first = math.ceil(Fraction(2 * lo_ok + 1, 2) * factor - Fraction(1, 2))
    # floor(s) + 1 <= hi_ok  <=>  s < hi_ok  <=>  j < (hi_ok + 0.5) * factor - 0.5
    bound = Fraction(2 * hi_ok + 1, 2) * factor - Fraction(1, 2)
    last = math.ceil(bound) - 1
    return max(0, first), max(0, size_out - 1 - last)


@dataclass
class _Info:
    """Geometry of one node's value: per axis (H, W), or None for a value that is not an image."""

    axes: tuple[_Axis, _Axis] | None
    tag: str = ""  # for raw tuples (batch norm, max_pool2d_with_indices): what getitem passes through


# Fallback ops whose every output pixel depends only on the same pixel of their inputs (and on constants
# without spatial extent).
_POINTWISE = frozenset({
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "hardtanh", "hardtanh_", "hardswish",
    "hardswish_", "hardsigmoid", "elu", "elu_", "selu", "celu", "clamp", "clamp_", "clamp_min", "clamp_max",
    "abs", "exp", "log", "log1p", "leaky_relu", "leaky_relu_", "silu", "silu_", "mish", "softplus", "mul",
    "mul_", "sub", "sub_", "div", "div_", "add", "add_", "neg", "pow", "rsub", "sqrt", "rsqrt", "square",
    "dropout", "alpha_dropout", "feature_dropout", "_to_copy", "to", "type_as", "contiguous", "clone", "alias",
    "detach", "prelu", "_prelu_kernel", "where", "maximum", "minimum", "sign", "erf", "reciprocal", "round",
    "floor", "ceil", "trunc", "logical_not", "eq", "ne", "gt", "lt", "ge", "le", "copy", "lift_fresh_copy",
    "threshold", "hardshrink", "softshrink", "relu6", "glu_channels",
})  # fmt: skip
# Ops over the channel axis (dim 1) only: pointwise in space when their `dim` argument is 1.
_CHANNEL_OPS = frozenset({"_softmax", "softmax", "_log_softmax", "log_softmax", "argmax", "argmin", "amax",
                          "amin", "sum", "mean", "max", "min", "logsumexp", "prod", "norm", "std", "var"})  # fmt: skip
_STATISTICS = {
    "instance_norm": "InstanceNorm normalises each image by its own spatial mean and variance, so a tile is "
    "normalised by the tile's statistics, not the whole image's",
    "group_norm": "GroupNorm normalises by statistics over the whole spatial extent, which differ per tile",
    "native_group_norm": "GroupNorm normalises by statistics over the whole spatial extent, which differ per tile",
    "layer_norm": "LayerNorm over spatial dimensions normalises by statistics of the whole image",
    "native_layer_norm": "LayerNorm over spatial dimensions normalises by statistics of the whole image",
    "_native_batch_norm_legit": "BatchNorm with batch statistics (training-style) normalises by the statistics "
    "of what it is given, which differ per tile",
    "native_batch_norm": "BatchNorm with batch statistics normalises by the statistics of what it is given",
    "adaptive_avg_pool2d": "adaptive (global) pooling mixes every pixel of the image",
    "adaptive_max_pool2d": "adaptive (global) pooling mixes every pixel of the image",
    "_adaptive_avg_pool2d": "adaptive (global) pooling mixes every pixel of the image",
    "scaled_dot_product_attention": "attention mixes every position of the image",
    "upsample_bicubic2d": "bicubic resampling by size is not handled (its coordinates depend on the size)",
    "grid_sampler": "grid sampling reads at data-dependent positions",
    "grid_sampler_2d": "grid sampling reads at data-dependent positions",
}


def _ref_inputs(call: AtenCall, args: Sequence[Any]) -> list[int]:
    return [a.index for a in args if isinstance(a, _Ref)]


def _int_arg(call: AtenCall, i: int, name: str, default: Any = None) -> Any:
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)


def _pair(v: Any, default: int = 0) -> tuple[int, int]:
    if v is None:
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    if not v:
        return (default, default)
    return (int(v[0]), int(v[0] if len(v) == 1 else v[1]))


def _spatial_constant(v: Any) -> bool:
    """A constant tensor argument with spatial extent (a positional embedding, a fixed map): not shift-free."""
    return isinstance(v, Tensor) and v.dim() >= 2 and (v.shape[-1] > 1 or v.shape[-2] > 1)


class _Propagation:
    """Walks an OpGraph at one concrete input shape and gives every node its `_Info`; NotExact names the first
    op that is not translation-equivariant."""

    def __init__(self, g: OpGraph) -> None:
        self.g = g
        self.info: dict[int, _Info] = {}

    def run(self) -> dict[int, _Info]:
        g = self.g
        shape = g.input.shape
        if shape is None or len(shape) != 4:
            raise NotExact(f"the model input is not an N x C x H x W image (shape {shape})")
        self.info[id(g.input)] = _Info((_Axis(Fraction(1), int(shape[2]), 0, 0),
                                        _Axis(Fraction(1), int(shape[3]), 0, 0)))  # fmt: skip
        for n in g.nodes:
            if n is g.input:
                continue
            self.info[id(n)] = self.node(n)
        return self.info

    # -- helpers -------------------------------------------------------------------------------------------
    def _in(self, n: Node, i: int = 0) -> tuple[_Axis, _Axis]:
        src = n.inputs[i]
        axes = self.info[id(src)].axes
        if axes is None:
            raise NotExact(f"{n.name} ({n.op}) reads {src.name}, a value that is not an image feature map")
        return axes

    @staticmethod
    def _out_sizes(n: Node, fallback: tuple[_Axis, _Axis]) -> tuple[int, int]:
        if n.shape is not None and len(n.shape) == 4:
            return int(n.shape[2]), int(n.shape[3])
        return fallback[0].size, fallback[1].size

    def _merge(self, n: Node, inputs: Sequence[Node]) -> _Info:
        """Pointwise over several same-size inputs: the union of their contaminated margins."""
        if not inputs:
            raise NotExact(f"{n.name} ({n.op}) has no image input")
        for i in inputs:
            if self.info[id(i)].axes is None:
                raise NotExact(f"{n.name} ({n.op}) combines an image with {i.name}, a value computed from the "
                               "whole image (e.g. global pooling) or of unknown geometry")  # fmt: skip
        return _Info(_merge_axes(n, [self.info[id(i)].axes for i in inputs]))

    def _pointwise(self, n: Node, src: tuple[_Axis, _Axis]) -> _Info:
        h, w = self._out_sizes(n, src)
        if (h, w) != (src[0].size, src[1].size):
            raise NotExact(
                f"{n.name} ({n.op}) changes the spatial size {src[0].size}x{src[1].size} -> {h}x{w}"
            )
        return _Info(src)

    def _conv_like(self, n: Node, src: tuple[_Axis, _Axis], kernel, stride, padding, dilation) -> _Info:
        h, w = self._out_sizes(n, src)
        out = []
        for d, size in enumerate((h, w)):
            ax = src[d]
            lead, trail = _windowed(ax, size, stride[d], -padding[d], dilation[d] * (kernel[d] - 1))
            out.append(_Axis(ax.scale * stride[d], size, lead, trail))
        return _Info((out[0], out[1]))

    def _transposed(self, n: Node, src, kernel, stride, padding, dilation) -> _Info:
        h, w = self._out_sizes(n, src)
        out = []
        for d, size in enumerate((h, w)):
            ax = src[d]
            lead, trail = _transposed(ax, size, stride[d], padding[d], dilation[d] * (kernel[d] - 1))
            out.append(_Axis(ax.scale / stride[d], size, lead, trail))
        return _Info((out[0], out[1]))

    def _resample(self, n: Node, src, mode: str, align_corners: bool) -> _Info:
        h, w = self._out_sizes(n, src)
        if mode not in ("nearest", "bilinear"):
            raise NotExact(f"{n.name}: {mode} resampling is not handled")
        if mode == "bilinear" and align_corners:
            raise NotExact(
                f"{n.name}: bilinear upsampling with align_corners=True maps output pixel j to input "
                "j * (n_in - 1) / (n_out - 1), a coordinate that depends on the whole image's size, so a tile "
                "samples at other positions than the whole image"
            )
        out = []
        for d, size in enumerate((h, w)):
            ax = src[d]
            factor, rem = divmod(size, ax.size)
            if rem or factor < 1 or factor & (factor - 1):
                raise NotExact(f"{n.name}: {mode} resampling {ax.size} -> {size} pixels is not by a power-of-two "
                               "factor, so its sampling positions are not shift-invariant")  # fmt: skip
            lead, trail = _resampled(ax, size, factor, mode)
            out.append(_Axis(ax.scale / factor, size, lead, trail))
        return _Info((out[0], out[1]))

    def _window(self, n: Node, src, offset: tuple[int, int], size: tuple[int, int]) -> _Info:
        out = []
        for d in range(2):
            ax = src[d]
            lo_ok, hi_ok = ax.lead, ax.size - 1 - ax.trail
            # output j reads input j + offset (outside the input: padding, contaminated at an inner edge)
            first = max(0, lo_ok - offset[d])
            last = hi_ok - offset[d]
            out.append(_Axis(ax.scale, size[d], first, max(0, size[d] - 1 - last)))
        return _Info((out[0], out[1]))

    # -- ops -----------------------------------------------------------------------------------------------
    def node(self, n: Node) -> _Info:
        a, op = n.attrs, n.op
        if op in ("batch_norm", "act", "softmax", "sigmoid", "argmax", "head"):
            return self._pointwise(n, self._in(n))
        if op == "conv":
            src = self._in(n)
            kernel = tuple(int(k) for k in a["weight"].shape[2:])
            info = self._conv_like(n, src, kernel, a["stride"], a["padding"], a["dilation"])
            if a.get("residual") and len(n.inputs) > 1:  # conv + residual add: also the residual's margins
                return _Info(_merge_axes(n, [info.axes, self.info[id(n.inputs[1])].axes]))
            return info
        if op == "conv_transpose":
            src = self._in(n)
            kernel = tuple(int(k) for k in a["weight"].shape[2:])
            return self._transposed(n, src, kernel, a["stride"], a["padding"], a["dilation"])
        if op == "max_pool":
            return self._conv_like(n, self._in(n), a["kernel"], a["stride"], a["padding"], a["dilation"])
        if op == "resample":
            return self._resample(n, self._in(n), a["mode"], bool(a.get("align_corners")))
        if op == "window":
            return self._window(n, self._in(n), tuple(a["offset"]), tuple(a["size"]))
        if op in ("cat", "add"):
            return self._merge(n, n.inputs)
        if op == "fallback":
            return self.fallback(n)
        raise NotExact(f"{n.name}: op {op!r} is not known to be translation-equivariant")

    def fallback(self, n: Node) -> _Info:
        a = n.attrs
        call = a.get("fn")
        target = str(a.get("target", ""))
        if not isinstance(call, AtenCall):
            raise NotExact(f"{n.name}: the model runs as one opaque PyTorch call ({a.get('reason', '')}); "
                           "its geometry cannot be derived")  # fmt: skip
        name = target
        if name in _STATISTICS:
            if name == "instance_norm" and not _int_arg(call, 5, "use_input_stats", True):
                return self._pointwise(n, self._in(n))  # running statistics: a per-channel affine map
            raise NotExact(f"{n.name} ({name}): {_STATISTICS[name]}")
        if name == "batch_norm":
            if _int_arg(call, 5, "training", False):
                raise NotExact(f"{n.name} (batch_norm in training mode): {_STATISTICS['native_batch_norm']}")
            return self._pointwise(n, self._in(n))
        if name == "_native_batch_norm_legit_no_training":
            return _Info(self._in(n), tag="tuple")
        if name == "getitem":
            src = self.info[id(n.inputs[0])]
            if src.axes is None:
                raise NotExact(f"{n.name}: an element of {n.inputs[0].name}, which is not an image")
            return _Info(src.axes)
        if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
            src = self._in(n)
            kernel = _pair(_int_arg(call, 1, "kernel_size"))
            stride = _pair(_int_arg(call, 2, "stride", None) or list(kernel))
            padding = _pair(_int_arg(call, 3, "padding", 0))
            dilation = (1, 1) if name == "avg_pool2d" else _pair(_int_arg(call, 4, "dilation", 1), 1)
            if n.shape is None:  # the (values, indices) tuple: sizes from the values' formula
                info = self._conv_like(_sized(n, src, kernel, stride, padding, dilation, call, name), src, kernel,
                                       stride, padding, dilation)  # fmt: skip
                return _Info(info.axes, tag="tuple")
            return self._conv_like(n, src, kernel, stride, padding, dilation)
        if name in ("convolution", "conv2d", "conv_transpose2d", "_convolution"):
            src = self._in(n)
            weight = _int_arg(call, 1, "weight")
            if not isinstance(weight, Tensor):
                raise NotExact(f"{n.name}: a convolution with weights computed in the graph")
            transposed = name == "conv_transpose2d" or (name in ("convolution", "_convolution")
                                                          and bool(_int_arg(call, 6, "transposed", False)))  # fmt: skip
            stride = _pair(_int_arg(call, 3, "stride", 1), 1)
            padding = _pair(_int_arg(call, 4, "padding", 0))
            if name == "conv_transpose2d":
                dilation = _pair(_int_arg(call, 7, "dilation", 1), 1)
            else:
                dilation = _pair(_int_arg(call, 5, "dilation", 1), 1)
            if isinstance(_int_arg(call, 4, "padding", 0), str):
                raise NotExact(f"{n.name}: string padding {_int_arg(call, 4, 'padding')!r} is not handled")
            kernel = tuple(int(k) for k in weight.shape[2:])
            if transposed:
                return self._transposed(n, src, kernel, stride, padding, dilation)
            return self._conv_like(n, src, kernel, stride, padding, dilation)
        if name in ("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"):
            src = self._in(n)
            pad = list(_int_arg(call, 1, "pad" if name in ("pad", "constant_pad_nd") else "padding"))
            pad = pad + [0] * (4 - len(pad))
            left, _right, top, _bottom = (int(p) for p in pad[:4])
            h, w = self._out_sizes(n, src)
            return self._window(n, src, (-top, -left), (h, w))
        if name in ("upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d"):
            src = self._in(n)
            bilinear = name == "upsample_bilinear2d"
            align = bool(_int_arg(call, 2, "align_corners", False)) if bilinear else False
            if name == "_upsample_nearest_exact2d":
                raise NotExact(f"{n.name}: nearest-exact resampling is not handled")
            return self._resample(n, src, "bilinear" if bilinear else "nearest", align)
        if name == "cat":
            dim = _int_arg(call, 1, "dim", 0)
            if dim % 4 != 1:
                raise NotExact(f"{n.name}: concatenation along dimension {dim}, not channels")
            return self._merge(n, n.inputs)
        if name in _CHANNEL_OPS:
            dim = _int_arg(call, 1, "dim", None)
            dims = dim if isinstance(dim, (list, tuple)) else [dim]
            if dim is None or any(d is None or int(d) % 4 != 1 for d in dims):
                raise NotExact(f"{n.name} ({name} over dimension(s) {dim}): a reduction over the image mixes "
                               "every pixel")  # fmt: skip
            src = self._in(n)
            return _Info(src) if n.shape is None else self._pointwise(n, src)
        if name == "slice":
            dim = int(_int_arg(call, 1, "dim", 0)) % 4
            if dim in (0, 1):
                return self._pointwise(n, self._in(n))
            raise NotExact(f"{n.name}: a strided slice of the image")
        if name in _POINTWISE:
            for v in list(call.args) + list(call.kwargs.values()):
                if _spatial_constant(v):
                    raise NotExact(f"{n.name} ({name}) uses a constant of spatial size {tuple(v.shape)} (a fixed "
                                   "map, e.g. a positional embedding): not shift-invariant")  # fmt: skip
            return self._merge(n, n.inputs)
        raise NotExact(f"{n.name}: op {name!r} is not known to be translation-equivariant")


def _merge_axes(n: Node, maps: Sequence[tuple[_Axis, _Axis] | None]) -> tuple[_Axis, _Axis]:
    if any(m is None for m in maps):
        raise NotExact(f"{n.name} ({n.op}) combines an image with a value that is not an image feature map")
    out = []
    for d in range(2):
        axes = [m[d] for m in maps if m is not None]
        scales, sizes = {a.scale for a in axes}, {a.size for a in axes}
        if len(scales) != 1 or len(sizes) != 1:
            raise NotExact(f"{n.name} ({n.op}) combines feature maps of different strides or sizes "
                           f"({sorted(map(str, scales))}, {sorted(sizes)})")  # fmt: skip
        out.append(_Axis(axes[0].scale, axes[0].size, max(a.lead for a in axes), max(a.trail for a in axes)))
    return out[0], out[1]


def _sized(n: Node, src, kernel, stride, padding, dilation, call, name) -> Node:
    """A stand-in node with the output size of a pool whose value is a tuple (max_pool2d_with_indices)."""
    ceil = bool(_int_arg(call, 5, "ceil_mode", False))
    sizes = []
    for d in range(2):
        num = src[d].size + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1
        out = (-(-num // stride[d]) if ceil else num // stride[d]) + 1
        if ceil and (out - 1) * stride[d] >= src[d].size + padding[d]:
            out -= 1
        sizes.append(out)
    return Node(name, [], {}, (1, 1, sizes[0], sizes[1]), n.name)


# -- what a graph allows ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphGeometry:
    """The geometry of one concrete graph: `align` (per axis) is the shift under which every feature map
    shifts by whole pixels; `margin[d] = (lead, trail)` output pixels that may differ near a crop edge inside
    the image; `out_size` the output's (H, W); `scales` every feature map's (name, scale H, scale W, H, W)."""

    align: tuple[int, int]
    margin: tuple[tuple[int, int], tuple[int, int]]
    out_size: tuple[int, int]
    maps: dict[str, tuple[Fraction, Fraction, int, int]]
    offsets: dict[str, tuple[int, int]]  # window name -> (top, left) offset


def graph_geometry(g: OpGraph) -> GraphGeometry:
    """Propagate the geometry through `g` (sizes concrete). Raises NotExact naming the op that breaks it."""
    info = _Propagation(g).run()
    out = info[id(g.output)].axes
    if out is None:
        raise NotExact("the model's output is not an image")
    if out[0].scale != 1 or out[1].scale != 1:
        raise NotExact(f"the model's output is at 1/{out[0].scale} x 1/{out[1].scale} of the input resolution; "
                       "only full-resolution outputs are tiled")  # fmt: skip
    align = [1, 1]
    maps: dict[str, tuple[Fraction, Fraction, int, int]] = {}
    for n in g.nodes:
        axes = info[id(n)].axes
        if axes is None:
            continue
        for d in range(2):
            align[d] = math.lcm(align[d], axes[d].scale.numerator)
        maps[n.name] = (axes[0].scale, axes[1].scale, axes[0].size, axes[1].size)
    offsets = {n.name: tuple(int(v) for v in n.attrs["offset"]) for n in g.nodes if n.op == "window"}
    return GraphGeometry((align[0], align[1]), ((out[0].lead, out[0].trail), (out[1].lead, out[1].trail)),
                         (out[0].size, out[1].size), maps, offsets)  # fmt: skip


def check_equivariant(
    crop: GraphGeometry, whole: GraphGeometry, crop_shape: tuple[int, int], whole_shape: tuple[int, int]
) -> None:
    """NotExact unless the graph at the crop's size is the whole image's graph shifted: every feature map in
    both is larger in the whole by (whole - crop) / its stride, every crop / pad offset is equal."""
    for name, (sh, sw, h, w) in crop.maps.items():
        other = whole.maps.get(name)
        if other is None:
            continue  # a window dropped at one size (identity there): its offsets are checked below
        if (sh, sw) != other[:2]:
            raise NotExact(
                f"{name}: stride {sh}x{sw} at {crop_shape} but {other[0]}x{other[1]} at {whole_shape}"
            )
        for d, (s, size, big) in enumerate(((sh, h, other[2]), (sw, w, other[3]))):
            grow = Fraction(whole_shape[d] - crop_shape[d]) / s
            if grow.denominator != 1 or big - size != grow:
                raise NotExact(
                    f"{name}: its size is {size} at an input of {crop_shape[d]} but {big} at {whole_shape[d]} "
                    f"(expected {size + grow}): the model does not shift with the image at this size"
                )
    for name in set(crop.offsets) | set(whole.offsets):
        a, b = crop.offsets.get(name, (0, 0)), whole.offsets.get(name, (0, 0))
        if a != b:
            raise NotExact(f"{name}: a crop / pad at offset {a} for a tile but {b} for the whole image (the "
                           "offset depends on the image size)")  # fmt: skip


# -- tile grids ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis. Each tile reads input [crop, crop + crop_size) (crop_size the same for all, or
    the whole axis) and keeps output [core_start, core_end) of the whole image's output, which is
    [core_start - crop, core_end - crop) of its own output (the output of a crop at input offset o is the
    whole output from o on)."""

    crops: tuple[int, ...]
    cores: tuple[tuple[int, int], ...]
    crop_size: int
    in_size: int
    out_size: int


def axis_tiles(
    in_size: int, out_size: int, core: int, crop_size: int, align: int, margin: tuple[int, int]
) -> AxisTiles:
    """Lay out cores of `core` output pixels over [0, out_size) and give each the aligned crop of `crop_size`
    input pixels whose clean output covers it. `crop_size >= in_size` means one crop: the whole axis."""
    if core < 1:
        raise ValueError(f"tile core must be >= 1, got {core}")
    lead, trail = margin
    if crop_size >= in_size:
        return AxisTiles((0,), ((0, out_size),), in_size, in_size, out_size)
    if (in_size - crop_size) % align:
        raise ValueError(
            f"crop size {crop_size} and image size {in_size} differ by a non-multiple of {align}"
        )
    crops, cores = [], []
    out_crop = crop_size - (in_size - out_size)  # outputs per crop (a valid-padding net loses a constant)
    for start in range(0, out_size, core):
        end = min(out_size, start + core)
        o = max(0, (start - lead) // align * align)
        o = min(o, in_size - crop_size)
        clean_from = o + (lead if o > 0 else 0)
        clean_to = o + out_crop - (trail if o + crop_size < in_size else 0)
        if clean_from > start or clean_to < end:
            raise ValueError(f"internal: a crop of {crop_size} at {o} covers output [{clean_from}, {clean_to}), not "
                             f"the core [{start}, {end})")  # fmt: skip
        crops.append(o)
        cores.append((start, end))
    return AxisTiles(tuple(crops), tuple(cores), crop_size, in_size, out_size)


@dataclass(frozen=True)
class TileBox:
    """One tile: read input rows/cols [y, y + h) x [x, x + w); keep output [oy0, oy1) x [ox0, ox1) (whole-image
    output coordinates), which is its own output shifted by (y, x)."""

    index: tuple[int, int]  # (row, column) in the grid
    y: int
    x: int
    h: int
    w: int
    out: tuple[int, int, int, int]  # oy0, oy1, ox0, ox1


@dataclass(frozen=True)
class TileGrid:
    rows: AxisTiles
    cols: AxisTiles

    @property
    def crop_shape(self) -> tuple[int, int]:
        return self.rows.crop_size, self.cols.crop_size

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows.crops), len(self.cols.crops)

    def __len__(self) -> int:
        return len(self.rows.crops) * len(self.cols.crops)

    def box(self, i: int, j: int) -> TileBox:
        (oy0, oy1), (ox0, ox1) = self.rows.cores[i], self.cols.cores[j]
        return TileBox((i, j), self.rows.crops[i], self.cols.crops[j], self.rows.crop_size, self.cols.crop_size,
                       (oy0, oy1, ox0, ox1))  # fmt: skip

    def boxes(self) -> list[TileBox]:
        return [self.box(i, j) for i in range(self.shape[0]) for j in range(self.shape[1])]


def tile_grid(rows: AxisTiles, cols: AxisTiles) -> TileGrid:
    return TileGrid(rows, cols)


# -- the analysis of a model -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TilingGeometry:
    """How to tile one image size with one model: `exact` (and if not, `reason`), the crop shape every tile
    reads (input pixels), the grid, and the margins it was derived from. `overhead` is input pixels read per
    output pixel kept (1.0 = no halo)."""

    exact: bool
    reason: str
    image: tuple[int, int]
    out_size: tuple[int, int]
    align: tuple[int, int]
    margin: tuple[tuple[int, int], tuple[int, int]]
    grid: TileGrid | None = None

    @property
    def overhead(self) -> float:
        if self.grid is None:
            return float("nan")
        (n_r, n_c), (ch, cw) = self.grid.shape, self.grid.crop_shape
        return n_r * n_c * ch * cw / (self.out_size[0] * self.out_size[1])

    def describe(self) -> str:
        if not self.exact:
            return f"not exact: {self.reason}"
        g = self.grid
        assert g is not None
        return (f"exact tiles: {g.shape[0]}x{g.shape[1]} crops of {g.crop_shape[0]}x{g.crop_shape[1]} (aligned to "
                f"{self.align[0]}x{self.align[1]}, halo {self.margin[0]} rows, {self.margin[1]} cols; "
                f"{self.overhead:.2f} input px per output px)")  # fmt: skip


@dataclass
class TilingAnalysis:
    """The exactness analysis of one model, from one capture (reused from a FusedUNet when there is one).

    `geometry(height, width, core)` says whether tiles of `core` x `core` output pixels reproduce whole-image
    inference for an image of that size, and how to cut them. Sizes are analysed on the captured graph
    instantiated at the crop size and at the whole size (microseconds each); a size the capture's guards do
    not serve is captured again when small, else refused with the reason."""

    graph_at: Callable[[tuple[int, ...]], OpGraph]
    in_channels: int
    refusal: str = ""  # set when the model is not exact at any size (found on the first graph)
    _cache: dict[tuple, TilingGeometry] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, model: nn.Module, example: Tensor) -> TilingAnalysis:
        """Capture `model` (a private eval copy, through the engine's capture) around `example` [N, C, H, W]."""
        from unet_fast.engine.compiler import capture_model
        from unet_fast.model_guard import eval_model

        model = eval_model(model)
        cap = capture_model(model, example.detach().cpu().float(), "model", frozenset(), "tiling analysis")
        return cls._from_captures([cap], model, int(example.shape[1]))

    @classmethod
    def from_fused(cls, fused: Any) -> TilingAnalysis:
        """Reuse a FusedUNet's capture(s) (no new export). The shape-free passes ran on them (BN folded,
        activations / residuals / head fused): geometry is unchanged by those."""
        return cls._from_captures(list(fused.captures), fused._source, int(fused.in_channels))

    @classmethod
    def _from_captures(cls, caps: list, model: nn.Module, in_channels: int) -> TilingAnalysis:
        def graph_at(shape: tuple[int, ...]) -> OpGraph:
            for cap in reversed(caps):
                if cap.matches(shape):
                    return cap.graph.instantiate(shape)
            n_bytes = 4 * math.prod(shape)
            if n_bytes > 64 << 20:
                raise NotExact(f"the model's capture does not serve an input of {shape[2]}x{shape[3]} (its code "
                               "branches on the size) and one is not captured again at a size this large")  # fmt: skip
            from unet_fast.engine.compiler import capture_model

            try:
                cap = capture_model(model, torch.zeros(shape), "model", frozenset(), f"tiling at {shape}")
            except Exception as e:
                raise NotExact(f"the model cannot be captured at {shape[2]}x{shape[3]}: {e}") from None
            caps.append(cap)
            return cap.graph.instantiate(shape)

        return cls(graph_at, in_channels)

    def _geometry_of(self, h: int, w: int) -> GraphGeometry:
        return graph_geometry(self.graph_at((1, self.in_channels, h, w)))

    def geometry(self, height: int, width: int, core: int | tuple[int, int] = 512) -> TilingGeometry:
        """The tiling of an image of height x width input pixels into cores of `core` output pixels. Never
        raises for a model that is not exact: the result says `exact=False` and why."""
        cores = (core, core) if isinstance(core, int) else (int(core[0]), int(core[1]))
        key = (height, width, cores)
        if key in self._cache:
            return self._cache[key]
        try:
            geo = self._exact_geometry(height, width, cores)
        except NotExact as e:
            geo = TilingGeometry(False, str(e), (height, width), (0, 0), (1, 1), ((0, 0), (0, 0)))
        self._cache[key] = geo
        return geo

    def _exact_geometry(self, height: int, width: int, cores: tuple[int, int]) -> TilingGeometry:
        if self.refusal:
            raise NotExact(self.refusal)
        whole = self._geometry_of(height, width)
        align = whole.align
        # the crop size: same residue as the image (so the right / bottom edge's structure is the image's),
        # large enough for a core plus both margins plus the alignment slack; margins re-derived at that size
        crop = [0, 0]
        margin = whole.margin
        for _ in range(4):
            for d, size in enumerate((height, width)):
                shrink = size - whole.out_size[d]
                need = cores[d] + margin[d][0] + margin[d][1] + align[d] - 1 + shrink
                crop[d] = min(size, need + (size - need) % align[d])
            if crop[0] == height and crop[1] == width:
                break
            probe = self._geometry_of(crop[0], crop[1])
            if probe.margin == margin:
                check_equivariant(probe, whole, (crop[0], crop[1]), (height, width))
                break
            margin = tuple(
                tuple(max(a, b) for a, b in zip(m0, m1, strict=True))
                for m0, m1 in zip(margin, probe.margin, strict=True)
            )  # type: ignore[assignment]
        else:
            raise NotExact("the contaminated margins did not settle with the crop size")
        rows = axis_tiles(height, whole.out_size[0], cores[0], crop[0], align[0], margin[0])
        cols = axis_tiles(width, whole.out_size[1], cores[1], crop[1], align[1], margin[1])
        return TilingGeometry(True, "", (height, width), whole.out_size, align, margin, TileGrid(rows, cols))
