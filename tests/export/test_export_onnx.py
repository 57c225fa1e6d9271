"""ONNX export of every UNet configuration and preset: onnxruntime (CPU) against the PyTorch reference on
random inputs at several sizes, including sizes other than the export example, odd sizes and batch > 1."""

from __future__ import annotations

import itertools

import pytest
import torch
from export_helpers import FP32_ATOL, FP32_RTOL, ort_run, small_unet, valid_sizes
from torch import nn

from unet_fast import unet_milesial, unet_original
from unet_fast.export.report import lively_weights
from unet_fast.parity import assert_parity

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import read_metadata, to_onnx  # noqa: E402

UPSAMPLES = [("transpose", True), ("bilinear", True), ("bilinear", False), ("nearest", True)]
CONFIGS = [
    dict(padding=p, upsample=u, align_corners=ac, norm=n)
    for (u, ac), p, n in itertools.product(UPSAMPLES, ("same", "valid"), ("batch", None))
]


def _id(cfg: dict) -> str:
    ac = f"-ac{int(cfg['align_corners'])}" if cfg["upsample"] == "bilinear" else ""
    return f"{cfg['padding']}-{cfg['upsample']}{ac}-{'bn' if cfg['norm'] else 'nobn'}"


def _check_against_torch(model: nn.Module, path, shapes, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for shape in shapes:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(path, x)
        assert got.shape == ref.shape, f"input {shape}: onnx {tuple(got.shape)} vs torch {tuple(ref.shape)}"
        torch.testing.assert_close(
            got, ref, atol=FP32_ATOL, rtol=FP32_RTOL, msg=lambda m, s=shape: f"{s}: {m}"
        )


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_unet_configs_match_torch_at_other_sizes(cfg: dict, tmp_path) -> None:
    model = small_unet(in_channels=3, num_classes=3, **cfg)
    if cfg["padding"] == "same":
        example, others = 32, [(2, 3, 20, 44), (1, 3, 37, 29)]  # odd sizes: pooling floors, the pad path runs
    else:
        sizes = valid_sizes(model, 30, 80)
        example, others = sizes[0], [(2, 3, sizes[1], sizes[2]), (1, 3, sizes[-1], sizes[0])]
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, example, example), check_parity=False)
    _check_against_torch(model, result.path, [(1, 3, example, example), *others])
    graph = onnx.load(str(result.path)).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"], "BatchNorm was not folded"
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert result.metadata["export"]["bn_folded"] == n_bn


def test_export_does_not_touch_the_model(tmp_path) -> None:
    model = small_unet(upsample="bilinear")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), check_parity=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "logits"])
def test_heads_and_class_map(head: str, tmp_path) -> None:
    model = small_unet(num_classes=4, head=head, upsample="nearest")
    result = to_onnx(
        model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), class_map=True, check_parity=False
    )
    out = onnx.load(str(result.path)).graph.output[0]
    assert out.name == "class_map" and out.type.tensor_type.elem_type == onnx.TensorProto.INT32
    x = torch.randn(2, 3, 40, 24)
    got = ort_run(result.path, x)
    with torch.no_grad():
        expect = model(x).argmax(1).to(torch.int32)
    assert got.shape == (2, 40, 24)
    assert_parity(expect, got, min_agreement=1.0, what="class map")


@pytest.mark.parametrize(("head", "threshold"), [("sigmoid", 0.5), ("logits", 0.0)])
def test_one_channel_class_map_uses_the_heads_threshold(head: str, threshold: float, tmp_path) -> None:
    model = small_unet(num_classes=1, head=head)
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), class_map=True)
    assert result.metadata["export"]["threshold"] == threshold
    x = torch.randn(1, 3, 36, 36)
    with torch.no_grad():
        expect = (model(x)[:, 0] > threshold).to(torch.int32)
    assert torch.equal(ort_run(result.path, x), expect)
    assert all(p["argmax_agreement"] == 1.0 for p in result.parity)


