"""`atrous bench`: time atrous (the tuned config and the heuristic default), the NumPy
reference, PyTorch and ONNX Runtime on a shape suite, as tidy long-format rows.

The timing protocol is the tuner's (``atrous.autotune.timing``): a warm-up call (which
absorbs JIT compilation), calls per sample calibrated past timer noise, repeated samples,
median with p20/p80; on the CPU, inputs of memory-bound problems rotate through copies
larger than twice the last-level cache (policy ``cpu-cold-rotate-v1``), and on a GPU each
call is timed with CUDA events after an L2 flush. Every implementation of a problem is
timed under the same policy, on the same data. Rows go to ``<database>.bench.json`` and
``.bench.csv`` beside the tuning database (see ``atrous.report.store``).
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atrous.autotune.candidate import Call, buffer_sets, copies_for
from atrous.autotune.hardware import fingerprint, last_level_cache, version
from atrous.autotune.timing import CpuSampler, Plan, Sampler, Timing, measure_call
from atrous.baselines import Unavailable, onnx_session, torch_op
from atrous.registry import op
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
        seed: seeds the inputs.
        cache: "auto" (cold for memory-bound problems on the CPU), "cold" or "warm", as
            for `atrous tune`.
        plan: samples per implementation.
    """

    device: str = "cpu"
    numpy: bool = True
    torch: bool = True
    onnx: bool = True
    seed: int = 0
    cache: str = "auto"
    plan: Plan = field(default=PLAN)

    @property
    def backend(self) -> str:
        return "triton" if self.device.startswith("cuda") else "numba"


@dataclass
class Candidate:
    """One implementation to time on a problem: ``make`` builds its call on one set of
    inputs (cycled through for cold-cache timing); ``skip`` says why it cannot run."""

    implementation: str
    backend: str
    make: Callable[[Mapping[str, Any]], Callable[[], Any]] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_source: str = ""
    work_flops: int | None = None
    sampler: Sampler | None = None
    plan: Plan | None = None
    skip: str = ""
    same_as: str = ""  # time nothing: copy the timing of this implementation


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


def candidates(problem: Any, settings: Settings, *, tuned: Any, atrous_sampler: Sampler,
               cpu_sampler: Sampler) -> list[Candidate]:
    """Every implementation to time on ``problem``, the unavailable ones with a reason.

    Args:
        tuned: the lookup's Choice for this machine (``atrous.autotune.lookup.find``).
        atrous_sampler: the tuner's sampler for the backend (CUDA events on a GPU).
        cpu_sampler: the wall-clock sampler, under the same cache policy, for CPU work.
    """
    backend = settings.backend
    spec = op(problem.op).spec
    work = getattr(problem, "valid_flops", problem.flops)  # atrous skips padded taps
    default = spec.default_config(problem, backend)
    name = f"atrous-{backend}"
    out = [Candidate(name, backend, config=dict(tuned.config), config_source=tuned.source,
                     work_flops=work, sampler=atrous_sampler)]
    if dict(tuned.config) == default:
        out.append(Candidate(f"{name}-default", backend, config=default,
                             config_source="default", work_flops=work, sampler=atrous_sampler,
                             same_as=name))
    else:
        out.append(Candidate(f"{name}-default", backend, config=default,
                             config_source="default", work_flops=work, sampler=atrous_sampler))
    gpu = settings.device.startswith("cuda")
    if settings.torch:
        out.append(Candidate("torch", "torch", make=lambda inp: torch_op(problem, inp),
                             sampler=atrous_sampler if gpu else cpu_sampler))
    if settings.onnx:
        if gpu:
            out.append(Candidate("onnxruntime", "onnxruntime",
                                 skip="ONNX Runtime is timed on the CPU only"))
        else:
            out.append(Candidate("onnxruntime", "onnxruntime", make=_onnx_maker(problem),
                                 sampler=cpu_sampler))
    if settings.numpy:
        ordered = op(problem.op).inputs
        reference = op(problem.op).reference
        out.append(Candidate("numpy-reference", "numpy", sampler=cpu_sampler, plan=REFERENCE_PLAN,
                             make=lambda inp: (
                                 lambda: reference(problem, *(inp[n] for n in ordered)))))
    return out


def _onnx_maker(problem: Any) -> Callable[[Mapping[str, Any]], Callable[[], Any]]:
    """ONNX Runtime calls on several input sets sharing one session (building a session
    per rotated input set would cost more than the benchmark)."""
    sessions: list[Any] = []

    def make(inputs: Mapping[str, Any]) -> Callable[[], Any]:
        if not sessions:
            sessions.append(onnx_session(problem, inputs))
        session, feed = sessions[0], {"x": inputs["x"]}
        return lambda: session.run(None, feed)

    return make


