"""Sliding-window inference: coverage, Gaussian normalisation, and equality with direct inference where
the model allows it (one patch; a pointwise model on any image)."""

import itertools
import math

import pytest
import torch
from torch import nn

from unet_fast import UNet
from unet_fast.inference.sliding_window import (
    gaussian_importance_map,
    plan_windows,
    sliding_window_inference,
    window_starts,
)


def random_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval mode is not the identity."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def pointwise_model(cin: int = 3, k: int = 4) -> nn.Module:
    """A 1x1-conv + softmax model: translation equivariant everywhere, so windows cannot change it."""
    return nn.Sequential(nn.Conv2d(cin, k, 1), nn.Softmax(dim=1)).eval()


@pytest.mark.parametrize("patch", [(32, 32), (33, 20), (1, 7)])
def test_gaussian_map_shape_peak_and_sigma(patch) -> None:
    w = gaussian_importance_map(patch)
    assert w.shape == patch and w.dtype == torch.float32
    assert float(w.max()) == pytest.approx(1.0)
    assert float(w.min()) > 0  # every covered pixel gets a nonzero weight
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    if (
        patch[0] % 2 == 1 and patch[0] >= 9
    ):  # odd: centre on a pixel; value one sigma away = exp(-1/2) * row max
        c, sigma = patch[0] // 2, patch[0] / 8
        t = torch.arange(patch[0], dtype=torch.float64) - c
        expected = torch.exp(-(t**2) / (2 * sigma**2))
        col = w[:, w.shape[1] // 2].double()
        torch.testing.assert_close(col / col.max(), expected, atol=1e-6, rtol=1e-6)


def test_gaussian_map_rejects_bad_sigma() -> None:
    with pytest.raises(ValueError, match="sigma_scale must be positive"):
        gaussian_importance_map((8, 8), sigma_scale=0)


@pytest.mark.parametrize("size,patch,overlap", [(128, 128, 0.5), (300, 128, 0.5), (129, 128, 0.25),
                                                (1000, 96, 0.33), (77, 32, 0.0)])  # fmt: skip
def test_window_starts_cover_with_overlap(size, patch, overlap) -> None:
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert starts == sorted(set(starts))
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + patch] = True
    assert bool(covered.all())
    for a, b in itertools.pairwise(starts):
        assert patch - (b - a) >= math.floor(overlap * patch) - 1  # neighbours share at least ~overlap


def test_window_plan_errors() -> None:
    with pytest.raises(ValueError, match="overlap must be in"):
        plan_windows((64, 64), (32, 32), 1.0)
    with pytest.raises(ValueError, match="smaller than the patch"):
        window_starts(10, 32, 0.5)


def test_one_patch_image_equals_direct_inference() -> None:
    model = random_bn(UNet(3, 4, base_channels=4, depth=2))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        direct = model(x)
    got = sliding_window_inference(x, model, 48, overlap=0.5, batch_size=3)
    torch.testing.assert_close(got, direct, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "size,patch,overlap", [((77, 130), 32, 0.5), ((65, 33), (24, 17), 0.25), ((200, 41), 64, 0.4)]
)
def test_pointwise_model_blends_to_direct(blend, size, patch, overlap) -> None:
    model = pointwise_model()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        direct = model(x)
    got = sliding_window_inference(x, model, patch, overlap=overlap, batch_size=5, blend=blend)
    assert got.shape == direct.shape
    torch.testing.assert_close(got, direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(97, 131), (128, 128), (20, 300)])
def test_weights_normalise_at_overlaps(size) -> None:
    """A predictor returning ones must blend to exactly ones: the accumulated weight divides out."""
    x = torch.randn(1, 1, *size)
    got = sliding_window_inference(x, lambda p: torch.ones(p.shape[0], 2, *p.shape[2:]), 64, overlap=0.5)
    torch.testing.assert_close(got, torch.ones(1, 2, *size), atol=1e-6, rtol=1e-6)


def test_blend_weights_are_the_gaussian() -> None:
    """Two patches over a 1 x 48 strip: a pixel covered by both gets the Gaussian-weighted average."""
    x = torch.zeros(1, 1, 1, 48)
    calls = []

    def predictor(p: torch.Tensor) -> torch.Tensor:
        out = torch.full((p.shape[0], 1, 1, 32), float(len(calls)))
        out[1:] += 10  # second patch of the batch predicts 10 more than the first
        calls.append(p.shape[0])
        return out

    got = sliding_window_inference(x, predictor, (1, 32), overlap=0.5, batch_size=2)[0, 0, 0]
    starts = window_starts(48, 32, 0.5)
    assert starts == [0, 16]
    g = gaussian_importance_map((1, 32))[0]
    for col in (16, 20, 31):
        w0, w1 = g[col - 0], g[col - 16]
        assert float(got[col]) == pytest.approx(float((w0 * 0 + w1 * 10) / (w0 + w1)), rel=1e-5)
    assert float(got[5]) == 0 and float(got[40]) == pytest.approx(10)


def test_image_smaller_than_patch_keeps_its_shape() -> None:
    model = pointwise_model(1, 3)
    x = torch.randn(1, 1, 13, 29)
    got = sliding_window_inference(x, model, 32)
    assert got.shape == (1, 3, 13, 29)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=1e-6, rtol=1e-5)


def test_fixed_batch_and_progress() -> None:
    shapes, ticks = [], []

    def predictor(p: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(p.shape))
        return p

    x = torch.randn(2, 1, 100, 70)
    sliding_window_inference(x, predictor, 32, overlap=0.5, batch_size=4,
                             progress=lambda d, t: ticks.append((d, t)))  # fmt: skip
    assert set(shapes) == {(4, 1, 32, 32)}  # the last, partial batch is padded to the same shape
    assert ticks[-1][0] == ticks[-1][1] == len(shapes)


def test_predictor_with_wrong_output_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="'same'-padded model"):
        sliding_window_inference(torch.randn(1, 1, 40, 40), lambda p: p[:, :, 2:-2, 2:-2], 32)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        sliding_window_inference(torch.randn(1, 40, 40), lambda p: p, 32)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_inference(torch.randn(1, 1, 40, 40), lambda p: p, 32, batch_size=0)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_inference(torch.randn(1, 1, 40, 40), lambda p: p, 32, blend="max")  # type: ignore[arg-type]
