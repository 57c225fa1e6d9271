"""The export computes what the model computes (issue 12, fault 3).

(a) BatchNorm folding runs on a torch.fx symbolic trace, where `isinstance(x, Tensor)` and
`torch.jit.isinstance` see a Proxy: a branch is dropped. The folded copy is verified against the model on
the example input and a fold that changes the output is dropped. (b) to_onnx / to_tensorrt fail, naming
the size and the error, when their own onnxruntime parity check is out of tolerance; `allow_mismatch=True`
keeps the file, `check_parity=False` skips the check."""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from typing import Optional

import pytest
import torch
from export_helpers import ort_run
from fake_tensorrt import make_fake_tensorrt
from torch import Tensor, nn

from unet_fast.bench.workloads import lively_weights
from unet_fast.export.prepare import fold_batchnorm
from unet_fast.parity import compare

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.cli import main
from unet_fast.export import DynamicAxesFixedWarning, ExportParityError, read_metadata, to_onnx, to_tensorrt

# ONNX Runtime vs PyTorch, fp32, BN folded or not: rounding only (observed ~1e-7).
REL_L2 = 1e-5


class IsinstanceBranch(nn.Module):
    """The issue's case: conv and bn as attributes; `* 2` behind an isinstance check (True when run)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        if isinstance(x, torch.Tensor):
            y = y * 2
        return y


class Convolution(nn.Sequential):
    """MONAI's Convolution: the conv, then an ADN Sequential holding the norm: conv and BN are not
    neighbours in one Sequential, so only the torch.fx pass can pair them."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, 3, padding=1))
        self.add_module("adn", nn.Sequential(OrderedDict(N=nn.BatchNorm2d(cout), A=nn.ReLU())))


class TwoConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("conv_0", Convolution(cin, cout))
        self.add_module("conv_1", Convolution(cout, cout))


