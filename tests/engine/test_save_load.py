"""unet_fast.save / unet_fast.load (issue 26): a loaded engine computes what the saved one computes, bit for bit,
on every model family and backend that runs here, returns the model's output structure, runs no capture and
packs nothing the file holds; a file packed for one CPU row loads on another by packing again (said in the
report); what holds Python code is refused with the reason; a loaded engine without a model refuses a shape
no saved capture serves, naming the guard.

The matrix: our UNet (transposed conv + BN, bilinear, nearest, valid convs), the milesial replica (both
upsampling modes), the smp-like resnet18, the MONAI-like BasicUNet; backends torch and cpu in fp32, cpu in
bf16; batch 2 and odd sizes, lively weights, a second input shape, the loaded engine's buffers poisoned.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import MilesialUNet, SmpLikeUnet, poisoned
from monai_like import BasicUNetLike
from torch import nn
from torch.utils import _pytree as pytree

import unet_fast
from unet_fast import UNet
from unet_fast.engine import artifact
from unet_fast.engine.module import CaptureMissingError
from unet_fast.kernels import cpu_bf16, cpu_isa
from unet_fast.models.weights import lively_weights
from unet_fast.parity import assert_parity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_output_structure import Structured

FAMILIES = {
    "unet-transpose-bn": (lambda: UNet(3, 3, 4, 3, "batch", "transpose"), (2, 3, 29, 35)),
    "unet-bilinear": (lambda: UNet(3, 2, 4, 3, None, "bilinear", True, "same"), (2, 3, 37, 32)),
    "unet-nearest-sigmoid": (lambda: UNet(3, 1, 4, 3, "batch", "nearest", head="sigmoid"), (2, 3, 33, 27)),
    "unet-valid": (lambda: UNet(1, 2, 4, 3, None, "transpose", True, "valid"), (2, 1, 92, 100)),
    "milesial": (lambda: MilesialUNet(3, 2, False, base=4), (2, 3, 36, 44)),
    "milesial-bilinear": (lambda: MilesialUNet(3, 2, True, base=4), (2, 3, 36, 44)),
    "smp-resnet18": (lambda: SmpLikeUnet("resnet18", 3, 3, decoder_channels=(32, 16, 16, 8, 8)), (2, 3, 40, 57)),
    "monai-basicunet": (lambda: BasicUNetLike(1, 2, (8, 8, 16, 16, 32, 8)), (2, 1, 36, 44)),
}
OTHER = {  # a second input shape per family (the plan derived again from the loaded capture)
    "unet-valid": (1, 1, 108, 92),
    "monai-basicunet": (3, 1, 100, 108),  # its pads branch on the sizes: the same residues mod 64 as 36 x 44
}
CONFIGS = [("torch", torch.float32), ("cpu", torch.float32), ("cpu", torch.bfloat16)]
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _model(name: str) -> nn.Module:
    return lively_weights(FAMILIES[name][0](), seed=len(name)).eval()


def _no_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any torch.export from here on fails the test: a load captures nothing."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.export.export was called while loading an engine file")

    monkeypatch.setattr(torch.export, "export", refuse)


def _run(fast: unet_fast.FusedUNet, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return poisoned(fast, x)(x.clone())


def _equal(a: Any, b: Any, what: str) -> None:
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    assert type(a) is type(b) and sa == sb, f"{what}: structure {sb} != {sa}"
    for i, (u, v) in enumerate(zip(la, lb, strict=True)):
        if isinstance(u, torch.Tensor):
            assert isinstance(v, torch.Tensor) and u.dtype == v.dtype and u.shape == v.shape, (what, i)
            assert torch.equal(u, v), f"{what}: leaf {i} differs (max {(u.float() - v.float()).abs().max()})"
        else:
            assert u == v, (what, i)


@pytest.mark.parametrize("backend,dtype", CONFIGS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_is_bit_identical(family: str, backend: str, dtype: torch.dtype, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if dtype == torch.bfloat16 and not cpu_bf16.available_tile_backends():
        pytest.skip("unet_fast._C without bf16 ops")
    m = _model(family)
    shape = FAMILIES[family][1]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g)
    fast = unet_fast.optimize(m, x, backend=backend, dtype=dtype)
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    _no_capture(monkeypatch)
    loaded = unet_fast.load(path)
    other = OTHER.get(family, (3, shape[1], shape[2] + 5, shape[3] - 3))
    for s in (shape, other):
        xi = torch.randn(s, generator=g)
        ref, out = _run(fast, xi), _run(loaded, xi)
        _equal(ref, out, f"{family} {backend} {dtype} at {s}")
        with torch.no_grad():
            assert_parity(m(xi), out, rel_l2=TOL[dtype], min_agreement=0.99, what=f"{family} loaded vs the model")
    data = loaded.report_data()
    a = data.artifact
    assert a is not None and a.path == str(path) and a.format_version == 1 and not a.model
    assert a.repacked == () and a.stored >= 1, a  # every packed weight used as stored: nothing packed at load
    assert len(loaded.captures) == 1 and data.captures[0].reason == fast.report_data().captures[0].reason
    assert [s.kernel for s in data.steps] == [s.kernel for s in fast.report_data(x).steps] or data.plan.shape != shape


@pytest.mark.parametrize("kind", ["tuple1", "list1", "dict1", "out_aux", "deep_supervision", "logits_vector",
                                  "nested_constants", "same_twice", "with_input"])  # fmt: skip
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_output_structures_round_trip(kind: str, backend: str, tmp_path: Path) -> None:
    m = lively_weights(Structured(kind), seed=len(kind)).eval()
    x = torch.randn(2, 3, 19, 23)
    fast = unet_fast.optimize(m, x, backend=backend)
    loaded = unet_fast.load(unet_fast.save(fast, tmp_path / "m.ufe"))
    for s in ((2, 3, 19, 23), (2, 3, 24, 17)):
        xi = torch.randn(s)
        ref, out = _run(fast, xi), _run(loaded, xi)
        _equal(ref, out, f"{kind} on {backend}")
    if kind == "with_input":
        xi = torch.randn(2, 3, 19, 23)
        assert loaded(xi)[1] is xi  # the model returns its input: the caller's tensor, as eager does
    if kind == "same_twice":
        out = loaded(torch.randn(2, 3, 19, 23))
        assert out[0] is out[1]


def test_a_namedtuple_output_is_refused_with_the_reason(tmp_path: Path) -> None:
    m = lively_weights(Structured("namedtuple"), seed=3).eval()
    fast = unet_fast.optimize(m, torch.randn(2, 3, 19, 23), backend="torch")
    with pytest.raises(artifact.UnsaveableEngine, match="namedtuple or class of its own"):
        unet_fast.save(fast, tmp_path / "m.ufe")
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


def test_a_whole_model_fallback_is_refused_naming_the_step(tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if bool(x.mean() > 0) else self.b(x)  # a branch on the data: no export

    fast = unet_fast.optimize(DataDependent().eval(), torch.randn(1, 3, 8, 8), backend="torch")
    with pytest.raises(artifact.UnsaveableEngine) as e:
        unet_fast.save(fast, tmp_path / "m.ufe")
    msg = str(e.value)
    assert "capture 0" in msg and "fallback" in msg and "DataDependent" in msg and "never stores" in msg, msg
    assert not list(tmp_path.iterdir())


def test_cross_isa_load_repacks_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = cpu_isa.available_isas()
    best, other = cpu_isa.best().name, next(r for r in ("avx2", "portable") if r in rows and r != cpu_isa.best().name)
    m = _model("unet-transpose-bn")
    x = torch.randn(2, 3, 29, 35)
    fast = unet_fast.optimize(m, x, backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    assert artifact.read_header(path)["engine"]["kernels"]["rows"]["cpu"] == best
    monkeypatch.setenv("UNET_FAST_KERNELS", f"cpu={other}")
    same = unet_fast.optimize(m, x, backend="cpu")  # what optimize gives under the same forcing
    _no_capture(monkeypatch)
    loaded = unet_fast.load(path)
    a = loaded.report_data().artifact
    assert a is not None and a.repacked_count > 0 and f"forces cpu={other}" in a.reason, a
    assert all(k.endswith(f".{other}") for k, _ in a.repacked), a.repacked
    assert {s.isa for s in loaded.report_data().steps} == {other}
    for s in ((2, 3, 29, 35), (1, 3, 40, 22)):
        xi = torch.randn(s)
        _equal(_run(same, xi), _run(loaded, xi), f"loaded with cpu={other} vs optimize with cpu={other}")
        assert_parity(_run(fast, xi), _run(loaded, xi), rel_l2=TOL[torch.float32], what=f"{best} file on {other}")
    text = loaded.report()
    assert f"cpu={best}" in text and "packed here" in text and f"forces cpu={other}" in text


def test_a_file_for_a_row_this_cpu_lacks_loads_by_repacking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AVX-512 file on an AVX2-only machine, played by hiding the file's row from the CPU table (what the
    registry and the packers read): no forcing, the load picks what runs here and packs for it."""
    best = cpu_isa.best().name
    if best == "portable":
        pytest.skip("no native vector row here to hide")
    m = _model("unet-transpose-bn")
    x = torch.randn(2, 3, 29, 35)
    fast = unet_fast.optimize(m, x, backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    xi = torch.randn(2, 3, 31, 26)
    ref = _run(fast, xi)  # before the row is hidden: the saved engine runs it
    import dataclasses

    real = cpu_isa.table()
    hidden = tuple(dataclasses.replace(r, runnable=False, reason=f"no {best} here (simulated)")
                   if r.kind == "vector" and r.name == best else r for r in real)  # fmt: skip
    monkeypatch.setattr(cpu_isa, "table", lambda: hidden)
    loaded = unet_fast.load(path)
    a = loaded.report_data().artifact
    assert a is not None and a.repacked_count > 0 and f"cpu={best}, which cannot run here" in a.reason, a
    now = cpu_isa.best().name
    assert now != best and {s.isa for s in loaded.report_data().steps} == {now}
    assert_parity(ref, _run(loaded, xi), rel_l2=TOL[torch.float32], what=f"{best} file on {now}")


def test_load_on_another_dtype_or_backend_packs_from_the_folded_weights(tmp_path: Path) -> None:
    m = _model("milesial")
    x = torch.randn(2, 3, 36, 44)
    fast = unet_fast.optimize(m, x, backend="cpu")
    loaded = unet_fast.load(unet_fast.save(fast, tmp_path / "m.ufe"))
    for other in (loaded.with_backend("torch"), loaded.to(torch.bfloat16) if cpu_bf16.available_tile_backends() else None):
        if other is None:
            continue
        ref = fast.with_backend(other.backend.name, other.dtype)
        _equal(_run(ref, x), _run(other, x), f"loaded then {other.backend.name} {other.dtype}")


def test_loaded_engine_without_the_model_refuses_a_shape_no_capture_serves(tmp_path: Path) -> None:
    class Branchy(nn.Module):  # the code branches on the size: a guard in the capture
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.shape[2] % 2 == 0 else self.b(x)

    m = lively_weights(Branchy(), 1).eval()
    fast = unet_fast.optimize(m, torch.randn(2, 3, 16, 16), backend="cpu")
    loaded = unet_fast.load(unet_fast.save(fast, tmp_path / "even.ufe"))
    xe = torch.randn(1, 3, 20, 18)
    _equal(fast(xe), loaded(xe), "an even size: the saved capture serves it")
    with pytest.raises(CaptureMissingError) as e:
        loaded(torch.randn(1, 3, 17, 16))
    msg = str(e.value)
    assert "even.ufe" in msg and "guard" in msg and "% 2" in msg and "optimize from the model" in msg, msg
    # every capture present is saved: after the engine ran at an odd size, the file serves both
    fast(torch.randn(1, 3, 17, 16))
    both = unet_fast.load(unet_fast.save(fast, tmp_path / "both.ufe"))
    assert len(both.captures) == 2
    for s in ((1, 3, 17, 16), (2, 3, 20, 18)):
        xi = torch.randn(s)
        _equal(fast(xi), both(xi), f"two captures at {s}")
    # with the model given back, a new branch is captured again as after optimize
    again = unet_fast.load(tmp_path / "even.ufe", model=m)
    xi = torch.randn(1, 3, 17, 16)
    torch.testing.assert_close(again(xi), m(xi), rtol=1e-5, atol=1e-5)
    assert len(again.captures) == 2 and again.report_data().artifact.model


def test_load_with_another_model_is_refused(tmp_path: Path) -> None:
    m = _model("unet-transpose-bn")
    path = unet_fast.save(unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="torch"), tmp_path / "m.ufe")
    other = lively_weights(FAMILIES["unet-transpose-bn"][0](), seed=99).eval()
    with pytest.raises(ValueError, match="weights differ"):
        unet_fast.load(path, model=other)


