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

__all__ = ["eval_model", "in_training_mode"]


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
