"""A model file pair: weights (a state dict, `*.pt`) and a JSON "model card" beside it (`*.json`) holding
what inference needs besides the weights: the UNet config, the input normalisation used in training, the
class names and colours, and the patch size the model is comfortable with. Training facts (seed, command,
validation IoU) live in the same JSON, so the numbers travel with the weights they describe."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unet_fast.inference.masks import mask_kind
from unet_fast.models.unet import UNet, UNetConfig

CARD_FORMAT = "unet_fast.model-card/1"

# Colours for class indices in masks and overlays (index 0, background, is black); repeated past 8 classes.
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240),
)  # fmt: skip


@dataclass
class ModelCard:
    """What inference needs to know about a trained U-Net besides its weights.

    Input normalisation: an image is first scaled to [0, 1] (integer images by their dtype's maximum,
    float images are taken as they are), then `(x - mean) / std` per channel.

    `class_names` and `palette` have one entry per output channel. The head decides what the mask holds
    (unet_fast/inference/masks.py): softmax (or logits) over >= 2 channels: the class index; one sigmoid
    (or logit) channel: 0 background / 1 `class_names[0]`; sigmoid over 2..8 channels: a multi-label bit
    mask. The default palette gives channel 0 black for class maps (its background) and a colour to every
    channel of a binary or multi-label head (each is a foreground)."""

    config: dict
    mean: list[float]
    std: list[float]
    class_names: list[str]
    patch_size: int = 128
    palette: list[list[int]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # training and validation facts, kept verbatim

    def __post_init__(self) -> None:
        cfg = UNetConfig(**self.config)  # validates the config with UNet's own messages
        c = cfg.in_channels
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"model card: mean and std need {c} values (in_channels), got "
                             f"{len(self.mean)} and {len(self.std)}")  # fmt: skip
        if min(self.std) <= 0:
            raise ValueError(f"model card: std must be positive, got {self.std}")
        if len(self.class_names) != cfg.num_classes:
            raise ValueError(f"model card: {len(self.class_names)} class names for {cfg.num_classes} classes")
        if self.patch_size < 1:
            raise ValueError(f"model card: patch_size must be >= 1, got {self.patch_size}")
        try:
            kind = mask_kind(cfg.head, cfg.num_classes)
        except ValueError as e:
            raise ValueError(f"model card: {e}") from None
        if not self.palette:
            first = 0 if kind == "classes" else 1  # black is the background's, never a foreground's
            n = len(DEFAULT_PALETTE) - first
            self.palette = [list(DEFAULT_PALETTE[first + i % n]) for i in range(cfg.num_classes)]
        if len(self.palette) != cfg.num_classes or any(len(p) != 3 for p in self.palette):
            raise ValueError(f"model card: palette needs {cfg.num_classes} [r, g, b] entries")

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def num_classes(self) -> int:
        """Output channels of the model (classes, or labels of a sigmoid head)."""
        return int(self.config["num_classes"])

    @property
    def head(self) -> str:
        return str(self.config.get("head", UNetConfig.head))

    def to_json(self) -> dict:
        return {"format": CARD_FORMAT, "model": self.config, "normalization": {"mean": self.mean, "std": self.std},
                "class_names": self.class_names, "palette": self.palette, "patch_size": self.patch_size,
                **self.extra}  # fmt: skip

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def card_path_for(weights: str | Path) -> Path:
    """The card that belongs to a weights file: same name, `.json` suffix."""
    return Path(weights).with_suffix(".json")


def read_card(path: str | Path) -> ModelCard:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model card {path} not found (a JSON beside the weights, see docs/demo.md)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
        raise ValueError(f"model card {path}: expected a JSON object with format {CARD_FORMAT!r}")
    try:
        known = {"format", "model", "normalization", "class_names", "palette", "patch_size"}
        return ModelCard(config=dict(data["model"]), mean=[float(v) for v in data["normalization"]["mean"]],
                         std=[float(v) for v in data["normalization"]["std"]],
                         class_names=[str(n) for n in data["class_names"]],
                         patch_size=int(data.get("patch_size", 128)),
                         palette=[[int(v) for v in p] for p in data.get("palette", [])],
                         extra={k: v for k, v in data.items() if k not in known})  # fmt: skip
    except (KeyError, TypeError) as e:
        raise ValueError(f"model card {path} lacks or mangles a field: {e!r}") from None


def load_model(weights: str | Path, card: str | Path | ModelCard | None = None) -> tuple[UNet, ModelCard]:
    """Build the UNet a card describes and load `weights` into it (eval mode, fp32, CPU)."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} not found")
    if not isinstance(card, ModelCard):
        card = read_card(card if card is not None else card_path_for(weights))
    model = UNet(**card.config)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: bad input, not a crash
        raise ValueError(f"cannot read weights {weights}: {e}") from None
    # The demo weights are stored in fp16 to keep the package small; the model computes in fp32.
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_weights(state)
    return model.eval(), card
