"""A candidate config's timed call: the backend's launcher on preallocated buffers.

For memory-bound problems on the CPU timed cold, the call cycles through enough copies of
its inputs and output to move more bytes than twice the last-level cache between two
visits of the same copy, so no sample reads data a previous call left in the cache.
(On a GPU the sampler flushes L2 instead.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from atrous.core.arrays import to_numpy
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.space import Config

#: Arithmetic intensity (FLOP per byte moved) below which a problem is memory-bound on a
#: CPU (a core does tens of FLOP per byte of DRAM bandwidth).
MEMORY_BOUND_INTENSITY = 8.0
MAX_COPIES, MAX_ROTATION_BYTES = 64, 1 << 30

BufferSet = tuple[Any, list[Any]]  # (out, inputs in the op's order)


def memory_bound(problem: Problem) -> bool:
    """True when ``problem`` moves more bytes than it can hide behind arithmetic."""
    return problem.flops / max(problem.bytes, 1) < MEMORY_BOUND_INTENSITY


def copies_for(problem: Problem, last_level_cache: int) -> int:
    """Buffer sets to cycle through so that consecutive visits of one set are separated by
    more than twice ``last_level_cache`` bytes (capped at 64 sets and 1 GiB)."""
    per_set = max(problem.bytes, 1)
    wanted = math.ceil(2 * last_level_cache / per_set) + 1
    return max(1, min(wanted, MAX_COPIES, MAX_ROTATION_BYTES // per_set))


def buffer_sets(problem: Problem, backend: str, inputs: Mapping[str, Any],
                copies: int = 1) -> list[BufferSet]:
    """``copies`` sets of (output, inputs): the first uses ``inputs`` themselves (NumPy
    arrays for Numba, torch tensors for Triton), the others copies of them."""
    names = op(problem.op).inputs
    sets = []
    for i in range(copies):
        arrays = [inputs.get(n) for n in names]
        if backend == "triton":
            import torch

            like = arrays[0]
            arrays = [a if a is None or i == 0 else a.clone() for a in arrays]
            out = torch.empty(problem.out_shape, dtype=like.dtype, device=like.device)
        else:
            arrays = [None if a is None else to_numpy(a) if i == 0 else to_numpy(a).copy()
                      for a in arrays]
            out = np.empty(problem.out_shape, dtype=problem.dtype)
            out.fill(0)  # touch every page now, not in the first timed call
        sets.append((out, arrays))
    return sets


class Call:
    """One config's kernel call, cycling through buffer sets on successive calls.

    Args:
        problem: the Problem.
        backend: "numba" or "triton".
        config: a full config of the backend's Space (also read by test samplers).
        sets: buffer sets from :func:`buffer_sets`.
    """

    def __init__(self, problem: Problem, backend: str, config: Config,
                 sets: list[BufferSet]) -> None:
        opdef = op(problem.op)
        module = opdef.backend(backend)
        # An op may prepare inputs once (the CPU conv packs its weights, as
        # ``atrous.prepare_conv`` does for a user's repeated calls): not part of a call's time.
        sets = [(out, opdef.prepare(problem, backend, dict(config), arrays))
                for out, arrays in sets]
        self.problem, self.config, self.sets = problem, dict(config), sets
        self._launch: Callable[..., None] = module.launch
        self._next = 0

    def __call__(self) -> None:
        out, arrays = self.sets[self._next]
        self._next = (self._next + 1) % len(self.sets)
        self._launch(self.problem, self.config, out, *arrays)
