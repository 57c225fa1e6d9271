"""The benchmark workloads of shared/BENCHMARKING.md: a model factory and an input shape each.

Models get random weights *and* random BatchNorm statistics (never defaults), so fused BN folding is
exercised with non-trivial scales and shifts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from unet_fast.models import UNet, unet_original
from unet_fast.models.weights import lively_weights, randomize_bn

__all__ = ["WORKLOADS", "Workload", "lively_weights", "randomize_bn"]  # the randomisers live in models/weights.py


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]  # (N, C, H, W) at the default batch

    def make_input(
        self, batch: int | None = None, seed: int = 0, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Fresh standard-normal input (never zeros) at the workload's shape, or another batch / (H, W)."""
        n, c, h, w = self.input_shape
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if size is not None and (size[0] < 1 or size[1] < 1):
            raise ValueError(f"input size must be positive, got {size}")
        h, w = size or (h, w)
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch or n, c, h, w, generator=g)


def _seeded(factory: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    """The workload's model with lively weights: its parity rows then see a wrong resize or crop (with
    default init the deep maps are near-constant and would not)."""

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return lively_weights(factory(), seed)

    return build


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("unet64-256", "U-Net base 64, depth 4, BN, transposed-conv up, 2 classes, softmax",
                 _seeded(lambda: UNet(3, 2, 64, 4, "batch", "transpose", head="softmax")), (1, 3, 256, 256)),
        Workload("unet64-512", "same model at 512x512",
                 _seeded(lambda: UNet(3, 2, 64, 4, "batch", "transpose", head="softmax")), (1, 3, 512, 512)),
        Workload("unet-original", "Ronneberger 2015: valid convs, crop + concat, 572 -> 388",
                 _seeded(unet_original), (1, 1, 572, 572)),
        Workload("unet-bilinear", "base 64, BN, bilinear align_corners=True up (milesial bilinear=True)",
                 _seeded(lambda: UNet(3, 2, 64, 4, "batch", "bilinear", align_corners=True, head="softmax")),
                 (1, 3, 512, 512)),
        Workload("unet-small", "base 16: latency-bound, launch overhead",
                 _seeded(lambda: UNet(3, 2, 16, 4, "batch", "transpose", head="softmax")), (1, 3, 256, 256)),
    ]
}  # fmt: skip


def _smp_resnet34() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=2)


def _smp_unavailable() -> str:
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install of one of its dependencies
        return f"segmentation_models_pytorch does not import ({type(e).__name__}: {e}); `pip install segmentation-models-pytorch`"
    return ""


SMP_WORKLOAD = Workload("smp-resnet34", "segmentation_models_pytorch Unet('resnet34', encoder_weights=None)",
                        _seeded(_smp_resnet34), (1, 3, 512, 512))  # fmt: skip


def unavailable_workloads() -> dict[str, str]:
    """Workloads of shared/BENCHMARKING.md that cannot run here, with the reason."""
    why = _smp_unavailable()
    return {SMP_WORKLOAD.name: why} if why else {}


def get_workload(name: str) -> Workload:
    if name in WORKLOADS:
        return WORKLOADS[name]
    if name == SMP_WORKLOAD.name:
        why = _smp_unavailable()
        if why:
            raise ValueError(f"workload {name!r} is unavailable here: {why}")
        return SMP_WORKLOAD
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join([*WORKLOADS, SMP_WORKLOAD.name])}")
