import pytest
import torch

from unet_fast import UNet, unet_milesial, unet_original


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_original_paper_sizes_and_params() -> None:
    m = unet_original().eval()
    assert m.output_size(572, 572) == (388, 388)  # the paper's Fig. 1
    assert n_params(m) == 31_030_658  # "about 31M": 1 input channel, 2 classes, no BN
    with torch.no_grad():
        y = m(torch.randn(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)
    torch.testing.assert_close(y.sum(1), torch.ones(1, 388, 388))  # softmax head


def test_milesial_param_counts() -> None:
    # milesial/Pytorch-UNet UNet(n_channels=3, n_classes=2): 31,037,698 (bilinear=False), 17,263,042 (True)
    assert n_params(unet_milesial(3, 2, bilinear=False)) == 31_037_698
    assert n_params(unet_milesial(3, 2, bilinear=True)) == 17_263_042


@pytest.mark.parametrize("size,near", [(570, "556 or 572"), (573, "572 or 588"), (100, "188")])
def test_valid_padding_rejects_impossible_sizes(size: int, near: str) -> None:
    m = unet_original()
    with pytest.raises(ValueError, match=f"nearest valid sizes are {near}"):
        m.output_size(size, 572)
    with pytest.raises(ValueError, match="height"):
        m(torch.randn(1, 1, size, 572))


@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
@pytest.mark.parametrize("norm", ["batch", None])
def test_same_padding_keeps_odd_sizes(upsample: str, norm: str | None) -> None:
    m = UNet(3, 4, base_channels=8, depth=3, norm=norm, upsample=upsample, head="logits").eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 37, 45))
    assert y.shape == (2, 4, 37, 45)


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_valid_padding_depths(depth: int) -> None:
    m = UNet(1, 2, base_channels=4, depth=depth, norm=None, padding="valid").eval()
    size = next(s for s in range(64, 400) if _ok(m, s))
    oh, ow = m.output_size(size, size)
    with torch.no_grad():
        assert m(torch.randn(1, 1, size, size)).shape == (1, 2, oh, ow)


def _ok(m: UNet, s: int) -> bool:
    try:
        m.output_size(s, s)
        return True
    except ValueError:
        return False


def test_heads() -> None:
    x = torch.randn(1, 3, 32, 32)
    torch.manual_seed(1)
    logits = UNet(3, 3, 8, 3, head="logits").eval()
    for head, fn in (("softmax", lambda t: t.softmax(1)), ("sigmoid", torch.sigmoid)):
        torch.manual_seed(1)
        m = UNet(3, 3, 8, 3, head=head).eval()
        with torch.no_grad():
            torch.testing.assert_close(m(x), fn(logits(x)))


def test_bad_input_errors() -> None:
    m = UNet(3, 2, 8, 3).eval()
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="3 input channels, got 4"):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        m(torch.zeros(1, 3, 32, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match="depth-3 UNet cannot take an input width of 7"):
        m(torch.randn(1, 3, 32, 7))
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="bicubic")  # type: ignore[arg-type]


def test_load_weights_roundtrip_and_mismatch(tmp_path) -> None:
    a = UNet(3, 2, 8, 3).eval()
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    b = UNet(3, 2, 8, 3).load_weights(path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    wrong = UNet(3, 5, 8, 3)
    with pytest.raises(ValueError, match=r"shape mismatches: head.bias: checkpoint \(2,\) vs model \(5,\)"):
        wrong.load_weights(path)
    no_bn = UNet(3, 2, 8, 3, norm=None)
    with pytest.raises(ValueError, match=r"unexpected keys: .*running_mean"):
        no_bn.load_weights(path)


def test_load_state_dict_strict_names_mismatches_of_any_module_and_loads_nothing() -> None:
    from unet_fast.models.unet import load_state_dict_strict

    conv = torch.nn.Conv2d(3, 4, 3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    state = {"weight": torch.randn(4, 2, 3, 3), "extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"do not fit the conv; missing keys: bias; unexpected keys: extra; "
                                         r"shape mismatches: weight: checkpoint \(4, 2, 3, 3\) vs model \(4, 3, 3, 3\)"):
        load_state_dict_strict(conv, state, "the conv")
    for k, v in conv.state_dict().items():
        assert torch.equal(v, before[k])
    good = {"weight": torch.randn(4, 3, 3, 3), "bias": torch.randn(4)}
    load_state_dict_strict(conv, good, "the conv")
    assert torch.equal(conv.weight, good["weight"]) and torch.equal(conv.bias, good["bias"])
