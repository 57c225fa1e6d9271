"""unet_fast: a fused-kernel U-Net inference engine."""

from unet_fast.models import UNet, unet_milesial, unet_original

__version__ = "0.1.0"
__all__ = ["UNet", "__version__", "unet_milesial", "unet_original"]
