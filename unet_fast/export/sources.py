"""The models `unet-fast export` builds: the families the engine takes, from a weights file where there is one.

- `unet`: our UNet. With `--weights W.pt`, the model card `W.json` beside it (what `unet-fast segment`
  reads, unet_fast.inference.model_card) gives the architecture; without a card, the options do.
- `original`, `milesial`, `milesial-bilinear`: our presets (unet_fast.models.presets).
- `milesial` with weights: a checkpoint of milesial/Pytorch-UNet (`inc.`, `down1.`..., `up1.`..., `outc.`
  keys; its train.py also stores `mask_values`) is mapped onto the same layout in our UNet, and its
  channels, classes, width and bilinear/transposed up are read from the checkpoint itself.
- `smp`: segmentation_models_pytorch.Unet(encoder) when that package is installed.

Every builder returns the model in eval mode and a one-line description of where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unet_fast.models import UNet

FAMILIES = ("unet", "original", "milesial", "milesial-bilinear", "smp")
SMP_INSTALL = "pip install segmentation-models-pytorch"


@dataclass
class Source:
    model: nn.Module
    description: str  # one line: family, config, where the weights came from
    in_channels: int
    patch_size: int | None = None  # the model card's, if any: the natural export size


def in_channels_of(model: nn.Module) -> int:
    """Input channels: our UNet's config, else the first Conv2d's in_channels."""
    if isinstance(model, UNet):
        return model.config.in_channels
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"cannot tell the input channels of {type(model).__name__}: it has no Conv2d")
    return int(conv.in_channels)


def default_size(model: nn.Module, at_least: int = 256) -> int:
    """The first square input size >= `at_least` the model takes (valid-padding U-Nets need specific sizes)."""
    if not isinstance(model, UNet):
        return at_least
    for s in range(at_least, at_least + 512):
        try:
            model.output_size(s, s)
        except ValueError:
            continue
        return s
    raise ValueError(f"no input size in {at_least}..{at_least + 511} fits {model.config}")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from `path` (torch.load, weights_only); a {'state_dict': ...} wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file: bad input, not a crash
        raise ValueError(f"cannot read weights {path}: {e}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


# --- milesial/Pytorch-UNet checkpoints ------------------------------------------------------------

_MILESIAL_KEY = [
    (re.compile(r"^inc\.double_conv\.(.*)$"), "encoders.0.{0}"),
    (re.compile(r"^down(\d+)\.maxpool_conv\.1\.double_conv\.(.*)$"), "encoders.{0}.{1}"),
    (re.compile(r"^up(\d+)\.up\.(.*)$"), "ups.{0-1}.{1}"),
    (re.compile(r"^up(\d+)\.conv\.double_conv\.(.*)$"), "decoders.{0-1}.{1}"),
    (re.compile(r"^outc\.conv\.(.*)$"), "head.{0}"),
]


def is_milesial_checkpoint(state: Mapping[str, Tensor]) -> bool:
    return "inc.double_conv.0.weight" in state and "outc.conv.weight" in state


def milesial_to_unet(state: Mapping[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(our UNet's config, its state dict) for a milesial/Pytorch-UNet checkpoint. ValueError naming the
    first key that has no place in the layout."""
    if not is_milesial_checkpoint(state):
        raise ValueError("not a milesial/Pytorch-UNet checkpoint (no inc.double_conv.0.weight / outc.conv.weight)")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "mask_values":
            continue
        for pattern, template in _MILESIAL_KEY:
            m = pattern.match(key)
            if m is None:
                continue
            groups = m.groups()
            if "{0-1}" in template:
                new = template.replace("{0-1}", str(int(groups[0]) - 1)).replace("{1}", groups[1])
            else:
                new = template.format(*groups)
            out[new] = value
            break
        else:
            raise ValueError(f"milesial checkpoint key {key!r} has no place in the Pytorch-UNet layout")
    depth = sum(1 for k in state if re.match(r"^down\d+\.maxpool_conv\.1\.double_conv\.0\.weight$", k))
    bilinear = not any(re.match(r"^up\d+\.up\.weight$", k) for k in state)
    w0 = state["inc.double_conv.0.weight"]
    config = {"in_channels": int(w0.shape[1]), "num_classes": int(state["outc.conv.weight"].shape[0]),
              "base_channels": int(w0.shape[0]), "depth": depth, "norm": "batch",
              "upsample": "bilinear" if bilinear else "transpose", "align_corners": True, "padding": "same",
              "head": "logits"}  # fmt: skip
    return config, out


# --- segmentation_models_pytorch ------------------------------------------------------------------


def smp_unet(encoder: str, in_channels: int, classes: int) -> nn.Module:
    try:
        import segmentation_models_pytorch as smp
    except Exception as e:  # ImportError, or a broken torchvision/timm beside this torch
        raise ValueError(f"--model smp needs segmentation_models_pytorch, which does not import here "
                         f"({type(e).__name__}: {e}); {SMP_INSTALL}") from None  # fmt: skip
    return smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=classes)
