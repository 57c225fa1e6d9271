"""The FusedUNet returns what the model returns: the same container type, keys and nesting (issue 23, item 2).

A model returning `(y,)`, `[y]` or `{"out": y}` (torchvision's convention) used to get a bare tensor back, so
`fast(x)[0]` silently became sample 0 of the batch. The kind, as a matrix: one-element tuple / list / dict,
several outputs (torchvision's {"out", "aux"}, nnU-Net-style deep supervision at three resolutions,
(logits, a classifier's [N, K] vector)), nesting with constants (None, a number), a namedtuple, the same tensor
twice, the model's own input returned; on the torch and cpu backends (cpu bf16 for two), batch 2, odd sizes,
lively weights, poisoned buffers. Output options on a container model apply to each returned tensor and keep
the structure; a returned tensor that cannot take the option is refused, named. Every other entry point that
wraps a model either handles the structure or refuses it clearly (to_onnx, parity.compare, the bench's
reference and parity helpers, sliding_window_inference).
"""

from __future__ import annotations

import pickle
from collections import namedtuple
from functools import cache
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import poisoned
from torch import Tensor, nn
from torch.utils import _pytree as pytree

import unet_fast
from unet_fast.bench.workloads import lively_weights
from unet_fast.kernels import cpu_bf16
from unet_fast.parity import assert_parity

SHAPES = ((2, 3, 19, 23), (2, 3, 24, 17))
REL_L2 = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
Pair = namedtuple("Pair", ["logits", "aux"])


class Structured(nn.Module):
    """A small encoder-decoder whose forward returns its tensors in the structure named by `kind`."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.enc = nn.Conv2d(3, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)
        self.aux = nn.Conv2d(16, 3, 1)
        self.low = nn.Conv2d(16, 4, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Any:
        e = torch.relu(self.enc(x))
        m = torch.relu(self.mid(F.max_pool2d(e, 2)))
        d = e + F.interpolate(m, size=e.shape[2:], mode="nearest")
        y = self.head(d)
        k = self.kind
        if k == "tuple1":
            return (y,)
        if k == "list1":
            return [y]
        if k == "dict1":
            return {"out": y}
        if k == "out_aux":  # torchvision's segmentation models
            return {"out": y, "aux": self.aux(e)}
        if k == "deep_supervision":  # nnU-Net: full resolution first, then coarser
            return [y, self.low(m), self.low(F.max_pool2d(m, 2))]
        if k == "logits_vector":
            return y, self.fc(m.mean((2, 3)))
        if k == "nested_constants":
            return {"seg": [torch.softmax(y, 1), self.aux(e)], "none": None, "scale": 2}
        if k == "namedtuple":
            return Pair(y, self.aux(e))
        if k == "same_twice":
            return y, y
        if k == "with_input":
            return y, x
        raise AssertionError(k)


KINDS = ("tuple1", "list1", "dict1", "out_aux", "deep_supervision", "logits_vector", "nested_constants",
         "namedtuple", "same_twice", "with_input")  # fmt: skip


@cache
def _fast(kind: str) -> tuple[nn.Module, unet_fast.FusedUNet]:
    m = lively_weights(Structured(kind), seed=len(kind)).eval()
    return m, unet_fast.optimize(m, torch.randn(SHAPES[0]), backend="torch")


def assert_same_structure(ref: Any, out: Any, rel_l2: float, what: str) -> None:
    """Same pytree (container types, keys, order, constants) and every tensor within rel_l2 of the model's."""
    ref_leaves, ref_spec = pytree.tree_flatten(ref)
    out_leaves, out_spec = pytree.tree_flatten(out)
    assert type(out) is type(ref), f"{what}: {type(out).__name__} returned, the model returns {type(ref).__name__}"
    assert out_spec == ref_spec, f"{what}: structure {out_spec} != the model's {ref_spec}"
    for i, (r, o) in enumerate(zip(ref_leaves, out_leaves, strict=True)):
        if isinstance(r, Tensor):
            assert isinstance(o, Tensor) and o.shape == r.shape and o.dtype == r.dtype, (what, i, o, r.shape)
            if r.is_floating_point():
                assert_parity(r, o, rel_l2=rel_l2, what=f"{what} leaf {i}")
            else:
                assert torch.equal(r, o), f"{what} leaf {i}"
        else:
            assert o == r, (what, i, o, r)


def _check(m: nn.Module, fast: unet_fast.FusedUNet, dtype: torch.dtype, what: str) -> None:
    g = torch.Generator().manual_seed(11)
    for shape in SHAPES:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = m(x)
            out = poisoned(fast, x)(x)
        assert_same_structure(ref, out, REL_L2[dtype], f"{what} at {shape}")
        if m.kind == "with_input":
            assert out[1] is x  # the model returns its input: the caller's tensor itself, as eager does
        if m.kind == "same_twice":
            assert out[0] is out[1]
    assert len(fast.captures) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_the_module_returns_the_models_structure(kind: str, backend: str) -> None:
    m, fast = _fast(kind)
    if backend != "torch":
        fast = fast.with_backend(backend)
    _check(m, fast, torch.float32, f"{kind} on {backend}")


