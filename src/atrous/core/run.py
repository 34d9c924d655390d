"""Running one op on one backend with a known config: the mechanics every caller shares
(the public call path in :mod:`atrous.dispatch`, the validation gate, the tuner).

:func:`given_config` completes and checks a config a caller passed; :func:`launch` makes
the inputs contiguous, allocates the output when none is given, and calls the backend's
``launch(problem, config, out, *arrays)`` (or the float64 reference for "numpy").
Choosing a config (the tuning database) and checking a user's ``out`` live above, in
:mod:`atrous.dispatch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from atrous.core.arrays import Kind, is_tensor, to_numpy
from atrous.core.op import Op, Problem
from atrous.core.registry import op
from atrous.core.space import Config, Space

# Per-call overhead matters: a small upsample runs in ~50 us. This memo holds only what
# cannot change within a process (imported modules).
_BACKEND_MODULES: dict[tuple[int, str], ModuleType] = {}


def backend_module(opdef: Op, name: str) -> ModuleType:
    """``opdef.backend(name)``, imported once (``importlib.import_module`` costs ~1 us)."""
    key = (id(opdef), name)
    module = _BACKEND_MODULES.get(key)
    if module is None:
        module = _BACKEND_MODULES[key] = opdef.backend(name)
    return module


def given_config(problem: Problem, backend: str, config: Mapping[str, Any]) -> Config:
    """A caller's (possibly partial) ``config`` completed by the op's
    :meth:`~atrous.core.op.Op.complete_config` and checked against its Space (TypeError for
    a non-dict, ValueError naming a bad key or value)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if backend == "numpy":  # the reference has one config, the empty one
        return Space({}).validate(config)
    opdef = op(problem.op)
    full = opdef.complete_config(problem, backend, dict(config))
    return opdef.space(problem, backend).validate(full)


def empty(problem: Problem, kind: Kind, like: Any) -> Any:
    """An uninitialised output of ``problem``'s shape and dtype, of ``like``'s kind and device."""
    if not kind.torch:
        return np.empty(problem.out_shape, dtype=problem.dtype)
    import torch

    return torch.empty(problem.out_shape, dtype=like.dtype, device=like.device)


def _contiguous(a: Any) -> Any:
    if a is None or not (is_tensor(a) or isinstance(a, np.ndarray)):
        return a  # None, or a backend's prepared form (packed weights)
    return a.contiguous() if is_tensor(a) else np.ascontiguousarray(a)


def launch(problem: Problem, inputs: Mapping[str, Any], kind: Kind, name: str, config: Config,
           out: Any = None) -> Any:
    """Run ``problem`` on backend ``name`` with a full, validated ``config`` on ``inputs``
    (by the op's input names; the first is the main input) and return the output."""
    opdef = op(problem.op)
    names = opdef.inputs
    x = inputs[names[0]]
    if out is None:
        out = empty(problem, kind, x)
    arrays = [_contiguous(inputs.get(n)) for n in names]
    if name == "numpy":
        _run_reference(opdef, problem, out, arrays)
    elif name == "numba":
        host = (to_numpy(out), [to_numpy(a) for a in arrays]) if kind.torch else (out, arrays)
        backend_module(opdef, "numba").launch(problem, config, host[0], *host[1])
    else:
        backend_module(opdef, name).launch(problem, config, out, *arrays)
    return out


def _run_reference(opdef: Op, problem: Problem, out: Any, arrays: list[Any]) -> None:
    def host(a: Any) -> Any:
        if a is None or not is_tensor(a):
            return a
        return a.detach().to("cpu").double().numpy()

    result = opdef.reference(problem, *(host(a) for a in arrays))
    if is_tensor(out):
        import torch

        out.copy_(torch.from_numpy(result).to(out.dtype))
    else:
        out[...] = result
