"""Generated Numba kernels as real modules in the cache directory, so they compile once.

Numba caches machine code on disk only for functions defined in a file (``cache=True``
keys the cache by the file's path and timestamp). Kernels whose block sizes are baked into
generated source are therefore written to ``<cache>/kernels/<name>_<hash>.py`` (named by a
hash of the source, written atomically, never rewritten) and imported from there; their
``njit(cache=True)`` then stores the compiled code in ``__pycache__`` beside the file, and a
new process loads it in milliseconds instead of compiling for seconds.

``ATROUS_KERNEL_CACHE`` overrides the directory; set it to ``off`` to keep every kernel in
memory only (each process then compiles, as plain ``exec`` would).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

_MODULES: dict[str, ModuleType] = {}


def cache_dir() -> Path | None:
    """Where generated kernel modules live, or None when the disk cache is off."""
    chosen = os.environ.get("ATROUS_KERNEL_CACHE")
    if chosen:
        return None if chosen.lower() == "off" else Path(chosen)
    from atrous.autotune.database import default_path

    return default_path().parent / "kernels"


def _write_once(path: Path, source: str) -> bool:
    """Write ``source`` to ``path`` atomically unless it exists; False if not writable."""
    if path.exists():
        return True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)  # same content from every writer, so a race is harmless
    except OSError:
        return False
    return True


def load(name: str, source: str) -> ModuleType:
    """The module of generated ``source`` (imported once per process).

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
    if path is not None and _write_once(path, source):
        spec = importlib.util.spec_from_file_location(f"atrous_kernels.{stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:  # no writable cache: an in-memory module (Numba then cannot cache, and warns)
        module = ModuleType(f"atrous_kernels.{stem}")
        exec(compile(source.replace("cache=True", "cache=False"), f"<atrous {stem}>", "exec"),
             module.__dict__)
    _MODULES[stem] = module
    return module


def function(name: str, source: str, attribute: str) -> Any:
    """``load(name, source).<attribute>``: one generated function."""
    return getattr(load(name, source), attribute)
