"""Builds unet_fast._C (C++ CPU ops, always) and unet_fast._cuda (CUDA ops, when nvcc is found).

Neither module links libtorch: ops take raw pointers, shapes, strides and a stream (docs/architecture.md).

Environment switches (read at build time):
  UNET_FAST_CUDA_BUILD   auto (default: build if nvcc is found) | 1 (force: fail without nvcc) | 0 (skip)
  UNET_FAST_CUDA_ARCHS   semicolon list of SM versions, default "80;90"; PTX is embedded for the last one
  MAX_JOBS               parallel compile jobs, host compiler and nvcc (default: 2)
  UNET_FAST_BUILD_CACHE  1 (default): keep object files in build/cache-<python>-<platform>/ and recompile only
                         sources that changed (or whose headers, flags or compiler changed), so a repeated
                         `pip install -e .` relinks in seconds instead of recompiling for minutes;
                         0: compile everything in setuptools' own (temporary) build folder
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pybind11
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _git_commit() -> str:
    commit = _run(["git", "rev-parse", "HEAD"])
    if commit != "unknown" and _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    return commit


def _find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_home(nvcc: str) -> Path:
    """The toolkit root holding include/cuda_runtime.h (nvcc may be a wrapper script outside it)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  str(Path(os.path.realpath(nvcc)).parent.parent), "/usr/local/cuda"]  # fmt: skip
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime.h").exists():
            return Path(c)
    raise SystemExit(f"found nvcc at {nvcc} but no CUDA toolkit headers (set CUDA_HOME)")


def _cuda_archs() -> list[str]:
    raw = os.environ.get("UNET_FAST_CUDA_ARCHS", "80;90")
    archs = [a.strip().replace(".", "") for a in re.split(r"[;, ]+", raw) if a.strip()]
    if not archs or not all(a.isdigit() for a in archs):
        raise SystemExit(f"UNET_FAST_CUDA_ARCHS={raw!r}: expected SM numbers such as '80;90'")
    return archs


def _sources(*patterns: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pat in patterns for p in CSRC.glob(pat))


# --- build cache: object files that outlive one `pip install -e .` -------------------------------------
# pip builds an editable install in a fresh temporary folder every time, so without this every install
# recompiles every source (minutes; the CUDA sources too, wherever nvcc exists). An object is reused when it
# is newer than its source, than every header under csrc/ and than this file, and was compiled with the same
# command (flags, macros, include dirs, compiler and its version: a stamp beside the object records them).
CACHE_DIR = ROOT / "build" / f"cache-{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
_HEADER_SUFFIXES = (".h", ".hpp", ".cuh", ".inc")


def _cache_enabled() -> bool:
    return os.environ.get("UNET_FAST_BUILD_CACHE", "1").lower() not in ("0", "false", "off", "no")


def _inputs_mtime() -> float:
    """Newest of every header under csrc/ and setup.py: a change there recompiles everything."""
    files = [p for p in CSRC.rglob("*") if p.suffix in _HEADER_SUFFIXES] + [Path(__file__).resolve()]
    return max(p.stat().st_mtime for p in files)


# Macros whose value changes with every commit: part of a source's key only where the source names them
# (the bindings), or every commit would recompile every kernel.
_VOLATILE_MACROS = ("UNET_FAST_GIT_COMMIT",)


def _command_key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _source_key(base: str, src: Path) -> str:
    """`base` (the command without volatile macro values) plus the volatile macros the source names."""
    try:
        text = src.read_text(errors="replace")
    except OSError:
        return base
    named = [m for m in _VOLATILE_MACROS if m in text]
    return _command_key(base, named, GIT_COMMIT) if named else base


def _stable(args: object) -> object:
    """Compile arguments with the volatile macros' values taken out (see _VOLATILE_MACROS)."""
    if isinstance(args, (list, tuple)):
        return [_stable(a) for a in args]
    if isinstance(args, str) and any(f"-D{m}=" in args for m in _VOLATILE_MACROS):
        return args.split("=", 1)[0]
    return args


def _is_fresh(obj: Path, src: Path, key: str, inputs_mtime: float) -> bool:
    stamp = obj.with_name(obj.name + ".key")
    try:
        return (stamp.read_text() == key and obj.stat().st_mtime >= max(src.stat().st_mtime, inputs_mtime))
    except OSError:
        return False


