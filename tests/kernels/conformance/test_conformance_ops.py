"""Conformance of the other spec.py ops: every registered ConvTranspose2x2, Concat (upsample / crop / concat),
Pool and Head kernel (kernels/registry.py) x dtype x runnable ISA, against the fp32 spec.py reference on the
same rounded inputs and weights (spec.TOLERANCES; the max-pool exactly), outputs in poisoned channel slots
(a class map: poisoned with -1). And: every registered kernel's `run` takes its spec.py op's arguments."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import kernel_testutil as ku
import pytest
import torch
from conformance_util import device_of, params, scores_dtype, weight_of

from unet_fast.graph.ir import Concat, ConvTranspose2x2, Head, Pool, Slice
from unet_fast.kernels import registry, spec
from unet_fast.kernels.spec import InputView, Resample

SLOPE = 0.1
G = torch.Generator().manual_seed(11)


@dataclass(frozen=True)
class Case:
    """A case of one op: `parts` are the input views (channels, source (H, W), resample, offset, window), `n`
    the batch, `cout` / `op` / `act` what the op needs."""

    name: str
    n: int
    parts: tuple[tuple, ...]
    cout: int = 0
    act: str = "none"
    op: str = "softmax"

    def __str__(self) -> str:
        return self.name


def plain(c: int, size: tuple[int, int]) -> tuple:
    return (c, size, None, (0, 0), None)


def _views(case: Case, dtype: torch.dtype, device: str) -> list[InputView]:
    """Inputs as channel slots of wider buffers (not dense strides)."""
    out = []
    for c, (h, w), resample, offset, window in case.parts:
        buf = torch.randn(case.n, h, w, c + 3, generator=G).to(dtype).to(device)
        out.append(InputView(buf[..., 1 : 1 + c], resample, offset, window))
    return out


def _slices(case: Case) -> list[Slice]:
    return [Slice(f"in{i}", 0, c, r, o, win) for i, (c, _, r, o, win) in enumerate(case.parts)]


# -- transposed conv -------------------------------------------------------------------------------------------

T_CASES = [Case("n1-9x11-c5-o3", 1, (plain(5, (9, 11)),), 3, "relu"),
           Case("n3-8x13-c37-o20-silu", 3, (plain(37, (8, 13)),), 20, "silu"),
           Case("n2-5x7-c64-o33-leaky", 2, (plain(64, (5, 7)),), 33, "leaky_relu")]  # fmt: skip


def _t_step(case: Case) -> ConvTranspose2x2:
    c = case.parts[0][0]
    return ConvTranspose2x2(case.name, _slices(case)[0], torch.zeros(c, case.cout, 2, 2), None, case.act, SLOPE,
                            Slice("out", 2, case.cout))  # fmt: skip


@pytest.mark.parametrize(("kernel", "dtype", "case"), params(ConvTranspose2x2, T_CASES, _t_step, lambda c: c.n == 1))
def test_conv_transpose2x2_matches_the_reference(kernel: str, dtype: torch.dtype, case: Case) -> None:
    k = registry.get(kernel)
    dev = device_of(k)
    (x,) = _views(case, dtype, dev)
    c = case.parts[0][0]
    w = weight_of(torch.randn(c, case.cout, 2, 2, generator=G) / (4 * c) ** 0.5, dtype)
    b = torch.randn(case.cout, generator=G)
    h, wd = case.parts[0][1]
    buf, out = ku.poisoned_slot((case.n, 2 * h, 2 * wd, case.cout), dtype, before=2, after=3, device=dev)
    packed = k.pack(w.to(dev), dtype) if k.pack is not None else w
    got = k.run(x.tensor, packed, b.to(dev), act=case.act, negative_slope=SLOPE, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = spec.conv_transpose2x2(x.tensor.float().cpu(), w, b, act=case.act, negative_slope=SLOPE)
    ku.assert_close(out, ref, f"{kernel} {dtype} {case}", dtype=dtype)
    ku.assert_slot_only(buf, 2, 2 + case.cout, f"{kernel} {dtype} {case}")


# -- upsample / crop / concat ----------------------------------------------------------------------------------

C_CASES = [
    Case("concat-plain", 2, (plain(5, (9, 11)), plain(3, (9, 11)))),
    Case("resample-bilinear-ac0", 1, ((6, (5, 7), Resample("bilinear", (10, 14), False), (0, 0), None),)),
    Case("resample-bilinear-ac1", 3, ((6, (5, 7), Resample("bilinear", (11, 13), True), (0, 0), None),)),
    Case("resample-nearest-crop", 2, ((4, (6, 7), Resample("nearest", (12, 14)), (1, 2), (9, 11)),
                                      plain(7, (9, 11)))),
    Case("pad-negative-offset", 1, ((5, (7, 9), None, (-1, -2), (9, 11)), (3, (13, 15), None, (2, 2), (9, 11)))),
]


def _c_step(case: Case) -> Concat:
    return Concat(case.name, _slices(case), Slice("out", 0, sum(p[0] for p in case.parts)))


def _out_size(case: Case) -> tuple[int, int]:
    _c, size, r, _, window = case.parts[0]
    return window if window is not None else (r.size if r is not None else size)


@pytest.mark.parametrize(("kernel", "dtype", "case"), params(Concat, C_CASES, _c_step, lambda c: c.n == 1))
def test_upsample_concat_matches_the_reference(kernel: str, dtype: torch.dtype, case: Case) -> None:
    k = registry.get(kernel)
    dev = device_of(k)
    views = _views(case, dtype, dev)
    c = sum(v.channels for v in views)
    buf, out = ku.poisoned_slot((case.n, *_out_size(case), c), dtype, before=3, after=1, device=dev)
    got = k.run(views, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = spec.upsample_concat([InputView(v.tensor.float().cpu(), v.resample, v.offset, v.size) for v in views])
    ku.assert_close(out, ref, f"{kernel} {dtype} {case}", dtype=dtype)
    ku.assert_slot_only(buf, 3, 3 + c, f"{kernel} {dtype} {case}")


# -- max-pool ----------------------------------------------------------------------------------------------------

P_CASES = [Case("n1-9x11-c5", 1, (plain(5, (9, 11)),)), Case("n3-16x13-c37", 3, (plain(37, (16, 13)),))]


def _p_step(case: Case) -> Pool:
    return Pool(case.name, _slices(case)[0], Slice("out", 0, case.parts[0][0]))


@pytest.mark.parametrize(("kernel", "dtype", "case"), params(Pool, P_CASES, _p_step, lambda c: c.n == 1))
def test_maxpool2x2_is_exact(kernel: str, dtype: torch.dtype, case: Case) -> None:
    k = registry.get(kernel)
    dev = device_of(k)
    (x,) = _views(case, dtype, dev)
    c, (h, w) = case.parts[0][0], case.parts[0][1]
    buf, out = ku.poisoned_slot((case.n, h // 2, w // 2, c), dtype, before=1, after=2, device=dev)
    got = k.run(x.tensor, out=out)
    assert got.data_ptr() == out.data_ptr()
    ku.assert_close(out, spec.maxpool2x2(x.tensor.cpu()), f"{kernel} {dtype} {case}", atol=0, rtol=0)
    ku.assert_slot_only(buf, 1, 1 + c, f"{kernel} {dtype} {case}")


# -- head ----------------------------------------------------------------------------------------------------------

H_CASES = [Case(f"{op}-{how}", n, (part,), cout, op=op)
           for op in spec.HEAD_OPS
           for how, n, part, cout in (("plain-c37-k3", 2, plain(37, (9, 11)), 3),
                                      ("bilinear-window-c8-k2", 1, (8, (5, 6), Resample("bilinear", (10, 12), False),
                                                                    (1, 1), (8, 9)), 2),
                                      ("plain-c16-k40", 1, plain(16, (7, 5)), 40))]  # fmt: skip


def _h_step(case: Case) -> Head:
    c = case.parts[0][0]
    return Head(case.name, _slices(case)[0], torch.zeros(case.cout, c), None, case.op, Slice("out", 0, case.cout))


@pytest.mark.parametrize(("kernel", "dtype", "case"), params(Head, H_CASES, _h_step, lambda c: c.n == 1))
def test_head_matches_the_reference(kernel: str, dtype: torch.dtype, case: Case) -> None:
    k = registry.get(kernel)
    dev = device_of(k)
    (x,) = _views(case, dtype, dev)
    c = case.parts[0][0]
    w = weight_of(torch.randn(case.cout, c, generator=G) / c**0.5, dtype)
    b = torch.randn(case.cout, generator=G)
    hw = _out_size(case)
    packed = k.pack(w.to(dev), dtype) if k.pack is not None else w
    x32 = InputView(x.tensor.float().cpu(), x.resample, x.offset, x.size)
    what = f"{kernel} {dtype} {case}"
    if case.op == "argmax":
        out = torch.full((case.n, *hw), -1, dtype=torch.int64, device=dev)
        got = k.run(x, packed, b.to(dev), "argmax", out=out)
        assert got.data_ptr() == out.data_ptr()
        logits = spec.head(x32, w, b, "logits")
        top2 = logits.topk(2, dim=3).values
        clear = (top2[..., 0] - top2[..., 1]) > 2 * spec.TOLERANCES[dtype][0] * (1 + top2[..., 0].abs())
        assert int((out.cpu() < 0).sum()) == 0, f"{what}: class map elements never written"
        assert torch.equal(out.cpu()[clear], logits.argmax(3)[clear]), what
        return
    sdt = scores_dtype(k, dtype)
    buf, out = ku.poisoned_slot((case.n, *hw, case.cout), sdt, before=2, after=2, device=dev)
    got = k.run(x, packed, b.to(dev), case.op, out=out)
    assert got.data_ptr() == out.data_ptr()
    ku.assert_close(out, spec.head(x32, w, b, case.op), what, dtype=dtype)
    ku.assert_slot_only(buf, 2, 2 + case.cout, what)


# -- the interface -------------------------------------------------------------------------------------------------

_OP = {"Conv": spec.conv2d, "ConvTranspose2x2": spec.conv_transpose2x2, "Concat": spec.upsample_concat,
       "Pool": spec.maxpool2x2, "Head": spec.head}  # fmt: skip
_PACK = {"Conv": spec.pack_conv_weight, "ConvTranspose2x2": spec.pack_conv_transpose_weight,
         "Head": spec.pack_head_weight}  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton", "cuda"])
def test_every_kernel_takes_its_ops_arguments(backend: str) -> None:
    """Every registered kernel's `run` has its spec.py op's parameters (the executor calls them alike): the same
    positional parameters in order, and spec's keyword-only ones with the same defaults; a kernel of a
    weight-bearing op packs, one without does not."""
    try:
        kernels = registry.kernels(backend)
    except ImportError as e:
        pytest.skip(f"{backend} kernels do not import here: {e}")
    assert kernels
    for k in kernels:
        kind = k.step.__name__
        ref, got = inspect.signature(_OP[kind]), inspect.signature(k.run)
        pos = [p.name for p in ref.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        got_pos = [p.name for p in got.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert len(got_pos) == len(pos), f"{k.name}: positional {got_pos} vs spec {pos}"
        for p in ref.parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                assert p.name in got.parameters, f"{k.name}: keyword {p.name!r} missing"
                assert got.parameters[p.name].default == p.default, f"{k.name}: default of {p.name!r} differs"
        assert (k.pack is not None) == (kind in _PACK), k.name
