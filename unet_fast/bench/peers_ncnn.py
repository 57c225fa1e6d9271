"""ncnn (Tencent) as a bench contender: the other fp32 CPU engine that runs 3x3 convs by Winograd.

Converted from the run's shared ONNX file (`contenders.onnx_file`) by **pnnx**, the converter ncnn ships as a
PyPI wheel: a self-contained executable (`pnnx/pnnx` inside the package; linked against libc / libstdc++
only) run as a subprocess with `fp16=0`, so the ncnn weights stay fp32 (pnnx's default, and its Python
`pnnx.convert`'s, is fp16 weight storage). It reads the ONNX file and writes the ncnn `.param` / `.bin`
plus its own intermediates into the run's workdir (the intermediates are deleted after); it downloads
nothing and starts no other process (checked with strace; tests/bench/test_peers.py checks the command).
The pnnx Python package is not imported (its `__init__` only locates that executable).

Run with `ncnn.Net` and these options, named in the row's note: `num_threads` = the run's threads,
`use_winograd_convolution` and `use_sgemm_convolution` on (ncnn picks F(2x2) / F(4x4) / F(6x6, 3x3) per
layer, all three enabled), `use_packing_layout` on, fp16 / bf16 / int8 storage, packing and arithmetic off,
Vulkan off. ncnn has no batch dimension: a batch of N runs as N extractions, one per image, in the timed
call. fp32 only, CPU only."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from unet_fast.bench.contenders import Prepared, Settings, _first_call, onnx_file

INSTALL = 'pip install -e ".[peers]" (or ".[bench]")'
# Every precision-lowering option of ncnn.Option: all off for the fp32 row.
FP32_OFF = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed",
            "use_int8_inference", "use_int8_storage", "use_int8_packed", "use_int8_arithmetic",
            "use_vulkan_compute")  # fmt: skip
FAST_ON = ("use_winograd_convolution", "use_winograd23_convolution", "use_winograd43_convolution",
           "use_winograd63_convolution", "use_sgemm_convolution", "use_packing_layout")  # fmt: skip


def pnnx_executable() -> Path | None:
    """The pnnx converter executable inside the `pnnx` wheel, found without importing the package."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "pnnx"
    return exe if exe.is_file() else None


def check(s: Settings) -> str:
    """'' when ncnn can run this setting here, else the reason (with the install command)."""
    if importlib.util.find_spec("ncnn") is None:
        return f"ncnn is not installed ({INSTALL})"
    if pnnx_executable() is None:
        return f"pnnx (ncnn's converter) is not installed ({INSTALL})"
    if s.device != "cpu":
        return "benchmarked on CPU only (its Vulkan path is not an fp32 CPU row)"
    if s.dtype != torch.float32:
        return "benchmarked at float32 only"
    return ""


def convert_command(onnx_path: Path, shape: tuple[int, ...], out: Path) -> list[str]:
    """The pnnx command line: ONNX in, fp32 ncnn param/bin (`<out>.ncnn.param/.bin`) and every pnnx
    intermediate written under `out`'s folder (never beside the caller's files)."""
    exe = pnnx_executable()
    if exe is None:
        raise RuntimeError(f"pnnx is not installed ({INSTALL})")
    dims = ",".join(str(d) for d in shape)
    return [str(exe), str(onnx_path), f"inputshape=[{dims}]f32", "fp16=0", "device=cpu",
            f"ncnnparam={out}.ncnn.param", f"ncnnbin={out}.ncnn.bin", f"ncnnpy={out}_ncnn.py",
            f"pnnxparam={out}.pnnx.param", f"pnnxbin={out}.pnnx.bin", f"pnnxpy={out}_pnnx.py",
            f"pnnxonnx={out}.pnnx.onnx"]  # fmt: skip


