"""The reference U-Net: plain PyTorch, the ground truth every backend is measured against.

Covers the 2015 Ronneberger design (unpadded 3x3 convs, centre-cropped skips, transposed-conv
upsampling) and the common padded variants (BatchNorm, bilinear/nearest upsampling with milesial's
channel halving).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["batch"] | None
Upsample = Literal["transpose", "bilinear", "nearest"]
Padding = Literal["same", "valid"]
Head = Literal["softmax", "sigmoid", "logits"]


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    num_classes: int = 2
    base_channels: int = 64
    depth: int = 4
    norm: Norm = "batch"
    upsample: Upsample = "transpose"
    align_corners: bool = True
    padding: Padding = "same"
    head: Head = "softmax"

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNet: {name} must be >= 1, got {getattr(self, name)}")
        _check_choice("norm", self.norm, ("batch", None))
        _check_choice("upsample", self.upsample, ("transpose", "bilinear", "nearest"))
        _check_choice("padding", self.padding, ("same", "valid"))
        _check_choice("head", self.head, ("softmax", "sigmoid", "logits"))
        if self.upsample != "transpose" and self.base_channels % 2:
            raise ValueError("UNet: bilinear/nearest upsampling halves channels; base_channels must be even")


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"UNet: {name}={value!r} is not one of {choices}")


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> [BN] -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int, mid: int | None, norm: Norm, pad: int) -> None:
        mid = mid or cout
        layers: list[nn.Module] = []
        for a, b in ((cin, mid), (mid, cout)):
            layers.append(nn.Conv2d(a, b, 3, padding=pad, bias=norm is None))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with configurable padding, normalisation, upsampling and head (see UNetConfig).

    Input (N, in_channels, H, W) -> output (N, num_classes, H', W'): H' = H for padding="same", smaller
    for "valid" (572 -> 388 at depth 4). `head` selects softmax over classes, sigmoid, or raw logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 64, depth: int = 4,
                 norm: Norm = "batch", upsample: Upsample = "transpose", align_corners: bool = True,
                 padding: Padding = "same", head: Head = "softmax") -> None:  # fmt: skip
        super().__init__()
        cfg = UNetConfig(
            in_channels, num_classes, base_channels, depth, norm, upsample, align_corners, padding, head
        )
        self.config = cfg
        pad = 1 if padding == "same" else 0
        ch = [base_channels * 2**i for i in range(depth + 1)]
        halve = (
            upsample != "transpose"
        )  # milesial's bilinear layout: the bottleneck and decoders halve channels
        bottom = ch[depth] // 2 if halve else ch[depth]

        self.encoders = nn.ModuleList(
            [DoubleConv(in_channels, ch[0], None, norm, pad)]
            + [DoubleConv(ch[i - 1], ch[i], None, norm, pad) for i in range(1, depth)]
            + [DoubleConv(ch[depth - 1], bottom, None, norm, pad)]
        )
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        below = bottom
        for i in reversed(range(depth)):
            if halve:
                self.ups.append(nn.Upsample(scale_factor=2, mode=upsample,
                                            align_corners=align_corners if upsample == "bilinear" else None))  # fmt: skip
                out = ch[i] // 2 if i > 0 else ch[0]
                self.decoders.append(DoubleConv(below + ch[i], out, ch[i], norm, pad))
            else:
                self.ups.append(nn.ConvTranspose2d(below, ch[i], 2, stride=2))
                out = ch[i]
                self.decoders.append(DoubleConv(2 * ch[i], out, None, norm, pad))
            below = out
        self.head = nn.Conv2d(ch[0], num_classes, 1)

    # -- sizes ---------------------------------------------------------------------------------------
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output (H, W) for an input of (height, width); ValueError naming the nearest valid sizes if none."""
        return (_output_length(self.config, height, "height"), _output_length(self.config, width, "width"))

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        if x.dim() != 4:
            raise ValueError(f"UNet expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"UNet expects {cfg.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise ValueError(f"UNet expects a floating-point input, got {x.dtype}")
        self.output_size(x.shape[2], x.shape[3])

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.run_layers(x)

    def run_layers(self, x: Tensor, trace_safe: bool = False) -> Tensor:
        """The network without input checks. `trace_safe` always emits the pad of the upsampled path
        (zero where nothing was floored), so a traced graph (ONNX export) is right at every input size;
        eager calls skip the no-op pad."""
        skips = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.ups, self.decoders, strict=True):
            x = up(x)
            x = dec(torch.cat(_join(skips.pop(), x, self.config.padding, trace_safe), dim=1))
        x = self.head(x)
        if self.config.head == "softmax":
            return torch.softmax(x, dim=1)
        if self.config.head == "sigmoid":
            return torch.sigmoid(x)
        return x

    # -- weights -------------------------------------------------------------------------------------
    def load_weights(self, source: str | PathLike | Mapping[str, Tensor]) -> UNet:
        """Load a state dict (a path is read with torch.load(weights_only=True)); names every mismatch."""
        state = (
            torch.load(source, map_location="cpu", weights_only=True)
            if not isinstance(source, Mapping)
            else source
        )
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        load_state_dict_strict(self, state, f"this UNet config ({self.config})")
        return self

    def config_dict(self) -> dict:
        return asdict(self.config)


def _join(skip: Tensor, x: Tensor, padding: Padding, always_pad: bool = False) -> list[Tensor]:
    """Concat order [skip, upsampled]. Valid U-Nets centre-crop the skip (the paper); padded ones zero-pad
    the upsampled path up to the skip's size when an odd size was floored by pooling (milesial)."""
    dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
    if padding == "valid":
        skip = skip[:, :, dh // 2 : dh // 2 + x.shape[2], dw // 2 : dw // 2 + x.shape[3]]
    elif dh or dw or always_pad:
        x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
    return [skip, x]


def _output_length(cfg: UNetConfig, size: int, axis: str) -> int:
    out = _length_or_none(cfg, size)
    if out is None:
        lo = next((s for s in range(size - 1, 0, -1) if _length_or_none(cfg, s)), None)
        hi = next(
            s for s in range(size + 1, size + 2 ** (cfg.depth + 2) * 4 + 200) if _length_or_none(cfg, s)
        )
        near = f"{lo} or {hi}" if lo else f"{hi}"
        kind = "valid-padding" if cfg.padding == "valid" else "depth-" + str(cfg.depth)
        raise ValueError(
            f"this {kind} UNet cannot take an input {axis} of {size}; the nearest valid sizes are {near}"
        )
    return out


def _length_or_none(cfg: UNetConfig, size: int) -> int | None:
    """Output length along one axis, or None where some layer would get an empty or misaligned input."""
    if cfg.padding == "same":
        return size if size >= 2**cfg.depth else None
    s = size
    skips = []
    for level in range(cfg.depth + 1):
        if level > 0:
            if s % 2:  # the paper requires every pooled map to have even size, so crops stay aligned
                return None
            s //= 2
        s -= 4
        if s < 1:
            return None
        skips.append(s)
    for level in reversed(range(cfg.depth)):
        s = 2 * s
        if s > skips[level]:
            return None
        s -= 4
        if s < 1:
            return None
    return s


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """`model.load_state_dict(state)` (strict), after checking that `state` fits: a ValueError naming the
    missing keys, unexpected keys and shape mismatches (up to 8 of each) says the weights do not fit `what`
    (e.g. "this UNet config (...)"). Nothing is loaded when they do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))  # fmt: skip
    if missing or unexpected or shapes:
        parts = [f"the weights do not fit {what}"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise ValueError("; ".join(parts))
    model.load_state_dict(state)
