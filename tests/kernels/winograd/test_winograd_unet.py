"""End to end: every 3x3 stride-1 conv of a U-Net run by the Winograd kernel, against the float64 model.

Budget (issue 8): relative L2 <= 1e-4 and argmax agreement >= 99.9% on each U-Net family, with random
weights and random BatchNorm statistics. The rest of the model (BN, pooling, upsampling, head) stays
PyTorch in fp32, so the error measured here is the Winograd convs' own, compounded through the network.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unet_fast.kernels.cpu_winograd import available_isas, conv3x3_winograd, pack_winograd_weight
from unet_fast.models.unet import UNet
from unet_fast.parity import assert_parity, compare

pytestmark = pytest.mark.skipif(
    not available_isas(), reason="unet_fast._C was built without the Winograd kernel"
)


class WinogradConv2d(nn.Module):
    """An nn.Conv2d (3x3, stride 1, padding 0/1) evaluated by conv3x3_winograd on NHWC data."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.packed = pack_winograd_weight(conv.weight)
        self.bias = None if conv.bias is None else conv.bias.detach().float()
        self.padding = conv.padding[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv3x3_winograd(
            [x.permute(0, 2, 3, 1).contiguous()], self.packed, self.bias, padding=self.padding
        )
        return y.permute(0, 3, 1, 2)


def winogradize(model: nn.Module) -> int:
    """Replace every eligible conv in place; returns how many were replaced."""
    count = 0
    for name, child in model.named_children():
        if (isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.stride == (1, 1)
                and child.dilation == (1, 1) and child.groups == 1 and child.padding in ((0, 0), (1, 1))):  # fmt: skip
            setattr(model, name, WinogradConv2d(child))
            count += 1
        else:
            count += winogradize(child)
    return count


def randomize(model: nn.Module) -> None:
    """He-scaled conv weights (PyTorch's default init shrinks activations layer by layer until the output
    is mostly the head's bias, which would hide conv errors) and random BatchNorm statistics."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                m.bias.data.uniform_(-0.1, 0.1)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


FAMILIES = {
    # (UNet kwargs, input size): milesial transpose, milesial bilinear (virtual halving), original (valid)
    "milesial-transpose": (
        dict(norm="batch", upsample="transpose", padding="same", head="logits"),
        (2, 3, 61, 50),
    ),
    "milesial-bilinear": (
        dict(norm="batch", upsample="bilinear", padding="same", head="softmax"),
        (1, 3, 48, 64),
    ),
    "original-valid": (
        dict(norm=None, upsample="transpose", padding="valid", head="softmax"),
        (1, 1, 188, 188),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_unet_end_to_end_budget(family: str) -> None:
    kwargs, shape = FAMILIES[family]
    model = UNet(in_channels=shape[1], num_classes=3, base_channels=16, depth=4, **kwargs).eval()
    randomize(model)
    x = torch.randn(shape)
    with torch.no_grad():
        reference = model.double()(x.double())
        fp32 = model.float()(x)
        replaced = winogradize(model)
        got = model(x)
    assert replaced == 18, f"expected the 18 3x3 convs of a depth-4 U-Net, replaced {replaced}"
    report = assert_parity(
        reference, got, rel_l2=1e-4, min_agreement=0.999, what=f"{family} with Winograd convs"
    )
    print(f"{family}: {report}; fp32 PyTorch: {compare(reference, fp32)}")