class Bench:
    """Times the implementations of suite entries and builds their rows.

    Args:
        settings: what to time and how.
        ceilings: the machine's measured ceilings (None: fractions of ceiling left empty).
        run: the run id shared by all rows (a new one by default).
        sampler: overrides every sampler (tests inject a deterministic one).
    """

    def __init__(self, settings: Settings | None = None, *, ceilings: Ceilings | None = None,
                 run: str | None = None, sampler: Sampler | None = None) -> None:
        self.settings = settings or Settings()
        self.ceilings = ceilings
        self.run = run or uuid.uuid4().hex[:12]
        self.sampler = sampler
        backend, device = self.settings.backend, self.settings.device
        self.fingerprint = fingerprint(backend, device)
        self.versions = {k: version(k) or "" for k in
                         ("atrous", "numba", "triton", "torch", "onnxruntime")}

    def entry(self, entry: Entry) -> list[BenchRow]:
        """The rows of one suite entry (one per implementation)."""
        from atrous.autotune import lookup
        from atrous.autotune.tuner import cold_cache, default_sampler

        p, s = entry.problem, self.settings
        cold = cold_cache(p, s.backend, s.device, s.cache)
        atrous_sampler = self.sampler or default_sampler(s.backend, s.device, cold)
        cpu_sampler = self.sampler or CpuSampler(default_sampler("numba", "cpu", cold).policy)
        tuned = lookup.find(p, s.backend, s.device)
        raw = random_inputs(p, s.seed)
        # NumPy has no bfloat16: the reference then gets the float64 inputs.
        host = {k: None if v is None else v.astype(p.dtype) if p.dtype in _NUMPY_DTYPES
                else v for k, v in raw.items()}
        kind = _kind(s)
        kind_inputs = as_kind(raw, p.dtype, kind, s.device) if kind.torch else host
        del raw  # large problems: hundreds of MB of float64
        copies = copies_for(p, last_level_cache()) if cold else 1
        timings: dict[str, Timing] = {}
        rows = []
        for cand in candidates(p, s, tuned=tuned, atrous_sampler=atrous_sampler,
                               cpu_sampler=cpu_sampler):
            timing, note = None, cand.skip
            if cand.same_as:
                timing = timings.get(cand.same_as)
                note = (f"the tuned config is the default here: timed once, as {cand.same_as}"
                        if timing is not None else f"not timed: the same config as"
                        f" {cand.same_as}, which did not run")
            elif not note:
                try:
                    timing = self._time(p, cand, host, kind_inputs, copies)
                except Unavailable as exc:
                    note = str(exc)
                except Exception as exc:  # one failing implementation must not end the run
                    note = f"{FAILED}: {type(exc).__name__}: {exc}"[:300]
            if timing is not None:
                timings[cand.implementation] = timing
            rows.append(self._row(entry, cand, timing, note))
        return rows

    def _time(self, problem: Any, cand: Candidate, host: Mapping[str, Any],
              kind_inputs: Mapping[str, Any], copies: int) -> Timing:
        plan = cand.plan or self.settings.plan
        assert cand.sampler is not None
        if cand.make is None:  # an atrous kernel: the tuner's own timed call
            sets = buffer_sets(problem, cand.backend, kind_inputs, copies)
            return measure_call(Call(problem, cand.backend, cand.config, sets), cand.sampler,
                                plan)
        source = kind_inputs if cand.implementation == "torch" else host
        run = _rotating([cand.make(inputs) for inputs in _input_sets(source, copies)])
        return measure_call(run, cand.sampler, plan)

    def _row(self, entry: Entry, cand: Candidate, timing: Timing | None, note: str) -> BenchRow:
        p = entry.problem
        work = cand.work_flops or p.flops
        median = None if timing is None else timing.median
        bound, fraction = "", None
        if self.ceilings is not None:
            dtype = "tf32" if getattr(p, "allow_tf32", False) and p.dtype == "float32" and \
                self.settings.device.startswith("cuda") else p.dtype
            roof = self.ceilings.attainable_s(work, p.bytes, dtype)
            if roof is not None:
                bound = roof[1]
                fraction = None if median is None else roof[0] / median
        v = self.versions
        return BenchRow(
            run=self.run, timestamp=_now(), fingerprint=self.fingerprint["id"],
            device=self.settings.device, name=entry.name, op=p.op, backend=cand.backend,
            implementation=cand.implementation, shape=_shape(p.in_shape),
            out_shape=_shape(p.out_shape), layout=p.layout, dtype=p.dtype, problem_key=p.key,
            config=json.dumps(cand.config, sort_keys=True) if cand.config else "",
            config_source=cand.config_source,
            median_ms=None if timing is None else timing.median * 1e3,
            p20_ms=None if timing is None else timing.p20 * 1e3,
            p80_ms=None if timing is None else timing.p80 * 1e3,
            gbps=None if median is None else p.bytes / median / 1e9,
            gflops=None if median is None else p.flops / median / 1e9,
            bound=bound, ceiling_fraction=fraction, flops=p.flops, work_flops=work,
            bytes=p.bytes, policy="" if timing is None else timing.policy, note=note,
            atrous_version=v["atrous"], numba_version=v["numba"], triton_version=v["triton"],
            torch_version=v["torch"], onnxruntime_version=v["onnxruntime"])


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
          sampler: Sampler | None = None) -> list[BenchRow]:
    """Time every implementation on every entry; rows in long format.

    Args:
        entries: suite entries.
        settings: what to time (default :class:`Settings`).
        ceilings: the machine's ceilings, for each row's fraction of ceiling.
        tuning: the tuning database whose configs "atrous-<backend>" runs (default: the
            file atrous uses, ``atrous.use_tuning``'s).
        progress: wraps the entries (a progress bar).
        with_numpy: shorthand for ``settings.numpy``.
        sampler: replaces every timer (tests).
    """
    from atrous.autotune import lookup

    settings = settings or Settings()
    if with_numpy is not None:
        settings = replace(settings, numpy=with_numpy)
    _torch_threads()
    previous = lookup.tuning_path()
    if tuning is not None:
        lookup.use_tuning(tuning)
    try:
        runner = Bench(settings, ceilings=ceilings, sampler=sampler)
        return [row for entry in progress(list(entries)) for row in runner.entry(entry)]
    finally:
        lookup.use_tuning(previous if previous is not None else False)


def _torch_threads() -> None:
    """Let PyTorch use every core, as the Numba kernels and ONNX Runtime may."""
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
