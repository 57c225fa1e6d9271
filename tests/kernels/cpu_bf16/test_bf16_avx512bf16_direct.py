"""The avx512bf16 backend's register-blocked direct conv (amx/conv_bf16_direct_avx512bf16.h) against its
tile path, bit for bit.

The direct conv keeps the tile path's per-element order (taps, then 32-channel chunks, then K pairs, each
pair one VDPBF16PS), so its outputs must be identical (torch.equal on the bits) to the tile body's, which
path="tile" forces (the registry's avx512bf16 tile kernels pass it; UNET_FAST_KERNELS avx512bf16_conv=tile); the tile path itself is checked against float64 references and the
VDPBF16PS order model in test_bf16_avx512bf16.py / test_bf16_conv*.py (which now run the direct conv by
default on this backend). Lively random data, odd sizes, batch > 1, NaN-poisoned output slots (only the
slot may change) and input slots whose neighbouring channels are NaN (never read).
Native only: skips with the CPUID reason where AVX512-BF16 does not run."""

from __future__ import annotations

import math

import kernel_testutil as ku
import pytest
import torch

from unet_fast.kernels import cpu_bf16
from unet_fast.kernels.spec import InputView, Resample

_PATH = {"now": "direct"}  # the body the calls below run: _both runs each call on "tile", then on "direct"


@pytest.fixture(autouse=True)
def _need_native() -> None:
    b = {b.name: b for b in cpu_bf16.tile_backends()}.get("avx512bf16")
    if b is None:
        pytest.skip("the avx512bf16 tile backend is compiled only for x86-64")
    if not b.runnable:
        pytest.skip(f"avx512bf16: {b.reason}")


