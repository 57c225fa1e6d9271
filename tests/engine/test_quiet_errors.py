"""Errors speak once, in our words (issue 23, item 10): a size the model cannot take raises the engine's
ValueError and prints nothing else. Before, torch's fake-tensor layer logged a traceback per failed op
("failed while attempting to run meta for aten.max_pool2d_with_indices.default", ~45 lines) while the engine
probed the size. Every path that probes is covered: the re-capture at a size no guard admits, the size hint
(the model on the meta device), the output-format probe on fake tensors; torch's logger levels are restored.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

import unet_fast
from unet_fast.engine.layout import eager_output_formats
from unet_fast.graph.quiet import TORCH_LOGGERS, quiet_torch_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))


class ValidConvs(nn.Module):
    """Two 5x5 valid convs: sizes below 9 cannot run (no closed-form size check: the engine probes)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 5), nn.Conv2d(4, 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _levels() -> dict[str, int]:
    return {n: logging.getLogger(n).level for n in TORCH_LOGGERS}


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...], tuple[int, ...], str]]:
    from milesial_unet import MilesialUNet

    return {  # model, example shape, bad shape, what our error says
        "milesial": (MilesialUNet(3, 2, True, base=4), (1, 3, 64, 64), (2, 3, 5, 5), r"nearest valid height: 16"),
        "valid_convs": (ValidConvs(), (1, 3, 32, 32), (1, 3, 6, 6), r"nearest valid height: 9, width: 9"),
        "valid_convs_one_side": (ValidConvs(), (1, 3, 32, 32), (1, 3, 6, 40), r"nearest valid height: 9, width: 40"),
    }


@pytest.mark.parametrize("name", ["milesial", "valid_convs", "valid_convs_one_side"])
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_a_bad_size_prints_nothing_but_our_error(name: str, backend: str, capfd: pytest.CaptureFixture,
                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    model, example, bad, hint = _models()[name]
    fast = unet_fast.optimize(model.eval(), torch.randn(example), backend=backend)
    capfd.readouterr()
    levels = _levels()
    with caplog.at_level(logging.DEBUG, logger="torch"):
        with pytest.raises(ValueError, match=rf"cannot take an input of {bad[2]}x{bad[3]}.*{hint}"):
            fast(torch.randn(bad))
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"printed besides our error:\n{out}{err}"[:2000]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage()[:200] for r in loud]
    assert _levels() == levels  # torch's logging is as it was
    fast(torch.randn(example))  # and the module still works


@pytest.mark.parametrize("name", ["milesial", "valid_convs"])
def test_optimize_at_a_bad_size_prints_nothing_but_our_error(name: str, capfd: pytest.CaptureFixture) -> None:
    model, _, bad, hint = _models()[name]
    capfd.readouterr()
    with pytest.raises(ValueError, match=rf"cannot take an input of {bad[2]}x{bad[3]}.*{hint}"):
        unet_fast.optimize(model.eval(), torch.randn(bad), backend="torch")
    assert capfd.readouterr() == ("", "")


def test_the_output_format_probe_is_quiet(capfd: pytest.CaptureFixture) -> None:
    capfd.readouterr()
    assert eager_output_formats(ValidConvs().eval(), (1, 3, 6, 6), "channels_last") == ["channels_last"]
    assert capfd.readouterr() == ("", "")


def test_quiet_restores_levels_when_nested_and_concurrent() -> None:
    torch_logger = logging.getLogger("torch._subclasses.fake_tensor")
    before = _levels()
    torch_logger.setLevel(logging.INFO)
    try:
        seen = []

        def probe() -> None:
            with quiet_torch_logs():
                seen.append(torch_logger.isEnabledFor(logging.CRITICAL))

        with quiet_torch_logs():
            with quiet_torch_logs():
                assert not torch_logger.isEnabledFor(logging.CRITICAL)
            assert not torch_logger.isEnabledFor(logging.CRITICAL)  # the outer block still holds
            t = threading.Thread(target=probe)
            t.start()
            t.join()
        assert seen == [False]
        assert torch_logger.level == logging.INFO  # restored once, after the last block
        with pytest.raises(RuntimeError), quiet_torch_logs():
            raise RuntimeError("propagates")
        assert torch_logger.level == logging.INFO
    finally:
        torch_logger.setLevel(before["torch._subclasses.fake_tensor"])
