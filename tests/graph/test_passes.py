"""Each graph pass on its own, on small graphs: structure (what was fused) and numerics (the graph, and the
plan executed by the reference kernels on poisoned buffers, still equal the module)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from graph_helpers import assert_close, graph_of, kinds, lower_and_run, randomize
from torch import nn

from unet_fast.graph.ir import Conv
from unet_fast.graph.passes import run_passes
from unet_fast.graph.passes.eliminate_concat import eliminate_concats
from unet_fast.graph.passes.fold_bn import fold_batch_norm
from unet_fast.graph.passes.fuse_activation import fuse_activations
from unet_fast.graph.passes.fuse_head import fuse_head
from unet_fast.graph.passes.fuse_pool import fuse_pools
from unet_fast.graph.passes.fuse_residual import fuse_residuals
from unet_fast.graph.passes.output_mode import model_gives_output, set_output


class ConvBnAct(nn.Module):
    def __init__(self, act: nn.Module, transpose: bool = False) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(5, 6, 2, 2) if transpose else nn.Conv2d(5, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


@pytest.mark.parametrize("transpose", [False, True])
def test_fold_bn_alone(transpose: bool) -> None:
    m = randomize(ConvBnAct(nn.Identity(), transpose))
    x = torch.randn(2, 5, 7, 9)
    g = graph_of(m, x)
    assert g.count("batch_norm") == 1
    assert fold_batch_norm(g) == 1
    assert g.count("batch_norm") == 0
    assert_close(g.evaluate(x), m(x))
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["ConvTranspose2x2" if transpose else "Conv"]
    assert_close(out, m(x))


def test_fold_bn_skips_shared_conv_output() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # the conv output is used unfolded too: folding would be wrong

    m = randomize(Shared())
    x = torch.randn(1, 3, 6, 6)
    g = graph_of(m, x)
    assert fold_batch_norm(g) == 0
    plan, out = lower_and_run(g, x)
    assert "Fallback" in kinds(plan)
    assert_close(out, m(x))


@pytest.mark.parametrize(
    "act,kind", [(nn.ReLU(), "relu"), (nn.LeakyReLU(0.2), "leaky_relu"), (nn.SiLU(), "silu")]
)
def test_fuse_activation_alone(act: nn.Module, kind: str) -> None:
    m = randomize(ConvBnAct(act))
    x = torch.randn(2, 5, 8, 5)
    g = graph_of(m, x)
    fold_batch_norm(g)
    assert fuse_activations(g) == 1
    assert g.count("act") == 0
    (step,) = lower_and_run(g, x)[0].steps
    assert isinstance(step, Conv) and step.act == kind
    if kind == "leaky_relu":
        assert step.negative_slope == pytest.approx(0.2)
    assert_close(lower_and_run(g, x)[1], m(x))


def test_unfused_activation_falls_back_and_stays_right() -> None:
    m = randomize(ConvBnAct(nn.ReLU()))
    x = torch.randn(1, 5, 6, 6)
    g = graph_of(m, x)
    fold_batch_norm(g)  # no fuse_activations: the ReLU is a PyTorch step
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Fallback"]
    assert_close(out, m(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        y += x
        return F.relu(y)


def test_fuse_residual_alone() -> None:
    m = randomize(Residual())
    x = torch.randn(2, 4, 9, 7)
    g = graph_of(m, x)
    fold_batch_norm(g)
    fuse_activations(g)
    assert g.count("add") == 1
    assert fuse_residuals(g) == 1
    assert g.count("add") == 0
    fuse_activations(g)  # the ReLU after the add now follows the conv
    assert_close(g.evaluate(x), m(x))
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Conv"]
    last = plan.steps[1]
    assert last.residual is not None and last.residual.buffer == plan.input.buffer and last.act == "relu"
    assert_close(out, m(x))


class PoolNet(nn.Module):
    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.c1, self.pool, self.c2 = nn.Conv2d(3, 6, 3, padding=1), pool, nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.pool(torch.relu(self.c1(x))))


def test_fuse_pool_alone() -> None:
    m = PoolNet(nn.MaxPool2d(2)).eval()
    x = torch.randn(2, 3, 11, 9)  # odd: the pool floors
    g = graph_of(m, x)
    fuse_activations(g)
    plan_unfused, out = lower_and_run(g, x)
    assert kinds(plan_unfused) == ["Conv", "Pool", "Conv"]
    assert_close(out, m(x))
    assert fuse_pools(g) == 1
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Conv"]
    assert plan.steps[0].pool_out is not None
    assert_close(out, m(x))


def test_pool_other_than_2x2_falls_back() -> None:
    m = PoolNet(nn.MaxPool2d(3, 2, 1)).eval()
    x = torch.randn(1, 3, 12, 12)
    g = graph_of(m, x)
    fuse_activations(g)
    assert fuse_pools(g) == 0
    plan, out = lower_and_run(g, x)
    fb = [s for s in plan.steps if s.kind == "Fallback"]
    assert len(fb) == 1 and "3x3" in fb[0].reason
    assert_close(out, m(x))


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(3, 5, 2, 2)
        self.c = nn.Conv2d(3, 3, 1)
        self.out = nn.Conv2d(9, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        b = self.b(self.c(F.max_pool2d(x, 2)))
        return self.out(torch.cat([a, b], dim=1))


def test_eliminate_concat_alone() -> None:
    m = CatNet().eval()
    x = torch.randn(2, 3, 10, 14)
    g = graph_of(m, x)
    plan, out = lower_and_run(g, x, virtual_concat=False)
    assert "Concat" in kinds(plan)
    assert_close(out, m(x))
    assert eliminate_concats(g) == 1
    plan, out = lower_and_run(g, x)
    assert "Concat" not in kinds(plan)
    a = next(s for s in plan.steps if s.name.startswith("conv2d") and s.out.channels == 4)
    b = next(s for s in plan.steps if s.kind == "ConvTranspose2x2")
    # both producers write slots of one buffer, which the consumer reads whole
    assert a.out.buffer == b.out.buffer and (a.out.channel_offset, b.out.channel_offset) == (0, 4)
    consumer = plan.steps[-1]
    assert len(consumer.inputs) == 1 and consumer.inputs[0].buffer == a.out.buffer
    assert_close(out, m(x))


class UpNet(nn.Module):
    """Upsample (various modes) then pad to the skip's size then concat: milesial's Up."""

    def __init__(self, mode: str, align_corners: bool | None) -> None:
        super().__init__()
        self.mode, self.ac = mode, align_corners
        self.down, self.out = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(7, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.down(x), scale_factor=2, mode=self.mode, align_corners=self.ac)
        dy, dx = x.shape[2] - y.shape[2], x.shape[3] - y.shape[3]
        y = F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.out(torch.cat([x, y], dim=1))


@pytest.mark.parametrize("mode,ac", [("nearest", None), ("bilinear", True), ("bilinear", False)])
def test_fuse_upsample_alone(mode: str, ac: bool | None) -> None:
    m = UpNet(mode, ac).eval()
    x = torch.randn(2, 3, 13, 10)  # odd height: the upsampled path (14 rows) is cropped by a negative pad
    g = graph_of(m, x)
    plan, out = lower_and_run(g, x, fuse_reads=False, virtual_concat=False)
    assert kinds(plan).count("Resample") == 2 and "Concat" in kinds(plan)  # resample, pad, concat
    assert_close(out, m(x))
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Conv"]
    up = plan.steps[1].inputs[1]
    assert (
        up.resample is not None and up.resample.mode == mode and up.offset == (1, 0) and up.size == (13, 10)
    )
    if mode == "bilinear":
        assert up.resample.align_corners == ac
    assert_close(out, m(x))


def test_crop_becomes_a_view_offset() -> None:
    class Crop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, 3)
            self.out = nn.Conv2d(6, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.a(x)
            b = self.b(a)
            return self.out(torch.cat([a[:, :, 1:-1, 1:-1], b], dim=1))

    m = Crop().eval()
    x = torch.randn(1, 2, 12, 11)
    plan, out = lower_and_run(graph_of(m, x), x)
    assert kinds(plan) == ["Conv", "Conv", "Conv"]
    crop = plan.steps[2].inputs[0]
    assert crop.offset == (1, 1) and crop.size == (8, 7)
    assert_close(out, m(x))


class HeadNet(nn.Module):
    def __init__(self, op: str, k: int = 3) -> None:
        super().__init__()
        self.op = op
        self.body, self.head = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.body(x)))
        return {"softmax": lambda t: torch.softmax(t, 1), "sigmoid": torch.sigmoid, "logits": lambda t: t,
                "argmax": lambda t: t.argmax(1)}[self.op](y)  # fmt: skip


@pytest.mark.parametrize("op", ["softmax", "sigmoid", "logits", "argmax"])
def test_fuse_head_alone(op: str) -> None:
    m = HeadNet(op).eval()
    x = torch.randn(2, 3, 7, 6)
    g = graph_of(m, x)
    fuse_activations(g)
    assert fuse_head(g)
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Head"] and plan.steps[1].op == op
    ref = m(x)
    if op == "argmax":
        assert out.dtype == torch.int64 and torch.equal(out, ref)
    else:
        assert_close(out, ref)


@pytest.mark.parametrize(
    "mode,op", [("logits", "logits"), ("probabilities", "softmax"), ("classes", "argmax")]
)
def test_output_modes(mode: str, op: str) -> None:
    m = HeadNet("softmax").eval()
    x = torch.randn(1, 3, 5, 6)
    g = graph_of(m, x)
    set_output(g, mode)
    fuse_head(g)
    plan, out = lower_and_run(g, x)
    assert plan.steps[-1].op == op
    logits = m.head(torch.relu(m.body(x)))
    want = {"logits": logits, "probabilities": torch.softmax(logits, 1), "classes": logits.argmax(1)}[mode]
    if mode == "classes":
        assert torch.equal(out, want)
    else:
        assert_close(out, want)


@pytest.mark.parametrize("head", ["logits", "softmax", "sigmoid", "argmax"])
def test_model_gives_output_names_which_modes_are_the_models_own(head: str) -> None:
    g = graph_of(HeadNet(head).eval(), torch.randn(1, 3, 5, 6))
    own = {mode: model_gives_output(g, mode) for mode in ("model", "logits", "probabilities", "classes")}
    assert own == {"model": True, "logits": head == "logits", "probabilities": head in ("softmax", "sigmoid"),
                   "classes": head == "argmax"}  # fmt: skip


def test_probabilities_of_a_single_channel_model_is_sigmoid() -> None:
    m = HeadNet("logits", k=1).eval()
    x = torch.randn(1, 3, 5, 6)
    g = graph_of(m, x)
    set_output(g, "probabilities")
    fuse_head(g)
    plan, out = lower_and_run(g, x)
    assert plan.steps[-1].op == "sigmoid"
    assert_close(out, torch.sigmoid(m(x)))
    with pytest.raises(ValueError, match="at least 2"):
        set_output(graph_of(m, x), "classes")


def test_head_not_1x1_keeps_conv_and_falls_back_for_the_op() -> None:
    class Head3(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.conv(x), 1)

    m = Head3().eval()
    x = torch.randn(1, 3, 6, 6)
    g = graph_of(m, x)
    assert not fuse_head(g)
    plan, out = lower_and_run(g, x)
    assert kinds(plan) == ["Conv", "Fallback"]
    assert_close(out, m(x))


def test_run_passes_rejects_unknown_pass() -> None:
    m = HeadNet("logits").eval()
    with pytest.raises(ValueError, match="unknown passes"):
        run_passes(graph_of(m, torch.randn(1, 3, 4, 4)), enabled={"fold_everything"})
