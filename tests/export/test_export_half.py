"""fp16 ONNX (what strongly typed TensorRT builds from): half-precision weights and activations with fp32
islands (softmax, normalisations, reductions, and what follows them up to the next conv), fp32 inputs and
outputs; onnxruntime (CPU) against the fp32 PyTorch reference (issue 23, item 7).

Tolerance (fp16): the ONNX Runtime output of the fp16 graph is compared with the fp32 PyTorch model on the
same input, and must be within `HALF_FACTOR` times what PyTorch's *own* fp16 (the model in half, a half
input) gives against that reference, never below the floor `HALF_FLOOR` (rounding of tiny models); where
PyTorch's CPU has no half kernel for a layer the bound is `HALF_ALONE`. Observed: 0.4-0.7x PyTorch's own
fp16 (the fp32 islands). Argmax agreement >= 99%. fp32 graphs: rel-L2 <= TOLERANCES[float32].
"""

from __future__ import annotations

import pytest
import torch
from export_helpers import (
    FP32_RTOL,
    lively,
    lively_norms,
    load_test_model,
    ort_run,
    rel_l2,
    small_unet,
    torch_half_rel_l2,
    valid_sizes,
)
from torch import Tensor, nn

from unet_fast.kernels.spec import TOLERANCES
from unet_fast.parity import assert_parity, compare

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast import UNet  # noqa: E402
from unet_fast.export import ExportError, to_onnx  # noqa: E402
from unet_fast.export.half import KEEP_FP32_OPS, convert_to_half  # noqa: E402

HALF_FACTOR, HALF_FLOOR, HALF_ALONE = 2.0, 5e-4, 2e-3
AGREEMENT = 0.99
F32, F16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16

# One fp16 rounding per layer of a depth-2 U-Net: the per-op fp16 budget, on rel-L2 (max abs scaled by the
# output's range for logits heads).
ATOL, RTOL = TOLERANCES[torch.float16]


def assert_half_parity(model: nn.Module, path, shapes: list[tuple[int, ...]], seed: int = 0) -> None:
    """ONNX Runtime on the fp16 file against the fp32 model, within the budget of PyTorch's own fp16."""
    g = torch.Generator().manual_seed(seed)
    for shape in shapes:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(path, x)
        assert got.shape == ref.shape and got.dtype == torch.float32, (shape, got.shape, got.dtype)
        r = compare(ref, got)
        own = torch_half_rel_l2(model, x, ref)
        bound = HALF_ALONE if own is None else max(HALF_FACTOR * own, HALF_FLOOR)
        assert r.nonfinite == 0 and r.rel_l2 <= bound, (
            f"{shape}: fp16 graph rel-L2 {r.rel_l2:.3g} > {bound:.3g} (PyTorch's own fp16: {own})"
        )
        assert r.argmax_agreement >= AGREEMENT, f"{shape}: argmax agreement {r.argmax_agreement:.4%}"


