"""GPU targets the compile check knows, and their per-block shared-memory limits.

The limits are the opt-in maximum of dynamic shared memory per thread block (what Triton
compares a kernel's ``metadata.shared`` with before a launch, read from
``cudaDevAttrMaxSharedMemoryPerBlockOptin``), from the CUDA C Programming Guide's table of
compute capabilities: 163 KiB on sm_80 / sm_87 (A100, Orin), 99 KiB on sm_86 / sm_89 (RTX 30 /
40, A10, L4, L40), 227 KiB on sm_90 (H100, H200). With a GPU present the device's own value
wins (:func:`shared_memory_limit`). Importing this module imports neither torch nor triton.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KIB = 1024
#: Shared memory bytes of a config on a GPU of a capability (80, 90): an upper bound.
Estimate = Callable[[Mapping[str, Any], int], int]


@dataclass(frozen=True)
class Target:
    """A CUDA target: its name ("sm_90"), compute capability as an int (90), the opt-in
    shared memory per block in bytes, and example GPUs."""

    name: str
    capability: int
    shared_per_block: int
    gpus: str


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sm_80", 80, 163 * KIB, "A100, A30"),
    Target("sm_86", 86, 99 * KIB, "RTX 30, A10, A40"),
    Target("sm_87", 87, 163 * KIB, "Jetson Orin"),
    Target("sm_89", 89, 99 * KIB, "RTX 40, L4, L40"),
    Target("sm_90", 90, 227 * KIB, "H100, H200"),
)}
#: The targets the compile check covers by default (the GPUs the project is tuned on).
CHECKED = ("sm_80", "sm_90")


def target(name: str) -> Target:
    """The known target named ``name`` ("sm_90", "90" or "sm90"), or the present GPU's when
    it has that name but is not in the table, else ValueError."""
    key = name.strip().lower().replace("sm", "").lstrip("_")
    found = TARGETS.get(f"sm_{key}")
    here = device_target() if found is None else None
    if here is not None and here.name == f"sm_{key}":
        return here
    if found is None:
        raise ValueError(f"unknown GPU target {name!r}; known: {', '.join(TARGETS)}")
    return found


@functools.cache
def device_target() -> Target | None:
    """The target of CUDA device 0 with the device's own shared-memory limit, or None
    without a CUDA GPU (or without torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    cap = props.major * 10 + props.minor
    limit = getattr(props, "shared_memory_per_block_optin", 0) or (
        TARGETS[f"sm_{cap}"].shared_per_block if f"sm_{cap}" in TARGETS else 48 * KIB)
    return Target(f"sm_{cap}", cap, int(limit), props.name)


def shared_memory_limit(name: str | None = None) -> int | None:
    """Bytes of shared memory one block may use on target ``name``: the device's value when
    a GPU of that capability is present, else the table's. ``name`` None means the present
    GPU, and None comes back without one (the interpreter has no limit)."""
    here = device_target()
    if name is None:
        return None if here is None else here.shared_per_block
    wanted = target(name)
    if here is not None and here.capability == wanted.capability:
        return here.shared_per_block
    return wanted.shared_per_block


class SharedMemoryFits:
    """A Space constraint: a config's shared memory, as ``estimate(config, capability)``
    bounds it, fits the per-block limit of ``target`` (the device's value when a GPU of that
    capability is present, else the table's)."""

    def __init__(self, estimate: Estimate, tgt: Target) -> None:
        self.estimate, self.target = estimate, tgt
        self.limit = shared_memory_limit(tgt.name) or tgt.shared_per_block
        self.__doc__ = (f"shared memory <= {self.limit // KIB} KiB per block ({tgt.name},"
                        f" {tgt.gpus})")

    def __call__(self, config: Mapping[str, Any]) -> bool:
        return self.estimate(config, self.target.capability) <= self.limit

    def __repr__(self) -> str:
        return f"SharedMemoryFits({self.__doc__})"


def resource_constraints(estimate: Estimate, name: str | None) -> tuple[SharedMemoryFits, ...]:
    """The shared-memory constraint of target ``name`` (None: the present GPU; no
    constraint without one, as under the interpreter) for a Space, as a 0- or 1-tuple."""
    tgt = target(name) if name is not None else device_target()
    return () if tgt is None else (SharedMemoryFits(estimate, tgt),)
