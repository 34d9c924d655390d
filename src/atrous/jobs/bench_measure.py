"""What a bench worker runs: one library's implementations timed on every entry, in this
process (``atrous.jobs.bench`` runs it in a worker process per library, or here with
``--shared-process``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from atrous.autotune.candidate import Call, buffer_sets, copies_for
from atrous.autotune.hardware import last_level_cache
from atrous.autotune.timing import CpuSampler, Plan, Sampler, Timing, measure_call
from atrous.autotune.validate import as_kind, random_inputs
from atrous.core.op import Problem
from atrous.jobs.baselines import Unavailable
from atrous.jobs.bench_calls import Candidate, candidates, check_output, user_config

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


def _time(problem: Problem, cand: Candidate, plan: Plan, host: Mapping[str, Any],
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


def measure_entry(entry: Any, family: str, settings: Any,
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
            config, source = user_config(p, kind_inputs)
        out.append(Measured(cand.implementation, cand.backend, family, dict(config), source,
                            timing, note))
    return out


def measure_family(family: str, entries: list[Any], settings: Any,
                   tuning: str | None, sampler: Sampler | None = None) -> list[list[Measured]]:
    """Time ``family`` on every entry (one list per entry), with ``tuning`` as the tuning
    file (None: tuning off). This is a worker's whole job."""
    from atrous.autotune import lookup

    lookup.use_tuning(tuning if tuning is not None else False)
    if family == "torch":
        _torch_threads()
    return [measure_entry(e, family, settings, sampler) for e in entries]


def _kind(settings: Any) -> Any:
    from atrous.core.arrays import Kind

    return Kind("cuda") if settings.device.startswith("cuda") else Kind("numpy")


def _torch_threads() -> None:
    """Let PyTorch use every core, as the Numba kernels, ONNX Runtime and OpenVINO may."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(os.cpu_count() or 1)