def value_types(path) -> dict[str, int]:
    """The element type of every tensor of the file (inputs, initializers, inferred values, outputs)."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = next(a.t.data_type for a in n.attribute if a.name == "value")
    return types


def assert_fp32_islands_are_fp32(path) -> None:
    """The kind of the bug: every node kept in fp32 has every float input fp32 (activations, initializers,
    constants), and every convolution computes in fp16."""
    types = value_types(path)
    graph = onnx.load(str(path)).graph
    for node in graph.node:
        floats = [types.get(n) for n in node.input if n and types.get(n) in (F32, F16)]
        if node.op_type in KEEP_FP32_OPS:
            assert set(floats) <= {F32}, f"{node.op_type} {node.name}: inputs {list(node.input)} typed {floats}"
        if node.op_type in ("Conv", "ConvTranspose"):
            assert set(floats) == {F16}, f"{node.name}: inputs typed {floats}"
        if node.op_type == "Resize" and len(node.input) > 2 and node.input[2]:
            assert types[node.input[2]] == F32, "Resize scales are float32 in ONNX, whatever X is"
    assert graph.input[0].type.tensor_type.elem_type == F32
    assert graph.output[0].type.tensor_type.elem_type in (F32, 6)  # fp32 scores, int32 class map


# --- the norm layers -------------------------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """LayerNorm over channels, timm's way: NHWC permute, nn.LayerNorm(C), back (ONNX LayerNormalization)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsFirstLayerNorm(nn.Module):
    """ConvNeXt's channels-first LayerNorm written out: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.randn(c) * 0.3)

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + self.bias[:, None, None]


class NormNet(nn.Module):
    """conv -> norm -> LeakyReLU -> maxpool -> conv -> bilinear x2 (a Resize with scales) -> 1x1 conv.
    `after_act`: the norm after the activation (a BatchNorm there cannot be folded)."""

    def __init__(self, norm: nn.Module, after_act: bool = False) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *((act, norm) if after_act else (norm, act)))
        self.rest = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(8, 3, 1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.rest(self.body(x))


NORMS = {
    "batch-folded": lambda: NormNet(nn.BatchNorm2d(8)),
    "batch-unfolded": lambda: NormNet(nn.BatchNorm2d(8), after_act=True),
    "instance": lambda: NormNet(nn.InstanceNorm2d(8)),
    "instance-affine": lambda: NormNet(nn.InstanceNorm2d(8, affine=True)),
    "instance-running-stats": lambda: NormNet(nn.InstanceNorm2d(8, track_running_stats=True)),
    "instance-affine-running-stats": lambda: NormNet(nn.InstanceNorm2d(8, affine=True, track_running_stats=True)),
    "group": lambda: NormNet(nn.GroupNorm(2, 8)),
    "group-1": lambda: NormNet(nn.GroupNorm(1, 8)),
    "layer-over-channels": lambda: NormNet(LayerNorm2d(8)),
    "layer-channels-first-written-out": lambda: NormNet(ChannelsFirstLayerNorm(8)),
    "local-response": lambda: NormNet(nn.LocalResponseNorm(3)),  # exported with an If subgraph
}


# fp32 too where the fp32 export changed (an InstanceNorm with running statistics is exported as the
# BatchNorm it computes: torch.onnx refused it for a dynamic batch)
NORM_CASES = [(n, "fp16") for n in NORMS] + [(n, "fp32") for n in NORMS if "running-stats" in n]


@pytest.mark.parametrize(("name", "precision"), NORM_CASES)
def test_norm_layers_export(name: str, precision: str, tmp_path) -> None:
    model = lively_norms(lively(NORMS[name]()))
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(2, 3, 32, 32), precision=precision)
    assert r.metadata["parity_ok"] and r.metadata["export"]["dynamic"] == ["batch", "height", "width"]
    shapes = [(2, 3, 32, 32), (3, 3, 45, 37), (1, 3, 20, 64)]  # batch > 1, odd sizes
    if precision == "fp16":
        assert_fp32_islands_are_fp32(r.path)
        assert_half_parity(model, r.path, shapes)
    else:
        for shape in shapes:
            x = torch.randn(shape)
            with torch.no_grad():
                ref = model(x)
            assert rel_l2(ref, ort_run(r.path, x)) <= FP32_RTOL, shape
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    if name in ("batch-folded", "instance-running-stats", "instance-affine-running-stats"):
        # an InstanceNorm with running statistics is the BatchNorm it computes, folded into the conv
        assert r.metadata["export"]["bn_folded"] == 1 and "BatchNormalization" not in ops
    if name == "batch-unfolded":
        assert "BatchNormalization" in ops


# --- the families we import ------------------------------------------------------------------------


def _unet_configs() -> list[dict]:
    """Every upsample mode x padding pair; norm and head cycle through their values."""
    ups = [("transpose", True), ("bilinear", True), ("bilinear", False), ("nearest", True)]
    heads, norms = ["softmax", "sigmoid", "logits"], ["batch", None]
    out = []
    for i, ((up, ac), pad) in enumerate((u, p) for u in ups for p in ("same", "valid")):
        classes = 1 if i == 1 else 3  # one sigmoid head with one channel, the others multi-label
        out.append(dict(upsample=up, align_corners=ac, padding=pad, head=heads[i % 3], norm=norms[i % 2],
                        num_classes=classes))  # fmt: skip
    return out


def _family(name: str) -> tuple[nn.Module, tuple[int, ...], tuple[str, ...]]:
    """(model, example shape, dynamic axes)."""
    if name.startswith("unet-"):
        cfg = _unet_configs()[int(name.split("-")[1])]
        model = small_unet(base_channels=8, **cfg)
        s = 60 if cfg["padding"] == "valid" else 32
        return model, (2, 3, s, s), ("batch", "height", "width")
    torch.manual_seed(0)
    if name.startswith("milesial"):
        m = load_test_model("milesial_unet").MilesialUNet(3, 2, bilinear=name.endswith("bilinear"), base=4)
        return lively(m), (2, 3, 32, 32), ("batch", "height", "width")
    if name == "smp-like":
        m = load_test_model("smp_like").SmpLikeUnet("resnet18", classes=3, decoder_channels=(16, 8, 8, 4, 4))
        return lively(m), (2, 3, 32, 32), ("batch", "height", "width")
    norm = name.split("-")[-1]  # monai-like: H/W are fixed by its pad decision (test_export_dynamic.py)
    m = load_test_model("monai_like").BasicUNetLike(3, 3, (8, 8, 16, 32, 64, 8), norm=norm)
    return lively_norms(lively(m)), (2, 3, 32, 32), ("batch",)


FAMILIES = [f"unet-{i}" for i in range(len(_unet_configs()))] + [
    "milesial-transpose", "milesial-bilinear", "smp-like", "monai-like-instance", "monai-like-group",
]  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_families_fp16(name: str, tmp_path) -> None:
    model, example, dynamic = _family(name)
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(example), dynamic=dynamic, precision="fp16")
    assert r.metadata["parity_ok"] and r.metadata["export"]["dynamic"] == list(dynamic)
    assert_fp32_islands_are_fp32(r.path)
    n, c, h, w = example
    if "height" in dynamic:  # odd sizes, batch > 1 (our valid-padding UNet takes only some sizes)
        a, b, d = (h + 5, h + 13, h + 16) if not isinstance(model, UNet) else _three(valid_sizes(model, h + 1, h + 40))
        shapes = [(n + 1, c, a, d), (1, c, b, a)]  # the example's own size: r.parity above
    else:
        shapes = [(n + 1, c, h, w)]
    assert_half_parity(model, r.path, shapes)


def _three(sizes: list[int]) -> tuple[int, int, int]:
    return sizes[0], sizes[len(sizes) // 2], sizes[-1]


# --- other ops that need fp32 ----------------------------------------------------------------------


class LoudHead(nn.Module):
    """Logits of magnitude ~100-1000 into a softmax (exp overflows fp16 beyond 11)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.conv(x) * 64, dim=1)


