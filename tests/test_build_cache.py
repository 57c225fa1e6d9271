"""setup.py's build cache (issue 12, fault 8): a repeated `pip install -e .` recompiles only what changed.
A real compiler on two tiny sources: unchanged sources are not compiled again; an edited source, or other
flags, are; a missing stamp is not trusted."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_module() -> dict:
    return runpy.run_path(str(ROOT / "setup.py"), run_name="unet_fast_setup")  # not __main__: no setup() call


def _compiler(setup_module: dict, compiled: list[list[str]]):
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    real = cc.compile

    def spy(sources, *args, **kwargs):
        compiled.append([Path(s).name for s in sources])
        return real(sources, *args, **kwargs)

    cc.compile = spy
    return setup_module["cached_compile"](cc, "test-cxx 1.0", log=lambda msg: None)


def test_only_changed_sources_are_compiled_again(setup_module: dict, tmp_path) -> None:
    sources = []
    for name in ("a", "b"):
        src = tmp_path / f"{name}.cpp"
        src.write_text(f"int {name}_value() {{ return 42; }}\n")
        sources.append(str(src))
    out = tmp_path / "objects"
    compiled: list[list[str]] = []
    cc = _compiler(setup_module, compiled)
    objects = cc.compile(sources, output_dir=str(out), extra_postargs=["-O2"])
    assert compiled == [["a.cpp", "b.cpp"]] and all(Path(o).is_file() for o in objects)

    assert cc.compile(sources, output_dir=str(out), extra_postargs=["-O2"]) == objects
    assert compiled == [["a.cpp", "b.cpp"]], "nothing changed: nothing compiled"

    earlier = Path(sources[1]).stat().st_mtime - 10
    os.utime(objects[1], (earlier, earlier))  # b.cpp edited after its object was written
    cc.compile(sources, output_dir=str(out), extra_postargs=["-O2"])
    assert compiled[-1] == ["b.cpp"]

    cc.compile(sources, output_dir=str(out), extra_postargs=["-O1"])  # other flags: everything again
    assert compiled[-1] == ["a.cpp", "b.cpp"]

    Path(objects[0] + ".key").unlink()  # an object without its stamp is not trusted
    cc.compile(sources, output_dir=str(out), extra_postargs=["-O1"])
    assert compiled[-1] == ["a.cpp"]


def test_a_newer_header_recompiles(setup_module: dict, tmp_path) -> None:
    src = tmp_path / "c.cpp"
    src.write_text("int c_value() { return 1; }\n")
    obj = tmp_path / "c.o"
    obj.write_bytes(b"")
    key = "k"
    setup_module["_record"](obj, key)
    newest = setup_module["_inputs_mtime"]()
    stamp = max(newest, src.stat().st_mtime) + 10
    os.utime(obj, (stamp, stamp))
    assert setup_module["_is_fresh"](obj, src, key, newest)
    assert not setup_module["_is_fresh"](obj, src, key, stamp + 1), "a header newer than the object"
    assert not setup_module["_is_fresh"](obj, src, "other flags", newest)


def test_cache_folder_is_per_python_and_platform_and_can_be_switched_off(setup_module: dict, monkeypatch) -> None:
    import sys
    import sysconfig

    cache = setup_module["CACHE_DIR"]
    assert cache.parent == ROOT / "build" and sys.implementation.cache_tag in cache.name
    assert sysconfig.get_platform() in cache.name
    monkeypatch.setenv("UNET_FAST_BUILD_CACHE", "0")
    assert not setup_module["_cache_enabled"]()
    monkeypatch.delenv("UNET_FAST_BUILD_CACHE")
    assert setup_module["_cache_enabled"]()


def test_the_commit_macro_recompiles_only_the_sources_that_use_it(setup_module: dict, tmp_path, monkeypatch) -> None:
    """The commit hash is a -D macro of every source; only the bindings print it. A new commit must not
    recompile every kernel, and must recompile the bindings (or build_info() would name an old commit)."""
    uses, plain = tmp_path / "bindings.cpp", tmp_path / "kernel.cpp"
    uses.write_text('const char* commit() { return UNET_FAST_GIT_COMMIT; }\n')
    plain.write_text("int kernel() { return 7; }\n")
    key = setup_module["_source_key"]
    before = (key("base", uses), key("base", plain))
    monkeypatch.setitem(key.__globals__, "GIT_COMMIT", "another-commit")
    after = (key("base", uses), key("base", plain))
    assert before[0] != after[0] and before[1] == after[1] == "base"
    stable = setup_module["_stable"](["-O3", '-DUNET_FAST_GIT_COMMIT="abc"', "-DOTHER=1"])
    assert stable == ["-O3", "-DUNET_FAST_GIT_COMMIT", "-DOTHER=1"]
