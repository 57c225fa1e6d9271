"""unet_fast: a fused-kernel U-Net inference engine."""

from unet_fast.engine import CaptureMissingError, EngineFileError, FusedUNet, load, optimize, save
from unet_fast.model_guard import TrainingModeError
from unet_fast.models import UNet, unet_milesial, unet_original

__version__ = "0.1.0"
__all__ = ["CaptureMissingError", "EngineFileError", "FusedUNet", "TrainingModeError", "UNet", "__version__", "load",
           "optimize", "save", "unet_milesial", "unet_original"]
