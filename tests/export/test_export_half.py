"""fp16 ONNX (what strongly typed TensorRT builds from): half-precision weights and activations, softmax
kept in fp32, fp32 inputs and outputs; onnxruntime (CPU) against the fp32 PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from export_helpers import ort_run, small_unet

from unet_fast.kernels.spec import TOLERANCES
from unet_fast.parity import assert_parity

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import to_onnx  # noqa: E402

# One fp16 rounding per layer of a depth-2 U-Net: the per-op fp16 budget, on rel-L2 (max abs scaled by the
# output's range for logits heads).
ATOL, RTOL = TOLERANCES[torch.float16]

CASES = [
    dict(upsample="bilinear", align_corners=False, head="softmax"),
    dict(upsample="transpose", padding="valid", head="logits"),
    dict(upsample="nearest", head="sigmoid", norm=None),
]


@pytest.mark.parametrize("cfg", CASES, ids=["bilinear-softmax", "valid-transpose-logits", "nearest-sigmoid"])
def test_fp16_graph_matches_fp32_torch(cfg: dict, tmp_path) -> None:
    model = small_unet(num_classes=3, base_channels=8, **cfg)
    size = 32 if cfg.get("padding") != "valid" else 60
    result = to_onnx(
        model, tmp_path / "h.onnx", torch.randn(1, 3, size, size), precision="fp16", check_parity=False
    )
    graph = onnx.load(str(result.path)).graph
    f16 = onnx.TensorProto.FLOAT16
    weights = [t for t in graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == f16 for t in weights), "conv weights must be fp16"
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    for node in graph.node:
        if node.op_type == "Softmax":
            assert types.get(node.input[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, (
                "softmax must run in fp32"
            )
        if node.op_type == "Conv":
            assert types[node.output[0]] == f16
    assert result.metadata["export"]["fp32_nodes"] == (["/Softmax"] if cfg["head"] == "softmax" else [])
    for shape in [(1, 3, size, size), (2, 3, size + 16, size + 32)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(result.path, x)
        scale = max(1.0, float(ref.abs().max()))
        assert_parity(
            ref, got, max_abs=ATOL * scale, rel_l2=RTOL, min_agreement=0.99, what=f"fp16 onnx {shape}"
        )


def test_fp16_class_map_and_no_bf16(tmp_path) -> None:
    model = small_unet(num_classes=4, base_channels=8, upsample="bilinear")
    result = to_onnx(model, tmp_path / "h.onnx", torch.randn(1, 3, 32, 32), precision="fp16", class_map=True)
    assert all(p["argmax_agreement"] >= 0.99 for p in result.parity), result.parity
    with pytest.raises(ValueError, match="no bfloat16 before opset 22"):
        to_onnx(model, tmp_path / "b.onnx", torch.randn(1, 3, 32, 32), precision="bf16")
