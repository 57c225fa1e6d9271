"""The AMX tile program checked on a CPU without AMX (issue 17's never-executed native path).

The native build and the portable emulator run the same kernel body (amx/conv_bf16_body.h), so the same
sequence of LDTILECFG / TILELOADD / TDPBF16PS / TILESTORED / TILERELEASE. The emulator checks each operation
against the hardware's fault conditions (amx/tile.h; every binding raises RuntimeError after a call that
would have faulted), so every portable test in this directory is also a check that the native program
would not fault. This file checks those checks: the 64-byte LDTILECFG operand against an independent
Python model of the Intel SDM's palette-1 layout (vol. 2, LDTILECFG, "Memory Area Layout": byte 0
palette_id, 1 start_row, 2-15 reserved, 16-31 colsb of tmm0-7 as uint16, 32-47 reserved, 48-55 rows of
tmm0-7, 56-63 reserved; reserved bytes nonzero, rows > 16 or colsb > 64 raise #GP), the TDPBF16PS shape
rules (SDM, exception class AMX-E4: C.rows == A.rows, C.colsb == B.colsb, A.colsb / 4 == B.rows, three
distinct configured tiles, colsb multiples of 4; the same rules as Bochs' AMX model, cpu/avx/amx.cc
check_tiles), the emulator's fault path end to end, the reasons the detection gives, and (objdump) that
the native code uses only the tiles and triples the config allows, configured in every function that
touches a tile.
"""

from __future__ import annotations

import platform
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from bf16_testutil import backend_params

from unet_fast import _ext
from unet_fast.kernels import cpu_bf16

cpu = _ext.cpu_ext
pytestmark = pytest.mark.skipif(
    cpu is None or not hasattr(cpu, "bf16_tile_fault"), reason="unet_fast._C not built"
)

RESERVED = [*range(2, 16), *range(32, 48), *range(56, 64)]
CONV_TRIPLES = {(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)}  # conv_block's C += A . B (tmm numbers)


def parse(cfg: bytes) -> tuple[int, int, list[int], list[int]]:
    """(palette_id, start_row, rows[8], colsb[8]) of a palette-1 LDTILECFG operand, per the SDM's table."""
    assert len(cfg) == 64
    colsb = list(struct.unpack_from("<8H", cfg, 16))
    rows = list(cfg[48:56])
    return cfg[0], cfg[1], rows, colsb


def model_ldtilecfg_faults(cfg: bytes) -> bool:
    """Whether LDTILECFG raises #GP on cfg (or, start_row != 0, the config is unusable here)."""
    palette, start_row, rows, colsb = parse(cfg)
    if palette > 1 or any(cfg[i] for i in RESERVED):
        return True
    if palette == 0:
        return False
    bad_tile = any(r > 16 or c > 64 or (r == 0) != (c == 0) for r, c in zip(rows, colsb, strict=True))
    return bad_tile or start_row != 0


def model_tdpbf16ps_faults(cfg: bytes, c: int, a: int, b: int) -> bool:
    """Whether TDPBF16PS tmm c += tmm a . tmm b raises #UD with cfg loaded."""
    _, _, rows, colsb = parse(cfg)
    if len({c, a, b}) < 3 or any(rows[t] == 0 or colsb[t] % 4 for t in (c, a, b)):
        return True
    m, n, k = rows[c], colsb[c] // 4, rows[b]
    return rows[a] != m or colsb[b] != colsb[c] or colsb[a] // 4 != k or n > 16 or k > 16


def test_conv_config_is_the_sdm_layout() -> None:
    cfg = cpu.bf16_tile_config_bytes("conv")
    palette, start_row, rows, colsb = parse(cfg)
    assert (palette, start_row) == (1, 0)
    assert all(cfg[i] == 0 for i in RESERVED), cfg.hex()
    assert rows == [16] * 8 and colsb == [64] * 8
    assert not model_ldtilecfg_faults(cfg) and cpu.bf16_tile_fault(cfg, "ldtilecfg", []) == ""
    for c, a, b in CONV_TRIPLES:
        assert not model_tdpbf16ps_faults(cfg, c, a, b)
        assert cpu.bf16_tile_fault(cfg, "tdpbf16ps", [c, a, b]) == ""


def test_every_tile_dot_config_loads_and_chains() -> None:
    """tile_dot's config for every (m, kp, n) in 1..16: tmm0 C m x 4n, tmm1 A m x 4kp, tmm2 B kp x 4n, the
    other five tiles unconfigured (all-zero entries), and TDPBF16PS tmm0 += tmm1 . tmm2 is legal."""
    for m in range(1, 17):
        for kp in range(1, 17):
            for n in range(1, 17):
                cfg = cpu.bf16_tile_config_bytes("tile_dot", m, kp, n)
                palette, start_row, rows, colsb = parse(cfg)
                assert (palette, start_row) == (1, 0) and all(cfg[i] == 0 for i in RESERVED)
                assert rows == [m, m, kp, 0, 0, 0, 0, 0] and colsb == [4 * n, 4 * kp, 4 * n, 0, 0, 0, 0, 0]
                assert not model_ldtilecfg_faults(cfg) and not model_tdpbf16ps_faults(cfg, 0, 1, 2)
                assert cpu.bf16_tile_fault(cfg, "tdpbf16ps", [0, 1, 2]) == ""
    with pytest.raises(ValueError, match=r"outside 1\.\.16"):
        cpu.bf16_tile_config_bytes("tile_dot", 17, 1, 1)


