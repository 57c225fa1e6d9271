"""The conv cases every conv kernel test walks (shared/STYLE.md item 6: odd sizes, batch > 1, channel slots,
every fusion): the CUDA kernels' GPU tests and host harness (tests/kernels/cuda/) and the registry
conformance suite (tests/kernels/conformance/). A case builds its inputs as channel slots of bigger buffers,
a weight rounded to the storage dtype, poisoned output slots, and the fp32 spec.conv2d reference on the same
rounded values."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from unet_fast.kernels import spec
from unet_fast.kernels.spec import ACTIVATIONS, InputView, Resample

NAN = float("nan")
BATCHES = (1, 3)
SIZES = ((17, 23), (33, 47))  # odd, not a multiple of the 8 x 8 pixel tiles
CHANNELS = (3, 5, 37)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class ConvCase:
    """A conv2d call: `views(device, dtype)` builds the inputs; kernel/stride/... are the conv geometry."""

    name: str
    batch: int
    size: tuple[int, int]
    parts: tuple[tuple, ...]  # per input: (channels, src_size, resample | None, offset, window | None)
    cout: int
    kernel: tuple[int, int] = (3, 3)
    kw: dict = field(default_factory=dict)
    act: str = "relu"
    residual: bool = False
    pool: bool = False
    bias: bool = True

    def __str__(self) -> str:
        return self.name


def plain(c: int, size: tuple[int, int]) -> tuple:
    return (c, size, None, (0, 0), None)


def conv_cases() -> list[ConvCase]:
    cases = []
    # The size/batch/channel matrix, padding 1, pooled, every output into a slot.
    for i, (n, hw, c) in enumerate((n, hw, c) for n in BATCHES for hw in SIZES for c in CHANNELS):
        cout = (5, 37, 70)[i % 3]  # 70: two column tiles, the second ragged
        act = ACTIVATIONS[i % len(ACTIVATIONS)]
        cases.append(ConvCase(f"n{n}-{hw[0]}x{hw[1]}-c{c}-o{cout}-{act}", n, hw, (plain(c, hw),), cout,
                              kw={"padding": 1}, act=act, pool=True))  # fmt: skip
    for act in ACTIVATIONS:  # every activation with bias + residual + pool
        cases.append(ConvCase(f"residual-{act}", 3, (17, 23), (plain(5, (17, 23)),), 37, kw={"padding": 1},
                              act=act, residual=True, pool=True))  # fmt: skip
    # Decoder-style virtual concat: an upsampled input (both align_corners, nearest) + a centre-cropped skip.
    for mode, ac in (("bilinear", False), ("bilinear", True), ("nearest", False)):
        up = (5, (9, 12), Resample(mode, (18, 24), ac), (0, 0), None)
        skip = (3, (22, 28), None, (2, 2), (18, 24))
        cases.append(ConvCase(f"concat-{mode}-ac{int(ac)}", 3, (18, 24), (up, skip), 37, kw={"padding": 1},
                              pool=True))  # fmt: skip
    # milesial's F.pad: negative offsets and a window past the edge read zeros; plus a cropped upsample.
    padded = (5, (15, 21), None, (-1, -2), (17, 23))
    cropped_up = (3, (10, 13), Resample("bilinear", (20, 26), False), (1, 2), (17, 23))
    cases.append(ConvCase("negative-offset-and-cropped-upsample", 1, (17, 23), (padded, cropped_up), 37,
                          kw={"padding": 1}, residual=True))  # fmt: skip
    # Geometry: valid conv, stride, dilation, 1x1, a non-square kernel.
    cases.append(ConvCase("valid", 1, (33, 47), (plain(37, (33, 47)),), 5, pool=True))
    cases.append(ConvCase("stride2", 3, (33, 47), (plain(5, (33, 47)),), 37, kw={"padding": 1, "stride": 2}))
    cases.append(
        ConvCase("dilation2", 1, (17, 23), (plain(5, (17, 23)),), 5, kw={"padding": 2, "dilation": 2})
    )
    cases.append(ConvCase("1x1", 3, (17, 23), (plain(37, (17, 23)),), 70, kernel=(1, 1), bias=False))
    cases.append(
        ConvCase("kernel3x1", 1, (17, 23), (plain(5, (17, 23)),), 5, kernel=(3, 1), kw={"padding": (1, 0)})
    )
    return cases


def round_to(t: Tensor, dtype: torch.dtype) -> Tensor:
    """The fp32 values a `dtype` tensor holds (references are computed from the same rounded inputs)."""
    return t.to(dtype).float()


def slot_of(buf: Tensor, before: int, c: int) -> Tensor:
    return buf[..., before : before + c]


def build_views(case: ConvCase, dtype: torch.dtype, device: str, aligned: bool = False) -> list[InputView]:
    """Inputs as channel slots of bigger NHWC buffers (so strides are not those of a dense tensor); with
    `aligned`, slots start on 8-channel boundaries of 8-aligned buffers (the cp.async path)."""
    lead, extra = (8, 16) if aligned else (1, 3)
    views = []
    for c, (h, w), resample, offset, window in case.parts:
        buf = torch.randn(case.batch, h, w, c + extra, device=device).to(dtype)
        views.append(InputView(buf[..., lead : lead + c], resample, offset, window))
    return views


@dataclass
class ConvRun:
    views: list[InputView]
    weight: Tensor  # OIHW, already rounded to the storage dtype
    bias: Tensor | None
    residual: Tensor | None
    out_buf: Tensor
    out: Tensor
    pool_buf: Tensor | None
    pool: Tensor | None
    kw: dict

    def reference(self, act: str, negative_slope: float = 0.1) -> tuple[Tensor, Tensor | None]:
        """fp32 spec.conv2d on the same rounded inputs."""
        views = [InputView(v.tensor.float().cpu(), v.resample, v.offset, v.size) for v in self.views]
        res = None if self.residual is None else self.residual.float().cpu()
        pool = None
        if self.pool is not None:
            pool = torch.empty(tuple(self.pool.shape))
        y = spec.conv2d(views, self.weight.cpu(), None if self.bias is None else self.bias.cpu(), act=act,
                        negative_slope=negative_slope, residual=res, pool_out=pool, **self.kw)  # fmt: skip
        return y, pool


def make_conv_run(case: ConvCase, dtype: torch.dtype, device: str, aligned: bool = False) -> ConvRun:
    views = build_views(case, dtype, device, aligned)
    cin = sum(v.channels for v in views)
    kh, kw = case.kernel
    weight = round_to(torch.randn(case.cout, cin, kh, kw) / (cin * kh * kw) ** 0.5, dtype).to(device)
    bias = torch.randn(case.cout, device=device) if case.bias else None
    ho, wo = spec.conv_output_size(views[0].out_size, case.kernel, case.kw.get("stride", 1),
                                   case.kw.get("padding", 0), case.kw.get("dilation", 1))  # fmt: skip
    n = case.batch
    residual = torch.randn(n, ho, wo, case.cout, device=device).to(dtype) if case.residual else None
    out_buf = torch.full((n, ho, wo, case.cout + 5), NAN, device=device, dtype=dtype)
    pool_buf = pool = None
    if case.pool:
        pool_buf = torch.full((n, ho // 2, wo // 2, case.cout + 4), NAN, device=device, dtype=dtype)
        pool = slot_of(pool_buf, 1, case.cout)
    return ConvRun(
        views, weight, bias, residual, out_buf, slot_of(out_buf, 3, case.cout), pool_buf, pool, case.kw
    )
