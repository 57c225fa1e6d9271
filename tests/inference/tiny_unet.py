"""The tiny 3-class U-Net the segmentation-tool tests save as weights + card (shared by test_segment_command
and test_batch_failures)."""

from __future__ import annotations

from pathlib import Path

import torch

from unet_fast import UNet
from unet_fast.inference.model_card import ModelCard

CONFIG = dict(in_channels=1, num_classes=3, base_channels=4, depth=2, norm="batch", upsample="transpose",
              padding="same", head="softmax")  # fmt: skip


def save_tiny_unet(folder: Path) -> Path:
    """A random 3-class U-Net with lively BatchNorm statistics saved as folder/tiny.pt + tiny.json (patch 32);
    returns the weights' path."""
    model = UNet(**CONFIG).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), folder / "tiny.pt")
    ModelCard(config=CONFIG, mean=[0.4], std=[0.25], class_names=["bg", "a", "b"], patch_size=32).save(
        folder / "tiny.json"
    )
    return folder / "tiny.pt"
