"""One problem at a time, outside a suite run: seeded inputs, the validation gate on one
config, one config's kernel call and its timing with the tuner's protocol, and a call
through the public call path. The benchmark scripts (benchmarks/) build on these rather
than on the machinery beneath them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from atrous import dispatch
from atrous.autotune.candidate import Call, buffer_sets, copies_for
from atrous.autotune.hardware import cpu_fingerprint, last_level_cache, version
from atrous.autotune.timing import Plan, Timing, measure_call
from atrous.autotune.tuner import cold_cache, default_sampler
from atrous.autotune.validate import as_kind, check, random_inputs
from atrous.core.arrays import Kind, kind_of
from atrous.core.op import Problem
from atrous.core.space import Config
from atrous.core.tolerance import Comparison
from atrous.jobs.bench_measure import PLAN

__all__ = ["check_config", "cpu_machine", "inputs_for", "kernel_call", "package_version",
           "run_call", "time_config"]


def inputs_for(problem: Problem, *, seed: int = 0, backend: str = "numba",
               device: str = "cpu") -> dict[str, Any]:
    """Seeded standard-normal inputs of ``problem`` in its dtype: NumPy arrays, or torch
    tensors on ``device`` for ``backend="triton"``."""
    kind = Kind("numpy") if backend != "triton" else Kind(
        "cuda" if device.startswith("cuda") else "cpu")
    return as_kind(random_inputs(problem, seed), problem.dtype, kind, device)


def check_config(problem: Problem, backend: str, config: Mapping[str, Any] | None, *,
                 seed: int = 0, device: str = "cpu") -> Comparison:
    """The validation gate on one config (see :func:`atrous.autotune.validate.check`)."""
    return check(problem, backend, config, seed=seed, device=device)


def kernel_call(problem: Problem, backend: str, config: Config, inputs: Mapping[str, Any],
                copies: int = 1) -> Callable[[], None]:
    """A zero-argument call of ``config``'s kernel on ``inputs`` into a preallocated output,
    inputs prepared once as the tuner does, cycling through ``copies`` buffer sets."""
    return Call(problem, backend, config, buffer_sets(problem, backend, inputs, copies))


def time_config(problem: Problem, backend: str, config: Config, *, device: str = "cpu",
                cache: str = "auto", plan: Plan = PLAN, seed: int = 0) -> Timing:
    """Time ``config`` on ``problem`` as ``atrous bench`` times atrous's kernels: the
    tuner's sampler and cache policy (``cache``: "auto", "cold" or "warm"), ``plan``."""
    cold = cold_cache(problem, backend, device, cache)
    inputs = inputs_for(problem, seed=seed, backend=backend, device=device)
    copies = copies_for(problem, last_level_cache()) if cold else 1
    call = kernel_call(problem, backend, config, inputs, copies)
    return measure_call(call, default_sampler(backend, device, cold), plan)


def run_call(problem: Problem, inputs: Mapping[str, Any], backend: str = "auto") -> Any:
    """One call of ``problem`` on ``inputs`` through the public call path (backend choice,
    the tuned config from the tuning database, the launch); returns the output."""
    return dispatch.run(problem, inputs, kind_of(**inputs), backend=backend)


def cpu_machine() -> dict[str, Any]:
    """This CPU's fingerprint as tuning records and bench rows store it (brand, LLVM CPU,
    cores, caches, id, family)."""
    return dict(cpu_fingerprint())


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    return version(package)