def test_loaded_unet_checks_sizes_in_closed_form(tmp_path: Path) -> None:
    m = _model("unet-valid")
    fast = unet_fast.optimize(m, torch.randn(2, 1, 92, 100), backend="torch")
    loaded = unet_fast.load(unet_fast.save(fast, tmp_path / "m.ufe"))
    with pytest.raises(ValueError, match="nearest valid sizes"):
        loaded(torch.randn(1, 1, 93, 100))


def test_channels_last_output_formats_travel_with_the_file(tmp_path: Path) -> None:
    m = _model("unet-transpose-bn")
    x = torch.randn(2, 3, 29, 35)
    fast = unet_fast.optimize(m, x, backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    assert "channels_last" in artifact.read_header(path)["engine"]["formats"]
    loaded = unet_fast.load(path)
    xc = x.contiguous(memory_format=torch.channels_last)
    ref, out = m(xc), loaded(xc)
    assert out.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)
    assert out.is_contiguous() == ref.is_contiguous()
    _equal(fast(xc), out, "channels_last input")


def test_header_records_versions_kernels_and_a_content_hash(tmp_path: Path) -> None:
    m = _model("unet-transpose-bn")
    fast = unet_fast.optimize(m, torch.randn(2, 3, 29, 35), backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    h = artifact.read_header(path)
    assert h["format"] == "unet_fast.engine" and h["format_version"] == 1
    assert h["written"]["unet_fast"] == unet_fast.__version__ and h["written"]["torch"] == torch.__version__
    assert h["engine"]["backend"] == "cpu" and h["engine"]["dtype"] == "float32"
    assert h["engine"]["kernels"]["rows"]["cpu"] == cpu_isa.best().name
    assert len(h["content_sha256"]) == 64 and h["model"]["state"]
    import hashlib

    raw = path.read_bytes()
    doff = int.from_bytes(raw[24:32], "little")
    assert hashlib.sha256(raw[doff:]).hexdigest() == h["content_sha256"]


def test_the_caller_model_and_engine_are_untouched_and_the_file_is_private(tmp_path: Path) -> None:
    m = _model("unet-transpose-bn")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = unet_fast.optimize(m, torch.randn(2, 3, 29, 35), backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    loaded = unet_fast.load(path)
    data = path.read_bytes()
    for t in loaded.captures[0].tensors():  # the engine's tensors map the file privately: a write stays in memory
        t.add_(1.0)
    assert path.read_bytes() == data
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not [p for p in tmp_path.iterdir() if p.name != "m.ufe"]  # no temporary file left behind


def test_load_from_bytes_and_pickle_of_a_loaded_engine(tmp_path: Path) -> None:
    import pickle

    m = _model("unet-nearest-sigmoid")
    x = torch.randn(2, 3, 33, 27)
    fast = unet_fast.optimize(m, x, backend="cpu")
    blob = unet_fast.save(fast, tmp_path / "m.ufe").read_bytes()
    loaded = unet_fast.load(blob)
    _equal(fast(x), loaded(x), "from bytes")
    again = pickle.loads(pickle.dumps(loaded))  # Ray ships engines like this: formats and captures travel
    _equal(fast(x), again(x), "pickled loaded engine")
    _equal(fast(x.contiguous(memory_format=torch.channels_last)), again(x.contiguous(memory_format=torch.channels_last)),
           "pickled loaded engine, channels_last")


def test_save_of_a_loaded_engine_round_trips(tmp_path: Path) -> None:
    m = _model("smp-resnet18")
    x = torch.randn(2, 3, 40, 57)
    fast = unet_fast.optimize(m, x, backend="cpu")
    once = unet_fast.load(unet_fast.save(fast, tmp_path / "a.ufe"))
    twice = unet_fast.load(unet_fast.save(once, tmp_path / "b.ufe"))
    _equal(fast(x), twice(x), "saved twice")
    assert twice.report_data().artifact.repacked == ()
    assert artifact.read_header(tmp_path / "b.ufe")["model"] == artifact.read_header(tmp_path / "a.ufe")["model"]


def test_save_refuses_what_is_not_an_engine(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="FusedUNet"):
        unet_fast.save(nn.Conv2d(1, 1, 1), tmp_path / "m.ufe")  # type: ignore[arg-type]
    fast = unet_fast.optimize(_model("unet-bilinear"), torch.randn(1, 3, 32, 32), backend="torch")
    with pytest.raises(OSError):
        unet_fast.save(fast, tmp_path / "no" / "such" / "folder" / "m.ufe")


def test_load_device_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fast = unet_fast.optimize(_model("unet-bilinear"), torch.randn(1, 3, 32, 32), backend="torch")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    with pytest.raises(ValueError, match=r"device='cuda' was asked, and this machine has no CUDA device"):
        unet_fast.load(path, device="cuda")


def test_a_forced_engine_keeps_its_forcing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine optimized under UNET_FAST_KERNELS keeps what was forced: loading without the variable runs the
    same kernels from the stored weights (nothing packed again)."""
    rows = cpu_isa.available_isas()
    other = next((r for r in ("avx2", "portable") if r in rows and r != cpu_isa.best().name), None)
    if other is None:
        pytest.skip("one vector row here")
    monkeypatch.setenv("UNET_FAST_KERNELS", f"cpu={other}")
    m = _model("unet-transpose-bn")
    x = torch.randn(2, 3, 29, 35)
    fast = unet_fast.optimize(m, x, backend="cpu")
    path = unet_fast.save(fast, tmp_path / "m.ufe")
    monkeypatch.delenv("UNET_FAST_KERNELS")
    loaded = unet_fast.load(path)
    assert loaded.report_data().artifact.repacked == ()
    assert {s.isa for s in loaded.report_data().steps} == {other}
    _equal(fast(x), loaded(x), "forced engine")