def test_metadata_records_version_config_and_parity(tmp_path) -> None:
    model = small_unet(upsample="bilinear", align_corners=False)
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    onnx.checker.check_model(str(result.path), full_check=True)
    meta = read_metadata(result.path)
    assert meta["unet_fast_version"] == __import__("unet_fast").__version__
    assert meta["source_model"]["config"] == model.config_dict()
    assert meta["export"]["dynamic"] == ["batch", "height", "width"]
    assert [r["coordinate_transformation_mode"] for r in meta["export"]["resize"]] == ["half_pixel"] * 2
    shapes = [tuple(p["input_shape"]) for p in meta["parity"]]
    # the example; every pooling level's parity flipped and batch 2; odd and not square
    assert shapes == [(1, 3, 32, 32), (2, 3, 95, 95), (1, 3, 49, 41)], "parity must cover other sizes"
    for p in meta["parity"]:
        assert p["max_abs"] < FP32_ATOL and p["rel_l2"] < FP32_RTOL and p["argmax_agreement"] == 1.0
    assert meta["parity"] == result.parity
    assert "onnxruntime" in result.summary() and "max_abs" in result.summary()


def test_dynamic_axes_declared_and_static_export_is_static(tmp_path) -> None:
    model = small_unet(padding="valid", upsample="transpose")
    s = valid_sizes(model, 40, 60)[0]
    dyn = to_onnx(model, tmp_path / "d.onnx", torch.randn(1, 3, s, s), check_parity=False)
    dims = [
        d.dim_param or d.dim_value for d in onnx.load(str(dyn.path)).graph.input[0].type.tensor_type.shape.dim
    ]
    assert dims == ["batch", 3, "height", "width"]
    odims = [d.dim_param for d in onnx.load(str(dyn.path)).graph.output[0].type.tensor_type.shape.dim]
    assert odims[0] == "batch" and odims[2:] == ["out_height", "out_width"]  # valid: output != input size

    static = to_onnx(model, tmp_path / "s.onnx", torch.randn(1, 3, s, s), dynamic=(), check_parity=False)
    dims = [d.dim_value for d in onnx.load(str(static.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, s, s]
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        ort_run(static.path, torch.randn(2, 3, s, s))


@pytest.mark.parametrize("preset", ["original", "milesial", "milesial-bilinear"])
def test_presets(preset: str, tmp_path) -> None:
    torch.manual_seed(0)
    if preset == "original":
        model, size = lively_weights(unet_original()), 188  # the smallest valid input of the 2015 U-Net
        shapes = [(1, 1, 204, 188)]
    else:
        model, size = lively_weights(unet_milesial(bilinear=preset.endswith("bilinear"))), 32
        shapes = [(2, 3, 48, 33)]
    c = model.config.in_channels
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, c, size, size), check_parity=False)
    _check_against_torch(model, result.path, [(1, c, size, size), *shapes])


# A wrong coordinate transform / rounding for each mode: the end-to-end check must see it.
WRONG = {("bilinear", True): ("coordinate_transformation_mode", b"half_pixel"),
         ("bilinear", False): ("coordinate_transformation_mode", b"align_corners"),
         ("nearest", True): ("nearest_mode", b"round_prefer_ceil")}  # fmt: skip


@pytest.mark.parametrize(("upsample", "ac"), list(WRONG), ids=["bilinear-ac1", "bilinear-ac0", "nearest"])
def test_upsample_semantics_are_visible_end_to_end(upsample: str, ac: bool, tmp_path) -> None:
    """Guards the tests above against weights that make the output blind to the upsampling: the same
    export with one Resize attribute changed must miss the reference by far more than the tolerance."""
    model = small_unet(num_classes=3, upsample=upsample, align_corners=ac, head="logits")
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), check_parity=False)
    proto = onnx.load(str(result.path))
    name, value = WRONG[(upsample, ac)]
    for node in proto.graph.node:
        if node.op_type == "Resize":
            next(a for a in node.attribute if a.name == name).s = value
    onnx.save(proto, str(tmp_path / "wrong.onnx"))
    x = torch.randn(2, 3, 20, 44)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(ort_run(result.path, x), ref, atol=FP32_ATOL, rtol=FP32_RTOL)
    assert (ort_run(tmp_path / "wrong.onnx", x) - ref).abs().max() > 100 * FP32_ATOL