class UpCat(nn.Module):
    """MONAI BasicUNet's UpCat: the skip is concatenated `if torch.jit.isinstance(x_e, torch.Tensor)`."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.convs = TwoConv(cin // 2 + cskip, cout)

    def forward(self, x: Tensor, x_e: Optional[Tensor]) -> Tensor:  # noqa: UP045 (MONAI's spelling)
        x0 = self.upsample(x)
        if torch.jit.isinstance(x_e, torch.Tensor):
            x = self.convs(torch.cat([x_e, x0], dim=1))
        else:
            x = self.convs(x0)
        return x


class MonaiLikeUNet(nn.Module):
    """A two-level BasicUNet(norm="batch") in MONAI's structure (MONAI itself need not be installed)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv_0 = TwoConv(3, 8)
        self.down_1 = nn.Sequential(nn.MaxPool2d(2), TwoConv(8, 16))
        self.upcat_1 = UpCat(16, 8, 8)
        self.final_conv = nn.Conv2d(8, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        return self.final_conv(self.upcat_1(x1, x0))


class SizeBranch(nn.Module):
    """A Python branch on the input width: the tracer bakes in the example's branch, so at another width
    the ONNX graph computes something else. No BN: the fold is not what goes wrong here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if x.shape[-1] > 40:
            y = y * 3
        return y


def lively(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return lively_weights(model, 0)


X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _rel_l2(model: nn.Module, got: Tensor, x: Tensor) -> float:
    with torch.no_grad():
        return compare(model(x), got).rel_l2


def test_isinstance_branch_fold_is_verified_and_dropped() -> None:
    model = lively(IsinstanceBranch())
    folded, report = fold_batchnorm(model, X)
    assert report.folded == [] and report.left == ["bn"]
    assert len(report.rejected) == 1 and "relative L2 difference 0.5" in report.rejected[0]
    with torch.no_grad():
        assert torch.equal(folded(X), model(X))


def test_isinstance_branch_exports_the_times_two(tmp_path) -> None:
    model = lively(IsinstanceBranch())
    r = to_onnx(model, tmp_path / "m.onnx", X)
    assert r.metadata["parity_ok"] and all(p["rel_l2"] < REL_L2 for p in r.parity), r.parity
    assert r.metadata["export"]["bn_fold_rejected"], "the dropped fold must be recorded"
    for shape in [(1, 3, 32, 32), (2, 3, 17, 45)]:
        x = torch.randn(shape)
        assert _rel_l2(model, ort_run(r.path, x), x) < REL_L2


def test_monai_like_jit_isinstance_exports_with_sequential_folds(tmp_path) -> None:
    model = lively(MonaiLikeUNet())
    with torch.no_grad(), warnings.catch_warnings():  # plain torch.onnx.export works: so must we
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), str(tmp_path / "plain.onnx"), dynamo=False, opset_version=17)
    folded, report = fold_batchnorm(model, X)
    # the fx fold drops the concat, so the next conv sees 8 channels where it takes 16: caught, dropped
    assert len(report.rejected) == 1 and "channels" in report.rejected[0], report.rejected
    assert report.folded == [] and len(report.left) == 6
    with torch.no_grad():
        assert torch.equal(folded(X), model(X))
    r = to_onnx(model, tmp_path / "m.onnx", X)
    assert r.metadata["parity_ok"] and r.metadata["export"]["bn_folded"] == 0
    for shape in [(1, 3, 32, 32), (3, 3, 48, 20)]:
        x = torch.randn(shape)
        assert _rel_l2(model, ort_run(r.path, x), x) < REL_L2


def test_out_of_tolerance_export_fails_naming_the_size(tmp_path) -> None:
    model = lively(SizeBranch())
    path = tmp_path / "m.onnx"
    # fix_dynamic=False: a graph wrong at another width is an error like any parity failure
    with pytest.raises(ExportParityError, match=r"input 2x3x95x95: rel_l2 0\.667 > 0\.0001.*"
                       r"test_export_faithful\.py:\d+ `if x\.shape\[-1\] > 40:`.*allow_mismatch=True"):  # fmt: skip
        to_onnx(model, path, X, fix_dynamic=False)
    assert not path.exists(), "a file that computes something else must not be left behind"
    assert not list(tmp_path.iterdir()), "nor a partial file beside it"
    with pytest.warns(UserWarning, match="kept although parity is out of tolerance"):
        r = to_onnx(model, path, X, allow_mismatch=True, fix_dynamic=False)
    assert path.exists() and read_metadata(path)["parity_ok"] is False
    assert "OUT OF TOLERANCE" in r.summary()
    with pytest.warns(UserWarning, match=r"not verified \(no parity check\).*`if x\.shape\[-1\] > 40:`"):
        r = to_onnx(model, path, X, check_parity=False)
    assert r.parity == [] and "parity_ok" not in r.metadata
    r = to_onnx(model, path, X, dynamic=())  # static: only the example's size, where the branch is right
    assert r.metadata["parity_ok"]


def test_axis_wrong_at_other_sizes_is_declared_fixed(tmp_path) -> None:
    """The default: the width the trace baked in is exported fixed (and said so); batch and height stay
    dynamic and right."""
    model = lively(SizeBranch())
    path = tmp_path / "m.onnx"
    with pytest.warns(DynamicAxesFixedWarning, match=r"width = 32 .*input 2x3x95x95: rel_l2 0\.667.*"
                      r"`if x\.shape\[-1\] > 40:`"):  # fmt: skip
        r = to_onnx(model, path, X)
    exp = read_metadata(path)["export"]
    assert exp["dynamic"] == ["batch", "height"] and exp["dynamic_requested"] == ["batch", "height", "width"]
    assert exp["fixed_axes"]["width"]["size"] == 32 and "95x95" in exp["fixed_axes"]["width"]["failures"][0]
    assert r.metadata["parity_ok"] and "fixed: width = 32" in r.summary()
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", 32]
    for shape in [(3, 3, 57, 32), (1, 3, 31, 32)]:  # right at every size it still declares dynamic
        x = torch.randn(shape)
        assert _rel_l2(model, ort_run(path, x), x) < REL_L2


class SizeFlip(SizeBranch):
    """Scores negated above width 40: every pixel's class flips there (a class-map head sees that)."""

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return -y if x.shape[-1] > 40 else y


def test_class_map_export_fails_on_disagreement(tmp_path) -> None:
    with pytest.raises(ExportParityError, match=r"input 2x3x95x95: class-map agreement \d"):
        to_onnx(lively(SizeFlip()), tmp_path / "m.onnx", X, class_map=True, fix_dynamic=False)


def test_to_tensorrt_fails_before_building(tmp_path, monkeypatch) -> None:
    trt = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = lively(SizeBranch())
    shapes = {"min_shape": (1, 3, 32, 32), "opt_shape": (1, 3, 32, 32), "max_shape": (2, 3, 64, 64)}
    # the ONNX step is checked inside the profile (a width > 40 there), and may not fix an axis it spans
    with pytest.raises(ExportParityError, match=r"input 2x3x63x63: rel_l2"):
        to_tensorrt(model, tmp_path / "m.plan", precision="fp32", **shapes)
    assert trt.last_config is None and not (tmp_path / "m.plan").exists()
    with pytest.warns(UserWarning):
        to_tensorrt(model, tmp_path / "m.plan", precision="fp32", allow_mismatch=True, **shapes)
    assert (tmp_path / "m.plan").exists()


def test_cli_parity_failure_is_exit_1_and_allow_mismatch_keeps_the_file(tmp_path, monkeypatch, capsys) -> None:
    import unet_fast.export.onnx as onnx_module

    real = onnx_module.parity_failures
    monkeypatch.setattr(onnx_module, "parity_failures",
                        lambda rows, *a: [f"input {rows[0]['input_shape']}: simulated", *real(rows, *a)])  # fmt: skip
    out = tmp_path / "m.onnx"
    base = ["export", "onnx", "--out", str(out), "--base-channels", "4", "--depth", "2",
            "--input-shape", "1,3,32,32"]  # fmt: skip
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "does not compute what the model computes" in err and "--allow-mismatch" in err
    assert not out.exists()
    assert main([*base, "--allow-mismatch"]) == 0
    assert out.exists() and "OUT OF TOLERANCE" in capsys.readouterr().out
