"""`atrous bench`: time atrous (the tuned config, the heuristic default, and for
convolutions the plain and the prepared call a user writes), the NumPy reference, PyTorch,
ONNX Runtime and OpenVINO on a shape suite, as tidy long-format rows.

The timing protocol is the tuner's (``atrous.autotune.timing``): a warm-up call (which
absorbs JIT compilation), calls per sample calibrated past timer noise, repeated samples,
median with p20/p80; on the CPU, inputs of memory-bound problems rotate through copies
larger than twice the last-level cache (policy ``cpu-cold-rotate-v1``), and on a GPU each
call is timed with CUDA events after an L2 flush. Every implementation of a problem is
timed under the same policy, on the same seeded data.

Isolation: each library (a *family* of ``atrous.bench_calls``) is timed in a spawned
worker process of its own, one after the other (``atrous.isolation``), so no other
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
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atrous.autotune.candidate import Call, buffer_sets, copies_for
from atrous.autotune.hardware import fingerprint, last_level_cache, version
from atrous.autotune.timing import CpuSampler, Plan, Sampler, Timing, measure_call
from atrous.baselines import Unavailable, torch_op
from atrous.bench_calls import FAMILIES, Candidate, candidates, check_output
from atrous.isolation import Provenance, WorkerFailed, run_isolated
from atrous.report.ceilings import Ceilings
from atrous.report.rows import BenchRow, to_csv
from atrous.suite import Entry
from atrous.validate import as_kind, random_inputs

#: The tuner's sampling plan, with a warm-up call of its own (the tuner's warm-up is its
#: validation run, which a benchmark does not make).
PLAN = Plan(samples=7, min_samples=3, max_time=1.0, warmup=1, prune_ratio=None)
#: The NumPy reference takes seconds per call on large problems and compiles nothing: no
#: warm-up, up to three samples, but no third one once two seconds went by (it is context
#: for the reader, not a contender, and would otherwise dominate a suite's run time).
REFERENCE_PLAN = Plan(samples=3, min_samples=1, max_time=2.0, warmup=0, prune_ratio=None)
_NUMPY_DTYPES = ("float16", "float32", "float64")
#: How the note of an implementation that raised starts (Unavailable ones say why instead).
FAILED = "failed"
#: The ``isolation`` of rows timed in a worker process of their library's own, or in the
#: calling process beside every other library.
PROCESS, SHARED = "process", "shared"


def torch_baseline(problem: Any, inputs: dict[str, np.ndarray | None]) -> Callable[[], Any] | None:
    """PyTorch's own op on ``inputs``, or None when torch is missing or has no equivalent
    (see :func:`atrous.baselines.torch_op`, which says why)."""
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
        isolate: time each library in a worker process of its own (``atrous.isolation``);
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


@dataclass
class Measured:
    """One implementation's result on one problem, as a worker sends it back."""

    implementation: str
    backend: str
    family: str
    config: dict[str, Any]
    config_source: str
    timing: Timing | None
    note: str


def command_line(entry: Entry, settings: Settings) -> str:
    """The one-line `atrous bench` command that times ``entry`` again as ``settings`` did
    (every implementation of the case, each in its own process)."""
    p = entry.problem
    args = ["atrous", "bench", "--case", entry.name, "--layout", p.layout]
    if p.dtype != "float32":
        args += ["--dtype", p.dtype]
    if settings.suite != "deeplabv3":
        args += ["--suite", settings.suite]
    if p.n not in (1, 4):  # the suites' default batches
        args += ["--batch", str(p.n)]
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


def _rotating(calls: list[Callable[[], Any]]) -> Callable[[], None]:
    """One call per invocation, cycling through ``calls`` (one per buffer set)."""
    state = [0]

    def run() -> None:
        i = state[0]
        state[0] = (i + 1) % len(calls)
        calls[i]()

    return run


def _input_sets(inputs: Mapping[str, Any], copies: int) -> list[dict[str, Any]]:
    """``copies`` input sets: the first is ``inputs`` itself, the others copies."""
    def dup(a: Any) -> Any:
        return None if a is None else (a.copy() if isinstance(a, np.ndarray) else a.clone())

    return [dict(inputs)] + [{k: dup(v) for k, v in inputs.items()} for _ in range(copies - 1)]


class WrongResult(RuntimeError):
    """A call's output does not match the float64 reference."""


def _time(problem: Any, cand: Candidate, plan: Plan, host: Mapping[str, Any],
          kind_inputs: Mapping[str, Any], copies: int) -> Timing:
    """Time one candidate. A user-level call is first run once and checked against the
    reference; that first call's time is reported as ``first_call`` and serves as the
    warm-up (for a plain convolution: the call that meets the weights first)."""
    assert cand.sampler is not None
    if cand.make is None:  # an atrous kernel: the tuner's own timed call
        sets = buffer_sets(problem, cand.backend, kind_inputs, copies)
        return measure_call(Call(problem, cand.backend, cand.config, sets), cand.sampler, plan)
    source = kind_inputs if cand.torch_inputs else host
    inputs = _input_sets(source, copies)
    calls = [cand.make(one) for one in inputs]
    if not cand.user_call:
        return measure_call(_rotating(calls), cand.sampler, plan)
    t0 = time.perf_counter()
    out = calls[0]()
    first = time.perf_counter() - t0
    why = check_output(problem, inputs[0], out)
    if why:
        raise WrongResult(why)
    del out
    return measure_call(_rotating(calls), cand.sampler, replace(plan, warmup=0),
                        first_call=first)


