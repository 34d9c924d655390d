"""The generated-kernel cache never runs a file it did not write, repairs damaged files,
writes atomically without leftovers, falls back to memory, and keeps Numba's disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from atrous.kernels import codegen

#: A small generated module: cheap to compile, and its result shows which source ran.
SOURCE = ("from numba import njit\n\nOFFSET = 3.0\n\n\n@njit(cache=True)\n"
          "def shift(a):\n    return a + OFFSET\n")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private kernel cache folder and an empty per-process module memo."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv("ATROUS_KERNEL_CACHE", str(folder))
    monkeypatch.setattr(codegen, "_MODULES", {})
    return folder


def _expected_path(folder, name="shift_test"):
    module = codegen.load(name, SOURCE)
    return module, folder / (module.__name__.rsplit(".", 1)[1] + ".py")


def _check_result(module):
    x = np.random.default_rng(3).standard_normal(5)
    np.testing.assert_array_equal(module.shift(x), x + 3.0)


def test_a_new_kernel_file_holds_exactly_the_generated_source(cache):
    module, path = _expected_path(cache)
    assert path.read_bytes() == SOURCE.encode()
    assert module.__file__ == str(path)
    _check_result(module)
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("damage", ["empty", "truncated", "planted", "longer"])
def test_a_damaged_or_planted_file_is_replaced_and_never_run(cache, tmp_path, damage):
    """Whatever lies under the expected name, atrous runs its own source and rewrites the
    file to exactly that source."""
    _, path = _expected_path(cache)
    marker = tmp_path / "planted-code-ran"
    planted = f"open({str(marker)!r}, 'w').close()\nOFFSET = 1000.0\n" + SOURCE.replace(
        "OFFSET = 3.0", "")
    content = {"empty": "", "truncated": SOURCE[: len(SOURCE) // 2], "planted": planted,
               "longer": SOURCE + f"open({str(marker)!r}, 'w').close()\n"}[damage]
    path.write_text(content)
    codegen._MODULES.clear()  # a new process, as far as the memo is concerned
    module = codegen.load("shift_test", SOURCE)
    _check_result(module)
    assert not marker.exists()
    assert path.read_bytes() == SOURCE.encode()


def test_a_planted_link_is_replaced_and_its_target_untouched(cache, tmp_path):
    _, path = _expected_path(cache)
    target = tmp_path / "elsewhere.py"
    target.write_text("raise SystemExit('planted')\n")
    path.unlink()
    path.symlink_to(target)
    codegen._MODULES.clear()
    _check_result(codegen.load("shift_test", SOURCE))
    assert not path.is_symlink() and path.read_bytes() == SOURCE.encode()
    assert target.read_text() == "raise SystemExit('planted')\n"


def test_a_failed_write_leaves_no_temporary_file_and_runs_from_memory(cache, monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(codegen.os, "replace", fail)
    module = codegen.load("shift_test", SOURCE)
    _check_result(module)
    assert not hasattr(module, "__file__")  # in memory
    assert list(cache.iterdir()) == []


def test_an_unwritable_folder_falls_back_to_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ATROUS_KERNEL_CACHE", str(blocker / "kernels"))
    monkeypatch.setattr(codegen, "_MODULES", {})
    module = codegen.load("shift_test", SOURCE)
    _check_result(module)
    assert not hasattr(module, "__file__")


def test_the_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ATROUS_KERNEL_CACHE", "off")
    monkeypatch.setattr(codegen, "_MODULES", {})
    assert codegen.cache_dir() is None
    _check_result(codegen.load("shift_test", SOURCE))


_CHILD = """
import json, sys
from atrous.kernels import codegen
f = codegen.function("shift_test", {source!r}, "shift")
f(1.0)
json.dump([len(f.stats.cache_hits), len(f.stats.cache_misses)], sys.stdout)
"""


def test_numba_saves_and_a_second_process_loads_without_compiling(cache):
    """Compiling atrous' text under the file's name keeps Numba's on-disk cache working:
    the first process compiles and saves next to the file, the second only loads."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["ATROUS_KERNEL_CACHE"] = str(cache)

    def run() -> list[int]:
        done = subprocess.run([sys.executable, "-c", _CHILD.format(source=SOURCE)], env=env,
                              capture_output=True, text=True, check=True, timeout=120)
        assert "Cannot cache" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    hits, misses = run()
    assert misses > 0 and hits == 0
    assert any(p.suffix == ".nbi" for p in (cache / "__pycache__").iterdir())
    hits, misses = run()
    assert (hits, misses) == (1, 0)
