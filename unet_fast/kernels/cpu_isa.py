"""The CPU variant table as Python sees it (csrc/include/unet_fast/cpu_isa.h): its mirror, generated from
`unet_fast._C.cpu_isa_table()`, never copied by hand.

Every C++ CPU kernel body is compiled once per table row. Two kinds of rows: *vector* variants (portable 8-
and 16-lane GCC vectors, AVX2+FMA, AVX-512: every fp32 op and the Winograd on bf16 activations) and bf16
*tile* backends (the portable tile emulator, AMX, AVX512-BF16: the bf16 tile conv, transposed conv and
head). Each row says what the CPU needs, whether this CPU and OS run it (and why not), what it computes
(dtypes, ops) and the blocking its packed weights follow. The kernel registry (kernels/registry.py)
registers one implementation per row and op from this table; tests parametrise over the runnable rows.

Which row a weight-bearing op runs is chosen once, when its weight is packed (`choose`: an explicit
`isa=`, else the forcing variable UNET_FAST_KERNELS (`cpu=<name>`; kernels/registry.py), else the
best-ranked runnable row), and stored with the packed weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from unet_fast._ext import cpu_ext
from unet_fast.kernels.registry import Choices, Family, register_family

# The deprecated alias of UNET_FAST_KERNELS=cpu=<name> (kernels/registry.py), kept because users set it.
ISA_ENV = "UNET_FAST_CPU_ISA"


@dataclass(frozen=True)
class CpuVariant:
    """One table row. `index` is the C++ ops' `isa` (vector rows) or `backend` (tile rows) argument.
    Vector rows: `lanes`, and `*_nr` the block widths (output channels) of the Winograd and transposed-conv
    packed weights, `*_mr` the rows of their micro-GEMM. Tile rows: the tile conv's blocking (its packed
    weight is [taps, ceil(Cin / chunk_cin), 2 ceil(Cout / block_cout), tile_rows, tile_rows, 2]), the most
    input views one conv reads (`max_sources`), and whether it has a register-blocked direct conv beside its
    tile body (`direct_conv`). `emulator`: computes what hardware it lacks would (never
    picked for speed)."""

    name: str
    index: int
    kind: str  # "vector" | "tiles"
    target: str
    isa: str
    rank: int
    emulator: bool
    runnable: bool
    reason: str
    dtypes: tuple[str, ...]
    ops: tuple[str, ...]
    lanes: int = 0
    winograd_mr: int = 0
    winograd_nr: int = 0
    conv_transpose_mr: int = 0
    conv_transpose_nr: int = 0
    direct_conv: bool = False
    chunk_cin: int = 0
    block_cout: int = 0
    block_pixels: int = 0
    tile_rows: int = 0
    max_sources: int = 0


@cache
def table() -> tuple[CpuVariant, ...]:
    """Every row, vector and tile, in table order; () if unet_fast._C is not built."""
    if cpu_ext is None or not hasattr(cpu_ext, "cpu_isa_table"):
        return ()
    rows = []
    for row in cpu_ext.cpu_isa_table():
        row = dict(row)
        row["dtypes"], row["ops"] = tuple(row["dtypes"]), tuple(row["ops"])
        rows.append(CpuVariant(**row))
    return tuple(rows)


def registry() -> tuple[CpuVariant, ...]:
    """The vector variants, in table order; () if unet_fast._C is not built."""
    return tuple(v for v in table() if v.kind == "vector")


def tile_variants() -> tuple[CpuVariant, ...]:
    """The bf16 tile backends, in table order; () if unet_fast._C is not built."""
    return tuple(v for v in table() if v.kind == "tiles")


def available_isas() -> tuple[str, ...]:
    """Names of the vector variants this CPU and OS can run, table order; () if unet_fast._C is not built."""
    return tuple(v.name for v in registry() if v.runnable)


def best() -> CpuVariant:
    """The vector variant isa="auto" picks: the best-ranked runnable one."""
    runnable = [v for v in registry() if v.runnable]
    if not runnable:
        raise RuntimeError("unet_fast._C is not built: no CPU kernel variant can run")
    return max(runnable, key=lambda v: v.rank)


def choose(isa: str | None = None, *, choices: Choices | None = None, what: str = "CPU kernel") -> CpuVariant:
    """The vector variant for `isa` (a table name or "auto"; None: what `choices` force, else
    Choices.from_env(): UNET_FAST_KERNELS=cpu=<name> or its alias UNET_FAST_CPU_ISA; else auto), checked
    against this CPU. Raises ValueError for an unknown name or one this CPU cannot run; `what` names the op
    in the message."""
    forced = None if isa is not None else (choices if choices is not None else Choices.from_env()).get("cpu")
    name = (isa or forced or "auto").lower()
    if name == "auto":
        return best()
    names = {v.name: v for v in registry()}
    where = "" if isa is not None else " (UNET_FAST_KERNELS=cpu=..., or UNET_FAST_CPU_ISA)"
    if name not in names:
        raise ValueError(f"unknown {what} isa {name!r}; expected 'auto' or one of {tuple(names)}{where}")
    if not names[name].runnable:
        raise ValueError(f"{what} isa {name!r} is not available on this CPU (have {available_isas()})")
    return names[name]


def isa_index(isa: str | None, *, choices: Choices | None = None, what: str = "CPU kernel") -> int:
    """The C++ `isa` argument (table index) of `choose(isa, choices=choices, what=what)`."""
    return choose(isa, choices=choices, what=what).index


def variant(name: str, kind: str = "vector") -> CpuVariant:
    """The row of `kind` named `name` (KeyError if there is none)."""
    for v in table():
        if v.kind == kind and v.name == name:
            return v
    raise KeyError(f"no {kind} row named {name!r} in the CPU variant table")


def _resolve(choices: Choices) -> str | None:
    return choose(None, choices=choices, what="CPU kernel").name


# The "cpu" family of the kernel registry: which vector variant an engine's kernels run (forced, else best()).
register_family(Family("cpu", _resolve, unavailable=lambda name: variant(name, "vector").reason))
