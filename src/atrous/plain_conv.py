"""A plain ``dilated_conv2d`` call's CPU weights: packed (and Winograd-transformed) once
per weights through the weight cache, and the first-call rule that picks the variant.

This is call-path policy (it consults the tuned config through :mod:`atrous.dispatch`), so
it lives above the kernels; the packing itself is :mod:`atrous.kernels.conv.weights_cpu`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from atrous import dispatch, weight_cache
from atrous.core.arrays import is_tensor, to_numpy
from atrous.kernels.conv import winograd_cpu
from atrous.kernels.conv.schedule_cpu import Schedule
from atrous.kernels.conv.spec import ConvProblem, complete_config
from atrous.kernels.conv.weights_cpu import PackedWeights, pack, winograd_pays_at_once


def for_plain_call(problem: ConvProblem, weight: Any, config: Mapping[str, Any] | None
                   ) -> tuple[PackedWeights, dict[str, Any]]:
    """The packing of a plain ``dilated_conv2d`` call's ``weight`` (NumPy array or CPU
    tensor) from the weight cache, and the full, validated config to run.

    The one policy for weights not prepared yet: a tuned (or default) "winograd" config,
    timed by the tuner on prepared weights, runs as "gemm" on the first call with new
    weights when its filter transform would cost more than it saves in that call
    (:func:`winograd_pays_at_once`); the filters are made when the same weights come
    again, and kept. A ``config`` naming the variant runs as given.
    """
    entry = weight_cache.lookup(("conv-cpu",), [weight], lambda: _pack_any(weight),
                                _nbytes)
    packed = entry.value
    full = dict(dispatch.choose(problem, "numba", config, "cpu").config)
    if full["variant"] == "winograd":
        schedule = Schedule.of(full)
        ready = winograd_cpu.filters_ready(problem, packed.winograd, schedule.max_tile)
        chosen_by_us = config is None or "variant" not in config
        if chosen_by_us and entry.uses == 0 and not ready and not winograd_pays_at_once(problem):
            # every Winograd problem is a gemm problem: gemm's own config (the Space holds
            # the other variants' keys at their defaults), on the same threads
            full = complete_config(problem, "numba", {"variant": "gemm",
                                                       "threads": full["threads"]})
        elif not ready and not packed.nonfinite:
            winograd_cpu.schedule_filters(problem, packed.taps, packed.winograd, schedule)
            weight_cache.grown(entry)
    return packed, full


def _pack_any(weight: Any) -> PackedWeights:
    host = to_numpy(weight.contiguous() if is_tensor(weight) else weight)
    return pack(np.ascontiguousarray(host))


def _nbytes(packed: PackedWeights) -> int:
    return packed.nbytes


