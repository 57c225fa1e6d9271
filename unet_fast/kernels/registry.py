"""The kernel registry: every implementation of every plan step kind, as typed data, and the one place that
chooses which one runs a step (issue 24; shared/DESIGN.md, "Choosing a kernel: one registry, decided once").

A `Kernel` names the step kind it runs (a graph.ir Step class), its backend, its dtypes, the CPU variant /
tile backend / device it needs, a `supports(step, dtype) -> reason | None`, how it packs a weight (once, at
prepare time) and the function that runs it (the spec.py op's signature, with the packed weight). Kernel
modules register theirs when imported (`register`); the backends' modules are listed in KERNEL_MODULES and
imported on first use. `choose(step, backend, dtype, context)` is called once per plan step when an
executor is prepared (backends/executor.py): the highest-ranked eligible kernel whose `supports` takes the
step, else the backend-independent reference (kernels/reference.py over spec.py, the reference of last
resort) with the reason; the executor keeps the choice with the packed weight and running only runs it.

What a caller may force is one environment variable, UNET_FAST_KERNELS, read once per optimize (into a
`Choices`, kept by the WeightStore: backends/weights.py) and passed down; see KEYS. Kernels that run one row
of the CPU variant table (kernels/cpu_isa.py) belong to a *family* ("cpu": the vector variants, "bf16": the
tile backends): per family one row is chosen (forced, else the best-ranked runnable one, never an emulator)
and only that row's kernels are candidates.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Head, Pool, Step

# ---------------------------------------------------------------------------------------------------
# What a caller forces: UNET_FAST_KERNELS, read once
# ---------------------------------------------------------------------------------------------------

KERNELS_ENV = "UNET_FAST_KERNELS"
# key -> what it forces (the values each key takes are checked where the key is used)
KEYS: dict[str, str] = {
    "cpu": "the CPU vector variant (kernels/cpu_isa.py: portable, portable16, avx2, avx512) or auto",
    "bf16": "the bf16 tile backend (portable = the emulator, amx, avx512bf16), none (no tile backend: what a "
    "CPU without bf16 hardware runs) or auto (the best one this CPU runs, never the emulator)",
    "bf16_winograd": "the Winograd on bf16 activations for bf16 3x3 convs: auto (not on AMX), on or off",
    "avx512bf16_conv": "the avx512bf16 backend's conv body: direct (its register-blocked direct conv, the "
    "default wherever it runs) or tile (its tile body; tests and benchmarks)",
    "winograd": "the output tile of the cpu backend's Winograd 3x3 convs (fp32 and bf16 activations): auto "
    "(F(6x6, 3x3) where cpu_winograd.f6_decision takes the conv's output size, else F(4x4, 3x3)), 4 (F(4x4) "
    "only) or 6 (F(6x6) wherever Winograd runs)",
}
# Keys whose values are a fixed set: checked when UNET_FAST_KERNELS is parsed (the others where they are used).
VALUES: dict[str, tuple[str, ...]] = {"winograd": ("auto", "4", "6")}
# Deprecated aliases (users set them; UNET_FAST_KERNELS wins where both name a key).
ALIASES: dict[str, str] = {
    "UNET_FAST_CPU_ISA": "cpu",
    "UNET_FAST_CPU_BF16_ISA": "bf16",
    "UNET_FAST_BF16_WINOGRAD": "bf16_winograd",
}
_SWITCH = {"1": "on", "0": "off", "on": "on", "off": "off", "auto": "auto", "": "auto"}


@dataclass(frozen=True)
class Choices:
    """What the caller forced, read once (optimize time) and passed down to every choice and pack:
    `exact` (optimize(exact=True): no approximate algorithm, i.e. no Winograd) and `forced`, the
    UNET_FAST_KERNELS settings as (key, value) pairs (keys of KEYS; lower case)."""

    exact: bool = False
    forced: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        """The forced value of `key` (None: not forced; "auto" counts as not forced)."""
        for k, v in self.forced:
            if k == key:
                return None if v == "auto" else v
        return None

    def switch(self, key: str) -> str:
        """An on / off / auto key's value ("auto" when not forced). Raises ValueError for another value."""
        value = self.get(key) or "auto"
        if value not in _SWITCH:
            raise ValueError(f"{KERNELS_ENV}: {key} must be auto, on or off (or 1 / 0), got {value!r}")
        return _SWITCH[value]

    def describe(self) -> str:
        """'cpu=avx2, bf16=none' (what was forced), '' when nothing was."""
        return ", ".join(f"{k}={v}" for k, v in self.forced if v != "auto")

    @classmethod
    def parse(cls, text: str, *, exact: bool = False) -> Choices:
        """Choices from UNET_FAST_KERNELS' syntax: comma-separated key=value ('cpu=avx2,bf16=none').
        Raises ValueError for a malformed item or an unknown key."""
        forced: dict[str, str] = {}
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            if not sep or not value:
                raise ValueError(f"{KERNELS_ENV}: {item!r} is not key=value (keys: {', '.join(KEYS)})")
            if key not in KEYS:
                raise ValueError(f"{KERNELS_ENV}: unknown key {key!r}; expected one of {', '.join(KEYS)}")
            if key in VALUES and value not in VALUES[key]:
                raise ValueError(f"{KERNELS_ENV}: {key} must be one of {', '.join(VALUES[key])}, got {value!r}")
            forced[key] = value
        return cls(exact, tuple(forced.items()))

    @classmethod
    def from_env(cls, *, exact: bool = False, environ: Mapping[str, str] | None = None) -> Choices:
        """UNET_FAST_KERNELS, plus its deprecated aliases (UNET_FAST_CPU_ISA, UNET_FAST_CPU_BF16_ISA,
        UNET_FAST_BF16_WINOGRAD; a DeprecationWarning names the replacement). Raises ValueError for a
        malformed value."""
        env = os.environ if environ is None else environ
        choices = cls.parse(env.get(KERNELS_ENV, ""), exact=exact)
        forced = dict(choices.forced)
        for var, key in ALIASES.items():
            value = env.get(var, "").strip().lower()
            if value and key not in forced:
                warnings.warn(f"{var} is deprecated: set {KERNELS_ENV}={key}={value} instead", DeprecationWarning,
                              stacklevel=2)  # fmt: skip
                forced[key] = value
        return cls(exact, tuple(forced.items()))


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------