def _slot(n: int, h: int, w: int, c: int, g: torch.Generator, dtype: torch.dtype = torch.bfloat16,
          before: int = 3, after: int = 2, poison: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(buffer, its channel slot [N, H, W, c]): random lively values in the slot, NaN in the neighbours
    (and in the slot too when `poison`)."""
    buf, slot = ku.poisoned_slot((n, h, w, c), dtype, before=before, after=after)
    if not poison:
        slot.copy_(torch.randn(n, h, w, c, generator=g).to(dtype))
    return buf, slot


def _weight(cout: int, cin: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))  # He-normal


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t.view(torch.int32)


def _both(monkeypatch: pytest.MonkeyPatch, call) -> None:
    """Runs call(fresh poisoned outputs) on the tile path and on the direct path; every output buffer (its
    slot and the NaN around it) must be bit-identical, and the slot must have no NaN."""
    outs = []
    for path in ("tile", "direct"):
        monkeypatch.setitem(_PATH, "now", path)
        outs.append(call())
    for (tile_buf, tile_slot), (direct_buf, direct_slot) in zip(outs[0], outs[1], strict=True):
        assert not tile_slot.isnan().any(), "tile: unwritten (NaN) elements in the output slot"
        assert not direct_slot.isnan().any(), "direct: unwritten (NaN) elements in the output slot"
        assert torch.equal(_bits(direct_buf), _bits(tile_buf)), (
            f"direct != tile: {int((_bits(direct_buf) != _bits(tile_buf)).sum())} of {direct_buf.numel()} differ")


# (N, H, W, Cin, Cout, K, stride, pad): odd widths (not multiples of the 14-pixel block), channel tails
# (odd Cin: the last pair has one real channel), a window narrower than the kernel, 1x1 / 3x3 / 7x7, s1 / s2.
CASES = [
    (2, 9, 37, 3, 17, 3, 1, 1),
    (3, 7, 15, 17, 33, 3, 2, 1),
    (2, 11, 29, 33, 64, 1, 1, 0),
    (2, 13, 31, 64, 96, 3, 1, 1),
    (1, 19, 23, 96, 64, 7, 2, 3),
    (2, 8, 16, 64, 3, 3, 1, 0),
    (1, 5, 3, 33, 17, 7, 1, 3),
    (2, 6, 44, 96, 33, 3, 2, 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}h{}w{}_ci{}co{}_k{}s{}p{}".format(*c))
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=["out_bf16", "out_f32"])
def test_direct_equals_tile(monkeypatch: pytest.MonkeyPatch, case: tuple, out_dtype: torch.dtype) -> None:
    n, h, w, cin, cout, k, s, p = case
    g = torch.Generator().manual_seed(hash(case) % 1000)
    _, x = _slot(n, h, w, cin, g)
    wt = cpu_bf16.pack_conv_weight(_weight(cout, cin, k, g))
    bias = torch.randn(cout, generator=g) * 0.1
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def call():
        buf, out = _slot(n, ho, wo, cout, g, out_dtype, poison=True)
        cpu_bf16.conv2d(x, wt, bias, stride=s, padding=p, act="relu", out=out, isa="avx512bf16", path=_PATH["now"])
        return [(buf, out)]

    _both(monkeypatch, call)


@pytest.mark.parametrize("act", ["none", "relu", "leaky_relu", "silu"])
@pytest.mark.parametrize("residual_dtype", [None, torch.bfloat16, torch.float32], ids=["nores", "res_bf16", "res_f32"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=["out_bf16", "out_f32"])
def test_direct_epilogues(monkeypatch: pytest.MonkeyPatch, act: str, residual_dtype: torch.dtype | None,
                          out_dtype: torch.dtype) -> None:  # fmt: skip
    n, h, w, cin, cout = 2, 7, 19, 40, 45
    g = torch.Generator().manual_seed(7)
    _, x = _slot(n, h, w, cin, g)
    wt = cpu_bf16.pack_conv_weight(_weight(cout, cin, 3, g))
    bias = torch.randn(cout, generator=g) * 0.1
    res = None if residual_dtype is None else _slot(n, h, w, cout, g, residual_dtype)[1]

    def call():
        buf, out = _slot(n, h, w, cout, g, out_dtype, poison=True)
        cpu_bf16.conv2d(x, wt, bias, padding=1, act=act, negative_slope=0.2, residual=res, out=out,
                        isa="avx512bf16", path=_PATH["now"])
        return [(buf, out)]

    _both(monkeypatch, call)


@pytest.mark.parametrize("chans", [(17, 33), (64, 64), (1, 2, 30, 3)], ids=["17+33", "64+64", "1+2+30+3"])
@pytest.mark.parametrize("k,pad", [(3, 1), (1, 0)])
def test_direct_virtual_concat(monkeypatch: pytest.MonkeyPatch, chans: tuple[int, ...], k: int, pad: int) -> None:
    n, h, w, cout = 2, 9, 27, 40
    g = torch.Generator().manual_seed(sum(chans) + k)
    views = [_slot(n, h, w, c, g, before=1 + i)[1] for i, c in enumerate(chans)]
    wt = cpu_bf16.pack_conv_weight(_weight(cout, sum(chans), k, g))

    def call():
        buf, out = _slot(n, h, w, cout, g, poison=True)
        cpu_bf16.conv2d(views, wt, None, padding=pad, act="leaky_relu", out=out, isa="avx512bf16", path=_PATH["now"])
        return [(buf, out)]

    _both(monkeypatch, call)


def test_direct_crop_offsets_and_nearest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A centre crop (pointer offsets), a window past the source's edge (zeros), a nearest-upsampled source."""
    g = torch.Generator().manual_seed(5)
    _, skip = _slot(2, 30, 44, 17, g)
    _, up = _slot(2, 21, 36, 33, g)
    _, low = _slot(2, 11, 18, 33, g)
    cases = [
        ([InputView(skip, offset=(4, 4), size=(21, 36)), InputView(up)], 1, 3),
        ([InputView(up), InputView(skip, offset=(-1, -2), size=(21, 36))], 0, 3),
        ([InputView(skip[:, :22, :36]), InputView(low, Resample("nearest", (22, 36)))], 1, 3),
    ]
    for views, pad, k in cases:
        cin = sum(v.channels for v in views)
        wt = cpu_bf16.pack_conv_weight(_weight(35, cin, k, g))
        hv, wv = views[0].out_size

        def call(views=views, pad=pad, k=k, wt=wt, hv=hv, wv=wv):
            buf, out = _slot(2, hv + 2 * pad - k + 1, wv + 2 * pad - k + 1, 35, g, poison=True)
            cpu_bf16.conv2d(views, wt, None, padding=pad, out=out, isa="avx512bf16", path=_PATH["now"])
            return [(buf, out)]

        _both(monkeypatch, call)


@pytest.mark.parametrize("hw", [(10, 30), (9, 17), (5, 7)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
def test_direct_pool_out(monkeypatch: pytest.MonkeyPatch, hw: tuple[int, int], dtype: torch.dtype) -> None:
    n, cin, cout = 2, 24, 40
    h, w = hw
    g = torch.Generator().manual_seed(h * w)
    _, x = _slot(n, h, w, cin, g)
    wt = cpu_bf16.pack_conv_weight(_weight(cout, cin, 3, g))
    bias = torch.randn(cout, generator=g) * 0.1

    def call():
        obuf, out = _slot(n, h, w, cout, g, dtype, poison=True)
        pbuf, pool = _slot(n, h // 2, w // 2, cout, g, dtype, poison=True)
        cpu_bf16.conv2d(x, wt, bias, padding=1, act="relu", out=out, pool_out=pool, isa="avx512bf16", path=_PATH["now"])
        return [(obuf, out), (pbuf, pool)]

    _both(monkeypatch, call)


@pytest.mark.parametrize("cout", [17, 32, 48], ids=lambda c: f"ct{c}")
@pytest.mark.parametrize("act", ["relu", "silu"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
def test_direct_transposed_scatter(monkeypatch: pytest.MonkeyPatch, cout: int, act: str, dtype: torch.dtype) -> None:
    """The 2x2 stride-2 transposed conv (a 1x1 conv whose epilogue scatters into the output slot): Ct = 17
    has 16-column halves straddling two taps (scalar epilogue), 32 / 48 none (vector epilogue)."""
    n, h, w, cin = 2, 5, 19, 40
    g = torch.Generator().manual_seed(cout)
    _, x = _slot(n, h, w, cin, g)
    wt = cpu_bf16.pack_conv_transpose_weight(torch.randn(cin, cout, 2, 2, generator=g) * math.sqrt(2.0 / cin))
    bias = torch.randn(cout, generator=g) * 0.1

    def call():
        buf, out = _slot(n, 2 * h, 2 * w, cout, g, dtype, poison=True)
        cpu_bf16.conv_transpose2x2(x, wt, bias, act=act, out=out, isa="avx512bf16", path=_PATH["now"])
        return [(buf, out)]

    _both(monkeypatch, call)


@pytest.mark.parametrize("stride,pool", [(1, True), (2, False)], ids=["s1_pool", "s2"])
def test_direct_deep_layer_split_by_kernel_row(monkeypatch: pytest.MonkeyPatch, stride: int, pool: bool) -> None:
    """A deep layer whose B per 32-channel block exceeds 384 KB (Cin 700: 22 chunks x 9 taps x 2 KB) on a
    small image: the direct conv runs it one kernel row at a time with the accumulators kept in memory
    between rows (conv_bf16_direct's by_ky, taken while images x channel blocks >= threads: 3 x 3 here);
    still one chain per element, bit for bit the tile path's."""
    n, h, w, cin, cout = 3, 7, 9, 700, 72
    g = torch.Generator().manual_seed(700 + stride)
    _, x = _slot(n, h, w, cin, g)
    wt = cpu_bf16.pack_conv_weight(_weight(cout, cin, 3, g))
    bias = torch.randn(cout, generator=g) * 0.1
    res = _slot(n, (h - 1) // stride + 1, (w - 1) // stride + 1, cout, g)[1]
    ho, wo = res.shape[1], res.shape[2]

    def call():
        obuf, out = _slot(n, ho, wo, cout, g, poison=True)
        pbuf, pool_out = _slot(n, ho // 2, wo // 2, cout, g, torch.float32, poison=True)
        cpu_bf16.conv2d(x, wt, bias, stride=stride, padding=1, act="relu", residual=res, out=out,
                        pool_out=pool_out if pool else None, isa="avx512bf16", path=_PATH["now"])
        return [(obuf, out), (pbuf, pool_out)] if pool else [(obuf, out)]

    _both(monkeypatch, call)
