import subprocess
import sys

from unet_fast.cli import main


def test_bench_runs_small_workload(capsys) -> None:
    assert main(["bench", "--workload", "unet-small", "--repeats", "1", "--warmup", "0", "--quick",
                 "--contenders", "eager", "--no-write"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "pytorch eager" in out and "median ms" in out


def test_unknown_workload_is_exit_2(capsys) -> None:
    assert main(["bench", "--workload", "nope"]) == 2
    assert "unknown workload 'nope'" in capsys.readouterr().err


def test_console_script_info() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "unet_fast.cli", "info"], capture_output=True, text=True, check=True
    )
    assert "backends:" in proc.stdout
