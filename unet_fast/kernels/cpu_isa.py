"""The CPU kernel variant registry as Python sees it (csrc/include/unet_fast/cpu_isa.h).

Every C++ CPU kernel body is compiled once per registry entry (portable 8- and 16-lane GCC vectors, AVX2+FMA,
AVX-512, ...); `unet_fast._C.cpu_isa_table()` lists them with their rank, whether this CPU and OS can run
them, and the register blocking that fixes each variant's packed weight layout. The variant of a
weight-bearing op is chosen once, when its weight is packed (`choose`: an explicit `isa=`, else the
environment variable UNET_FAST_CPU_ISA, else the best-ranked runnable variant), and stored with the packed
weight; ops without weights take `isa=` per call. Tests parametrise over `available_isas()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from unet_fast._ext import cpu_ext

ISA_ENV = "UNET_FAST_CPU_ISA"


@dataclass(frozen=True)
class CpuVariant:
    """One registry entry. `index` is the C++ ops' `isa` argument; `*_nr` are the block widths (output
    channels) of the Winograd and transposed-conv packed weights, `*_mr` the rows of their micro-GEMM."""

    name: str
    index: int
    target: str
    rank: int
    runnable: bool
    lanes: int
    winograd_mr: int
    winograd_nr: int
    conv_transpose_mr: int
    conv_transpose_nr: int


@cache
def registry() -> tuple[CpuVariant, ...]:
    """Every registered variant, in registry order; () if unet_fast._C is not built."""
    if cpu_ext is None or not hasattr(cpu_ext, "cpu_isa_table"):
        return ()
    return tuple(CpuVariant(**row) for row in cpu_ext.cpu_isa_table())


def available_isas() -> tuple[str, ...]:
    """Names of the variants this CPU and OS can run, registry order; () if unet_fast._C is not built."""
    return tuple(v.name for v in registry() if v.runnable)


def best() -> CpuVariant:
    """The variant isa="auto" picks: the best-ranked runnable one."""
    runnable = [v for v in registry() if v.runnable]
    if not runnable:
        raise RuntimeError("unet_fast._C is not built: no CPU kernel variant can run")
    return max(runnable, key=lambda v: v.rank)


def choose(isa: str | None = None, *, env: str | None = ISA_ENV, what: str = "CPU kernel") -> CpuVariant:
    """The variant for `isa` (a registry name or "auto"; None: the environment variable `env`, else auto),
    checked against this CPU. Raises ValueError for an unknown name or one this CPU cannot run; `what`
    names the op in the message."""
    name = (isa or (os.environ.get(env) if env else None) or "auto").lower()
    if name == "auto":
        return best()
    names = {v.name: v for v in registry()}
    where = f" (argument or {env})" if env else ""
    if name not in names:
        raise ValueError(f"unknown {what} isa {name!r}; expected 'auto' or one of {tuple(names)}{where}")
    if not names[name].runnable:
        raise ValueError(f"{what} isa {name!r} is not available on this CPU (have {available_isas()})")
    return names[name]


def isa_index(isa: str | None, *, env: str | None = ISA_ENV, what: str = "CPU kernel") -> int:
    """The C++ `isa` argument (registry index) of `choose(isa, env=env, what=what)`."""
    return choose(isa, env=env, what=what).index
