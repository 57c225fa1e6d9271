"""The compile cache (issue 26): `optimize(..., cache_dir=...)` / UNET_FAST_CACHE_DIR. A second process with the
same model loads the engine instead of compiling (no torch.export), bit-identical; two processes filling one
entry at once both succeed; a changed model (weights, an attribute) or forcing gets another entry; a corrupt
entry is rebuilt and replaced, with the reason in the report; an engine that cannot be saved, or a model that
cannot be keyed, is compiled and not cached, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import unet_fast
from unet_fast import UNet
from unet_fast.engine import cache
from unet_fast.models.weights import lively_weights

ROOT = Path(__file__).resolve().parents[2]


def _model(seed: int = 3) -> nn.Module:
    return lively_weights(UNet(3, 2, 4, 3, "batch", "bilinear", True), seed=seed).eval()


def _x(shape: tuple[int, ...] = (2, 3, 29, 35)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(4))


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ufe"))


def _count_exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = torch.export.export

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counting)
    return calls


def test_a_hit_loads_instead_of_compiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_exports(monkeypatch)
    m, x = _model(), _x()
    first = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    c = first.report_data().cache
    assert c is not None and c.status == "miss" and c.reason == "no entry" and calls[0] >= 1
    assert _entries(tmp_path) == [Path(c.path)]
    calls[0] = 0
    second = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    data = second.report_data()
    assert data.cache.status == "hit" and data.cache.key == c.key and calls[0] == 0
    assert data.artifact is not None and data.artifact.repacked == () and data.artifact.model
    for s in ((2, 3, 29, 35), (1, 3, 40, 44)):
        xi = _x(s)
        assert torch.equal(first(xi), second(xi))
    assert "compile cache: hit" in second.report()


def test_a_second_process_loads_the_entry(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import hashlib, json, sys, torch
        sys.path.insert(0, {str(ROOT / "tests" / "engine")!r})
        calls = [0]
        real = torch.export.export
        def counting(*a, **k):
            calls[0] += 1
            return real(*a, **k)
        torch.export.export = counting
        import unet_fast
        from test_compile_cache import _model, _x
        fast = unet_fast.optimize(_model(), _x(), backend="cpu", cache_dir={str(tmp_path)!r})
        out = fast(_x((1, 3, 33, 31)))
        c = fast.report_data().cache
        print(json.dumps({{"status": c.status, "exports": calls[0], "key": c.key,
                          "out": hashlib.sha256(out.numpy().tobytes()).hexdigest()}}))
    """)
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert runs[0]["status"] == "miss" and runs[0]["exports"] >= 1
    assert runs[1]["status"] == "hit" and runs[1]["exports"] == 0, runs[1]
    assert runs[0]["key"] == runs[1]["key"] and runs[0]["out"] == runs[1]["out"]


def test_two_processes_filling_one_entry_both_succeed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests" / "engine")!r})
        import unet_fast
        from test_compile_cache import _model, _x
        fast = unet_fast.optimize(_model(), _x(), backend="cpu", cache_dir={str(tmp_path)!r})
        print(json.dumps({{"status": fast.report_data().cache.status, "sum": float(fast(_x()).sum())}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    rows = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert {r["status"] for r in rows} <= {"miss", "hit"} and rows[0]["sum"] == rows[1]["sum"], rows
    assert len(_entries(tmp_path)) == 1 and not [p for p in tmp_path.iterdir() if p.suffix != ".ufe"]
    again = unet_fast.optimize(_model(), _x(), backend="cpu", cache_dir=tmp_path)
    assert again.report_data().cache.status == "hit" and float(again(_x()).sum()) == rows[0]["sum"]


def test_a_changed_model_gets_another_entry(tmp_path: Path) -> None:
    m, x = _model(), _x()
    a = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path).report_data().cache
    with torch.no_grad():
        m.encoders[0][0].weight[0, 0, 0, 0] += 0.5  # one weight
    b = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    assert b.report_data().cache.status == "miss" and b.report_data().cache.key != a.key
    torch.testing.assert_close(b(x), m(x), rtol=1e-4, atol=1e-5)
    m.ups[0].align_corners = False  # an attribute: same weights, another graph
    c = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    assert c.report_data().cache.status == "miss" and c.report_data().cache.key not in (a.key, b.report_data().cache.key)
    torch.testing.assert_close(c(x), m(x), rtol=1e-4, atol=1e-5)
    m.eval()
    d = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path, output="classes")  # an option
    assert d.report_data().cache.status == "miss" and len(_entries(tmp_path)) == 4


def test_forced_kernels_get_another_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_fast.kernels import cpu_isa

    other = next((r for r in ("avx2", "portable") if r in cpu_isa.available_isas() and r != cpu_isa.best().name), None)
    if other is None:
        pytest.skip("one vector row here")
    m, x = _model(), _x()
    a = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path).report_data().cache
    monkeypatch.setenv("UNET_FAST_KERNELS", f"cpu={other}")
    b = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    assert b.report_data().cache.status == "miss" and b.report_data().cache.key != a.key
    assert {s.isa for s in b.report_data().steps} == {other}
    monkeypatch.delenv("UNET_FAST_KERNELS")
    assert unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path).report_data().cache.key == a.key


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "misplaced"])
def test_a_corrupt_entry_is_rebuilt_and_replaced(damage: str, tmp_path: Path) -> None:
    m, x = _model(), _x()
    first = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    entry = Path(first.report_data().cache.path)
    blob = bytearray(entry.read_bytes())
    if damage == "flip":
        blob[-100] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "foreign":
        blob = bytearray(b"\x89PNG\r\n\x1a\n" + bytes(100))
    else:  # a valid engine file of another model, renamed into this entry's place
        other = unet_fast.optimize(_model(seed=8), x, backend="cpu")
        blob = bytearray(unet_fast.save(other, tmp_path / "other.bin").read_bytes())
    entry.write_bytes(bytes(blob))
    again = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    c = again.report_data().cache
    assert c.status == "rebuilt" and "compiled and replaced" in c.reason, c
    expect = {"flip": "CRC-32", "truncate": "truncated", "foreign": "PNG", "misplaced": "cache_key"}[damage]
    assert expect in c.reason, c.reason
    assert torch.equal(again(x), first(x))
    third = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
    assert third.report_data().cache.status == "hit"


