"""One Triton kernel launch as data: what a launcher runs, and what the compile check compiles.

Each Triton launcher computes its launches with a ``plan`` function (kernel, grid, runtime
arguments, constexprs, warps, stages) and runs them; ``atrous.gpucheck`` calls the same
``plan`` on meta tensors and compiles each launch for a named GPU, so the config-to-constexpr
mapping exists once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``kernel[grid](*args, **constexprs, num_warps=..., num_stages=...)``.

    ``num_stages`` None leaves Triton's default (what the launcher did before it was a plan).
    """

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int | None = None

    @property
    def name(self) -> str:
        """The kernel's function name."""
        return self.kernel.fn.__name__

    @property
    def options(self) -> dict[str, int]:
        """The launch options given to Triton (num_warps, and num_stages when set)."""
        opts = {"num_warps": self.num_warps}
        if self.num_stages is not None:
            opts["num_stages"] = self.num_stages
        return opts

    def run(self) -> None:
        """Launch the kernel."""
        self.kernel[self.grid](*self.args, **self.constexprs, **self.options)


def run_all(launches: list[Launch]) -> None:
    """Launch each planned kernel, in order."""
    for launch in launches:
        launch.run()
