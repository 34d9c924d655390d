"""`atrous bench`: time atrous (the tuned config, the heuristic default, and for
convolutions the plain and the prepared call a user writes), the NumPy reference, PyTorch,
ONNX Runtime and OpenVINO on a shape suite, as tidy long-format rows.

The timing protocol is the tuner's (``atrous.autotune.timing``): a warm-up call (which
absorbs JIT compilation), calls per sample calibrated past timer noise, repeated samples,
median with p20/p80; on the CPU, inputs of memory-bound problems rotate through copies
larger than twice the last-level cache (policy ``cpu-cold-rotate-v1``), and on a GPU each
call is timed with CUDA events after an L2 flush. Every implementation of a problem is
timed under the same policy, on the same seeded data.

Isolation: each library (a *family* of ``atrous.jobs.bench_calls``) is timed in a spawned
worker process of its own, one after the other (``atrous.jobs.isolation``), so no other
library's threads exist while it is sampled; each row says so in ``isolation``. Rows go
to ``<database>.bench.json`` and ``.bench.csv`` beside the tuning database (see
``atrous.report.store``); each carries the one-line command that reproduces it.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import shlex
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atrous.autotune.hardware import fingerprint, version
from atrous.autotune.timing import Plan, Sampler
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.jobs.baselines import Unavailable, torch_op
from atrous.jobs.bench_calls import FAMILIES, candidates
from atrous.jobs.bench_measure import (  # noqa: F401  (PLAN, REFERENCE_PLAN, FAILED: public here)
    FAILED,
    PLAN,
    REFERENCE_PLAN,
    Measured,
    measure_family,
)
from atrous.jobs.isolation import Provenance, WorkerFailed, run_isolated
from atrous.jobs.suite import Entry
from atrous.report.ceilings import Ceilings
from atrous.report.rows import BenchRow, to_csv

#: The ``isolation`` of rows timed in a worker process of their library's own, or in the
#: calling process beside every other library.
PROCESS, SHARED = "process", "shared"


def _main_shape(problem: Problem) -> tuple[int, ...]:
    """The shape of the op's main input (its first declared array), which rows show."""
    return tuple(problem.input_shapes[op(problem.op).inputs[0]] or ())


def torch_baseline(problem: Problem, inputs: dict[str, np.ndarray | None]
                   ) -> Callable[[], Any] | None:
    """PyTorch's own op on ``inputs``, or None when torch is missing or has no equivalent
    (see :func:`atrous.jobs.baselines.torch_op`, which says why)."""
    try:
        return torch_op(problem, inputs)
    except Unavailable:
        return None


@dataclass(frozen=True)
class Settings:
    """What `atrous bench` times and how.

    Args:
        device: "cpu" (Numba kernels) or "cuda[:N]" (Triton kernels).
        numpy: time the float64 NumPy reference (slow: seconds per large convolution).
        torch: time PyTorch's own op.
        onnx: time ONNX Runtime (CPU only).
        openvino: time OpenVINO (CPU only).
        seed: seeds the inputs.
        cache: "auto" (cold for memory-bound problems on the CPU), "cold" or "warm", as
            for `atrous tune`.
        plan: samples per implementation.
        isolate: time each library in a worker process of its own (``atrous.jobs.isolation``);
            False times all of them in this process (tests that patch a library).
        suite, db: the suite and ``--db`` the run was given, for the rows' commands.
    """

    device: str = "cpu"
    numpy: bool = True
    torch: bool = True
    onnx: bool = True
    openvino: bool = True
    seed: int = 0
    cache: str = "auto"
    plan: Plan = field(default=PLAN)
    isolate: bool = True
    suite: str = "deeplabv3"
    db: str = ""

    @property
    def backend(self) -> str:
        return "triton" if self.device.startswith("cuda") else "numba"