def test_an_engine_that_cannot_be_saved_is_compiled_not_cached(tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if bool(x.mean() > 0) else -self.a(x)

    m = DataDependent().eval()
    fast = unet_fast.optimize(m, torch.randn(1, 3, 8, 8), backend="torch", cache_dir=tmp_path)
    c = fast.report_data().cache
    assert c.status == "unwritten" and "cannot be saved" in c.reason and "fallback" in c.reason, c
    assert not list(tmp_path.iterdir())
    x = torch.randn(1, 3, 8, 8).abs()
    torch.testing.assert_close(fast(x), m(x))


def test_a_model_without_source_is_not_cached(tmp_path: Path) -> None:
    ns: dict = {"nn": nn, "torch": torch}
    exec(textwrap.dedent("""
        class Made(nn.Module):
            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(3, 2, 3, padding=1)
            def forward(self, x):
                return torch.relu(self.c(x))
    """), ns)  # fmt: skip
    m = ns["Made"]().eval()
    fast = unet_fast.optimize(m, torch.randn(1, 3, 16, 16), backend="cpu", cache_dir=tmp_path)
    c = fast.report_data().cache
    assert c.status == "off" and "no source" in c.reason, c
    assert not list(tmp_path.iterdir())


def test_the_environment_variable_turns_the_cache_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    m, x = _model(), _x()
    assert unet_fast.optimize(m, x, backend="torch").report_data().cache.status == "miss"
    assert unet_fast.optimize(m, x, backend="torch").report_data().cache.status == "hit"
    monkeypatch.setenv(cache.CACHE_ENV, "")
    assert unet_fast.optimize(m, x, backend="torch").report_data().cache is None


def test_a_hit_honours_the_run_options_and_the_new_example(tmp_path: Path) -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.shape[2] % 2 == 0 else self.b(x)

    m = lively_weights(Branchy(), 2).eval()
    unet_fast.optimize(m, torch.randn(2, 3, 16, 16), backend="cpu", cache_dir=tmp_path)
    odd = torch.randn(2, 3, 17, 16)
    fast = unet_fast.optimize(m, odd, backend="cpu", cache_dir=tmp_path, check_finite=True, max_cached_shapes=2)
    assert fast.report_data().cache.status == "hit"
    assert fast.config.check_finite and fast.config.max_cached_shapes == 2
    torch.testing.assert_close(fast(odd), m(odd), rtol=1e-5, atol=1e-5)  # captured again: the model came along
    assert len(fast.captures) == 2
    with pytest.raises(ValueError, match="NaN"):
        fast(torch.full((1, 3, 16, 16), float("nan")))


def test_a_training_model_is_refused_before_the_cache(tmp_path: Path) -> None:
    m = _model().train()
    with pytest.raises(unet_fast.TrainingModeError):
        unet_fast.optimize(m, _x(), backend="cpu", cache_dir=tmp_path)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_the_key_covers_versions_and_code() -> None:
    m, x = _model(), _x()
    key, material = cache.cache_key(m, x, unet_fast.engine.EngineConfig(backend="cpu"))
    assert material["torch"] == torch.__version__ and material["unet_fast"] == unet_fast.__version__
    assert material["model"]["code"] and material["model"]["state"] and len(key) == 40
    assert material["example"] == {"rank": 4, "channels": 3, "dtype": "torch.float32", "device": {"type": "cpu"}}
    assert hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:40] == key


