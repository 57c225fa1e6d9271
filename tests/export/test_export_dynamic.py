"""An exported graph is right at every size it declares dynamic, or the export declares the axis fixed and
says why (issue 23, item 8).

The issue's case: MONAI's BasicUNet pads the upsampled side `if` a 2x pooling floored an odd length (a
Python branch on shapes); traced at 64x64 no level is odd, the pad is traced with zero amounts, and ONNX
Runtime fails at 33x32 ("Concat ... Non concat axis dimensions must match") while the export's own check
passed at multiples of 16. Now the check probes sizes with every pooling level's parity flipped
(probes.flipped), odd and non-square sizes and batch > 1, and declares the failing axes fixed.
"""

from __future__ import annotations

import sys

import pytest
import torch
from export_helpers import FP32_RTOL, lively, lively_norms, load_test_model, ort_run, rel_l2, small_unet
from fake_tensorrt import make_fake_tensorrt
from torch import nn

from unet_fast.export.probes import PROBE_BITS, flipped, probe_shapes, profile_probe_shapes

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import (  # noqa: E402
    DynamicAxesFixedWarning,
    ExportParityError,
    read_metadata,
    to_onnx,
    to_tensorrt,
)

FEATURES = (8, 8, 16, 32, 64, 8)  # the issue's BasicUNet(features=...)
ISSUE_SIZES = [(1, 1, 33, 32), (2, 1, 37, 45), (1, 1, 50, 70)]


def monai(norm: str = "instance") -> nn.Module:
    torch.manual_seed(0)
    return lively_norms(lively(load_test_model("monai_like").BasicUNetLike(1, 3, FEATURES, norm=norm)))


def input_dims(path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# --- the probes ------------------------------------------------------------------------------------


def test_flipped_takes_the_other_decision_at_every_pooling_level() -> None:
    for n in range(1, 600):
        t = flipped(n)
        assert n < t <= n + 2**PROBE_BITS
        for level in range(PROBE_BITS):  # the length entering pooling `level` is n // 2**level
            assert (t >> level) % 2 != (n >> level) % 2, (n, t, level)


def test_probe_shapes() -> None:
    unet = small_unet()
    assert probe_shapes(unet, (1, 3, 64, 64), ("batch", "height", "width")) == [
        (1, 3, 64, 64), (2, 3, 127, 127), (1, 3, 81, 73)]  # fmt: skip
    assert probe_shapes(unet, (2, 3, 64, 48), ("height",)) == [(2, 3, 64, 48), (2, 3, 127, 48), (2, 3, 81, 48)]
    assert probe_shapes(unet, (1, 3, 64, 64), ("batch",)) == [(1, 3, 64, 64), (2, 3, 64, 64)]
    assert probe_shapes(unet, (1, 3, 64, 64), ()) == [(1, 3, 64, 64)]
    valid = small_unet(padding="valid")  # takes only some lengths: probes move to the next it takes
    for shape in probe_shapes(valid, (1, 3, 60, 60), ("batch", "height", "width")):
        valid.output_size(shape[2], shape[3])


def test_profile_probe_shapes_stay_inside_the_profile() -> None:
    lo, opt, hi = (1, 3, 32, 40), (2, 3, 64, 64), (4, 3, 128, 96)
    shapes = profile_probe_shapes(lo, opt, hi)
    assert shapes[0] == opt and len(shapes) == 3
    for s in shapes:
        assert all(a <= d <= b for a, d, b in zip(lo, s, hi, strict=True)), s
    assert shapes[1] == (3, 3, 63, 63)  # every pooling parity flipped, nearest to opt
    assert profile_probe_shapes(opt, opt, opt) == [opt]


# --- the issue's case ------------------------------------------------------------------------------


def test_monai_basic_unet_is_declared_fixed_not_wrong(tmp_path, monkeypatch) -> None:
    model = monai()
    path = tmp_path / "m.onnx"
    with pytest.warns(DynamicAxesFixedWarning, match=r"height = 64, width = 64 .*Concat.*monai_like\.py:\d+ "
                      r"`if x_e\.shape\[-i - 1\] != x_0\.shape\[-i - 1\]:`"):  # fmt: skip
        r = to_onnx(model, path, torch.randn(1, 1, 64, 64))
    exp = read_metadata(path)["export"]
    assert exp["dynamic"] == ["batch"] and set(exp["fixed_axes"]) == {"height", "width"}
    assert input_dims(path) == ["batch", 1, 64, 64], "the file itself declares H and W fixed"
    assert "fixed: height = 64, width = 64" in r.summary() and r.metadata["parity_ok"]
    for n in (1, 2, 3):  # right at every size it still declares dynamic
        x = torch.randn(n, 1, 64, 64)
        with torch.no_grad():
            assert rel_l2(model(x), ort_run(path, x)) <= FP32_RTOL
    import onnxruntime as ort

    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="invalid dimensions"):
        ort_run(path, torch.randn(1, 1, 33, 32))  # refused by the declared shape, not a Concat mid-graph
    # that file given to to_tensorrt with a profile spanning H/W: refused, saying why
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())
    span = {"min_shape": (1, 1, 32, 32), "opt_shape": (1, 1, 64, 64), "max_shape": (2, 1, 96, 96)}
    with pytest.raises(ValueError, match=r"static size 64 on axis 2 .*declared it fixed.*Concat"):
        to_tensorrt(path, tmp_path / "f.plan", precision="fp32", **span)


