"""Ahead-of-time GPU compile check of every shipped config, without a GPU.

For each kernel, dtype and config of configs.py, compile the kernel's heaviest variant (the one with
every fused option on: most registers) for sm_80 and sm_90 with `triton.compile` and record registers,
spills, shared memory and whether the PTX uses tensor cores (`mma.sync` on sm_80, `wgmma` on sm_90).
`python -m unet_fast.kernels.triton.aot --table docs/triton_resources.md` regenerates the committed table;
`--json` prints the rows for tests. Run it with TRITON_INTERPRET unset (the interpreter replaces
@triton.jit functions with objects triton.compile cannot take): `run_in_subprocess` does that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ARCHS = (80, 90)
# Max dynamic shared memory per block (CUDA programming guide, compute capability table).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
TC_INSTRUCTION = {80: "mma.sync.aligned", 90: "wgmma.mma_async"}
GEMM_OPS = ("conv2d", "conv_transpose2x2", "head")
DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# "tf32": fp32 storage with allow_tf32=True (opt-in); checked for conv2d, whose fp32 configs it uses.
TF32_OPS = ("conv2d",)
TABLE_PATH = Path(__file__).resolve().parents[3] / "docs" / "triton_resources.md"


# Channel counts and strides are multiples of 16 in the U-Nets we tune for (64 * 2^k channels); the JIT
# marks such int arguments divisible by 16 at launch, which lets loads and stores vectorize. Spatial
# sizes stay unmarked (odd images). Odd channel counts (an RGB stem) compile to other, slower code.
_DIVISIBLE = re.compile(r"^(C\d?|CIN|COUT|s_[nhw]|s[nhw]\d|[orp]_s[nhw])$")


def can_compile_for_cuda() -> tuple[bool, str]:
    """Whether this triton can compile for CUDA targets here (its NVIDIA backend and bundled ptxas)."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the installed triton
        return False, f"triton's compiler API is not importable: {e!r}"
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists() and not os.environ.get("TRITON_PTXAS_PATH"):
        return False, f"triton's NVIDIA backend has no ptxas at {ptxas}"
    return True, ""


def _variant(op: str, config: dict, tf32: bool = False) -> tuple[object, dict, dict]:
    """(kernel, pointer element types other than the dtype's, constexprs) of the op's heaviest variant."""
    # The package re-exports launchers under the module names: import the modules themselves.
    conv2d, conv_transpose2x2, head, maxpool2x2, upsample_concat = (
        importlib.import_module(f"unet_fast.kernels.triton.{m}")
        for m in ("conv2d", "conv_transpose2x2", "head", "maxpool2x2", "upsample_concat")
    )
    blocks = {k: v for k, v in config.items() if k.startswith("BLOCK_")}
    dot = {"DOT_F32": False, "PRECISION": "tf32" if tf32 else "ieee"}
    if op == "conv2d":
        # Decoder conv: skip + bilinear-upsampled input, residual, SiLU, pool epilogue, 3x3; the skip
        # takes the flattened-(tap, channel) reduction of few-channel inputs, so both loops compile.
        meta = dict(KH=3, KW=3, NUM_INPUTS=2, RS0=0, AC0=False, RS1=2, AC1=False, RS2=0, AC2=False, RS3=0,
                    AC3=False, FK0=True, FK1=False, FK2=False, FK3=False, HAS_BIAS=True, HAS_RES=True,
                    POOL=True, ACT=3, **dot, **blocks)  # fmt: skip
        return conv2d.conv2d_kernel, {"bias_ptr": "fp32"}, meta
    if op == "conv_transpose2x2":
        return (
            conv_transpose2x2.conv_transpose2x2_kernel,
            {"bias_ptr": "fp32"},
            dict(HAS_BIAS=True, ACT=1, **dot, **blocks),
        )
    if op == "head":
        # Softmax over up to 32 classes (BLOCK_N 32) reading a bilinear view.
        meta = dict(RESAMPLE=2, ALIGN=False, OP=1, HAS_BIAS=True, BLOCK_N=32, **dot, **blocks)
        return head.head_kernel, {"bias_ptr": "fp32"}, meta
    if op == "maxpool2x2":
        return maxpool2x2.maxpool2x2_kernel, {}, dict(blocks)
    if op == "upsample_concat":
        return upsample_concat.read_view_kernel, {}, dict(RESAMPLE=2, ALIGN=True, **blocks)
    raise ValueError(f"unknown op {op!r}")