def test_the_key_changes_with_what_decides_the_engine_and_only_with_that(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key matrix, without compiling: every input that changes the engine changes the key (weights, graph,
    example dtype / channels / rank, backend, dtype, options, forced ISA, format / unet_fast / code / torch
    versions); what the loaded engine sets itself (N, H, W, check_finite, max_cached_shapes, cuda_graphs), a
    copy of the model and calling it again do not."""
    from dataclasses import replace

    from unet_fast.engine import EngineConfig
    from unet_fast.kernels import cpu_isa

    m, x = _model(), _x()
    cfg = EngineConfig(backend="cpu")

    def key(model: nn.Module = m, example: torch.Tensor = x, config: EngineConfig = cfg) -> str:
        return cache.cache_key(model, example, config)[0]

    base = key()
    same = {
        "again": key(),
        "a deep copy of the model": key(model=__import__("copy").deepcopy(m)),
        "another N, H, W": key(example=_x((1, 3, 64, 48))),
        "check_finite": key(config=replace(cfg, check_finite=True)),
        "max_cached_shapes": key(config=replace(cfg, max_cached_shapes=2)),
        "cuda_graphs": key(config=replace(cfg, cuda_graphs=True)),
    }
    assert {k: v for k, v in same.items() if v != base} == {}

    heavier = _model()
    with torch.no_grad():
        heavier.encoders[1][0].weight[1, 0, 0, 0] += 1e-3  # one weight, deep inside
    graph = _model()
    graph.ups[0].align_corners = False  # same weights, another graph
    bn = _model()
    bn.encoders[0][1].running_var[0] += 0.5  # a buffer
    differ = {
        "a weight": key(model=heavier),
        "an attribute (the graph)": key(model=graph),
        "a buffer": key(model=bn),
        "another model": key(model=_model(seed=4)),
        "example dtype": key(example=x.double()),
        "example channels": key(example=torch.randn(2, 4, 29, 35)),
        "example rank": key(example=torch.randn(2, 3, 5, 29, 35)),
        "backend torch": key(config=replace(cfg, backend="torch")),
        "backend auto": key(config=replace(cfg, backend="auto")),
        "dtype bfloat16": key(config=replace(cfg, dtype=torch.bfloat16)),
        "output classes": key(config=replace(cfg, output="classes")),
        "exact": key(config=replace(cfg, exact=True)),
        "passes": key(config=replace(cfg, passes=frozenset())),
        "output_memory_format": key(config=replace(cfg, output_memory_format="channels_last")),
    }
    other = next((r for r in ("avx2", "portable") if r in cpu_isa.available_isas() and r != cpu_isa.best().name), None)
    if other is not None:
        with monkeypatch.context() as mp:
            mp.setenv("UNET_FAST_KERNELS", f"cpu={other}")
            differ[f"forced cpu={other}"] = key()
    for what, target, value in (("format version", cache, "FORMAT_VERSION"),
                                ("unet_fast version", cache.artifact, "version"),
                                ("unet_fast code", cache, "unet_fast_fingerprint"),
                                ("torch version", torch, "__version__")):  # fmt: skip
        with monkeypatch.context() as mp:
            old = getattr(target, value)
            mp.setattr(target, value, (lambda o=old: o() + "-other") if callable(old) and value != "__version__"
                       else (old + 1 if isinstance(old, int) else old + "+other"))  # fmt: skip
            differ[what] = key()
    assert key() == base  # everything restored
    keys = list(differ.values())
    assert base not in keys, [k for k, v in differ.items() if v == base]
    assert len(set(keys)) == len(keys), "two different inputs share a key"


def test_the_caller_model_is_untouched_by_a_miss_and_a_hit(tmp_path: Path) -> None:
    """Keying, compiling, writing and loading an entry change nothing of the caller's: parameters, buffers,
    requires_grad, device, dtype, mode, the example input."""
    m, x = _model(), _x()
    m.encoders[0][0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    grads = {k: p.requires_grad for k, p in m.named_parameters()}
    x0 = x.clone()
    for status in ("miss", "hit"):
        fast = unet_fast.optimize(m, x, backend="cpu", cache_dir=tmp_path)
        assert fast.report_data().cache.status == status
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()), status
        assert {k: p.requires_grad for k, p in m.named_parameters()} == grads and not m.training
        assert {p.dtype for p in m.parameters()} == {torch.float32} and torch.equal(x, x0)
