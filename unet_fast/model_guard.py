"""What entry points that take a caller's model run, so that the caller's model is left exactly as it was.

A forward pass in training mode is not read-only: every BatchNorm updates its running statistics (and
`num_batches_tracked`), and the output uses batch statistics instead of the learned ones. Calling
`model.eval()` on the caller's model to avoid that changes the caller's training loop instead (its BNs
stay frozen afterwards). So an entry point that needs eval-mode semantics runs `eval_model(model)`: the
model itself when it is already entirely in eval mode, else a private eval-mode deep copy.
"""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["TrainingModeError", "eval_model", "in_training_mode", "training_mode_problems"]


class TrainingModeError(ValueError):
    """A model (or a submodule whose training mode changes what it computes) is in training mode where an
    entry point needs eval-mode semantics. `problems`: (module name, what is wrong) per module."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


def training_mode_problems(model: nn.Module) -> list[tuple[str, str]]:
    """(name, what goes wrong) for each module of `model` whose training mode changes its result: the root
    (its forward may branch on `self.training`), BatchNorm (batch statistics), InstanceNorm with
    `track_running_stats` (instance statistics instead of the running ones), Dropout (random zeros). Norms
    that compute the same in both modes (InstanceNorm without running stats, GroupNorm, LayerNorm) are not
    listed, nor other submodules in training mode (their mode changes nothing we know of)."""
    found = []
    for name, m in model.named_modules():
        if not m.training:
            continue
        if name == "":
            found.append(("<root>", "model.training is True, and a forward may branch on self.training"))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            found.append((name, f"{type(m).__name__} would normalise with the batch's statistics (and update "
                                "its running ones), which cannot be folded into the convolutions"))  # fmt: skip
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats:
            found.append((name, f"{type(m).__name__}(track_running_stats=True) would normalise with each "
                                "instance's statistics instead of its running ones (and update them)"))  # fmt: skip
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            found.append((name, f"{type(m).__name__} would zero random activations"))
    return found


def in_training_mode(model: nn.Module) -> list[str]:
    """Names of the submodules of `model` (itself as "<root>") that are in training mode."""
    return [name or "<root>" for name, m in model.named_modules() if m.training]


def eval_model(model: nn.Module) -> nn.Module:
    """`model` when all of it is in eval mode, else an eval-mode deep copy; the caller's model (mode,
    parameters, buffers, requires_grad, device, dtype) is never changed. Raises TypeError for a non-Module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not in_training_mode(model):
        return model
    return copy.deepcopy(model).eval()
