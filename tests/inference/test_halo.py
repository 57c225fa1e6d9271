"""Exact halo tiles (unet_fast/inference/halo.py, tiled_inference.py): stitched tiles equal whole-image inference
for every family whose ops are translation-equivariant at the stride alignment; the others are refused with the
op and the reason, and forcing tiles on them shows the difference the refusal avoids.

Models get lively weights (He-normal convs, random BN statistics: default init leaves deep maps nearly
constant, and a wrong crop offset would go unseen); images are odd-sized, batch 2, with core sizes that do not
divide them and crop batches that do not divide the crop count. The stitched output starts poisoned (NaN), so a
pixel no tile wrote fails.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.models.milesial_unet import MilesialUNet
from tests.models.monai_like import BasicUNetLike
from tests.models.smp_like import SmpLikeUnet
from unet_fast.bench.workloads import lively_weights
from unet_fast.inference.halo import NotExact, TilingAnalysis, axis_tiles, graph_geometry
from unet_fast.inference.tiled_inference import (
    choose_strategy,
    compare_outputs,
    exact_tiled_inference,
    peak_activation_bytes,
)
from unet_fast.models.unet import UNet

REL_L2 = 1e-5  # fp32: tiles and the whole image round differently (other conv algorithms per shape)


def _instance_norm(model: nn.Module) -> nn.Module:
    """MONAI's default norm: every BatchNorm2d -> InstanceNorm2d(affine=True) (statistics of the input)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.InstanceNorm2d(child.num_features, affine=True))
        else:
            _instance_norm(child)
    return model


def _check_exact(model: nn.Module, shape: tuple[int, ...], core: int | tuple[int, int], example: int = 64,
                 batch_size: int = 3) -> tuple:  # fmt: skip
    model = lively_weights(model)
    analysis = TilingAnalysis.from_model(model, torch.randn(1, shape[1], example, example))
    geo = analysis.geometry(shape[2], shape[3], core)
    assert geo.exact, geo.reason
    x = torch.randn(shape)
    with torch.no_grad():
        whole = model(x)
        tiled = exact_tiled_inference(x, model, geo, batch_size=batch_size)
    assert not torch.isnan(tiled).any(), "a pixel no tile wrote"
    cmp = compare_outputs(tiled, whole)
    assert cmp.rel_l2 <= REL_L2, cmp.describe()
    assert cmp.agreement_away_from_ties == 1.0, cmp.describe()
    return geo, cmp


# (id, model factory, input shape N x C x H x W, core, example size for the capture). Sizes give three tiles
# along the cut axis (crops at several aligned offsets); the costly depth-4 families cut one axis of a strip.
FAMILIES = [
    ("unet-same-transpose", lambda: UNet(2, 3, 4, 3), (2, 2, 240, 250), (80, 84), 64),
    ("unet-same-nearest", lambda: UNet(1, 3, 4, 3, upsample="nearest"), (1, 1, 64, 241), (64, 81), 64),
    ("unet-same-bilinear-align-false",
     lambda: UNet(1, 2, 4, 3, upsample="bilinear", align_corners=False), (1, 1, 270, 64), (90, 64), 64),
    ("unet-valid", lambda: UNet(1, 3, 4, 3, padding="valid"), (1, 1, 92, 268), (4, 60), 92),
    ("unet-same-depth4-logits", lambda: UNet(3, 4, 4, 4, head="logits"), (1, 3, 384, 64), (128, 64), 64),
    ("milesial-transpose", lambda: MilesialUNet(3, 2, base=4), (1, 3, 64, 389), (64, 130), 64),
    ("monai-basicunet-batchnorm", lambda: BasicUNetLike(1, 2, (4, 4, 8, 16, 32, 4)), (1, 1, 384, 64), (128, 64), 64),
]  # fmt: skip


@pytest.mark.parametrize(
    "factory,shape,core,example", [f[1:] for f in FAMILIES], ids=[f[0] for f in FAMILIES]
)
def test_stitched_tiles_equal_whole_image(factory, shape, core, example) -> None:
    geo, _ = _check_exact(factory(), shape, core, example)
    cut = [len(set(ax.crops)) for ax in (geo.grid.rows, geo.grid.cols)]
    assert max(cut) >= 2, f"the test must cut an axis (crops at {geo.grid.rows.crops}, {geo.grid.cols.crops})"
    assert max(len(ax.cores) for ax in (geo.grid.rows, geo.grid.cols)) >= 3