def test_monai_with_fix_dynamic_false_is_an_error_naming_sizes_and_the_line(tmp_path) -> None:
    with pytest.raises(ExportParityError, match=r"input 2x1x127x127: onnxruntime fails where PyTorch runs: "
                       r"Concat node '.*': Non concat axis dimensions must match.*monai_like\.py:\d+"):  # fmt: skip
        to_onnx(monai("batch"), tmp_path / "m.onnx", torch.randn(1, 1, 64, 64), fix_dynamic=False)
    assert not list(tmp_path.iterdir())


def test_monai_exported_static_at_the_size_it_runs(tmp_path) -> None:
    model = monai()
    path = tmp_path / "m.onnx"
    r = to_onnx(model, path, torch.randn(1, 1, 33, 32), dynamic=("batch",))  # the issue's first size
    assert r.metadata["parity_ok"] and not r.metadata["export"]["fixed_axes"]
    for n in (1, 2):
        x = torch.randn(n, 1, 33, 32)
        with torch.no_grad():
            assert rel_l2(model(x), ort_run(path, x)) <= FP32_RTOL


# --- families whose graphs are dynamic: right at every size -----------------------------------------


def _families() -> dict:
    mil, smp = load_test_model("milesial_unet"), load_test_model("smp_like")
    return {
        # (every UNet config at odd sizes: test_export_onnx.py; here the issue's sizes at depth 3)
        "unet-same-bilinear": lambda: small_unet(depth=3, upsample="bilinear", align_corners=False),
        "milesial-transpose": lambda: lively(mil.MilesialUNet(1, 3, bilinear=False, base=4)),
        "milesial-bilinear": lambda: lively(mil.MilesialUNet(1, 3, bilinear=True, base=4)),
        "smp-like": lambda: lively(smp.SmpLikeUnet("resnet18", in_channels=1, classes=3,
                                                   decoder_channels=(16, 8, 8, 4, 4))),
    }


@pytest.mark.parametrize("name", list(_families()))
def test_dynamic_families_are_right_at_the_issues_sizes(name: str, tmp_path) -> None:
    model = _families()[name]()
    channels = 3 if name.startswith("unet") else 1
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, channels, 64, 64))
    assert r.metadata["export"]["dynamic"] == ["batch", "height", "width"] and not r.metadata["export"]["fixed_axes"]
    for n, _, h, w in ISSUE_SIZES:
        x = torch.randn(n, channels, h, w)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(r.path, x)
        assert got.shape == ref.shape and rel_l2(ref, got) <= FP32_RTOL, (name, x.shape)


# --- TensorRT's ONNX step --------------------------------------------------------------------------


def test_to_tensorrt_checks_its_onnx_inside_the_profile(tmp_path, monkeypatch) -> None:
    trt = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = monai("batch")
    span = {"min_shape": (1, 1, 32, 32), "opt_shape": (1, 1, 64, 64), "max_shape": (2, 1, 96, 96)}
    with pytest.raises(ExportParityError, match=r"input 2x1x63x63: onnxruntime fails.*monai_like\.py"):
        to_tensorrt(model, tmp_path / "m.plan", precision="fp32", **span)
    assert trt.last_config is None and not (tmp_path / "m.plan").exists()
    # a profile at one H/W (batch free) is what this model can take: built, its ONNX static in H/W
    b = to_tensorrt(model, tmp_path / "m.plan", precision="fp32", min_shape=(1, 1, 64, 64),
                    opt_shape=(1, 1, 64, 64), max_shape=(4, 1, 64, 64))  # fmt: skip
    assert input_dims(b.onnx) == ["batch", 1, 64, 64]


# --- the stand-in is MONAI ---------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
def test_monai_like_is_monai(norm: str) -> None:
    """tests/models/monai_like.py against the real MONAI BasicUNet: the same state_dict keys and shapes
    (strict load) and the same output, bit for bit, at odd sizes (its UpCat pad). Skipped without MONAI
    (not a test dependency; run once with monai 1.6.1 for issue 23: equal)."""
    nets = pytest.importorskip("monai.networks.nets", reason="monai is not installed (not a test dependency)")
    torch.manual_seed(0)
    spec = {"instance": ("instance", {"affine": True}), "batch": "batch", "group": ("group", {"num_groups": 4})}
    real = lively_norms(lively(nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=FEATURES,
                                              norm=spec[norm])))  # fmt: skip
    like = load_test_model("monai_like").BasicUNetLike(1, 3, FEATURES, norm=norm).eval()
    like.load_state_dict(real.state_dict(), strict=True)
    for shape in [(1, 1, 64, 64), *ISSUE_SIZES]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.equal(real(x), like(x)), shape