def compile_one(op: str, dtype_name: str, arch: int, config: dict) -> dict:
    """Compile one (op, dtype, arch, config) and return its resource row."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel, ptr_types, constexprs = _variant(op, config, tf32=dtype_name == "tf32")
    storage = "fp32" if dtype_name == "tf32" else dtype_name
    signature, attrs = {}, {}
    for i, p in enumerate(kernel.params):
        if p.is_constexpr:
            signature[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            signature[p.name] = "*" + ptr_types.get(p.name, storage)
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif p.name == "negative_slope":
            signature[p.name] = "fp32"
        else:
            signature[p.name] = "i32"
            if _DIVISIBLE.match(p.name):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": config["num_warps"], "num_stages": config["num_stages"]}
    log = io.StringIO()
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v output (spill bytes) is printed to stdout
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = compiled.asm["ptx"]
    usage = _cuobjdump_usage(compiled.asm["cubin"])
    spill = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", log.getvalue())]
    return {
        "op": op,
        "dtype": dtype_name,
        "arch": arch,
        "config": _config_str(config),
        "registers": usage.get("REG", -1),
        # Spills live in the stack frame (cuobjdump, always there). ptxas's own spill count is only
        # printed when ptxas runs, i.e. not when triton's cache already holds the kernel: None then.
        "stack_bytes": usage.get("STACK", -1),
        "ptxas_spill_bytes": sum(spill) if spill else None,
        "shared_bytes": int(compiled.metadata.shared),
        "tensor_cores": TC_INSTRUCTION[arch] in ptx,
    }


def _cuobjdump_usage(cubin: bytes) -> dict:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True
        ).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def _config_str(config: dict) -> str:
    blocks = "x".join(str(v) for k, v in config.items() if k.startswith("BLOCK_"))
    return f"{blocks} w{config['num_warps']} s{config['num_stages']}"


def jobs() -> list[tuple[str, str, int, dict]]:
    from unet_fast.kernels.triton import configs

    out = []
    for op in configs.OPS:
        names = [*DTYPE_NAMES, "tf32"] if op in TF32_OPS else list(DTYPE_NAMES)
        for name in names:
            for arch in ARCHS:
                dtype = DTYPE_NAMES.get(name, torch.float32)
                out += [(op, name, arch, c) for c in configs.configs_for(op, dtype, arch)]
    return out


def _compile_job(job: tuple) -> dict:
    return compile_one(*job)


def compile_all(workers: int | None = None) -> list[dict]:
    work = jobs()
    workers = workers or min(len(work), os.cpu_count() or 1)
    if workers <= 1:
        return [compile_one(*j) for j in work]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile_job, work))


def problems(rows: list[dict]) -> list[str]:
    """What the CI check asserts: zero spills, shared memory within the arch's limit, tensor cores in
    fp16/bf16 GEMM kernels."""
    bad = []
    for r in rows:
        where = f"{r['op']} {r['dtype']} sm_{r['arch']} [{r['config']}]"
        if r["stack_bytes"] != 0 or r["ptxas_spill_bytes"]:
            bad.append(
                f"{where}: spills ({r['stack_bytes']} B stack, ptxas: {r['ptxas_spill_bytes']} B spilled)"
            )
        if r["shared_bytes"] > SHARED_LIMIT[r["arch"]]:
            bad.append(f"{where}: {r['shared_bytes']} B shared memory > {SHARED_LIMIT[r['arch']]} B")
        if r["op"] in GEMM_OPS and r["dtype"] != "fp32" and not r["tensor_cores"]:  # fp16, bf16, tf32
            bad.append(f"{where}: no {TC_INSTRUCTION[r['arch']]} in the PTX")
    return bad


def render_table(rows: list[dict]) -> str:
    import triton

    lines = [
        "# Triton kernel resources per shipped config",
        "",
        "Generated by `python -m unet_fast.kernels.triton.aot --table docs/triton_resources.md` (do not edit;",
        "`tests/kernels/triton/test_triton_aot.py` checks it is current). Ahead-of-time compiles (no GPU) of",
        "each kernel's heaviest variant: conv2d = 3x3 decoder conv (skip + bilinear-upsampled input, bias,",
        "residual, SiLU, 2x2 pool epilogue; the skip through the few-channel flattened reduction);",
        "conv_transpose2x2 = bias + ReLU; head = softmax over <= 32 classes of a bilinear view; maxpool2x2;",
        "upsample_concat = one bilinear (align_corners) view. Channel counts and strides are taken as",
        "multiples of 16 (what the JIT specializes on for 64 * 2^k-channel U-Nets).",
        f"Triton {triton.__version__}. Config = BLOCK sizes, warps (w), pipeline stages (s). Shared = bytes of",
        "shared memory per block (limit: sm_80 163 KiB, sm_90 227 KiB). Tensor cores = `mma.sync` (sm_80) /",
        "`wgmma` (sm_90) in the PTX; fp32 runs without them unless tf32 is opted in (dtype `tf32`: fp32",
        "tensors with `allow_tf32=True`).",
        "",
        "| op | dtype | arch | config | registers | stack (spill) bytes | shared bytes | tensor cores |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['dtype']} | sm_{r['arch']} | {r['config']} | {r['registers']} | "
            f"{r['stack_bytes']} | {r['shared_bytes']} | {'yes' if r['tensor_cores'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def run_in_subprocess(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run this module in a fresh interpreter without TRITON_INTERPRET (tests set it for everything else)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning
    return subprocess.run([sys.executable, "-m", "unet_fast.kernels.triton.aot", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, help="write the markdown table here")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--workers", type=int, default=None)
    a = p.parse_args(argv)
    ok, why = can_compile_for_cuda()
    if not ok:
        print(json.dumps({"skip": why}) if a.json else why)
        return 0 if a.json else 2
    rows = compile_all(a.workers)
    if a.table:
        a.table.write_text(render_table(rows))
    if a.json:
        print(json.dumps({"rows": rows, "table": render_table(rows)}))
    else:
        print(render_table(rows))
        for line in problems(rows):
            print("PROBLEM:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