@pytest.mark.skipif(not cpu_bf16.available_tile_backends(), reason="unet_fast._C without bf16 tile ops")
@pytest.mark.parametrize("kind", ["out_aux", "deep_supervision"])
def test_structure_on_cpu_bf16(kind: str) -> None:
    m, fast = _fast(kind)
    _check(m, fast.with_backend("cpu", torch.bfloat16), torch.bfloat16, f"{kind} on cpu bf16")


def test_a_container_model_survives_pickling() -> None:
    m, fast = _fast("out_aux")
    again = pickle.loads(pickle.dumps(fast))
    x = torch.randn(SHAPES[1])
    with torch.no_grad():
        assert_same_structure(m(x), again(x), 1e-5, "unpickled")


def _mode(y: Tensor, mode: str) -> Tensor:
    return {"classes": lambda t: t.argmax(1), "probabilities": lambda t: torch.softmax(t, 1),
            "logits": lambda t: t}[mode](y)  # fmt: skip


@pytest.mark.parametrize("mode", ["classes", "probabilities", "logits"])
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_output_modes_apply_to_each_returned_tensor(mode: str, backend: str) -> None:
    """output="classes" on {"out": y, "aux": a} returns {"out": classes of y, "aux": classes of a}."""
    for kind in ("dict1", "out_aux", "deep_supervision"):
        m = lively_weights(Structured(kind), seed=4).eval()
        fast = unet_fast.optimize(m, torch.randn(SHAPES[0]), backend=backend, output=mode)
        x = torch.randn(SHAPES[1])
        with torch.no_grad():
            ref = pytree.tree_map(lambda t: _mode(t, mode), m(x))
            out = fast(x)
        assert_same_structure(ref, out, 1e-5, f"{kind} output={mode} on {backend}")


def test_logits_mode_drops_the_softmax_inside_a_container() -> None:
    m = lively_weights(Structured("nested_constants"), seed=2).eval()
    fast = unet_fast.optimize(m, torch.randn(SHAPES[0]), backend="torch", output="logits")
    x = torch.randn(SHAPES[0])
    with torch.no_grad():
        out = fast(x)
        logits = m.head(torch.relu(m.enc(x)) + F.interpolate(torch.relu(m.mid(F.max_pool2d(torch.relu(m.enc(x)), 2))),
                                                             size=x.shape[2:], mode="nearest"))  # fmt: skip
    assert out["none"] is None and out["scale"] == 2
    assert_parity(logits, out["seg"][0], rel_l2=1e-5, what="logits without the model's softmax")


@pytest.mark.parametrize("mode", ["classes", "probabilities"])
def test_an_output_that_cannot_take_the_mode_is_refused_by_name(mode: str) -> None:
    m = Structured("logits_vector").eval()
    with pytest.raises(ValueError, match=r"the model's output \[1\]: .*4-D"):
        unet_fast.optimize(m, torch.randn(SHAPES[0]), backend="torch", output=mode)


# -- the other entry points that wrap a model --------------------------------------------------------------


def test_to_onnx_refuses_a_container_output_clearly(tmp_path) -> None:
    pytest.importorskip("onnx")
    from unet_fast.export import to_onnx

    for kind, what in (("tuple1", "tuple"), ("dict1", "dict"), ("out_aux", "dict")):
        with pytest.raises(ValueError, match=rf"returns a {what}.*one \(N, classes, H, W\) tensor"):
            to_onnx(Structured(kind).eval(), tmp_path / f"{kind}.onnx", torch.randn(1, 3, 32, 32))
        assert not (tmp_path / f"{kind}.onnx").exists()


def test_parity_compare_refuses_containers_clearly() -> None:
    from unet_fast.parity import assert_parity as ap
    from unet_fast.parity import compare

    y = torch.randn(2, 3, 4, 4)
    for a, b in (((y,), (y,)), ({"out": y}, {"out": y}), ((y,), y)):
        with pytest.raises(TypeError, match="compares one tensor with one tensor"):
            compare(a, b)
        with pytest.raises(TypeError, match="compares one tensor with one tensor"):
            ap(a, b, rel_l2=1e-5)


def test_bench_helpers_refuse_containers_clearly() -> None:
    from unet_fast.bench.reference import reference_output
    from unet_fast.bench.runner import _as_tensor

    with pytest.raises(ValueError, match="returns a dict"):
        reference_output(Structured("out_aux").eval(), torch.randn(1, 3, 16, 16))
    y = torch.randn(1, 2, 4, 4)
    assert torch.equal(_as_tensor([y]), y)  # one output in a list: onnxruntime's and OpenVINO's convention
    with pytest.raises(ValueError, match="2 outputs"):
        _as_tensor((y, y))


def test_sliding_window_takes_out_of_a_dict_and_refuses_other_containers() -> None:
    from unet_fast.inference.sliding_window import sliding_window_inference

    m = lively_weights(Structured("out_aux"), seed=1).eval()
    image = torch.randn(1, 3, 40, 37)
    plain = lambda x: m(x)["out"]  # noqa: E731
    with torch.no_grad():
        want = sliding_window_inference(image, plain, 16, batch_size=2)
        got = sliding_window_inference(image, m, 16, batch_size=2)  # {"out": ...}: torchvision's rule
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for kind in ("tuple1", "deep_supervision"):
        with pytest.raises(ValueError, match="one tensor"):
            sliding_window_inference(image, Structured(kind).eval(), 16, batch_size=2)
