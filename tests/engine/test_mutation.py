"""Every write in a model's forward is honoured, or the model is refused with the reason (issue 23, item 1).

torch.export keeps in-place ops as written: `y[:, 1:2] = 0` is a `slice` view and a `fill_` nobody reads,
and the capture used to prune it, so the engine returned `y` without the edit. The kind, as a matrix: slice
assignment, in-place arithmetic on slices / selects / transposed views, clamp_, masked_fill_, index_put_,
copy_, fill_, zero_, in-place activations on views, writes into an intermediate that is then concatenated or
read again (through a view taken before the write, or read before it), in-place chains on a whole value
(which stay fused), a write into the model's input (reproduced: the caller's tensor changes as eager's
does) and a write into a buffer or parameter (refused, naming it). Each model runs on the torch and cpu
backends (and cpu bf16 for a subset), batch 2, odd sizes (the example's and a second one served by the same
capture), lively weights, poisoned buffers, against the eager model on a copy of the same input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import poisoned
from torch import Tensor, nn

import unet_fast
from unet_fast.bench.workloads import lively_weights
from unet_fast.graph.capture import unsafe_writes
from unet_fast.kernels import cpu_bf16
from unet_fast.parity import assert_parity

# rel-L2 against the fp32 eager model; a dropped edit is 0.3-0.9 (the figures)
REL_L2 = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
SHAPES = ((2, 3, 19, 23), (2, 3, 21, 17))  # the example's, then another size from the same capture


def _slice_zero(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 1:2] = 0
    return y


def _slice_mul(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, :1] *= 2
    return y


def _select_add(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 2] += 1.5
    return y


def _row_band(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, :, 3:7] = 0
    return y


def _column_band_ellipsis(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[..., 2:5] = -1.25
    return y


def _transposed_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y.transpose(2, 3)[:, :, :2] = 0  # columns 0-1 through a transposed view
    return y


def _clamp_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 1:3].clamp_(-0.1, 0.1)
    return y


def _masked_fill_whole(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y.masked_fill_(y > 0.5, 0.0)  # a write into a whole value: read as the out-of-place op
    return y


def _masked_fill_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, :2].masked_fill_(y[:, :2] < 0, 0.0)
    return y


def _index_put(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, torch.arange(0, 6, 2)] = 0.5
    return y


def _copy_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, :1].copy_(y[:, 5:6])
    return y


def _fill_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 3:].fill_(0.25)
    return y


def _zero_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 1:2].zero_()
    return y


def _relu_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    torch.relu_(y[:, :3])
    return y


def _leaky_relu_inplace_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    F.leaky_relu(y[:, 2:], 0.2, inplace=True)
    return y


def _sigmoid_view(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y[:, 4:].sigmoid_()
    return y


def _whole_chain(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y.mul_(0.5).add_(0.25).relu_()  # in-place ops on a whole value: no functionalization needed
    return y


def _residual_inplace(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    y += m.conv3(torch.relu(m.conv1(x)))  # the smp / torchvision residual `out += identity`
    return y


def _written_then_concatenated(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    a = m.conv1(x)
    b = m.conv3(a)  # reads `a` before the write
    a[:, :4] = 0
    return m.conv4(torch.cat([a, b], 1))  # reads it after


def _view_taken_before_write(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    v = y[:, :2]
    y.mul_(2)  # v sees the write
    return torch.cat([v, y], 1)


def _read_before_write(m: Edits, x: Tensor, y: Tensor) -> Tensor:
    b = y + 1  # the old value
    y.relu_()
    return torch.cat([y, b], 1)


EDITS: dict[str, Callable[[Edits, Tensor, Tensor], Tensor]] = {
    f.__name__.lstrip("_"): f
    for f in (_slice_zero, _slice_mul, _select_add, _row_band, _column_band_ellipsis, _transposed_view, _clamp_view,
              _masked_fill_whole, _masked_fill_view, _index_put, _copy_view, _fill_view, _zero_view, _relu_view,
              _leaky_relu_inplace_view, _sigmoid_view, _whole_chain, _residual_inplace, _written_then_concatenated,
              _view_taken_before_write, _read_before_write)
}  # fmt: skip
# writes the capture reads as value ops without functionalizing (the common in-place activations and adds)
VALUE_OPS = {"masked_fill_whole", "whole_chain", "residual_inplace", "read_before_write", "index_put"}  # y[:, idx] = v: index_put_ on y
BF16 = ("slice_zero", "select_add", "written_then_concatenated", "view_taken_before_write", "whole_chain")


class Edits(nn.Module):
    """conv -> relu -> conv (16 input channels: the cpu backend's Winograd) -> an in-place edit."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 6, 3, padding=1)
        self.conv4 = nn.Conv2d(22, 5, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        return EDITS[self.kind](self, x, y)


@cache
def _fast(kind: str) -> tuple[nn.Module, unet_fast.FusedUNet]:
    m = lively_weights(Edits(kind), seed=len(kind)).eval()
    return m, unet_fast.optimize(m, torch.randn(SHAPES[0]), backend="torch")


def _check(m: nn.Module, fast: unet_fast.FusedUNet, dtype: torch.dtype, what: str) -> None:
    g = torch.Generator().manual_seed(7)
    for shape in SHAPES:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = m(x.clone())
            out = poisoned(fast, x)(x)
        assert type(out) is Tensor and out.shape == ref.shape and out.dtype == ref.dtype
        assert_parity(ref, out, rel_l2=REL_L2[dtype], what=f"{what} at {shape}")
    assert len(fast.captures) == 1, [c.reason for c in fast.captures]


@pytest.mark.parametrize("kind", sorted(EDITS))
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_every_write_is_honoured(kind: str, backend: str) -> None:
    m, fast = _fast(kind)
    if backend != "torch":
        fast = fast.with_backend(backend)
    _check(m, fast, torch.float32, f"{kind} on {backend}")


@pytest.mark.skipif(not cpu_bf16.available_tile_backends(), reason="unet_fast._C without bf16 tile ops")
@pytest.mark.parametrize("kind", BF16)
def test_writes_on_cpu_bf16(kind: str) -> None:
    m, fast = _fast(kind)
    _check(m, fast.with_backend("cpu", torch.bfloat16), torch.bfloat16, f"{kind} on cpu bf16")


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_which_writes_need_functionalizing(kind: str) -> None:
    """Writes into a whole value nothing reads under its old name stay value ops (the fused plan of the
    common in-place ReLU / residual add is unchanged); every other write is functionalized."""
    m = Edits(kind).eval()
    ep = torch.export.export(m, (torch.randn(SHAPES[0]),), strict=False)
    assert bool(unsafe_writes(ep.graph)) is (kind not in VALUE_OPS), unsafe_writes(ep.graph)


class InputWrites(nn.Module):
    """A forward that writes into its input: an effect of the model the module reproduces."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "scale":
            x.mul_(2)
            return self.conv(x)
        if self.kind == "slice":
            x[:, :1] = 0
            return self.conv(x)
        if self.kind == "after_use":  # the output reads the old value; the caller's tensor changes after
            y = self.conv(x)
            x.add_(1)
            return y
        x.clamp_(-0.5, 0.5)  # "returned": the model returns its own (written) input too
        return torch.cat([self.conv(x), x], 1)


@pytest.mark.parametrize("kind", ["scale", "slice", "after_use", "returned"])
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_a_write_into_the_input_is_reproduced(kind: str, backend: str) -> None:
    m = lively_weights(InputWrites(kind), seed=3).eval()
    fast = unet_fast.optimize(m, torch.randn(SHAPES[0]), backend=backend)
    g = torch.Generator().manual_seed(5)
    for shape in SHAPES:
        x = torch.randn(shape, generator=g)
        x_eager = x.clone()
        with torch.no_grad():
            ref = m(x_eager)
            out = fast(x)
        assert_parity(ref, out, rel_l2=1e-5, what=f"{kind} output at {shape}")
        torch.testing.assert_close(x, x_eager, rtol=0, atol=0, msg=f"{kind}: the caller's input at {shape}")


class BufferWrites(nn.Module):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("running_mean", torch.zeros(4))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.what == "counter":
            self.calls += 1
        elif self.what == "statistic":
            self.running_mean.mul_(0.9).add_(0.1 * y.mean((0, 2, 3)))
        else:
            with torch.no_grad():
                self.conv.bias.mul_(1.0)
        return y


@pytest.mark.parametrize(("what", "name"), [("counter", "calls"), ("statistic", "running_mean"),
                                            ("parameter", "conv.bias")])  # fmt: skip
def test_a_write_into_a_buffer_or_parameter_is_refused(what: str, name: str) -> None:
    m = BufferWrites(what).eval()
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(ValueError, match=rf"writes into its buffer\(s\) or parameter\(s\) '{name}'"):
        unet_fast.optimize(m, torch.randn(SHAPES[0]), backend="torch")
    for k, v in m.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k]), k
