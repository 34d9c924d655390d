"""Test configuration: a private tuning database and kernel cache, and which backends run
here, on which device.

The suite never touches the user's real tuning database or kernel cache: before atrous is
imported, XDG_CACHE_HOME points at a fresh temporary folder for this session (so the
default tuning file is new and empty), and ATROUS_KERNEL_CACHE at a folder under the
repository's ignored ``.pytest_cache/`` (generated kernels and their Numba machine code
survive between runs, which keeps reruns fast), and torch.compile's cache at one inside the
session folder. Tests that need their own paths still set them with monkeypatch. Under
pytest-xdist (``scripts/dev.py test`` runs two workers) each worker gets a folder of its
own inside the session's, so no two tests that use the default database ever share it; the
kernel cache is shared, as its writes are atomic.

Tests marked ``slow`` run only with ``--slow`` (``python3 scripts/dev.py test --slow``).

Triton runs on a CUDA GPU when there is one; elsewhere its kernels run on the CPU under
TRITON_INTERPRET=1, which must be set before triton is first imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

#: The kernel cache of the test suite (kept between runs; ``pytest --cache-clear`` empties it).
KERNEL_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "atrous-kernels"
if "ATROUS_TEST_SESSION_CACHE" not in os.environ:  # once, even if imported twice
    os.environ["ATROUS_TEST_SESSION_CACHE"] = tempfile.mkdtemp(prefix="atrous-tests-")
    atexit.register(shutil.rmtree, os.environ["ATROUS_TEST_SESSION_CACHE"], ignore_errors=True)
#: This session's user cache folder, removed at exit: the default tuning database lives here
#: (subprocesses that tests start inherit it).
SESSION_CACHE = Path(os.environ["ATROUS_TEST_SESSION_CACHE"])
if os.environ.get("PYTEST_XDIST_WORKER"):  # set by xdist before a worker reads this file
    SESSION_CACHE = SESSION_CACHE / f"atrous-tests-{os.environ['PYTEST_XDIST_WORKER']}"
    SESSION_CACHE.mkdir(parents=True, exist_ok=True)
os.environ["XDG_CACHE_HOME"] = str(SESSION_CACHE)
# torch.compile's cache too: the default (/tmp/torchinductor_<user>) is shared by every
# checkout on the machine, and its entries do not key on a custom op's schema, so another
# checkout's `atrous::aspp` could be replayed here.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(SESSION_CACHE / "torchinductor")
os.environ["ATROUS_KERNEL_CACHE"] = str(KERNEL_CACHE)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA = _cuda_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (heavier cases)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked slow unless --slow was given, saying how to run them."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="marked slow: run with `python3 scripts/dev.py test --slow`")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