def test_smp_resnet34_stitched_tiles_equal_whole_image() -> None:
    """smp's Unet (resnet34: 7x7/2 stem, 3x3/2 max-pool, stride 32, nearest to each skip's size) on a strip:
    its contaminated margin is 543 / 511 px, so only a tall image has interior tile edges."""
    geo, _ = _check_exact(SmpLikeUnet(in_channels=3, classes=2, decoder_channels=(32, 16, 16, 8, 8)),
                          (1, 3, 2240, 32), 1120, batch_size=2)  # fmt: skip
    assert geo.align == (32, 32) and geo.margin[0] == (543, 511)
    assert geo.grid.rows.crops == (0, 32)  # the second crop starts at one alignment step


def test_monai_batchnorm_odd_size_recaptured_and_exact() -> None:
    """MONAI's UpCat branches on the size (replicate-pads odd levels): the size the dynamic capture's guard does
    not serve is captured again for the analysis, and the tiles stay exact."""
    _check_exact(BasicUNetLike(1, 2, (4, 4, 8, 16, 32, 4)), (1, 1, 61, 389), (64, 130))


def test_engine_tiles_equal_engine_whole_image() -> None:
    """The fused engine (cpu backend) on tiles vs the engine on the whole image, analysis from its own capture."""
    import unet_fast

    model = lively_weights(UNet(1, 5, 16, 3))
    fused = unet_fast.optimize(model, torch.randn(2, 1, 64, 64), backend="cpu")
    geo = TilingAnalysis.from_fused(fused).geometry(211, 190, 64)
    assert geo.exact and geo.grid.shape[0] >= 2
    x = torch.randn(2, 1, 211, 190)
    with torch.no_grad():
        cmp = compare_outputs(exact_tiled_inference(x, fused, geo, batch_size=3), fused(x))
    assert cmp.rel_l2 <= REL_L2 and cmp.agreement_away_from_ties == 1.0, cmp.describe()


# -- the margin is derived, and tight ------------------------------------------------------------------
def test_margin_matches_hand_derivation_and_is_tight() -> None:
    """Depth-3 'same' UNet: two 3x3 convs per level, 2x2 pools, 2x2 transposed convs. Hand derivation of the
    leading margin (pixels at a tile's inner top edge that differ from the whole image): 2 -> pool 1 -> 3 ->
    pool 2 -> 4 -> pool 2 -> 4 -> up 8 -> 10 -> up 20 -> 22 -> up 44 -> 46. Row 46 of an interior crop is exact;
    row 45 is not (the margin is not over-conservative)."""
    model = lively_weights(UNet(1, 3, 4, 3))
    analysis = TilingAnalysis.from_model(model, torch.randn(1, 1, 64, 64))
    g = graph_geometry(analysis.graph_at((1, 1, 200, 96)))
    assert g.align == (8, 8)
    lead = g.margin[0][0]
    assert lead == 46
    x = torch.randn(1, 1, 400, 96)
    with torch.no_grad():
        whole = model(x)
        crop = model(x[:, :, 64:264])  # an interior crop at an aligned offset
    diff = (crop - whole[:, :, 64:264]).abs().amax(dim=(0, 1, 3))
    assert diff[lead:140].max() < 1e-5
    assert diff[lead - 1] > 1e-5


# -- refusals: the op and why; forcing tiles shows what the refusal avoids -----------------------------
REFUSED = [
    ("instance-norm", lambda: _instance_norm(BasicUNetLike(1, 2, (4, 4, 8, 16, 32, 4))), 1, "InstanceNorm"),
    ("bilinear-align-corners", lambda: UNet(1, 2, 4, 3, upsample="bilinear", align_corners=True), 1,
     "align_corners=True"),
]  # fmt: skip