def _mutations() -> list[tuple[str, bytes]]:
    base = bytearray(cpu.bf16_tile_config_bytes("conv"))
    out = []
    for i in RESERVED:
        b = bytearray(base)
        b[i] = 1
        out.append((f"reserved byte {i}", bytes(b)))
    edits = {
        "palette 2": (0, 2), "palette 0 (init state)": (0, 0), "start_row 1": (1, 1), "tmm3 rows 17": (51, 17),
        "tmm5 rows 0": (53, 0),
    }  # fmt: skip
    for name, (i, v) in edits.items():
        b = bytearray(base)
        b[i] = v
        out.append((name, bytes(b)))
    for name, t, v in (("tmm2 colsb 65", 2, 65), ("tmm6 colsb 0", 6, 0), ("tmm7 colsb 60", 7, 60)):
        b = bytearray(base)
        struct.pack_into("<H", b, 16 + 2 * t, v)
        out.append((name, bytes(b)))
    return out


@pytest.mark.parametrize("name,cfg", _mutations(), ids=[n for n, _ in _mutations()])
def test_config_checker_agrees_with_the_sdm_model(name: str, cfg: bytes) -> None:
    """The emulator's LDTILECFG check (C++) and the Python model give the same verdict on each mutation
    of the conv config; all but the legal ones (palette 0, colsb 60) fault."""
    want = model_ldtilecfg_faults(cfg)
    got = cpu.bf16_tile_fault(cfg, "ldtilecfg", [])
    assert bool(got) == want, (name, got)
    assert want == (name not in ("palette 0 (init state)", "tmm7 colsb 60")), name


def test_tile_op_checks() -> None:
    """TDPBF16PS / TILELOADD rules the emulator enforces, each against the model."""
    conv = cpu.bf16_tile_config_bytes("conv")
    dot = cpu.bf16_tile_config_bytes("tile_dot", 4, 3, 5)  # C 4 x 20 B, A 4 x 12 B, B 3 x 20 B
    cases = [
        (conv, (0, 0, 6)), (conv, (0, 4, 4)), (dot, (0, 1, 2)), (dot, (0, 2, 1)), (dot, (1, 0, 2)),
        (dot, (0, 1, 3)), (dot, (2, 1, 0)),
    ]  # fmt: skip
    for cfg, (c, a, b) in cases:
        got = cpu.bf16_tile_fault(cfg, "tdpbf16ps", [c, a, b])
        assert bool(got) == model_tdpbf16ps_faults(cfg, c, a, b), (c, a, b, got)
    assert cpu.bf16_tile_fault(dot, "tdpbf16ps", [0, 1, 2]) == ""
    assert cpu.bf16_tile_fault(dot, "tdpbf16ps", [0, 2, 1]).endswith("A has 3 rows, C 4 (#UD)")
    assert cpu.bf16_tile_fault(dot, "tileloadd", [2]) == ""
    assert "not configured" in cpu.bf16_tile_fault(dot, "tileloadd", [3])
    odd = bytearray(dot)
    struct.pack_into("<H", odd, 16 + 2 * 1, 6)  # A: 6 bytes per row
    assert "multiple of 4" in cpu.bf16_tile_fault(bytes(odd), "tilestored", [1])
    assert cpu.bf16_tile_fault(bytes(odd), "tilezero", [1]) == ""
    released = bytes(64)
    assert "not configured in this thread" in cpu.bf16_tile_fault(released, "tdpbf16ps", [0, 1, 2])


def test_emulator_fault_raises_and_clears() -> None:
    """A tile program AMX would fault on raises RuntimeError from the binding (not a silent wrong result),
    and the record is cleared: the next portable call runs normally. "released": a tile load after
    TILERELEASE, what an OpenMP pool thread reusing a configuration from an earlier call would run (the
    emulator used to keep the released shapes and compute on silently; AMX raises #UD, SIGILL)."""
    with pytest.raises(RuntimeError, match=r"TDPBF16PS tmm0 \+= tmm4 \. tmm6: A has 8 rows, C 16 \(#UD\)"):
        cpu.bf16_emulator_fault_selftest("shape")
    with pytest.raises(RuntimeError, match=r"TILELOADD tmm4: the tiles are not configured in this thread"):
        cpu.bf16_emulator_fault_selftest("released")
    a = torch.ones(2, 2, dtype=torch.bfloat16)
    b = torch.ones(1, 2, dtype=torch.bfloat16)
    assert torch.equal(cpu_bf16.tile_dot(a, b, torch.zeros(2, 1), isa="portable"), torch.full((2, 1), 2.0))


