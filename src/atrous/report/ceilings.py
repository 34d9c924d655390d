"""The machine's ceilings as data: how fast memory and arithmetic can go, as measured by
``atrous ceilings`` (:mod:`atrous.jobs.ceilings` measures them; this module only holds,
checks and reads them). A report places every kernel against these numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

BANDWIDTH, COMPUTE = "bandwidth", "compute"


@dataclass(frozen=True)
class Ceiling:
    """One measured ceiling: ``value`` in GB/s (bandwidth) or GFLOP/s (compute).

    Args:
        name: "read", "copy", "write" (bandwidth); "fma", "gemm", "matmul" (compute).
        kind: "bandwidth" or "compute".
        value: GB/s or GFLOP/s (10^9 per second).
        dtype: the element type of a compute ceiling ("float32", ...); None for bandwidth.
        method: how it was measured, in words (sizes, repetitions, library).
    """

    name: str
    kind: str
    value: float
    dtype: str | None
    method: str

    @property
    def unit(self) -> str:
        return "GB/s" if self.kind == BANDWIDTH else "GFLOP/s"


@dataclass
class Ceilings:
    """All ceilings of one machine (a CPU or a GPU fingerprint), and when they were taken."""

    machine: str
    device: str
    measured_at: str
    seconds: float
    entries: list[Ceiling] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def bandwidth(self) -> float | None:
        """The memory roof in GB/s: the highest measured bandwidth (None when none was)."""
        values = [c.value for c in self.entries if c.kind == BANDWIDTH]
        return max(values) if values else None

    def peak(self, dtype: str) -> float | None:
        """The arithmetic roof for ``dtype`` in GFLOP/s: the highest of its compute
        ceilings; None when none was measured for it."""
        values = [c.value for c in self.entries if c.kind == COMPUTE and c.dtype == dtype]
        return max(values) if values else None

    def attainable_s(self, flops: float, nbytes: float, dtype: str) -> tuple[float, str] | None:
        """The roofline's fastest possible time for ``flops`` and ``nbytes`` of work, and
        which roof bounds it ("memory" or "compute"); None without both roofs."""
        bw, peak = self.bandwidth(), self.peak(dtype)
        if not bw or not peak:
            return None
        memory_s, compute_s = nbytes / (bw * 1e9), flops / (peak * 1e9)
        return (memory_s, "memory") if memory_s >= compute_s else (compute_s, "compute")

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "device": self.device,
                "measured_at": self.measured_at, "seconds": self.seconds,
                "entries": [asdict(c) for c in self.entries], "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Any) -> Ceilings:
        """Check a stored entry as data; ValueError names what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise ValueError("ceilings must be an object with an \"entries\" list")
        entries = []
        for raw in data["entries"]:
            if not isinstance(raw, dict):
                raise ValueError("a ceiling must be an object")
            value = raw.get("value")
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"ceiling {raw.get('name')!r}: value must be a positive number")
            if raw.get("kind") not in (BANDWIDTH, COMPUTE):
                raise ValueError(f"ceiling {raw.get('name')!r}: unknown kind {raw.get('kind')!r}")
            dtype = raw.get("dtype")
            entries.append(Ceiling(str(raw.get("name")), raw["kind"], float(value),
                                   None if dtype is None else str(dtype),
                                   str(raw.get("method", ""))))
        fp = data.get("fingerprint") or {}
        if not isinstance(fp, dict):
            raise ValueError("ceilings: \"fingerprint\" must be an object")
        return cls(str(data.get("machine", "")), str(data.get("device", "")),
                   str(data.get("measured_at", "")), float(data.get("seconds") or 0.0), entries,
                   {str(k): v for k, v in fp.items() if isinstance(v, str | int | float | dict)})


