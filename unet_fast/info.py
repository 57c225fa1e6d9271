"""`unet-fast info` / `python -m unet_fast.info`: versions, and whether each extension and backend is
built and usable here, with the reason when it is not."""

from __future__ import annotations

import importlib.util
import json
import platform
from typing import Any

import torch

from unet_fast import _ext


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a broken install is worth reporting, not crashing on
        return f"import failed: {e}"
    return str(getattr(mod, "__version__", "unknown"))


def _triton_status() -> tuple[bool, str]:
    if _version("triton") is None:
        return False, 'triton is not installed (pip install "unet_fast[gpu]"; CUDA builds of torch bring it)'
    if torch.cuda.is_available():
        return True, "GPU"
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "interpreter (TRITON_INTERPRET=1): correct but slow, for testing"
    return False, "no CUDA device (set TRITON_INTERPRET=1 to run the kernels in the interpreter, for testing)"


def _choice(kind: str, dtype: torch.dtype, context: Any) -> str:
    """What the kernel registry runs for a typical step of `kind` here (a 3x3 stride-1 conv with 64 input
    channels, at a 256x256 and a 32x32 output where the kernel differs, a 2x2 transposed conv, a 64-channel
    head), with the reasons better-ranked kernels were passed over."""
    from unet_fast.graph.ir import Conv, ConvTranspose2x2, Head, Slice
    from unet_fast.kernels import registry

    x, y = Slice("x", 0, 64), Slice("y", 0, 64)
    steps = {
        "conv3x3": Conv("info", [x], torch.zeros(64, 64, 3, 3), None, (1, 1), (1, 1), (1, 1), "relu", 0.01, y),
        "conv_transpose2x2": ConvTranspose2x2("info", x, torch.zeros(64, 32, 2, 2), None, "none", 0.01, y),
        "head": Head("info", x, torch.zeros(2, 64), None, "softmax", Slice("p", 0, 2)),
    }
    # a conv's kernel may depend on its output size in the plan (Winograd F(6x6) vs F(4x4)): two typical sizes
    sizes = {"conv3x3": ((256, 256), (32, 32))}.get(kind, ((64, 64),))
    texts = []
    for size in sizes:
        try:
            c = registry.choose(steps[kind], "cpu", dtype, context, {"x": size, "y": size})
        except ValueError as e:  # a bad forced choice: optimize would raise it too
            return f"error: {e}"
        why = "; ".join(dict.fromkeys(r for _, r in c.passed_over))
        texts.append((c.kernel.title + (f" (not: {why})" if why else ""), size))
    if len({t for t, _ in texts}) == 1:
        return texts[0][0]
    return "; ".join(f"at {h}x{w} output: {t}" for t, (h, w) in texts)


def _cpu_kernels() -> dict[str, Any]:
    """The CPU variant table (kernels/cpu_isa.py) and what the kernel registry (kernels/registry.py) runs here:
    which vector variants and bf16 tile backends this CPU and OS run (and why not), the ones an engine uses
    (forced by UNET_FAST_KERNELS, else the best; never the tile emulator), and the kernel a typical step runs
    per dtype."""
    from unet_fast.kernels import cpu_isa, registry

    registry.load("cpu")
    try:
        choices = registry.Choices.from_env()
    except ValueError as e:  # a malformed UNET_FAST_KERNELS: optimize would raise it too
        return {"error": str(e), "isas": list(cpu_isa.available_isas()), "registered": [], "variants": [],
                "bf16_tiles": []}  # fmt: skip
    context = registry.Context(choices)
    reg = cpu_isa.registry()
    try:
        default = context.row("cpu")
    except ValueError as e:
        default = f"error: {e}"
    try:
        tiles = context.row("bf16")
        no_tiles = context.why_none("bf16")
    except ValueError as e:
        tiles, no_tiles = None, f"error: {e}"
    return {"isas": list(cpu_isa.available_isas()), "auto": cpu_isa.best().name if reg else None,
            "default": default, "registered": [v.name for v in reg], "variants": [v.__dict__ for v in reg],
            "bf16_tiles": [b.__dict__ for b in cpu_isa.tile_variants()],
            "bf16_tile_backend": tiles, "bf16_no_tile_backend": no_tiles, "forced": choices.describe(),
            "fp32": {k: _choice(k, torch.float32, context) for k in ("conv3x3", "conv_transpose2x2", "head")},
            "bf16": {k: _choice(k, torch.bfloat16, context) for k in ("conv3x3", "conv_transpose2x2", "head")},
            "bf16_conv3x3": _choice("conv3x3", torch.bfloat16, context)}  # fmt: skip


