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


# --- small ones of issue 12 (fault 8) ---------------------------------------------------------------------


def test_version(capsys) -> None:
    import pytest

    import unet_fast

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"unet-fast {unet_fast.__version__} (torch ")


def _parsers():
    import argparse

    from unet_fast.cli import build_parser

    todo, seen = [("unet-fast", build_parser())], []
    while todo:
        name, parser = todo.pop()
        seen.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return seen


def test_every_option_of_every_command_has_help_and_a_default() -> None:
    """Options taking a value say what they are and their default; flags say what they do."""
    import argparse
    import re

    checked, missing = 0, []
    for name, parser in _parsers():
        for a in parser._actions:
            if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            checked += 1
            text = a.help or ""
            words = re.sub(r"\(?default[^)]*\)?", "", text, flags=re.IGNORECASE).strip(" ;,")
            if not words:
                missing.append(f"{name} {a.option_strings[0]}: no description")
            takes_value = not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            if takes_value and not a.required and "default" not in text.lower():
                missing.append(f"{name} {a.option_strings[0]}: no default in {text!r}")
    assert checked > 60 and not missing, missing
    helps = {n: p for n, p in _parsers()}
    dtype = next(a for a in helps["unet-fast segment"]._actions if a.dest == "dtype")
    assert "default: float32" in dtype.help
    opset = next(a for a in helps["unet-fast export onnx"]._actions if a.dest == "opset")
    assert "default: 17" in opset.help


def test_triton_is_an_extra_and_its_absence_degrades_cleanly() -> None:
    """A CPU-only install of the main job (.[bench]) does not pull triton; without it everything but the
    Triton backend works, and info says how to install it."""
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not any(d.startswith("triton") for d in project["dependencies"] + extras["bench"])
    assert all(any(d.startswith("triton") for d in extras[e]) for e in ("gpu", "triton", "test"))
    code = (
        "import sys; sys.modules['triton'] = None\n"  # find_spec('triton') is None, import fails: not installed
        "import torch, unet_fast\n"
        "from unet_fast.info import collect\n"
        "m = unet_fast.UNet(3, 2, 4, 2).eval()\n"
        "f = unet_fast.optimize(m, torch.randn(1, 3, 16, 16))\n"
        "print(f.backend.name, '|', collect()['backends']['triton']['why'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "TRITON_INTERPRET": "0"})  # fmt: skip
    backend, why = proc.stdout.strip().split(" | ")
    assert backend == "cpu" and 'pip install "unet_fast[gpu]"' in why


def test_readme_and_docs_show_what_the_commands_print() -> None:
    """The snippets the README and docs quote are what the code prints (bench ratio line, busy warning,
    segment legend, the run_all.sh hint)."""
    from pathlib import Path

    from unet_fast.bench.load import LoadReport
    from unet_fast.bench.results import add_peer_ratios, peer_ratio_lines
    from unet_fast.demo import bundled
    from unet_fast.inference.legend import format_legend
    from unet_fast.inference.model_card import read_card

    root = Path(__file__).resolve().parents[1]
    readme, demo_doc = (root / "README.md").read_text(), (root / "docs" / "demo.md").read_text()
    rows = [{"workload": "unet64-256", "input_shape": [1, 3, 256, 256], "dtype": "float32", "device": "cpu",
             "contender": c, "median_ms": ms, "parity_ok": True}
            for c, ms in (("compile", 445.8), ("onnxruntime", 458.6), ("openvino", 466.2), ("mnn", 218.8),
                          ("mnn-normal", 215.0), ("ncnn", 218.7), ("unet_fast-cpu", 156.6))]  # fmt: skip
    add_peer_ratios(rows)
    (line,) = peer_ratio_lines(rows)
    assert line in readme and "| 219 / 215 | 219 | **157** | **0.73x** MNN |" in readme  # the table's own row
    busy = LoadReport(2, 10.0, 2.4, 2.6, 1.4, [], True, ["x"]).warning_lines()
    assert busy[1].startswith("WARNING: BUSY MACHINE: ") and "`WARNING: BUSY MACHINE: ...`" in readme
    legend = format_legend(read_card(bundled.require(bundled.DEMO_WEIGHTS).with_suffix(".json")))
    quoted = "legend (mask value" + demo_doc.split("`legend (mask value")[1].split(", ...`")[0]
    assert legend.startswith(quoted) and quoted.endswith("1 cell #e6194b")
    assert (root / "benchmarks" / "run_all.sh").is_file() and "benchmarks/run_all.sh MACHINE_NAME" in readme