def command_line(entry: Entry, settings: Settings) -> str:
    """The one-line `atrous bench` command that times ``entry`` again as ``settings`` did
    (every implementation of the case, each in its own process)."""
    p = entry.problem
    args = ["atrous", "bench", "--case", entry.name, "--layout", p.layout]
    if p.dtype != "float32":
        args += ["--dtype", p.dtype]
    if settings.suite != "deeplabv3":
        args += ["--suite", settings.suite]
    batch = (_main_shape(p) or (1,))[0]  # the main input's leading size: its batch
    if batch not in (1, 4):  # the suites' default batches
        args += ["--batch", str(batch)]
    if settings.device != "cpu":
        args += ["--device", settings.device]
    if settings.db:
        args += ["--db", settings.db]
    if settings.cache != "auto":
        args += ["--cache", settings.cache]
    for flag, on in (("--no-numpy", settings.numpy), ("--no-torch", settings.torch),
                     ("--no-onnx", settings.onnx), ("--no-openvino", settings.openvino)):
        if not on:
            args.append(flag)
    if not settings.isolate:
        args.append("--shared-process")
    return shlex.join(args)


def _placeholders(entry: Entry, family: str, settings: Settings, note: str) -> list[Measured]:
    """The rows ``family`` would have given on ``entry``, each with ``note`` and no time."""
    from atrous.autotune import lookup

    tuned = lookup.find(entry.problem, settings.backend, settings.device) \
        if family == "atrous" else None
    return [Measured(c.implementation, c.backend, family, dict(c.config), c.config_source,
                     None, c.skip or note)
            for c in candidates(entry.problem, settings, family, tuned=tuned)]


class Bench:
    """Builds the rows of measured entries.

    Args:
        settings: what was timed and how.
        ceilings: the machine's measured ceilings (None: fractions of ceiling left empty).
        run: the run id shared by all rows (a new one by default).
    """

    def __init__(self, settings: Settings | None = None, *, ceilings: Ceilings | None = None,
                 run: str | None = None) -> None:
        self.settings = settings or Settings()
        self.ceilings = ceilings
        self.run = run or uuid.uuid4().hex[:12]
        backend, device = self.settings.backend, self.settings.device
        self.fingerprint = fingerprint(backend, device)
        self.versions = {k: version(k) or "" for k in
                         ("atrous", "numba", "triton", "torch", "onnxruntime", "openvino")}
        self.provenance: dict[str, Provenance] = {}

    def row(self, entry: Entry, m: Measured, isolation: str) -> BenchRow:
        """The row of one measurement."""
        p, timing = entry.problem, m.timing
        # a library's own algorithm is unknown: the dense work
        work = (op(p.op).executed_flops(p, m.config, m.backend) if m.family == "atrous"
                else p.flops)
        median = None if timing is None else timing.median
        bound, fraction = "", None
        if self.ceilings is not None:
            dtype = "tf32" if getattr(p, "allow_tf32", False) and p.dtype == "float32" and \
                self.settings.device.startswith("cuda") else p.dtype
            roof = self.ceilings.attainable_s(work, p.bytes, dtype)
            if roof is not None:
                bound = roof[1]
                fraction = None if median is None else roof[0] / median
        first = None if timing is None or math.isnan(timing.first_call) else \
            timing.first_call * 1e3
        v = self.versions
        return BenchRow(
            run=self.run, timestamp=_now(), fingerprint=self.fingerprint["id"],
            device=self.settings.device, name=entry.name, op=p.op, backend=m.backend,
            implementation=m.implementation, shape=_shape(_main_shape(p)),
            out_shape=_shape(p.out_shape), layout=p.layout, dtype=p.dtype, problem_key=p.key,
            config=json.dumps(m.config, sort_keys=True) if m.config else "",
            config_source=m.config_source,
            median_ms=None if timing is None else timing.median * 1e3,
            p20_ms=None if timing is None else timing.p20 * 1e3,
            p80_ms=None if timing is None else timing.p80 * 1e3,
            gbps=None if median is None else p.bytes / median / 1e9,
            gflops=None if median is None else p.flops / median / 1e9,
            bound=bound, ceiling_fraction=fraction, flops=p.flops, work_flops=work,
            bytes=p.bytes, policy="" if timing is None else timing.policy, note=m.note,
            atrous_version=v["atrous"], numba_version=v["numba"], triton_version=v["triton"],
            torch_version=v["torch"], onnxruntime_version=v["onnxruntime"],
            openvino_version=v["openvino"], first_call_ms=first,
            isolation=isolation if timing is not None else "",
            command=command_line(entry, self.settings))

    def rows(self, entries: list[Entry], measured: Mapping[str, list[list[Measured]]],
             isolation: str) -> list[BenchRow]:
        """Rows entry by entry, families in :data:`FAMILIES` order."""
        return [self.row(e, m, isolation) for i, e in enumerate(entries)
                for family in FAMILIES if family in measured for m in measured[family][i]]