def _record(obj: Path, key: str) -> None:
    obj.with_name(obj.name + ".key").write_text(key)


def cached_compile(compiler, compiler_version: str, log=print):  # distutils' compiler has no type stubs
    """Wrap `compiler.compile` so that up-to-date objects (see above) are not compiled again."""
    original = compiler.compile
    inputs_mtime = _inputs_mtime()

    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=False, extra_preargs=None,
                extra_postargs=None, depends=None):  # fmt: skip
        stable_macros = [m for m in (macros or []) if m[0] not in _VOLATILE_MACROS]
        base = _command_key(getattr(compiler, "compiler_so", compiler.compiler_type), compiler_version,
                            pybind11.__version__, stable_macros, include_dirs, debug, extra_preargs, extra_postargs)
        objects = compiler.object_filenames(sources, strip_dir=False, output_dir=output_dir)
        keys = {s: _source_key(base, ROOT / s) for s in sources}
        stale = [(s, o) for s, o in zip(sources, objects, strict=True)
                 if not _is_fresh(Path(o), ROOT / s, keys[s], inputs_mtime)]  # fmt: skip
        if len(stale) < len(sources):
            log(f"unet_fast: build cache: {len(sources) - len(stale)} of {len(sources)} objects up to date "
                f"in {output_dir} (UNET_FAST_BUILD_CACHE=0 to rebuild all)")  # fmt: skip
        if stale:
            original([s for s, _ in stale], output_dir, macros, include_dirs, debug, extra_preargs,
                     extra_postargs, depends)  # fmt: skip
            for src, o in stale:
                _record(Path(o), keys[src])
        return objects

    compiler.compile = compile
    return compiler


# The host-compiled sources (one file per CPU kernel variant among them) compile in parallel: MAX_JOBS
# jobs, default 2 (CI runners and these machines have 2 cores).
ParallelCompile("MAX_JOBS", default=2).install()

GIT_COMMIT = _git_commit()
COMMON_MACROS = [("UNET_FAST_GIT_COMMIT", f'"{GIT_COMMIT}"')]


