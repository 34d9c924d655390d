"""The op table: for each op its spec, reference and backend modules, imported lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

BACKENDS = ("numba", "triton", "numpy")
_BACKEND_MODULE = {"numba": "numba_cpu", "triton": "triton_gpu"}


@dataclass(frozen=True)
class OpDef:
    """Where an op's parts live, and the names of its array inputs in call order."""

    name: str
    package: str
    inputs: tuple[str, ...]

    @property
    def spec(self) -> ModuleType:
        return importlib.import_module(f"atrous.kernels.{self.package}.spec")

    @property
    def reference(self):
        return importlib.import_module(f"atrous.kernels.{self.package}.reference").reference

    def backend(self, name: str) -> ModuleType:
        """The module whose ``launch(problem, config, out, *inputs)`` runs ``name``'s kernel."""
        return importlib.import_module(f"atrous.kernels.{self.package}.{_BACKEND_MODULE[name]}")


OPS: dict[str, OpDef] = {
    "global_avg_pool": OpDef("global_avg_pool", "gap", ("x",)),
    "dilated_conv2d": OpDef("dilated_conv2d", "conv", ("x", "weight", "bias")),
    "upsample_bilinear": OpDef("upsample_bilinear", "upsample", ("x",)),
}


def op(name: str) -> OpDef:
    """The OpDef of ``name``; ValueError for an unknown op."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known: {sorted(OPS)}")
    return OPS[name]