def _cpu_summary(kernels: dict[str, Any]) -> str:
    if "error" in kernels:
        return f"C++ kernels built; {kernels['error']}"
    not_here = [n for n in kernels["registered"] if n not in kernels["isas"]]
    tiles = kernels["bf16_tile_backend"] or f"none ({kernels['bf16_no_tile_backend']})"
    return (f"C++ kernels: {kernels['default']} variant (runnable here: {', '.join(kernels['isas'])}"
            + (f"; not on this CPU: {', '.join(not_here)}" if not_here else "") + ")"
            + "; bf16 tiles: " + ", ".join(b["name"] + (" (emulator)" if b["emulator"] else "")
                                           + ("" if b["runnable"] else f" (not here: {b['reason']})")
                                           for b in kernels["bf16_tiles"])
            + f"; bf16 engines use tiles: {tiles}"
            + f"; bf16 3x3 convs: {kernels['bf16_conv3x3']}"
            + f"; bf16 transposed convs: {kernels['bf16']['conv_transpose2x2']}; bf16 head: {kernels['bf16']['head']}"
            + (f"; forced: {kernels['forced']}" if kernels.get("forced") else ""))  # fmt: skip


def collect() -> dict[str, Any]:
    cpu_ok = _ext.cpu_ext is not None
    cuda_reason = _ext.cuda_unavailable_reason()
    triton_ok, triton_why = _triton_status()
    kernels = _cpu_kernels() if cpu_ok else None
    trt = _version("tensorrt")
    info: dict[str, Any] = {
        "unet_fast": __import__("unet_fast").__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": {m: _version(m) for m in ("triton", "numpy", "onnx", "onnxruntime", "openvino", "tensorrt")},
        "build": _ext.build_info(),
        "extensions": {
            "unet_fast._C": {"usable": cpu_ok, "why": "" if cpu_ok else _ext._cpu_error,
                             "build_info": _ext.cpu_ext.build_info() if cpu_ok else None},
            "unet_fast._cuda": {"built": _ext.cuda_ext is not None, "usable": not cuda_reason, "why": cuda_reason,
                                "build_info": _ext.cuda_ext.build_info() if _ext.cuda_ext is not None else None},
        },
        "backends": {
            "torch": {"usable": True, "why": "pure PyTorch reference executor"},
            "cpu": {"usable": cpu_ok, "why": _cpu_summary(kernels) if cpu_ok else _ext._cpu_error, "kernels": kernels},
            "triton": {"usable": triton_ok, "why": triton_why},
            "cuda": {"usable": not cuda_reason, "why": cuda_reason},
            "tensorrt": {"usable": trt is not None and torch.cuda.is_available(),
                         "why": "tensorrt is not installed" if trt is None else
                         ("" if torch.cuda.is_available() else "no CUDA device")},
        },
    }  # fmt: skip
    return info


def render(info: dict[str, Any]) -> str:
    lines = [f"unet_fast {info['unet_fast']}  (python {info['python']}, torch {info['torch']}, "
             f"{info['torch_threads']} threads)", f"platform: {info['platform']}",
             f"CUDA device: {info['cuda_device'] or 'none'}",
             "versions: " + ", ".join(f"{k} {v or '-'}" for k, v in info["versions"].items())]  # fmt: skip
    build = info["build"]
    if build:
        cuda = build.get("cuda", {})
        cuda_s = (
            f"archs {cuda.get('archs')}, {cuda.get('nvcc')}"
            if cuda.get("built")
            else f"not built ({cuda.get('reason')})"
        )
        lines.append(f"build: commit {build.get('git_commit')}, {build.get('cxx')}; CUDA: {cuda_s}")
    lines.append("extensions:")
    for name, e in info["extensions"].items():
        lines.append(f"  {name:<16} {'usable' if e['usable'] else 'NOT usable':<11} {e['why']}")
    lines.append("backends:")
    for name, b in info["backends"].items():
        lines.append(f"  {name:<16} {'usable' if b['usable'] else 'NOT usable':<11} {b['why']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="unet-fast info", description=__doc__)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = p.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2, default=str) if args.json else render(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