class BuildExt(build_ext):
    """Compiles .cu sources with nvcc, everything else with the host compiler, and records build metadata."""

    def build_extensions(self) -> None:
        if _cache_enabled():  # persistent objects (see CACHE_DIR); the linked module still goes to build_lib
            self.build_temp = str(CACHE_DIR)
            cached_compile(self.compiler, _run([os.environ.get("CXX", "c++"), "--version"]),
                           lambda msg: print(msg, file=sys.stderr))  # fmt: skip
        self._info: dict = {
            "git_commit": GIT_COMMIT,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cxx": _run([os.environ.get("CXX", "c++"), "--version"]).splitlines()[0],
        }
        mode = os.environ.get("UNET_FAST_CUDA_BUILD", "auto").lower()
        nvcc = _find_nvcc()
        for ext in list(self.extensions):
            if ext.name != "unet_fast._cuda":
                continue
            if mode in ("0", "false", "off", "skip") or (nvcc is None and mode == "auto"):
                why = (
                    "UNET_FAST_CUDA_BUILD=0" if nvcc else "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
                )
                print(f"unet_fast: not building the CUDA module: {why}", file=sys.stderr)
                self.extensions.remove(ext)
                self._info["cuda"] = {"built": False, "reason": why}
            elif nvcc is None:
                raise SystemExit("UNET_FAST_CUDA_BUILD=1 but nvcc was not found (set CUDA_HOME)")
            else:
                self._prepare_cuda(ext, nvcc)
        super().build_extensions()
        self._write_info()

    def _prepare_cuda(self, ext: Pybind11Extension, nvcc: str) -> None:
        archs = _cuda_archs()
        cuda_home = _cuda_home(nvcc)
        nvcc_version = _run([nvcc, "--version"]).splitlines()[-1]
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        build_temp = Path(self.build_temp) / "cuda"
        build_temp.mkdir(parents=True, exist_ok=True)
        macros = [f"-D{k}={v}" for k, v in COMMON_MACROS] + [f'-DUNET_FAST_CUDA_ARCHS="{";".join(archs)}"']
        flags = [
            "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC,-Wall",
            "-Werror=all-warnings", "--resource-usage", "-lineinfo", f"-I{CSRC / 'include'}",
            *gencode, *macros,
        ]  # fmt: skip

        base_key = _command_key(_stable(flags), nvcc_version)
        inputs_mtime = _inputs_mtime()

        def compile_one(src: str) -> tuple[str, str]:
            obj = build_temp / (Path(src).stem + ".o")
            key = _source_key(base_key, ROOT / src)
            log = obj.with_name(obj.name + ".log")  # ptxas --resource-usage output, read from the cache too
            if _cache_enabled() and log.is_file() and _is_fresh(obj, ROOT / src, key, inputs_mtime):
                return str(obj), log.read_text()
            cmd = [nvcc, "-c", str(ROOT / src), "-o", str(obj), *flags]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"nvcc failed on {src}:\n{proc.stdout}\n{proc.stderr}")
            log.write_text(proc.stdout + proc.stderr)
            _record(obj, key)
            return str(obj), proc.stdout + proc.stderr

        jobs = max(1, int(os.environ.get("MAX_JOBS", "2")))
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(compile_one, cu_sources))
        ext.extra_objects = [obj for obj, _ in results]
        # setuptools relinks only when a source or dependency is newer than the module: the fresh objects
        # count, or an edited .cu would leave the old kernels in an "up to date" module.
        ext.depends = [*ext.depends, *ext.extra_objects]
        # --resource-usage goes to a text file the tests read: zero spills is a checked property.
        usage = "\n".join(f"## {src}\n{log}" for src, (_, log) in zip(cu_sources, results, strict=True))
        (ROOT / "unet_fast" / "_cuda_resource_usage.txt").write_text(usage)
        ext.library_dirs.append(str(cuda_home / "lib"))
        ext.library_dirs.append(str(cuda_home / "lib64"))
        ext.libraries += ["cudart_static", "dl", "rt", "pthread"]
        ext.include_dirs.append(str(cuda_home / "include"))
        ext.define_macros += [
            ("UNET_FAST_CUDA_ARCHS", f'"{";".join(archs)}"'),
            ("UNET_FAST_NVCC_VERSION", f'"{nvcc_version}"'),
        ]
        self._info["cuda"] = {"built": True, "archs": archs, "ptx": archs[-1], "nvcc": nvcc_version,
                              "cuda_home": str(cuda_home), "sources": cu_sources}  # fmt: skip

    def _write_info(self) -> None:
        (ROOT / "unet_fast" / "_build_info.json").write_text(json.dumps(self._info, indent=2) + "\n")
        if self.inplace is False:  # a regular (non-editable) build also ships the file in the wheel
            target = Path(self.build_lib) / "unet_fast" / "_build_info.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(self._info, indent=2) + "\n")


cpu_ext = Pybind11Extension(
    "unet_fast._C",
    sources=_sources("bindings/cpu_module.cpp", "cpu/*.cpp", "cpu/variants/*.cpp", "cpu/amx/*.cpp",
                     "cpu/bf16/*.cpp"),
    # an edited header rebuilds the module
    depends=_sources("include/unet_fast/*.h", "include/unet_fast/amx/*.h", "include/unet_fast/bf16/*.h",
                     "cpu/variants/*.h"),
    include_dirs=[str(CSRC / "include")],
    cxx_std=17,
    define_macros=list(COMMON_MACROS),
    # No -march=native: the wheel must run on any x86_64; each kernel variant (csrc/cpu/variants/, registry
    # csrc/include/unet_fast/cpu_isa.h) is compiled under its own `#pragma GCC target` and picked at run time. torch's own libgomp.so.1 is already loaded when _C is imported, so the
    # loader binds us to the same OpenMP runtime (checked in tests/test_build.py).
    extra_compile_args=["-O3", "-fopenmp", "-Wall", "-Wextra", "-Werror"],
    extra_link_args=["-fopenmp"],
)
cuda_ext = Pybind11Extension(
    "unet_fast._cuda",
    sources=_sources("bindings/cuda_module.cpp", "cuda/*.cu"),
    include_dirs=[str(CSRC / "include")],
    cxx_std=17,
    define_macros=list(COMMON_MACROS),
    extra_compile_args=["-O2", "-Wall", "-Werror"],
)

if __name__ == "__main__":  # setuptools' build backend and `python setup.py ...` run this file as __main__
    setup(ext_modules=[cpu_ext, cuda_ext], cmdclass={"build_ext": BuildExt})