# The step kinds a kernel runs (graph.ir); a Concat step with one input is the plan's standalone Resample.
STEP_TYPES: tuple[type[Step], ...] = (Conv, ConvTranspose2x2, Concat, Pool, Head)


def _always(step: Step, dtype: torch.dtype) -> str | None:
    return None


@dataclass(frozen=True)
class Kernel:
    """One implementation of one step kind.

    name: unique, '<backend>.<op>.<algorithm>[.<row>]' ('cpu.conv2d.winograd.avx2').
    step: the graph.ir Step class it runs. backend: 'cpu' | 'torch' | 'triton' | 'cuda'.
    dtypes: the engine (storage) dtypes it runs. run: the spec.py op's function signature with the packed
    weight in the weight's place (spec.conv2d(inputs, packed, bias, *, stride, ...)).
    supports(step, dtype): None when it runs `step`, else why not; only what the step says (geometry,
    views, sizes of the weight), decided once at prepare time.
    pack(weight, dtype): the step's weight (OIHW / IOHW / [K, C], fp32, on the engine device) in the layout
    `run` takes; None for steps without a weight.
    isa: the CPU variant / tile backend / device it needs ('' none), named in the report. algorithm: what it
    computes with ('Winograd F(4x4,3x3)'). label: how the report names it (default: 'algorithm, isa').
    family / row: the CPU-table family whose chosen row it runs ('cpu' | 'bf16'), and that row's name.
    rank: preference among the candidates of one (backend, step kind, dtype); the highest eligible wins.
    approximate: refused under exact=True. emulator: computes what hardware it lacks would (never
    auto-picked; its family's row is then only ever chosen by forcing).
    gate(context): an eligibility rule that depends on what was forced or chosen (None = eligible).
    fits(step, dtype, sizes, context): for a kernel whose profit depends on the spatial sizes of the plan it
    runs in (a per-shape plan: `sizes` maps each buffer name to its (H, W); None for a caller without a plan,
    such as `unet-fast info`'s typical step): None when it runs there, else why not ('' passes it over
    silently: what a rule that needs sizes returns without them). Called after `gate` and `supports` took it.
    scores_dtype(dtype): for a Head kernel that keeps its scores wider than the engine dtype: their dtype
    (the executor then allocates the engine's output buffer in it).
    """

    name: str
    step: type[Step]
    backend: str
    dtypes: tuple[torch.dtype, ...]
    run: Callable[..., Any]
    supports: Callable[[Step, torch.dtype], str | None] = _always
    pack: Callable[[torch.Tensor, torch.dtype], Any] | None = None
    isa: str = ""
    algorithm: str = ""
    label: str = ""
    family: str = ""
    row: str = ""
    rank: int = 0
    approximate: bool = False
    emulator: bool = False
    gate: Callable[[Context], str | None] | None = None
    fits: Callable[[Step, torch.dtype, Mapping[str, tuple[int, int]] | None, Context], str | None] | None = None
    scores_dtype: Callable[[torch.dtype], torch.dtype] | None = None

    @property
    def title(self) -> str:
        """How the report names what ran: `label`, else 'algorithm, isa'."""
        return self.label or ", ".join(p for p in (self.algorithm, self.isa) if p)