@pytest.mark.parametrize("isa", backend_params())
def test_tile_dot_denormal_accumulator_reads_as_zero(isa: str) -> None:
    """The SDM's TDPBF16PS adds C with DAZ ("DAZ, FTZ, RNE, SAE" on its final addition), like VDPBF16PS:
    C = 2^-127 (an fp32 denormal) plus a product of 2^-125 gives 2^-125, not 1.25 * 2^-125."""
    a = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16)
    b = torch.tensor([[2.0**-125, 0.0]], dtype=torch.bfloat16)
    c = torch.tensor([[2.0**-127]], dtype=torch.float32)
    assert c.item() != 0.0 and abs(c.item()) < torch.finfo(torch.float32).tiny
    assert cpu_bf16.tile_dot(a, b, c, isa=isa).item() == 2.0**-125


def _support(**kw: object) -> dict:
    args = dict(cpuid_amx_bf16=True, cpuid_amx_tile=True, avx512_state=True, xcr0_tile_state=True,
                os_permission=True, perm_errno=0)  # fmt: skip
    args.update(kw)
    return cpu.amx_support_for(**args)


def test_detection_reasons() -> None:
    """Each failed condition is named; a refused permission names its errno (ENOSPC: a sigaltstack too small
    for the AMX signal frame, Documentation/arch/x86/xstate.rst)."""
    assert _support()["runnable"] and _support()["reason"] == ""
    assert "AMX-TILE" in _support(cpuid_amx_tile=False)["reason"]
    assert "AMX-BF16" in _support(cpuid_amx_bf16=False)["reason"]
    assert "AVX-512" in _support(avx512_state=False)["reason"]
    assert not _support(avx512_state=False)["runnable"]
    assert "XCR0 bits 17-18" in _support(xcr0_tile_state=False)["reason"]
    assert "sigaltstack" in _support(os_permission=False, perm_errno=28)["reason"]  # ENOSPC
    assert "EINVAL" in _support(os_permission=False, perm_errno=22)["reason"]
    assert "ARCH_GET_XCOMP_PERM" in _support(os_permission=False, perm_errno=-1)["reason"]
    info = cpu.amx_support()
    assert info["runnable"] == all(info[k] for k in ("cpuid_amx_bf16", "cpuid_amx_tile", "avx512_state",
                                                     "xcr0_tile_state", "os_permission"))  # fmt: skip


# ---- the native code as compiled (objdump) ----

TILE_OPS = ("tileloadd", "tilestored", "tdpbf16ps", "tilezero", "ldtilecfg", "tilerelease", "sttilecfg")
AMX_FUNC = re.compile(r"unet_fast::amx::(native::|\w+_amx\()")


def _functions() -> dict[str, list[str]]:
    so = Path(cpu.__file__)
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(so)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    funcs: dict[str, list[str]] = {}
    body: list[str] = []
    for line in asm.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            body = funcs.setdefault(m.group(1), [])
        elif "\t" in line:
            body.append(line.split("\t", 1)[1].strip())
    return funcs


@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None, reason="needs x86-64 objdump"
)
def test_native_tile_code_uses_only_configured_tiles() -> None:
    funcs = _functions()
    users = {f: [i for i in body if i.split(" ", 1)[0] in TILE_OPS] for f, body in funcs.items()}
    users = {f: ops for f, ops in users.items() if ops}
    assert users, "no tile instructions in the module: the amx backend was not compiled"
    outside = [f for f in users if not AMX_FUNC.match(f)]
    assert not outside, f"tile instructions outside the amx backend: {outside[:5]}"
    triples: dict[str, set[tuple[int, ...]]] = {}
    for f, ops in users.items():
        for ins in ops:
            tiles = [int(t) for t in re.findall(r"%tmm(\d+)", ins)]
            assert all(0 <= t < 8 for t in tiles), (f, ins)
            if ins.startswith("tdpbf16ps"):  # AT&T: tdpbf16ps %tmmB, %tmmA, %tmmC
                b, a, c = tiles
                triples.setdefault(f, set()).add((c, a, b))
    conv_block = [f for f in triples if "native::conv_block(" in f]
    assert len(conv_block) == 1 and triples[conv_block[0]] == CONV_TRIPLES, triples
    dot = [f for f in triples if "tile_dot_amx(" in f]
    assert len(dot) == 1 and triples[dot[0]] == {(0, 1, 2)}, triples
    # Every function that touches a tile either loads the config (and releases it) itself or is called only
    # from functions that do (conv_block from the OpenMP region of conv_bf16).
    has_cfg = {f for f, ops in users.items() if any(i.startswith("ldtilecfg") for i in ops)}
    for f in has_cfg:
        assert any(i.startswith("tilerelease") for i in users[f]), f"{f} configures tiles but never releases"
    for f in set(users) - has_cfg:
        callers = {
            g for g, body in funcs.items() if any(i.startswith("call") and f"<{f}>" in i for i in body)
        }
        assert callers and callers <= has_cfg, (f, callers)