def convert(onnx_path: Path, shape: tuple[int, ...], workdir: Path) -> tuple[Path, Path]:
    """ONNX -> ncnn (param, bin) with fp32 weights, by the pnnx executable in `workdir` (its log in
    `workdir/pnnx.log`). Raises RuntimeError when pnnx fails or writes no model."""
    d = workdir / "ncnn"
    d.mkdir(parents=True, exist_ok=True)
    local = d / "model.onnx"  # pnnx writes <stem>.pnnxsim.onnx beside its input: keep that inside d
    if not local.exists():
        local.symlink_to(onnx_path.resolve())
    out = d / "model"
    log = workdir / "pnnx.log"
    with open(log, "wb") as f:
        rc = subprocess.run(convert_command(local, shape, out), cwd=d, stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode  # fmt: skip
    param, binary = Path(f"{out}.ncnn.param"), Path(f"{out}.ncnn.bin")
    if rc != 0 or not param.exists() or not binary.exists():
        raise RuntimeError(f"pnnx failed (exit {rc}) on {onnx_path}: {log.read_text(errors='replace')[-2000:]}")
    for p in d.iterdir():  # pnnx's intermediates (~ the model's size each): not needed to run
        if p not in (param, binary):
            p.unlink()
    return param, binary


def io_names(param: Path) -> tuple[str, str]:
    """(input blob, output blob) of a single-input, single-output ncnn param file: the Input layer's top,
    and the one blob that no layer consumes. Raises ValueError otherwise."""
    lines = param.read_text().split("\n")[2:]
    inputs, produced, consumed = [], [], set()
    for line in filter(None, (ln.split() for ln in lines)):
        kind, n_in, n_out = line[0], int(line[2]), int(line[3])
        bottoms, tops = line[4:4 + n_in], line[4 + n_in:4 + n_in + n_out]
        consumed.update(bottoms)
        produced += tops
        if kind == "Input":
            inputs += tops
    outputs = [b for b in produced if b not in consumed]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{param}: expected one input and one output blob, found {inputs} / {outputs}")
    return inputs[0], outputs[0]


def options(threads: int):
    """ncnn.Option for the fp32 row: Winograd + sgemm + packing on, every fp16/bf16/int8/Vulkan path off."""
    import ncnn

    opt = ncnn.Option()
    opt.num_threads = threads
    for name in FAST_ON:
        setattr(opt, name, True)
    for name in FP32_OFF:
        setattr(opt, name, False)
    return opt


def prepare(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
    """The contender's prepare: convert (once per workload run), load, and a run() of one forward pass."""
    import ncnn

    t0 = time.perf_counter()
    path, how = onnx_file(model, x, s)
    param, binary = Path(s.workdir / "ncnn" / "model.ncnn.param"), Path(s.workdir / "ncnn" / "model.ncnn.bin")
    if not param.exists():
        param, binary = convert(path, tuple(x.shape), s.workdir)
    net = ncnn.Net()
    net.opt = options(s.threads)
    if net.load_param(str(param)) != 0 or net.load_model(str(binary)) != 0:
        raise RuntimeError(f"ncnn could not load {param} / {binary}")
    name_in, name_out = io_names(param)
    images = [np.ascontiguousarray(x[i].float().numpy()) for i in range(x.shape[0])]

    def run() -> np.ndarray:
        outs = []
        for img in images:  # ncnn has no batch dimension
            with net.create_extractor() as ex:
                ex.input(name_in, ncnn.Mat(img))
                rc, out = ex.extract(name_out)
                if rc != 0:
                    raise RuntimeError(f"ncnn extract({name_out!r}) returned {rc}")
                outs.append(np.array(out))
        return np.stack(outs)

    per_image = "; one extraction per image (no batch dimension)" if x.shape[0] > 1 else ""
    note = (f"ncnn {ncnn.__version__}, pnnx fp16=0, Winograd (F2/F4/F6) + sgemm + packing on, "
            f"fp16/bf16/int8 off, {s.threads} threads{per_image}; {how}")  # fmt: skip
    return Prepared(run, _first_call(run, s, t0), note, precision="fp32")
