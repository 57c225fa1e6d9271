"""The bf16 2x2 stride-2 transposed conv on tiles (cpu_bf16.conv_transpose2x2: one GEMM to 4 Cout columns,
scatter epilogue) against float64 on the same bf16-rounded operands: fp32 rel-L2 <= 1e-5, bf16 within one
rounding per element; odd sizes, batch > 1, channels off the 16/32 blocks, NaN-poisoned output slot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bf16_testutil import assert_bf16_one_rounding, assert_f32_close, backend_params

from unet_fast.kernels import cpu_bf16

NAN = float("nan")
# (N, H, W, Cin, Cout)
CASES = ((2, 5, 7, 64, 32), (1, 9, 17, 33, 17), (3, 4, 3, 3, 40), (1, 8, 16, 128, 64))


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("act", ["none", "relu"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}_{}x{}_c{}-{}".format(*c))
def test_conv_transpose2x2_bf16_parity(case: tuple, act: str, isa: str) -> None:
    n, h, w, cin, cout = case
    g = torch.Generator().manual_seed(cin * 7 + cout)
    x = torch.randn(n, h, w, cin, generator=g).bfloat16()
    weight = torch.randn(cin, cout, 2, 2, generator=g) * (2.0 / cin) ** 0.5
    bias = 0.1 * torch.randn(cout, generator=g)
    before = weight.clone()
    packed = cpu_bf16.pack_conv_transpose_weight(weight)
    assert torch.equal(weight, before) and packed.shape == weight.shape
    ref = cpu_bf16.conv_transpose2x2_reference(x, weight, bias, act=act)
    absref = F.conv_transpose2d(
        x.double().abs().permute(0, 3, 1, 2), weight.bfloat16().double().abs(), stride=2
    )
    absref = absref.permute(0, 2, 3, 1) + bias.double().abs()
    got = {}
    for dtype in (torch.float32, torch.bfloat16):
        buf = torch.full((n, 2 * h, 2 * w, cout + 5), NAN, dtype=dtype)
        slot = buf[..., 2 : 2 + cout]
        assert cpu_bf16.conv_transpose2x2(x, packed, bias, act=act, out=slot, isa=isa) is slot
        assert buf[..., :2].isnan().all() and buf[..., 2 + cout :].isnan().all(), "wrote outside the slot"
        got[dtype] = slot
    what = f"{case} {act} isa={isa}"
    assert_f32_close(got[torch.float32], ref, what)
    assert_bf16_one_rounding(got[torch.bfloat16], ref, absref, cin + 1, what)
    assert torch.equal(got[torch.bfloat16], got[torch.float32].bfloat16()), what


def test_conv_transpose2x2_bf16_errors() -> None:
    x = torch.randn(1, 4, 4, 8).bfloat16()
    packed = cpu_bf16.pack_conv_transpose_weight(torch.randn(8, 6, 2, 2))
    with pytest.raises(ValueError, match="Cin, Cout, 2, 2"):
        cpu_bf16.pack_conv_transpose_weight(torch.randn(8, 6, 3, 3))
    with pytest.raises(ValueError, match="7 channels"):
        cpu_bf16.conv_transpose2x2(x[..., :7], packed)
    with pytest.raises(ValueError, match="shape"):
        cpu_bf16.conv_transpose2x2(x, packed, out=torch.empty(1, 8, 8, 5))
    with pytest.raises(ValueError, match="pack_conv_transpose_weight"):
        cpu_bf16.conv_transpose2x2(x, packed.gemm)
    with pytest.raises(ValueError, match="bias"):
        cpu_bf16.conv_transpose2x2(x, packed, torch.zeros(5))
