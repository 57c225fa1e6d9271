"""unet_fast: a fused-kernel U-Net inference engine."""

from unet_fast.engine import FusedUNet, optimize
from unet_fast.model_guard import TrainingModeError
from unet_fast.models import UNet, unet_milesial, unet_original

__version__ = "0.1.0"
__all__ = ["FusedUNet", "TrainingModeError", "UNet", "__version__", "optimize", "unet_milesial", "unet_original"]