@dataclass(frozen=True)
class Family:
    """A set of kernels that run rows of the CPU variant table, one row chosen per engine: `resolve(choices)`
    returns that row's name, or None where no row of the family is used (then the reason is `why_none`);
    it raises ValueError for a forced name that is unknown or cannot run here."""

    key: str
    resolve: Callable[[Choices], str | None]
    why_none: Callable[[Choices], str] = lambda choices: "none chosen"
    # why row `name` cannot run here ('' when it can): what tests and `unet-fast info` ask of every row
    unavailable: Callable[[str], str] = lambda name: ""


_KERNELS: dict[str, Kernel] = {}
_FAMILIES: dict[str, Family] = {}
# Where each backend's kernels are registered (imported on first use: triton only where it is installed).
KERNEL_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("unet_fast.kernels.reference",),
    "cpu": ("unet_fast.kernels.reference", "unet_fast.kernels.cpu", "unet_fast.kernels.cpu_winograd",
            "unet_fast.kernels.cpu_bf16", "unet_fast.kernels.cpu_bf16_ops"),
    "triton": ("unet_fast.kernels.reference", "unet_fast.kernels.triton"),
    "cuda": ("unet_fast.kernels.reference", "unet_fast.kernels.cuda"),
}
REFERENCE_BACKEND = "torch"
_loaded: set[str] = set()


def register(*kernels: Kernel) -> None:
    """Add kernels (at import of their module). Raises ValueError for a name registered twice, or a step
    kind the executor does not know."""
    for k in kernels:
        if k.name in _KERNELS:
            raise ValueError(f"kernel {k.name!r} is registered twice")
        if k.step not in STEP_TYPES:
            raise ValueError(f"kernel {k.name!r}: {k.step} is not one of the step kinds {STEP_TYPES}")
        _KERNELS[k.name] = k


def unregister(*names: str) -> None:
    """Remove kernels by name (tests that register a fake backend clean up with it)."""
    for name in names:
        _KERNELS.pop(name, None)


def register_family(family: Family) -> None:
    _FAMILIES[family.key] = family


def load(backend: str) -> None:
    """Import the modules that register `backend`'s kernels (once). Raises ImportError where one cannot be
    imported (e.g. triton not installed)."""
    if backend in _loaded:
        return
    for module in KERNEL_MODULES.get(backend, ()):
        importlib.import_module(module)
    _loaded.add(backend)


def kernels(backend: str | None = None, step: type[Step] | None = None,
            dtype: torch.dtype | None = None) -> list[Kernel]:  # fmt: skip
    """The registered kernels (of `backend`, for `step`, running `dtype`), highest rank first."""
    if backend is not None:
        load(backend)
    found = [k for k in _KERNELS.values()
             if (backend is None or k.backend == backend) and (step is None or k.step is step)
             and (dtype is None or dtype in k.dtypes)]  # fmt: skip
    return sorted(found, key=lambda k: -k.rank)


def unavailable(k: Kernel) -> str:
    """Why kernel `k` cannot run on this machine ('' when it can, as far as its CPU-table row says; a
    backend's device rules are the backend's: backends/)."""
    return _FAMILIES[k.family].unavailable(k.row) if k.family else ""


def get(name: str) -> Kernel:
    """The kernel registered as `name` (KeyError if none)."""
    return _KERNELS[name]