def test_softmax_over_large_logits_stays_fp32(tmp_path) -> None:
    model = lively(LoudHead())
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 24, 24), precision="fp16")
    assert r.metadata["export"]["fp32_nodes"] == ["/Softmax"]
    assert_fp32_islands_are_fp32(r.path)
    x = torch.randn(2, 3, 31, 17)
    with torch.no_grad():
        ref = model(x)
    got = ort_run(r.path, x)
    assert (got - ref).abs().max() < 2e-2 and compare(ref, got).argmax_agreement >= AGREEMENT


def test_written_out_norm_on_large_activations_does_not_overflow(tmp_path) -> None:
    """(x - u)^2 over activations of ~300 exceeds fp16's 65504: PyTorch's own fp16 loses the map there.
    The fp16 graph keeps ReduceMean/Pow in fp32 and what follows them (Sub, Add, Sqrt, Div) promoted, as
    torch.autocast does, so it is right."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ChannelsFirstLayerNorm(8), nn.Conv2d(8, 2, 1))
    model = lively(model)
    with torch.no_grad():
        model[0].weight.mul_(300)
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 16, 16), precision="fp16")
    x = torch.randn(2, 3, 21, 19)
    with torch.no_grad():
        ref = model(x)
        own = model.half()(x.half()).float()
    # PyTorch's own fp16: the variance overflows to inf, the normalised map to 0, the output to the bias
    assert rel_l2(ref, own) > 0.5, "the case must break plain fp16 to be a test"
    got = ort_run(r.path, x)
    assert torch.isfinite(got).all() and rel_l2(ref, got) < HALF_ALONE


def test_fp16_graph_matches_fp32_torch_and_types(tmp_path) -> None:
    model = small_unet(num_classes=3, base_channels=8, upsample="bilinear", align_corners=False, head="softmax")
    result = to_onnx(
        model, tmp_path / "h.onnx", torch.randn(1, 3, 32, 32), precision="fp16", check_parity=False
    )
    graph = onnx.load(str(result.path)).graph
    weights = [t for t in graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == F16 for t in weights), "conv weights must be fp16"
    assert result.metadata["export"]["fp32_nodes"] == ["/Softmax"]
    for shape in [(1, 3, 32, 32), (2, 3, 48, 64)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
        assert_parity(ref, ort_run(result.path, x), max_abs=ATOL * max(1.0, float(ref.abs().max())),
                      rel_l2=RTOL, min_agreement=AGREEMENT, what=f"fp16 onnx {shape}")  # fmt: skip


def test_fp16_class_map_and_no_bf16(tmp_path) -> None:
    model = small_unet(num_classes=4, base_channels=8, upsample="bilinear")
    result = to_onnx(model, tmp_path / "h.onnx", torch.randn(1, 3, 32, 32), precision="fp16", class_map=True)
    assert all(p["argmax_agreement"] >= 0.99 for p in result.parity), result.parity
    assert_fp32_islands_are_fp32(result.path)
    with pytest.raises(ValueError, match="no bfloat16 before opset 22"):
        to_onnx(model, tmp_path / "b.onnx", torch.randn(1, 3, 32, 32), precision="bf16")


# --- errors: ours, never onnx's ---------------------------------------------------------------------


def test_rewrite_errors_are_export_errors(tmp_path) -> None:
    from onnx import TensorProto, helper

    # a broken fp32 file handed to to_tensorrt(..., strongly typed fp16): shapes that cannot broadcast
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    k = helper.make_tensor("k", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    bad = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "k"], ["y"])], "g", [x], [y], [k]),
                            opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    with pytest.raises(ExportError, match=r"cannot infer the tensor types of the fp32 graph.*Incompatible dim"):
        convert_to_half(bad)
    model = small_unet()
    r = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 16, 16), precision="fp16", check_parity=False)
    with pytest.raises(ValueError, match="already converted"):
        convert_to_half(onnx.load(str(r.path)))
