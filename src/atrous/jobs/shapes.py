"""Problems to tune from a JSON file (`atrous tune --shapes FILE`).

The file is a list (or ``{"shapes": [...]}``) of objects: ``op``, an optional ``name``,
the op's array arguments as shapes and its other keyword arguments as in the Python API::

    [{"op": "dilated_conv2d", "x": [1, 2048, 33, 33], "weight": [256, 2048, 3, 3],
      "padding": "same", "dilation": 12},
     {"op": "upsample_bilinear", "x": [1, 21, 65, 65], "size": [520, 520]},
     {"op": "global_avg_pool", "x": [1, 65, 65, 2048], "layout": "NHWC"}]

``layout`` and ``dtype`` default to the command's ``--layout`` / ``--dtype`` (each given
value when there are several). The keys an op takes are its declared arguments
(:attr:`atrous.core.op.Op.arguments`): arrays as shapes, the others as values. Everything
is read as data and checked by the op's ``make_problem``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atrous.core.args import MAX_ELEMENTS
from atrous.core.op import Op, Problem
from atrous.core.registry import OPS
from atrous.jobs.suite import Entry


def arguments(opdef: Op) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the op's shape arguments, its other keyword arguments but ``layout``), from its
    declaration."""
    return (opdef.inputs, tuple(a.name for a in opdef.options if a.name != "layout"))


def _shape(value: Any, where: str) -> tuple[int, ...]:
    """A shape: a list of positive integers, each at most ``MAX_ELEMENTS``."""
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{where} must be a list of integers, got {_short(value)}")
    if not all(1 <= v <= MAX_ELEMENTS for v in value):
        raise ValueError(f"{where} must hold positive sizes (at most 2**"
                         f"{MAX_ELEMENTS.bit_length() - 1}), got {_short(value)}")
    return tuple(value)


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a file may hold anything)."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _value(value: Any, where: str) -> Any:
    """A JSON scalar, or a list of numbers as a tuple (pairs such as dilation or size)."""
    if isinstance(value, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{where} must be a number or a list of numbers, got"
                             f" {_short(value)}")
        return tuple(value)
    if not isinstance(value, str | int | float | bool | type(None)):
        raise ValueError(f"{where} has an unsupported value {_short(value)}")
    return value


def problem_from(spec: dict[str, Any], layout: str, dtype: str, where: str) -> Problem:
    """The Problem of one shape object (see the module doc)."""
    name = spec.get("op")
    if not isinstance(name, str) or name not in OPS:
        raise ValueError(f"{where}: op must be one of {sorted(OPS)}, got {_short(name)}")
    opdef = OPS[name]
    shapes, kwargs = arguments(opdef)
    allowed = {"op", "name", "layout", "dtype", *shapes, *kwargs}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {name}; allowed:"
                         f" {sorted(allowed)}")
    main = shapes[0]
    if main not in spec:
        raise ValueError(f"{where}: the input shape {main!r} is required")
    layout = spec.get("layout", layout)
    dtype = spec.get("dtype", dtype)
    args = {k: _value(spec[k], f"{where}.{k}") for k in kwargs if k in spec}
    optional = {a.name for a in opdef.arguments if a.array and a.optional}
    try:
        arrays: dict[str, tuple[int, ...] | None] = {}
        for k in shapes:
            if spec.get(k) is None:
                if k not in optional:
                    raise ValueError(f"the {k} shape {k!r} is required")
                arrays[k] = None
            else:
                arrays[k] = _shape(spec[k], f"{where}.{k}")
        if any(a.name == "layout" for a in opdef.options):
            args["layout"] = layout
        return opdef.make_problem(arrays, {k: None if v is None else dtype
                                           for k, v in arrays.items()}, **args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({name}): {exc}") from exc


def load_shapes(path: str | Path, layouts: Sequence[str], dtypes: Sequence[str]) -> list[Entry]:
    """The suite entries described by the JSON file at ``path``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge ints, deep nesting
        raise ValueError(f"{path}: not valid JSON ({type(exc).__name__}:"
                         f" {str(exc)[:200]})") from None
    if isinstance(data, dict):
        data = data.get("shapes")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of shape objects"
                         " (or {\"shapes\": [...]})")
    entries = []
    for i, spec in enumerate(data):
        where = f"{path.name}[{i}]"
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: expected an object, got {type(spec).__name__}")
        lays = [spec["layout"]] if "layout" in spec else list(layouts)
        dts = [spec["dtype"]] if "dtype" in spec else list(dtypes)
        for layout, dtype in itertools.product(lays, dts):
            problem = problem_from(spec, layout, dtype, where)
            main = spec.get(OPS[spec["op"]].inputs[0])
            label = spec.get("name") or f"{spec['op']} {'x'.join(map(str, main))}"
            entries.append(Entry(str(label), problem))
    return entries
