"""The benchmark runner at tiny sizes with 1 round: rows, parity, failures and skips recorded honestly."""

import importlib.util

import pytest
import torch

from unet_fast.bench import contenders as C
from unet_fast.bench.runner import PARITY_LIMITS, RunConfig, parity_ok, run_workload
from unet_fast.bench.workloads import get_workload, unavailable_workloads

TINY = {"workload": "unet-small", "size": (32, 48), "threads": 1, "repeats": 1, "warmup": 0}
ROW_KEYS = {"workload", "input_shape", "dtype", "device", "contender", "threads", "median_ms", "min_ms", "max_ms",
            "repeats", "samples_ms", "speedup_vs_eager", "setup_s", "parity", "parity_ok", "note"}  # fmt: skip


def quiet(_: str) -> None:
    pass


def test_eager_rows_with_parity() -> None:
    r = run_workload(RunConfig(**TINY, batch=2, contenders=["eager", "eager-cl"]), quiet)
    assert [row["contender"] for row in r.rows] == ["eager", "eager-cl"]
    assert r.input_shape == (2, 3, 32, 48) and r.output_shape == (2, 2, 32, 48)
    for row in r.rows:
        assert ROW_KEYS <= set(row)
        assert row["threads"] == 1 and row["repeats"] == 1 and len(row["samples_ms"]) == 1
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["parity_ok"] and row["parity"]["nonfinite"] == 0
    eager, cl = r.rows
    assert (
        eager["parity"]["max_abs"] == 0.0 and eager["parity"]["argmax_agreement"] == 1.0
    )  # it *is* the reference
    assert eager["speedup_vs_eager"] == pytest.approx(1.0)
    assert cl["parity"]["rel_l2"] < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnxruntime_row() -> None:
    r = run_workload(RunConfig(**TINY, contenders=["onnxruntime"]), quiet)
    assert not r.failed, r.failed
    (row,) = r.rows
    assert row["parity_ok"] and row["parity"]["rel_l2"] < 1e-5 and row["setup_s"] > 0


def test_unusable_contender_is_skipped_with_reason() -> None:
    r = run_workload(RunConfig(**TINY, contenders=["eager", "tensorrt"]), quiet)
    assert r.skipped == {"tensorrt": "GPU only"}
    assert [row["contender"] for row in r.rows] == ["eager"]


def test_unet_fast_rows_or_reason() -> None:
    """Each unet_fast backend either ran with parity or says why not; never silently absent."""
    r = run_workload(RunConfig(**TINY, contenders=["unet_fast-torch", "unet_fast-cuda"]), quiet)
    ran = {row["contender"] for row in r.rows}
    for name in ("unet_fast-torch", "unet_fast-cuda"):
        assert name in ran or r.skipped.get(name) or r.failed.get(name)
    assert "on cpu" in r.skipped["unet_fast-cuda"] or "not available" in r.skipped["unet_fast-cuda"]


def _fake(name: str, run_factory) -> C.Contender:
    def prepare(model, x, s):
        return C.Prepared(run_factory(model, x), 0.0)

    return C.Contender(name, "test double", "peer", lambda s: "", prepare)


def test_wrong_output_fails_parity_and_broken_contender_is_recorded(monkeypatch) -> None:
    def wrong(model, x):
        out = model(x)
        return lambda: out.flip(1)  # swapped classes: fast and wrong

    def broken(model, x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(C.CONTENDERS, "wrong", _fake("wrong", wrong))
    monkeypatch.setitem(C.CONTENDERS, "broken", _fake("broken", broken))
    r = run_workload(RunConfig(**TINY, contenders=["eager", "wrong", "broken"]), quiet)
    rows = {row["contender"]: row for row in r.rows}
    assert rows["eager"]["parity_ok"] and not rows["wrong"]["parity_ok"]
    assert rows["wrong"]["parity"]["argmax_agreement"] < 0.5
    assert r.failed == {"broken": "RuntimeError: kernel exploded"}


def test_parity_limits_cover_every_dtype() -> None:
    good = {"max_abs": 1e-6, "rel_l2": 1e-6, "argmax_agreement": 1.0, "nonfinite": 0}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert parity_ok(good, dtype)
        assert not parity_ok({**good, "nonfinite": 1}, dtype)
        assert not parity_ok({**good, "rel_l2": PARITY_LIMITS[dtype]["rel_l2"] * 2}, dtype)


def test_bad_config_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        run_workload(RunConfig("nope"), quiet)
    with pytest.raises(ValueError, match="repeats"):
        run_workload(RunConfig(**{**TINY, "repeats": 0}), quiet)
    with pytest.raises(ValueError, match="unknown contender"):
        run_workload(RunConfig(**TINY, contenders=["nope"]), quiet)
    with pytest.raises(ValueError, match="input width of 47"):
        run_workload(RunConfig("unet-original", size=(572, 47), threads=1, repeats=1), quiet)


def test_workload_inputs_are_random_and_checked() -> None:
    w = get_workload("unet-small")
    x = w.make_input(batch=3, seed=1, size=(17, 19))
    assert x.shape == (3, 3, 17, 19) and x.std() > 0.5
    assert not torch.equal(x, w.make_input(batch=3, seed=2, size=(17, 19)))
    with pytest.raises(ValueError, match="batch"):
        w.make_input(batch=0)
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        assert "segmentation_models_pytorch" in unavailable_workloads()["smp-resnet34"]
        with pytest.raises(ValueError, match="unavailable here"):
            get_workload("smp-resnet34")
