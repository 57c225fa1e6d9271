"""The Plan IR (shared/DESIGN.md): a flat list of Steps over named NHWC buffers.

A Buffer is [N, H, W, C] with N chosen at run time. A Slice is a channel range of a buffer read through an
optional resample and then a spatial window (negative offset / window past the edge = zero padding); it maps
one-to-one onto `kernels.spec.InputView`, so the kernel modules consume Slices directly. The value types a step
carries (Resample, the activation and head-op names) are graph/types.py's: this module imports no kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from unet_fast.graph.types import Resample


@dataclass(frozen=True)
class Buffer:
    """An NHWC activation buffer ([N, H, W, C]); `index` buffers hold an argmax class map ([N, H, W])."""

    name: str
    channels: int
    size: tuple[int, int]
    index: bool = False

    def shape(self, batch: int) -> tuple[int, ...]:
        h, w = self.size
        return (batch, h, w) if self.index else (batch, h, w, self.channels)


@dataclass(frozen=True)
class Slice:
    buffer: str
    channel_offset: int
    channels: int
    resample: Resample | None = None
    offset: tuple[int, int] = (0, 0)
    size: tuple[int, int] | None = None  # window (H, W); None = the whole (resampled) source

    @property
    def plain(self) -> bool:
        """True when the slice is just a channel range (no resample, no window)."""
        return self.resample is None and self.size is None and self.offset == (0, 0)

    def describe(self) -> str:
        s = f"{self.buffer}[{self.channel_offset}:{self.channel_offset + self.channels}]"
        if self.resample is not None:
            r = self.resample
            ac = f", align_corners={r.align_corners}" if r.mode == "bilinear" else ""
            s += f" ->{r.mode}{r.size[0]}x{r.size[1]}{ac}"
        if self.size is not None or self.offset != (0, 0):
            s += f" @{self.offset}" + (f"+{self.size[0]}x{self.size[1]}" if self.size else "")
        return s


def with_channels(s: Slice, offset: int, channels: int) -> Slice:
    return replace(s, channel_offset=s.channel_offset + offset, channels=channels)


@dataclass
class Step:
    name: str  # the source layer(s), for the report

    @property
    def kind(self) -> str:
        return type(self).__name__

    def reads(self) -> list[Slice]:
        return []

    def writes(self) -> list[Slice]:
        return []

    fused: list[str] = field(default_factory=list, init=False)  # what was folded in, for the report


class _OneInOneOut:
    """reads() / writes() of a step with one `input` slice and one `out` slice. Not a dataclass: its
    annotations are for type checkers only, so each step's dataclass fields (and their order) are its own."""

    input: Slice
    out: Slice

    def reads(self) -> list[Slice]:
        return [self.input]

    def writes(self) -> list[Slice]:
        return [self.out]


@dataclass
class Conv(Step):
    inputs: list[Slice]
    weight: Tensor  # OIHW fp32, BN folded
    bias: Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    act: str
    negative_slope: float
    out: Slice
    pool_out: Slice | None = None
    residual: Slice | None = None

    def reads(self) -> list[Slice]:
        return self.inputs + ([self.residual] if self.residual else [])

    def writes(self) -> list[Slice]:
        return [self.out] + ([self.pool_out] if self.pool_out else [])


@dataclass
class ConvTranspose2x2(_OneInOneOut, Step):
    input: Slice
    weight: Tensor  # IOHW [Cin, Cout, 2, 2] fp32
    bias: Tensor | None
    act: str
    negative_slope: float
    out: Slice


@dataclass
class Pool(_OneInOneOut, Step):
    input: Slice
    out: Slice


@dataclass
class Concat(Step):
    """Materialise views side by side (also a standalone Resample when there is one input)."""

    inputs: list[Slice]
    out: Slice

    @property
    def kind(self) -> str:
        return "Resample" if len(self.inputs) == 1 else "Concat"

    def reads(self) -> list[Slice]:
        return self.inputs

    def writes(self) -> list[Slice]:
        return [self.out]


@dataclass
class Head(_OneInOneOut, Step):
    input: Slice
    weight: Tensor  # [K, C] fp32
    bias: Tensor | None
    op: str
    out: Slice


@dataclass
class Fallback(Step):
    """Run `fn` (PyTorch, NCHW) on the inputs. Tensor inputs/outputs are Slices of buffers; `raw` ones are
    values that are not 4-D activations (kept as plain tensors in the run's environment)."""

    fn: Callable[..., Any]
    inputs: list[Slice | str]  # str = a raw value name
    outputs: list[Slice | str]
    reason: str = ""

    def reads(self) -> list[Slice]:
        return [s for s in self.inputs if isinstance(s, Slice)]

    def writes(self) -> list[Slice]:
        return [s for s in self.outputs if isinstance(s, Slice)]


OUTPUT_KINDS = ("activation", "index", "raw", "input")


@dataclass
class Plan:
    """Steps in execution order over `buffers`; `input` is the graph input buffer, `outputs` the results (one
    per output of the OpGraph, in its order: the module rebuilds the model's return value from them)."""

    buffers: dict[str, Buffer]
    steps: list[Step]
    input: Slice
    outputs: list[Slice | str]
    # per output: "activation" (NCHW float out), "index" (class map), "raw" (a fallback's value as it is),
    # "input" (the model returns its input: the caller's tensor)
    output_kinds: list[str]

    @property
    def output(self) -> Slice | str:
        """The one output of a single-output plan."""
        if len(self.outputs) != 1:
            raise ValueError(f"the plan has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @property
    def output_kind(self) -> str:
        if len(self.output_kinds) != 1:
            raise ValueError(f"the plan has {len(self.output_kinds)} outputs, not one")
        return self.output_kinds[0]
