"""Independent pieces of one CPU computation on every core, each calling single-threaded BLAS.

Why not BLAS's own threads: OpenBLAS parallelises each product on its own, and its workers
spin for 50-200 ms after every call. Any parallel work of ours between two products (a
Numba ``prange`` transform, a NumPy pass) then shares a core with a spinning worker and
runs at one core's speed; run in Numba's OpenMP pool it was 2x slower than serial, as the
two pools' spinning threads took turns. And a product with a few hundred rows parallelises
poorly inside BLAS (about 150 GFLOP/s on 2 cores at 144 rows).

So a task run holds NumPy's BLAS to one thread (``threadpoolctl``) and gives whole pieces
(an image band's products, a Winograd row filter, a projection band) to a pool of
``cores()`` Python threads: the products release the GIL, the Numba kernels are ``nogil``
and NumPy's element-wise passes release it too. Two threads of single-threaded products at
144 rows reach about 180 GFLOP/s, and nothing spins. Without threadpoolctl (it is optional
where atrous runs from a source tree) or on one core, tasks run in order on the caller's
thread with BLAS left as it is.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

from atrous.core.args import cores

#: A piece of work: called with the index of the worker running it (0 .. workers - 1), so it
#: can keep per-worker buffers; pieces of one ``run`` must not write the same memory.
Task = Callable[[int], None]

_SECTION = threading.Lock()  # one task run at a time: its BLAS thread limit is process-wide
_LOCAL = threading.local()


@cache
def _blas() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries, or None without one."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


def workers() -> int:
    """How many threads a task run uses: every core when BLAS can be held to one thread."""
    return cores() if cores() > 1 and _blas() is not None else 1


@cache
def _pool(size: int, pid: int) -> ThreadPoolExecutor:
    """The helper threads, per process: a forked child has none of its parent's threads."""
    return ThreadPoolExecutor(size, thread_name_prefix="atrous-worker")



@contextmanager
def task_runner(threads: int | None = None) -> Iterator[Callable[[list[Task]], None]]:
    """A function that runs a list of tasks to completion on ``workers()`` threads (at most
    ``threads`` of them when given: a tuned config's thread count).

    Inside the block BLAS runs single-threaded (restored on exit) and other task runs of
    this process wait. Tasks are taken in list order (put the largest first) by whichever
    worker is free; an exception in one is raised once every task has run. A runner opened
    inside the block shares its pool; one opened inside a task runs its tasks in order.
    """
    count = workers() if threads is None else max(1, min(threads, workers()))
    if count == 1 or getattr(_LOCAL, "in_task", False):  # a task's own tasks run in order
        if threads is None or getattr(_LOCAL, "in_task", False):
            yield _run_in_order
        else:
            with blas_threads(1):  # one thread asked for: BLAS too
                yield _run_in_order
        return
    if getattr(_LOCAL, "in_section", False):  # nested on the thread that holds the pool
        yield lambda tasks: _run_on_pool(count, tasks)
        return
    with _SECTION, _blas().limit(limits=1):
        _LOCAL.in_section = True
        try:
            yield lambda tasks: _run_on_pool(count, tasks)
        finally:
            _LOCAL.in_section = False


@contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """BLAS held to ``threads`` threads inside the block; left as it is for None, at or
    above the core count, or without threadpoolctl."""
    if threads is None or threads >= cores() or _blas() is None:
        yield
        return
    with _blas().limit(limits=max(1, threads)):
        yield


def _run_in_order(tasks: list[Task]) -> None:
    for task in tasks:
        task(0)


def _run_on_pool(count: int, tasks: list[Task]) -> None:
    queue = deque(tasks)

    def drain(worker: int) -> None:
        _LOCAL.in_task = True
        try:
            while True:
                try:
                    task = queue.popleft()  # atomic: two workers never take one task
                except IndexError:
                    return
                task(worker)
        except BaseException:
            queue.clear()  # the others stop after their current task (Ctrl-C included)
            raise
        finally:
            _LOCAL.in_task = False

    helpers = [_pool(count - 1, os.getpid()).submit(drain, w) for w in range(1, count)]
    try:
        drain(0)  # the caller's thread is worker 0
    finally:
        for future in helpers:
            future.result()


def even_ranges(total: int, count: int) -> list[tuple[int, int]]:
    """``count`` (at most ``total``, at least 1) consecutive ``[lo, hi)`` ranges of nearly
    equal length covering ``range(total)``: rows or components split into tasks."""
    count = max(1, min(count, total))
    return [(total * k // count, total * (k + 1) // count) for k in range(count)]


def scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array of ``shape`` from a buffer this thread keeps per (name, dtype).

    Large temporaries allocated per call come back as fresh pages from the OS, and the page
    faults cost about 3% of a batch-4 ASPP; a kept buffer is faulted in once. Only for
    temporaries that do not outlive the caller's use of them.
    """
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    size = int(np.prod(shape))
    key = (name, np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)
