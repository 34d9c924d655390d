"""Numba's thread count for one kernel call, set and restored cheaply."""

from __future__ import annotations

from typing import Any

import numba
from numba.np.ufunc import parallel as _numba_parallel


def config_threads(config: dict[str, Any]) -> int:
    """The config's ``threads``, within what Numba's pool holds (NUMBA_NUM_THREADS)."""
    return max(1, min(int(config["threads"]), numba.config.NUMBA_NUM_THREADS))


def with_threads(threads: int, kernel: Any, args: tuple) -> None:
    """``kernel(*args)`` with Numba's thread count set to ``threads`` for the call (set
    and restored only when it differs)."""
    previous = _current_threads()
    if previous == threads:
        kernel(*args)
        return
    numba.set_num_threads(threads)
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def _current_threads() -> int:
    """``numba.get_num_threads()`` without its lock once the pool is up: the public call
    takes a multiprocessing lock and cost 10-20 us a call right after a large kernel (a
    cold interpreter), 5% of a 0.25 ms GAP; Numba's own getter behind it costs 0.1 us."""
    get = getattr(_numba_parallel, "_get_num_threads", None)  # set when the pool starts
    count = get() if get is not None else 0
    return count if count > 0 else numba.get_num_threads()
