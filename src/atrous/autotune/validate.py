"""Run one kernel config on random inputs, with a NaN-poisoned output, against the reference.

This is the one correctness gate: ``atrous verify``, the tests and the tuner all use it
(the tuner through :class:`Checker`, which computes the slow reference once per problem).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from atrous.core.arrays import Kind
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.run import given_config, launch
from atrous.core.tolerance import Comparison, compare


def random_inputs(problem: Problem, seed: int = 0) -> dict[str, np.ndarray | None]:
    """Seeded standard-normal float64 inputs of ``problem``'s shapes (never zeros)."""
    rng = np.random.default_rng(seed)
    return {name: None if shape is None else rng.standard_normal(shape)
            for name, shape in problem.input_shapes.items()}


def as_kind(inputs: Mapping[str, np.ndarray | None], dtype: str, kind: Kind,
            device: str = "cpu") -> dict[str, Any]:
    """Cast float64 inputs to ``dtype`` as NumPy arrays or torch tensors on ``device``."""
    if not kind.torch:
        return {k: None if v is None else v.astype(dtype) for k, v in inputs.items()}
    import torch

    tdtype = getattr(torch, dtype)
    return {k: None if v is None else torch.from_numpy(v).to(device=device, dtype=tdtype)
            for k, v in inputs.items()}


def poisoned_out(problem: Problem, like: Any) -> Any:
    """An output buffer filled with NaN, so an element the kernel never writes shows."""
    if isinstance(like, np.ndarray):
        return np.full(problem.out_shape, np.nan, dtype=problem.dtype)
    import torch

    return torch.full(problem.out_shape, float("nan"), dtype=like.dtype, device=like.device)


class Checker:
    """One problem's seeded inputs and its float64 reference, for checking many configs.

    The reference is computed once, on first use (it takes seconds on big shapes); each
    :meth:`check` runs a config into a fresh NaN-poisoned output and compares. Inputs are
    rounded to ``problem.dtype`` first and the reference sees the rounded values, so only
    the kernel's own arithmetic error is measured. This is the tuner's validation gate.

    Args:
        problem: the Problem to check.
        backend: "numba", "triton" (torch tensors on ``device``) or "numpy".
        seed: seeds the random inputs.
        device: "cpu" or "cuda[:N]" for Triton.
        tf32: compare against the TF32 tolerance (default: the problem's ``allow_tf32``).
    """

    def __init__(self, problem: Problem, backend: str, *, seed: int = 0, device: str = "cpu",
                 tf32: bool | None = None) -> None:
        self.problem, self.backend = problem, backend
        if backend == "triton":  # torch tensors: on CUDA, or on the CPU under TRITON_INTERPRET=1
            self.kind = Kind("cuda" if device.startswith("cuda") else "cpu")
        else:
            self.kind = Kind("numpy")
        self.inputs = as_kind(random_inputs(problem, seed), problem.dtype, self.kind, device)
        use_tf32 = problem.allow_tf32 if tf32 is None and hasattr(problem, "allow_tf32") else tf32
        self.tolerance = "tf32" if use_tf32 and problem.dtype == "float32" else problem.dtype
        self._reference: np.ndarray | None = None

    @property
    def reference(self) -> np.ndarray:
        """The float64 reference output (computed on first use, then kept)."""
        if self._reference is None:
            opdef = op(self.problem.op)
            host = {k: None if v is None else _host64(v) for k, v in self.inputs.items()}
            self._reference = opdef.reference(self.problem, *(host[n] for n in opdef.inputs))
        return self._reference

    def run(self, config: Mapping[str, Any] | None) -> Any:
        """Run ``config`` (completed and checked as a user's ``config=`` is; None: the op's
        default config) into a NaN-poisoned output and return it."""
        out = poisoned_out(self.problem, self.inputs[op(self.problem.op).inputs[0]])
        opdef = op(self.problem.op)
        full = (given_config(self.problem, self.backend, config) if config is not None
                else {} if self.backend == "numpy"
                else opdef.default_config(self.problem, self.backend))
        return launch(self.problem, self.inputs, self.kind, self.backend, full, out)

    def compare(self, out: Any) -> Comparison:
        """Compare an output of this problem with the reference."""
        return compare(out, self.reference, self.tolerance)

    def check(self, config: Mapping[str, Any] | None = None) -> Comparison:
        """Run ``config`` and compare its output with the reference."""
        return self.compare(self.run(config))


def check(problem: Problem, backend: str, config: Mapping[str, Any] | None = None, *,
          seed: int = 0, device: str = "cpu", tf32: bool | None = None) -> Comparison:
    """Run ``backend`` with ``config`` on seeded random inputs and compare with the reference.

    Inputs are rounded to ``problem.dtype`` first and the reference sees the rounded values,
    so only the kernel's own arithmetic error is measured.
    """
    return Checker(problem, backend, seed=seed, device=device, tf32=tf32).check(config)


def _host64(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a.astype(np.float64)
    return a.detach().to("cpu").double().numpy()