def dtypes(backend: str) -> tuple[torch.dtype, ...]:
    """The engine dtypes `backend`'s Conv kernels run (what optimize accepts for it)."""
    seen = {d for k in kernels(backend, Conv) for d in k.dtypes}
    order = (torch.float32, torch.float16, torch.bfloat16)
    return tuple(d for d in order if d in seen) + tuple(sorted((d for d in seen if d not in order), key=str))


# ---------------------------------------------------------------------------------------------------
# Choosing, once per step
# ---------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What choosing needs besides the step: the forced Choices and, per family, the row chosen (resolved
    once per context, on first use)."""

    choices: Choices = field(default_factory=Choices)
    _rows: dict[str, str | None] = field(default_factory=dict)

    def row(self, family: str) -> str | None:
        """The chosen row of `family` (None: the family is not used). Raises ValueError for a bad forced
        name."""
        if family not in self._rows:
            self._rows[family] = _FAMILIES[family].resolve(self.choices)
        return self._rows[family]

    def validate(self) -> None:
        """Resolve every family the caller forced now (those registered: the backends loaded so far), so a bad
        forced name is a ValueError when the engine is prepared, whatever steps the plan has."""
        for key, _ in self.choices.forced:
            if key in _FAMILIES:
                self.row(key)

    def why_none(self, family: str) -> str:
        """Why no row of `family` is used ('' when one is)."""
        return "" if self.row(family) is not None else _FAMILIES[family].why_none(self.choices)

    def eligible(self, k: Kernel) -> str | None:
        """None when `k` may run here under these choices, else why not ('' for a row of its family that is
        simply not the chosen one: not worth naming in a report)."""
        if k.family:
            row = self.row(k.family)
            if row != k.row:
                return "" if row is not None else f"{k.family}: {_FAMILIES[k.family].why_none(self.choices)}"
        if k.approximate and self.choices.exact:
            return "exact=True: no approximate algorithm"
        return k.gate(self) if k.gate is not None else None


@dataclass(frozen=True)
class Choice:
    """What runs a step: `kernel`, and the reasons the better-ranked candidates were passed over (kernel
    name, reason). `fallback`: '' when a kernel of the requested backend runs it, else why the reference
    does."""

    kernel: Kernel
    passed_over: tuple[tuple[str, str], ...] = ()
    fallback: str = ""


def choose(step: Step, backend: str, dtype: torch.dtype, context: Context,
           sizes: Mapping[str, tuple[int, int]] | None = None) -> Choice:  # fmt: skip
    """The kernel that runs `step` on `backend` in `dtype`: the highest-ranked eligible one whose `supports`
    takes the step (and whose `fits`, if it has one, takes it at the plan's buffer `sizes`: name -> (H, W)),
    else the reference with the reason. Raises ValueError for a bad forced choice, and LookupError when not
    even the reference runs this step kind in `dtype`."""
    passed: list[tuple[str, str]] = []
    step_type = type(step)
    for k in kernels(backend, step_type, dtype):
        why = context.eligible(k)
        if why is None:
            why = k.supports(step, dtype)
            if why is None and k.fits is not None:
                why = k.fits(step, dtype, sizes, context)
            if why is None:
                return Choice(k, tuple(passed))
        if why and all(why != r for _, r in passed):  # a family's absence once, not once per row
            passed.append((k.name, why))
    refs = kernels(REFERENCE_BACKEND, step_type, dtype)
    if not refs:
        raise LookupError(f"no kernel, not even the reference, runs a {step.kind} step in {dtype}")
    if backend == REFERENCE_BACKEND:
        return Choice(refs[0], tuple(passed))
    if passed:
        why = f"{backend} kernels do not support this step ({passed[0][1]})"
    elif kernels(backend, step_type):
        why = f"no {backend} kernel runs a {step.kind} step in {str(dtype).replace('torch.', '')}"
    else:
        why = f"no {backend} kernel for {step.kind} steps"
    return Choice(refs[0], tuple(passed), f"{why}: torch reference")


__all__ = [
    "ALIASES",
    "KERNELS_ENV",
    "KERNEL_MODULES",
    "KEYS",
    "STEP_TYPES",
    "VALUES",
    "Choice",
    "Choices",
    "Context",
    "Family",
    "Kernel",
    "choose",
    "dtypes",
    "get",
    "kernels",
    "load",
    "register",
    "register_family",
    "unavailable",
    "unregister",
]
