"""Run one library's measurements in a process of its own, so no other library's threads
can disturb them.

Why processes: every library here keeps a thread pool that outlives its calls (PyTorch's
OpenMP team, ONNX Runtime's and OpenVINO's intra-op pools, OpenBLAS's workers, atrous's
task runner and Numba's threading layer). A pool that spins or wakes after its last call
steals a core from the next library's sample, and which one pays depends on the order of
the calls: the small memory-bound rows (the 256x1x1 pooling-branch upsample, ~0.1 ms) were
not reproducible when all libraries shared a process. A *spawned* worker (a fresh
interpreter, not a fork) imports only its own library, and the workers run one after the
other, each one exited before the next starts, so at any sample exactly one library's
threads exist on the machine (other users of the machine aside).

:func:`run_isolated` starts the worker, sends it the job, and reads back its result over a
pipe, with the worker's :class:`Provenance`: its pid, lifetime and :func:`stray_modules`,
the foreign libraries it ended up importing (a row timed beside one is discarded).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The libraries whose thread pools a family must not share its process with.
LIBRARIES = {"atrous": ("torch", "onnxruntime", "openvino"),
             "torch": ("onnxruntime", "openvino"),
             "onnxruntime": ("torch", "openvino"),
             "openvino": ("torch", "onnxruntime"),
             "numpy": ("torch", "onnxruntime", "openvino")}


@dataclass(frozen=True)
class Provenance:
    """Where a family's measurements ran: the process, its lifetime (``time.monotonic``,
    one clock for every process of the machine) and the foreign libraries loaded there."""

    family: str
    pid: int
    started: float
    ended: float
    stray: tuple[str, ...]
    libraries: tuple[str, ...] = ()  # every library of LIBRARIES (and numba) loaded there


def loaded_libraries() -> tuple[str, ...]:
    """The thread-pool owning libraries imported in this process."""
    return tuple(m for m in ("numba", "torch", "onnxruntime", "openvino") if m in sys.modules)


def stray_modules(family: str, device: str = "cpu") -> tuple[str, ...]:
    """The libraries other than ``family``'s own that are imported in this process (on a
    GPU, atrous's Triton kernels need torch: it is not foreign to them there)."""
    foreign = LIBRARIES.get(family, ())
    if family == "atrous" and device.startswith("cuda"):
        foreign = tuple(m for m in foreign if m != "torch")
    return tuple(m for m in foreign if m in sys.modules)


class WorkerFailed(RuntimeError):
    """A worker raised, or exited without a result; the message says how."""


def run_isolated(job: Callable[[], Any], family: str, device: str = "cpu"
                 ) -> tuple[Any, Provenance]:
    """Run ``job`` (a picklable zero-argument callable) in a fresh Python process and
    return its result and the :class:`Provenance` of that process, which has exited by then.

    The worker is a fresh ``python -c`` (``_BOOT``), not a ``multiprocessing`` child: it
    never re-imports the caller's main module, so a script without a ``__main__`` guard or
    a notebook can call it. The job goes in on stdin (after the caller's ``sys.path``, so
    the same modules resolve), the result comes back on a pipe of its own (libraries may
    print on stdout).

    Raises:
        WorkerFailed: the job raised (the message holds its traceback) or the process died.
    """
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-c", _BOOT, str(write_fd), family, device],
                                   stdin=subprocess.PIPE, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as results:
        assert process.stdin is not None
        try:
            pickle.dump(list(sys.path), process.stdin)
            pickle.dump(job, process.stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at start: its exit code says so below
        try:
            message = pickle.load(results)
        except EOFError:
            message = None
    code = process.wait()
    if message is None:
        raise WorkerFailed(f"the {family} worker exited with code {code} before sending its"
                           " result")
    status, value, provenance = message
    if status != "ok":
        raise WorkerFailed(f"the {family} worker raised {value}")
    return value, provenance


#: The worker's first lines: the caller's ``sys.path`` (read from stdin) before anything
#: of atrous is imported, so the worker finds the same atrous as its caller (a source
#: tree on a path set at run time included).
_BOOT = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer);"
         " from atrous.jobs.isolation import _worker;"
         " _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])")


def _worker(fd: int, family: str, device: str) -> None:
    """The worker's side (after ``_BOOT`` set the path): read the job, run it, send
    (status, value, provenance) back on ``fd``."""
    started = time.monotonic()
    with os.fdopen(fd, "wb") as out:
        try:
            job = pickle.load(sys.stdin.buffer)
            result = job()
            message = ("ok", result, Provenance(family, os.getpid(), started, time.monotonic(),
                                                stray_modules(family, device),
                                                loaded_libraries()))
        except BaseException as exc:  # the parent turns it into notes on the rows
            message = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", None)
        pickle.dump(message, out)