def _isolated(family: str, entries: list[Entry], settings: Settings, tuning: str | None,
              sampler: Sampler | None) -> tuple[list[list[Measured]], Provenance | None]:
    """``measure_family`` in a worker of its own; a failed or contaminated worker gives
    rows with a note instead of times."""
    job = functools.partial(measure_family, family, entries, settings, tuning, sampler)
    try:
        measured, provenance = run_isolated(job, family, settings.device)
    except WorkerFailed as exc:
        note = f"{FAILED}: {str(exc).splitlines()[0]}"[:300]
        return [_placeholders(e, family, settings, note) for e in entries], None
    stray = provenance.stray
    if stray:  # another library's threads may have run beside these samples
        note = f"not isolated: {', '.join(stray)} was loaded in the {family} worker"
        for per_entry in measured:
            for m in per_entry:
                m.timing, m.note = None, note
    return measured, provenance


def _families(settings: Settings) -> list[str]:
    """The families this run times (a worker process is started for each)."""
    wanted = {"atrous": True, "torch": settings.torch, "onnxruntime": settings.onnx,
              "openvino": settings.openvino, "numpy": settings.numpy}
    return [f for f in FAMILIES if wanted[f]]


def _shape(shape: Iterable[int]) -> str:
    return "x".join(map(str, shape))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def bench(entries: Iterable[Entry], *, settings: Settings | None = None,
          ceilings: Ceilings | None = None, tuning: Path | str | None = None,
          progress: Callable[[Iterable], Iterable] = iter, with_numpy: bool | None = None,
          sampler: Sampler | None = None, provenance: dict[str, Provenance] | None = None
          ) -> list[BenchRow]:
    """Time every implementation on every entry; rows in long format.

    Args:
        entries: suite entries.
        settings: what to time (default :class:`Settings`: each library in its own process).
        ceilings: the machine's ceilings, for each row's fraction of ceiling.
        tuning: the tuning database whose configs "atrous-<backend>" runs (default: the
            file atrous uses, ``atrous.use_tuning``'s).
        progress: wraps the families, timed one after the other (a progress bar).
        with_numpy: shorthand for ``settings.numpy``.
        sampler: replaces every timer (tests; it must be picklable for worker processes).
        provenance: filled with each family's worker :class:`Provenance` (isolated runs).
    """
    from atrous.autotune import lookup

    settings = settings or Settings()
    if with_numpy is not None:
        settings = replace(settings, numpy=with_numpy)
    entries = list(entries)
    previous = lookup.tuning_path()
    if tuning is not None:
        lookup.use_tuning(tuning)
    path = lookup.tuning_path()
    path_text = None if path is None else str(path)
    # The workers take their result pipe as an inherited descriptor (POSIX only).
    isolate = settings.isolate and os.name == "posix"
    try:
        runner = Bench(settings, ceilings=ceilings)
        measured: dict[str, list[list[Measured]]] = {}
        for family in progress(_families(settings)):
            if settings.device.startswith("cuda") and family in ("onnxruntime", "openvino"):
                measured[family] = [_placeholders(e, family, settings, "") for e in entries]
            elif isolate:
                measured[family], prov = _isolated(family, entries, settings, path_text,
                                                   sampler)
                if prov is not None and provenance is not None:
                    provenance[family] = prov
            else:
                measured[family] = measure_family(family, entries, settings, path_text, sampler)
        return runner.rows(entries, measured, PROCESS if isolate else SHARED)
    finally:
        lookup.use_tuning(previous if previous is not None else False)


def write_csv(rows: Iterable[BenchRow], path: str | Path) -> None:
    """Write the rows as CSV (a header, then one line per row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv(rows))
