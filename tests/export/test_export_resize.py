"""Resize semantics, the commonest U-Net export bug: each F.interpolate mode must become a Resize node that
computes exactly what PyTorch computes, including non-2x sizes and output lengths of 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from export_helpers import FP32_ATOL, FP32_RTOL, ort_run
from torch import nn

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import to_onnx  # noqa: E402
from unet_fast.export.onnx import fix_resize_nodes  # noqa: E402


class Interp(nn.Module):
    def __init__(self, size: tuple[int, int] | None, mode: str, align_corners: bool | None) -> None:
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners
        self.conv = nn.Conv2d(2, 3, 1)  # so that the model is a (N, classes, H, W) map like a U-Net's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = {"size": self.size} if self.size else {"scale_factor": 2}
        return self.conv(F.interpolate(x, mode=self.mode, align_corners=self.align_corners, **kw))


MODES = [
    ("nearest", None, "asymmetric"),
    ("bilinear", True, "align_corners"),
    ("bilinear", False, "half_pixel"),
]


@pytest.mark.parametrize(("mode", "ac", "ctm"), MODES, ids=["nearest", "bilinear-ac1", "bilinear-ac0"])
@pytest.mark.parametrize("size", [None, (1, 5), (3, 1), (7, 9), (37, 29)], ids=str)
def test_resize_matches_pytorch(mode: str, ac: bool | None, ctm: str, size, tmp_path) -> None:
    model = Interp(size, mode, ac).eval()
    dyn = ("batch", "height", "width") if size is None else ("batch",)
    result = to_onnx(model, tmp_path / "r.onnx", torch.randn(1, 2, 6, 5), dynamic=dyn, check_parity=False)
    (resize,) = result.metadata["export"]["resize"]
    assert resize["coordinate_transformation_mode"] == ctm
    shapes = [(2, 2, 6, 5)] + ([(1, 2, 11, 3), (1, 2, 1, 1)] if size is None else [])
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
        torch.testing.assert_close(ort_run(result.path, x), ref, atol=FP32_ATOL, rtol=FP32_RTOL)


def test_pytorch_half_pixel_is_rewritten_because_it_differs_at_length_one(tmp_path) -> None:
    """ONNX 'pytorch_half_pixel' sends an output length of 1 to source 0; PyTorch does not. A graph that
    carries it (from another exporter) is rewritten to 'half_pixel', and this shows why."""
    model = Interp((1, 5), "bilinear", False).eval()
    x = torch.randn(1, 2, 6, 5)
    torch.onnx.export(model, (x,), str(tmp_path / "a.onnx"), dynamo=False, opset_version=17)
    proto = onnx.load(str(tmp_path / "a.onnx"))
    (node,) = [n for n in proto.graph.node if n.op_type == "Resize"]
    next(a for a in node.attribute if a.name == "coordinate_transformation_mode").s = b"pytorch_half_pixel"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with torch.no_grad():
        ref = model(x)
    assert (ort_run(tmp_path / "bad.onnx", x) - ref).abs().max() > 0.01, "the trap no longer exists?"
    fix_resize_nodes(proto)
    onnx.save(proto, str(tmp_path / "fixed.onnx"))
    torch.testing.assert_close(ort_run(tmp_path / "fixed.onnx", x), ref, atol=FP32_ATOL, rtol=FP32_RTOL)


def test_non_pytorch_resize_is_named(tmp_path) -> None:
    model = Interp(None, "bilinear", False).eval()
    torch.onnx.export(
        model, (torch.randn(1, 2, 6, 5),), str(tmp_path / "a.onnx"), dynamo=False, opset_version=17
    )
    proto = onnx.load(str(tmp_path / "a.onnx"))
    (node,) = [n for n in proto.graph.node if n.op_type == "Resize"]
    next(a for a in node.attribute if a.name == "coordinate_transformation_mode").s = b"asymmetric"
    with pytest.raises(ValueError, match=f"Resize node '{node.name}'.*does not reproduce"):
        fix_resize_nodes(proto)