def measure_entry(entry: Entry, family: str, settings: Settings,
                  sampler: Sampler | None = None) -> list[Measured]:
    """Time ``family``'s implementations on one entry, in this process."""
    from atrous.autotune import lookup
    from atrous.autotune.tuner import cold_cache, default_sampler

    p, s = entry.problem, settings
    cold = cold_cache(p, s.backend, s.device, s.cache)
    atrous_sampler = sampler or default_sampler(s.backend, s.device, cold)
    cpu_sampler = sampler or CpuSampler(default_sampler("numba", "cpu", cold).policy)
    tuned = lookup.find(p, s.backend, s.device) if family == "atrous" else None
    cands = candidates(p, s, family, tuned=tuned, atrous_sampler=atrous_sampler,
                       cpu_sampler=cpu_sampler)
    if not cands:
        return []
    raw = random_inputs(p, s.seed)
    # NumPy has no bfloat16: the reference then gets the float64 inputs.
    host = {k: None if v is None else v.astype(p.dtype) if p.dtype in _NUMPY_DTYPES
            else v for k, v in raw.items()}
    kind = _kind(s)
    kind_inputs = as_kind(raw, p.dtype, kind, s.device) if kind.torch else host
    del raw  # large problems: hundreds of MB of float64
    copies = copies_for(p, last_level_cache()) if cold else 1
    timings: dict[str, Timing] = {}
    out = []
    for cand in cands:
        timing, note = None, cand.skip
        if cand.same_as:
            timing = timings.get(cand.same_as)
            note = (f"the tuned config is the default here: timed once, as {cand.same_as}"
                    if timing is not None else f"not timed: the same config as"
                    f" {cand.same_as}, which did not run")
        elif not note:
            try:
                timing = _time(p, cand, cand.plan or s.plan, host, kind_inputs, copies)
            except Unavailable as exc:
                note = str(exc)
            except Exception as exc:  # one failing implementation must not end the run
                note = f"{FAILED}: {type(exc).__name__}: {exc}"[:300]
        if timing is not None:
            timings[cand.implementation] = timing
        config, source = cand.config, cand.config_source
        if cand.user_call and cand.family == "atrous":
            from atrous.bench_calls import user_config

            config, source = user_config(p, kind_inputs)
        out.append(Measured(cand.implementation, cand.backend, family, dict(config), source,
                            timing, note))
    return out


def measure_family(family: str, entries: list[Entry], settings: Settings,
                   tuning: str | None, sampler: Sampler | None = None) -> list[list[Measured]]:
    """Time ``family`` on every entry (one list per entry), with ``tuning`` as the tuning
    file (None: tuning off). This is a worker's whole job."""
    from atrous.autotune import lookup

    lookup.use_tuning(tuning if tuning is not None else False)
    if family == "torch":
        _torch_threads()
    return [measure_entry(e, family, settings, sampler) for e in entries]


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
        from atrous.kernels.conv.spec import executed_flops

        p, timing = entry.problem, m.timing
        if p.op == "dilated_conv2d" and m.family == "atrous":
            work = executed_flops(p, m.config, m.backend)
        else:
            work = p.flops  # a library's own algorithm is unknown: the dense work
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
            implementation=m.implementation, shape=_shape(p.in_shape),
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


def _kind(settings: Settings) -> Any:
    from atrous.arrays import Kind

    return Kind("cuda") if settings.device.startswith("cuda") else Kind("numpy")


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
    try:
        runner = Bench(settings, ceilings=ceilings)
        measured: dict[str, list[list[Measured]]] = {}
        for family in progress(_families(settings)):
            if settings.device.startswith("cuda") and family in ("onnxruntime", "openvino"):
                measured[family] = [_placeholders(e, family, settings, "") for e in entries]
            elif settings.isolate:
                measured[family], prov = _isolated(family, entries, settings, path_text,
                                                   sampler)
                if prov is not None and provenance is not None:
                    provenance[family] = prov
            else:
                measured[family] = measure_family(family, entries, settings, path_text, sampler)
        return runner.rows(entries, measured, PROCESS if settings.isolate else SHARED)
    finally:
        lookup.use_tuning(previous if previous is not None else False)


def _torch_threads() -> None:
    """Let PyTorch use every core, as the Numba kernels, ONNX Runtime and OpenVINO may."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(os.cpu_count() or 1)


def write_csv(rows: Iterable[BenchRow], path: str | Path) -> None:
    """Write the rows as CSV (a header, then one line per row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv(rows))
