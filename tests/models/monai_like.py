"""A stand-in for MONAI's 2-D `monai.networks.nets.BasicUNet` (MONAI need not be installed), written from its
public layout: module names and structure as MONAI's, so a MONAI BasicUNet's state_dict loads into it strictly
(keys and shapes) and it computes the same (`tests/export/test_export_dynamic.py::test_monai_like_is_monai`
checks both against the real `monai` 1.6.1 when it is importable; verified so for issue 23).

- TwoConv: two `Convolution`s, each the conv 3x3 (padding 1) followed by an ADN Sequential (N = norm,
  D = dropout, A = LeakyReLU(0.1), MONAI's default act); conv and norm are not neighbours in one
  Sequential, so only a graph-level BN fold pairs them.
- Down: MaxPool2d(2), then TwoConv. UpCat: `upsample.deconv`, a ConvTranspose2d(2, stride 2) to in // 2
  channels ("deconv", halves=True); then, as MONAI's `UpCat(is_pad=True)`, a replicate pad of the upsampled
  side by one at the end of each spatial axis where the skip is larger (a 2x pooling floored an odd length;
  the pad is always called, with zero amounts where the sizes agree, and decided by a Python `if` on the
  shapes: a trace bakes in the example's decision); then concat [skip, up] under `torch.jit.isinstance`,
  then TwoConv. Features (f0, f1, f2, f3, f4, f5) as MONAI's `features` argument.
- norm: "instance" is MONAI's default (InstanceNorm2d with affine); "batch" (the default here, for the tests
  that want BN folding) and "group" (GroupNorm(4, C), MONAI's docstring example) are MONAI's other options.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "instance":
        return nn.InstanceNorm2d(c, affine=True)
    if kind == "group":
        return nn.GroupNorm(4, c)
    raise ValueError(f"norm must be 'batch', 'instance' or 'group', got {kind!r}")


class Convolution(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, norm: str = "batch") -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, kernel, padding=kernel // 2))
        adn = OrderedDict(N=_norm(norm, cout), D=nn.Dropout(0.0), A=nn.LeakyReLU(0.1, inplace=True))
        self.add_module("adn", nn.Sequential(adn))


class TwoConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "batch") -> None:
        super().__init__()
        self.add_module("conv_0", Convolution(cin, cout, norm=norm))
        self.add_module("conv_1", Convolution(cout, cout, norm=norm))


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "batch") -> None:
        super().__init__()
        self.add_module("max_pooling", nn.MaxPool2d(2))
        self.add_module("convs", TwoConv(cin, cout, norm))


class UpCat(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, halves: bool = True, norm: str = "batch") -> None:
        super().__init__()
        up = cin // 2 if halves else cin
        self.upsample = nn.Sequential(OrderedDict(deconv=nn.ConvTranspose2d(cin, up, 2, stride=2)))
        self.convs = TwoConv(cskip + up, cout, norm)

    def forward(self, x: Tensor, x_e: Optional[Tensor]) -> Tensor:  # noqa: UP045 (MONAI's spelling)
        x_0 = self.upsample(x)
        if x_e is not None and torch.jit.isinstance(x_e, torch.Tensor):
            sp = [0, 0, 0, 0]
            for i in range(2):  # the 2x max-pool floored an odd edge: pad the upsampled side by one
                if x_e.shape[-i - 1] != x_0.shape[-i - 1]:
                    sp[i * 2 + 1] = 1
            x_0 = F.pad(x_0, sp, "replicate")
            return self.convs(torch.cat([x_e, x_0], dim=1))
        return self.convs(x_0)


class BasicUNetLike(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 2,
                 features: tuple[int, ...] = (32, 32, 64, 128, 256, 32), norm: str = "batch") -> None:  # fmt: skip
        super().__init__()
        f = features
        self.conv_0 = TwoConv(in_channels, f[0], norm)
        self.down_1 = Down(f[0], f[1], norm)
        self.down_2 = Down(f[1], f[2], norm)
        self.down_3 = Down(f[2], f[3], norm)
        self.down_4 = Down(f[3], f[4], norm)
        self.upcat_4 = UpCat(f[4], f[3], f[3], norm=norm)
        self.upcat_3 = UpCat(f[3], f[2], f[2], norm=norm)
        self.upcat_2 = UpCat(f[2], f[1], f[1], norm=norm)
        self.upcat_1 = UpCat(f[1], f[0], f[5], halves=False, norm=norm)
        self.final_conv = nn.Conv2d(f[5], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return self.final_conv(u1)