@pytest.mark.parametrize("factory,channels,why", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_with_reason_and_forced_tiles_differ(factory, channels, why) -> None:
    model = lively_weights(factory())
    analysis = TilingAnalysis.from_model(model, torch.randn(1, channels, 64, 64))
    h, w, core = 384, 64, 128
    geo = analysis.geometry(h, w, core)
    assert not geo.exact and why in geo.reason
    with pytest.raises(NotExact, match=why.split("=")[0]):
        choose_strategy(analysis, h, w, mode="exact", core=core)
    # fall back: a budget the whole image does not fit -> blended, naming the refusal
    s = choose_strategy(analysis, h, w, memory_budget=1, core=core)
    assert s.mode == "blended" and why in s.reason
    # what exact tiles would have done: the grid of the model's exact twin (BatchNorm / nearest upsampling:
    # the same geometry), run on this model, differs from its whole-image output
    twin = (
        UNet(1, 2, 4, 3, upsample="nearest") if "align" in why else BasicUNetLike(1, 2, (4, 4, 8, 16, 32, 4))
    )
    twin_geo = TilingAnalysis.from_model(lively_weights(twin), torch.randn(1, 1, 64, 64)).geometry(h, w, core)
    assert twin_geo.exact and len(set(twin_geo.grid.rows.crops)) >= 2
    x = torch.randn(1, channels, h, w)
    with torch.no_grad():
        cmp = compare_outputs(exact_tiled_inference(x, model, twin_geo), model(x))
    assert cmp.rel_l2 > 1e-4, cmp.describe()


class _SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * y.mean(dim=(2, 3), keepdim=True).sigmoid()


class _GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.norm(self.conv(x))


class _HalfResolution(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("model,why", [(_SqueezeExcite(), "mean"), (_GroupNormNet(), "GroupNorm"),
                                       (_HalfResolution(), "resolution")], ids=["global-pool", "group-norm",
                                                                               "half-resolution-output"])  # fmt: skip
def test_non_local_ops_refused(model, why) -> None:
    geo = TilingAnalysis.from_model(model.eval(), torch.randn(1, 1, 32, 32)).geometry(200, 200, 32)
    assert not geo.exact and why in geo.reason, geo.reason


def test_instance_norm_with_running_stats_is_exact() -> None:
    """InstanceNorm with track_running_stats uses its stored statistics in eval: a per-channel affine map."""
    model = _instance_norm(BasicUNetLike(1, 2, (4, 4, 8, 16, 32, 4)))
    for m in model.modules():
        if isinstance(m, nn.InstanceNorm2d):
            m.track_running_stats = True
            m.register_buffer("running_mean", torch.randn(m.num_features) * 0.1)
            m.register_buffer("running_var", torch.rand(m.num_features) + 0.5)
            m.register_buffer("num_batches_tracked", torch.tensor(1))
    _check_exact(model, (1, 1, 384, 64), (128, 64))


def test_smp_off_grid_size_refused() -> None:
    """smp interpolates to each skip's size: at a size that is not a multiple of 32 the ratio is not 2, so the
    sampling positions move with the size; refused, named."""
    model = lively_weights(SmpLikeUnet(in_channels=3, classes=2, decoder_channels=(32, 16, 16, 8, 8)))
    analysis = TilingAnalysis.from_model(model, torch.randn(1, 3, 64, 64))
    geo = analysis.geometry(2250, 64, 1120)
    assert not geo.exact and "power-of-two" in geo.reason, geo.reason


# -- grids and strategies ------------------------------------------------------------------------------
@pytest.mark.parametrize("in_size,shrink,core,align,margin", [
    (1000, 0, 100, 8, (46, 50)), (1000, 0, 256, 32, (543, 511)), (257, 0, 64, 16, (0, 0)), (300, 0, 17, 4, (3, 3)),
    (500, 184, 64, 16, (0, 0)),
])  # fmt: skip
def test_axis_tiles_cover_every_output_pixel_once_from_clean_crops(
    in_size, shrink, core, align, margin
) -> None:
    out_size = in_size - shrink
    lead, trail = margin
    need = core + lead + trail + align - 1 + shrink
    crop = min(in_size, need + (in_size - need) % align)
    t = axis_tiles(in_size, out_size, core, crop, align, margin)
    covered = torch.zeros(out_size, dtype=torch.int32)
    for o, (a, b) in zip(t.crops, t.cores, strict=True):
        assert o % align == 0 and 0 <= o and o + t.crop_size <= in_size
        clean_from = o + (lead if o > 0 else 0)
        clean_to = o + t.crop_size - shrink - (trail if o + t.crop_size < in_size else 0)
        assert clean_from <= a and b <= clean_to
        covered[a:b] += 1
    assert bool((covered == 1).all())


def test_strategy_whole_when_it_fits_else_exact_tiles() -> None:
    model = UNet(1, 2, 8, 3)
    analysis = TilingAnalysis.from_model(model, torch.randn(1, 1, 64, 64))
    small = choose_strategy(analysis, 256, 256)
    assert small.mode == "whole" and small.whole_bytes > 0
    big = choose_strategy(analysis, 256, 256, memory_budget=small.whole_bytes - 1, core=64)
    assert big.mode == "exact" and "over the budget" in big.reason and big.geometry.exact
    assert choose_strategy(analysis, 256, 256, mode="blended").mode == "blended"
    with pytest.raises(ValueError, match="mode must be"):
        choose_strategy(analysis, 256, 256, mode="fast")


def test_peak_activation_bytes_grows_with_pixels() -> None:
    analysis = TilingAnalysis.from_model(UNet(1, 2, 8, 3), torch.randn(1, 1, 64, 64))
    a = peak_activation_bytes(analysis.graph_at((1, 1, 128, 128)))
    b = peak_activation_bytes(analysis.graph_at((1, 1, 256, 256)))
    assert b == pytest.approx(4 * a, rel=0.05)
    # at least the input + first feature map (8 channels) of fp32 at 128x128 are alive at once
    assert a >= 4 * 128 * 128 * (1 + 8)
