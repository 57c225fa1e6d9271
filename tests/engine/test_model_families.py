"""optimize() on the three model families: our UNet in every configuration, milesial's layout, smp.Unet
(the in-repo stand-in; the real package when importable). torch and cpu executors vs the original model."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import MilesialUNet, SmpLikeUnet, check_parity, randomize_bn

import unet_fast
from unet_fast import UNet
from unet_fast.backends import BACKENDS

CPU_REASON = BACKENDS["cpu"].unavailable_reason(torch.device("cpu"))

# (depth, norm, upsample, align_corners, padding, H, W): every option at least once, depth 3 to 5,
# odd sizes where "same" padding allows them (pads in the decoder), valid sizes for "valid".
UNET_CONFIGS = [
    (3, "batch", "transpose", True, "same", 29, 35),
    (4, None, "bilinear", True, "same", 37, 32),
    (3, "batch", "bilinear", False, "same", 33, 27),
    (5, "batch", "nearest", True, "same", 32, 32),
    (3, None, "transpose", True, "valid", 92, 100),
    (4, "batch", "nearest", True, "valid", 188, 188),
]


def _backends(fast: unet_fast.FusedUNet) -> list[unet_fast.FusedUNet]:
    assert not CPU_REASON, f"the cpu backend must be usable here: {CPU_REASON}"
    return [fast, fast.with_backend("cpu")]


@pytest.mark.parametrize("cfg", UNET_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_our_unet(cfg: tuple) -> None:
    depth, norm, up, ac, pad, h, w = cfg
    base = 4 if depth < 4 else 2
    m = randomize_bn(UNet(3, 3, base, depth, norm, up, ac, pad, head="softmax"), seed=depth)
    x = torch.randn(2, 3, h, w)
    fast = unet_fast.optimize(m, x, backend="torch")
    plan = fast.report_data().plan
    assert plan is not None and plan.fallbacks == 0 and plan.steps_by_kind.get("Head") == 1
    if norm == "batch":  # every BatchNorm folded: none is left to run as a fallback
        assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    for f in _backends(fast):
        check_parity(m, f, x, f"UNet{cfg} on {f.backend.name}")


@pytest.mark.parametrize("bilinear", [False, True])
def test_milesial(bilinear: bool) -> None:
    m = randomize_bn(MilesialUNet(3, 2, bilinear, base=4))
    x = torch.randn(2, 3, 36, 44)  # 36 -> 18 -> 9 -> 4 -> 2: F.pad by diffY in two decoder stages
    fast = unet_fast.optimize(m, x, backend="torch")
    plan = fast.report_data().plan
    # 18 BatchNorms, all folded: none runs as a fallback
    assert plan is not None and plan.fallbacks == 0
    assert sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()) == 18
    for f in _backends(fast):
        check_parity(m, f, x, f"milesial bilinear={bilinear} on {f.backend.name}")


def test_milesial_parameter_count_matches_our_preset() -> None:
    for bilinear, count in ((False, 31_037_698), (True, 17_263_042)):
        ours = sum(p.numel() for p in unet_fast.unet_milesial(3, 2, bilinear).parameters())
        theirs = sum(p.numel() for p in MilesialUNet(3, 2, bilinear).parameters())
        assert ours == theirs == count


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_smp_like_unet(encoder: str) -> None:
    m = randomize_bn(SmpLikeUnet(encoder, 3, 3, decoder_channels=(32, 16, 16, 8, 8)))
    x = torch.randn(2, 3, 40, 57)  # odd: nearest resamples to each skip's size (ratios other than 2)
    fast = unet_fast.optimize(m, x, backend="torch")
    data = fast.report_data()
    n_blocks = 8 if encoder == "resnet18" else 16
    assert data.plan is not None and data.plan.residuals == n_blocks
    assert data.plan.resamples == 5 and data.plan.virtual_concats == 4
    (pool,) = [s for s in data.steps if s.kind == "Fallback"]  # the stem's 3x3/2 pool runs in PyTorch
    assert data.plan.fallbacks == 1 and "max-pool 3x3" in pool.fallback
    for f in _backends(fast):
        check_parity(m, f, x, f"smp-like {encoder} on {f.backend.name}")


def test_real_segmentation_models_pytorch() -> None:
    smp = pytest.importorskip(
        "segmentation_models_pytorch",
        reason="segmentation_models_pytorch (needs torchvision/timm) is not importable beside this torch",
    )
    m = randomize_bn(smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2,
                              decoder_channels=(32, 16, 16, 8, 8)))  # fmt: skip
    x = torch.randn(1, 3, 64, 64)
    fast = unet_fast.optimize(m, x, backend="torch")
    plan = fast.report_data().plan
    assert plan is not None and plan.residuals == 8
    for f in _backends(fast):
        check_parity(m, f, x, f"smp.Unet on {f.backend.name}")
