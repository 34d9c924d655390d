"""Generated Numba kernels as real modules in the cache directory, so they compile once.

Numba caches machine code on disk only for functions defined in a file (``cache=True``
keys the cache by the file's path and content). Kernels whose block sizes are baked into
generated source are therefore written to ``<cache>/kernels/<name>_<hash>.py`` (named by a
hash of the source) and their ``njit(cache=True)`` stores the compiled code in
``__pycache__`` beside the file, so a new process loads it in milliseconds instead of
compiling for seconds.

The file is never trusted: atrous compiles the source text it generated itself, with the
file's path as the code's filename (which is all Numba's cache needs), so whatever bytes
lie on disk are never executed. The file only has to hold exactly that text for Numba's
cache to be keyed correctly: one that is missing, empty, truncated, different or not a
regular file is replaced atomically (a temporary file in the same folder, then a rename;
the temporary file is removed when the write fails).

``ATROUS_KERNEL_CACHE`` overrides the directory; set it to ``off`` to keep every kernel in
memory only (each process then compiles, as plain ``exec`` would). A directory that cannot
be written falls back to the same in-memory modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from atrous.core.paths import kernel_cache_dir

_MODULES: dict[str, ModuleType] = {}
# Read flags for an existing kernel file: never follow a link, never block on a FIFO.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def cache_dir() -> Path | None:
    """Where generated kernel modules live, or None when the disk cache is off."""
    return kernel_cache_dir()


def holds(path: Path, data: bytes) -> bool:
    """True when ``path`` is a regular file (not a link) whose content is exactly ``data``."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        chunks, wanted = [], len(data) + 1  # one byte more shows a longer file
        while wanted > 0:
            chunk = os.read(fd, wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> bool:
    """Replace ``path`` by a file holding ``data`` (temporary file + rename in the same
    folder); False when the folder cannot be written. No temporary file is left behind."""
    tmp: str | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a planted link itself, never its target
        tmp = None
    except OSError:
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return True


def ensure_file(path: Path, source: str) -> bool:
    """Make ``path`` hold exactly ``source``, rewriting it when it does not; False when
    that is impossible (then the caller keeps the kernel in memory)."""
    data = source.encode()
    return holds(path, data) or write_atomic(path, data)


def _module(stem: str, source: str, filename: str, cache: bool) -> ModuleType:
    """A module made by compiling ``source`` (atrous' own text, never a file's bytes)."""
    module = ModuleType(f"atrous_kernels.{stem}")
    text = source if cache else source.replace("cache=True", "cache=False")
    if cache:
        module.__file__ = filename
        sys.modules[module.__name__] = module
    exec(compile(text, filename, "exec"), module.__dict__)  # our own text, never the file
    return module


def load(name: str, source: str) -> ModuleType:
    """The module of generated ``source`` (compiled once per process).

    Args:
        name: a short identifier-like stem for the file, e.g. ``conv_tile_5x4``.
        source: complete module source; its jitted functions should use ``cache=True``.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    stem = f"{name}_{digest}"
    if stem in _MODULES:
        return _MODULES[stem]
    directory = cache_dir()
    path = directory / f"{stem}.py" if directory is not None else None
    if path is not None and ensure_file(path, source):
        module = _module(stem, source, str(path), cache=True)
    else:  # no writable cache: an in-memory module (Numba then cannot cache, and warns)
        module = _module(stem, source, f"<atrous {stem}>", cache=False)
    _MODULES[stem] = module
    return module


def function(name: str, source: str, attribute: str) -> Any:
    """``load(name, source).<attribute>``: one generated function."""
    return getattr(load(name, source), attribute)
