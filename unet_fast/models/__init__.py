"""Reference U-Net models (plain PyTorch): the ground truth for parity."""

from unet_fast.models.presets import unet_milesial, unet_original
from unet_fast.models.unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "unet_milesial", "unet_original"]
