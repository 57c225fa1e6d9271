"""Which build of the C++ CPU kernel bodies runs (csrc/include/unet_fast/cpu_isa.h): every body is compiled
portable and AVX2+FMA, and the ops' `isa` argument ("auto" | "portable" | "avx2") picks one; "auto" takes
AVX2+FMA where the CPU has it. Tests force each build in turn."""

from __future__ import annotations

import os

from unet_fast._ext import cpu_ext

ISAS: tuple[str, ...] = ("auto", "portable", "avx2")  # index = the C++ `isa` argument


def available_isas() -> tuple[str, ...]:
    """Builds this CPU can run ('portable' always, 'avx2' with AVX2+FMA); () if unet_fast._C is not built."""
    if cpu_ext is None or not hasattr(cpu_ext, "cpu_isas"):
        return ()
    return tuple(cpu_ext.cpu_isas())


def isa_index(isa: str | None, *, env: str | None = None, what: str = "CPU kernel") -> int:
    """The C++ `isa` argument for `isa` (else the environment variable `env`, else auto), checked against
    this CPU; `what` names the op in the error."""
    name = (isa or (os.environ.get(env) if env else None) or "auto").lower()
    where = f" (argument or {env})" if env else ""
    if name not in ISAS:
        raise ValueError(f"unknown {what} isa {name!r}; expected one of {ISAS}{where}")
    if name != "auto" and name not in available_isas():
        raise ValueError(f"{what} isa {name!r} is not available on this CPU (have {available_isas()})")
    return ISAS.index(name)
