"""Factory presets for the layouts people use most."""

from __future__ import annotations

from unet_fast.models.unet import UNet


def unet_original(in_channels: int = 1, num_classes: int = 2) -> UNet:
    """Ronneberger et al. 2015: unpadded 3x3 convs, no BatchNorm, transposed-conv up, centre-cropped skips
    (572x572 in -> 388x388 out), pixel-wise softmax."""
    return UNet(in_channels, num_classes, base_channels=64, depth=4, norm=None, upsample="transpose",
                padding="valid", head="softmax")  # fmt: skip


def unet_milesial(in_channels: int = 3, num_classes: int = 2, bilinear: bool = False) -> UNet:
    """The layout of milesial/Pytorch-UNet: padded convs with BatchNorm, logits out; bilinear=True uses
    align_corners=True bilinear upsampling and halves the decoder channels."""
    return UNet(in_channels, num_classes, base_channels=64, depth=4, norm="batch",
                upsample="bilinear" if bilinear else "transpose", align_corners=True, padding="same",
                head="logits")  # fmt: skip
