"""Where atrous keeps its files: the user's cache folder, the tuning database's default
path beside it, and the generated-kernel folder. Paths only: nothing here reads or writes."""

from __future__ import annotations

import os
from pathlib import Path

#: The tuning database's file name inside the cache folder.
DATABASE_NAME = "tuning.json"


def cache_root() -> Path:
    """The user's cache folder for atrous (platformdirs' ``user_cache_dir``), or
    ``$XDG_CACHE_HOME/atrous`` / ``~/.cache/atrous`` when platformdirs is not installed."""
    try:
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atrous"
    return Path(platformdirs.user_cache_dir("atrous", appauthor=False))


def default_database_path() -> Path:
    """The tuning database used when no path is given: ``tuning.json`` in :func:`cache_root`."""
    return cache_root() / DATABASE_NAME


def kernel_cache_dir() -> Path | None:
    """Where generated kernel modules live (``kernels/`` in :func:`cache_root`), or None when
    ``ATROUS_KERNEL_CACHE=off``; ``ATROUS_KERNEL_CACHE=DIR`` moves it (a debugging aid)."""
    chosen = os.environ.get("ATROUS_KERNEL_CACHE")
    if chosen:
        return None if chosen.lower() == "off" else Path(chosen)
    return cache_root() / "kernels"
