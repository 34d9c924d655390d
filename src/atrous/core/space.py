"""Tunable configuration spaces: named parameters, value lists and constraints.

A config is a plain ``dict[str, int | str | bool]``. A :class:`Space` knows which keys exist,
which values each may take, and which combinations are allowed, so it can enumerate,
sample and validate configs. Constraints are data: either a callable taking the config, or
a small expression over parameter names (``"BLOCK_M * BLOCK_N <= 16384"``) evaluated by a
restricted evaluator (no attribute access, no calls).
"""

from __future__ import annotations

import ast
import itertools
import operator
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Config = dict[str, Any]
Constraint = Callable[[Mapping[str, Any]], bool] | str

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Div: operator.truediv,
}
_CMPOPS = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _eval_expr(node: ast.AST, names: Mapping[str, Any]) -> Any:
    """Evaluate a constraint expression over ``names``: arithmetic, comparisons, and/or/not."""
    if isinstance(node, ast.Expression):
        return _eval_expr(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"constraint names unknown parameter {node.id!r}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_expr(node.left, names), _eval_expr(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _eval_expr(node.operand, names)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_expr(node.operand, names)
    if isinstance(node, ast.BoolOp):
        values = (_eval_expr(v, names) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval_expr(node.left, names)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval_expr(comparator, names)
            if type(op) not in _CMPOPS or not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    raise ValueError(f"unsupported syntax in constraint: {ast.dump(node)}")


def _check(constraint: Constraint, config: Mapping[str, Any]) -> bool:
    if isinstance(constraint, str):
        return bool(_eval_expr(ast.parse(constraint, mode="eval"), config))
    return bool(constraint(config))


@dataclass(frozen=True)
class Space:
    """A finite set of configs: the product of parameter value lists, filtered by constraints.

    Args:
        params: parameter name -> allowed values, in preference order.
        constraints: callables or expressions that every valid config satisfies.
    """

    params: Mapping[str, Sequence[Any]]
    constraints: Sequence[Constraint] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name, values in self.params.items():
            if len(values) == 0:
                raise ValueError(f"parameter {name!r} has no values")

    def allows(self, config: Mapping[str, Any]) -> bool:
        """True when ``config`` has exactly this space's keys, allowed values and constraints."""
        if set(config) != set(self.params):
            return False
        if any(config[k] not in v for k, v in self.params.items()):
            return False
        return all(_check(c, config) for c in self.constraints)

    def validate(self, config: Mapping[str, Any]) -> Config:
        """Return ``config`` as a dict, or raise ValueError naming what is wrong with it."""
        unknown = sorted(set(config) - set(self.params))
        if unknown:
            raise ValueError(
                f"config: unknown key(s) {unknown}; this space has {sorted(self.params)}"
            )
        missing = sorted(set(self.params) - set(config))
        if missing:
            raise ValueError(f"config: missing key(s) {missing}")
        for name, values in self.params.items():
            if config[name] not in values:
                raise ValueError(
                    f"config: {name}={config[name]!r} is outside the space; allowed: {list(values)}"
                )
        for c in self.constraints:
            if not _check(c, config):
                shown = c if isinstance(c, str) else getattr(c, "__doc__", None) or repr(c)
                raise ValueError(f"config {dict(config)} violates constraint {shown}")
        return dict(config)

    def __iter__(self) -> Iterator[Config]:
        names = list(self.params)
        for values in itertools.product(*(self.params[n] for n in names)):
            config = dict(zip(names, values, strict=True))
            if all(_check(c, config) for c in self.constraints):
                yield config

    def configs(self) -> list[Config]:
        """Every valid config, in a stable order."""
        return list(self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def sample(self, n: int, seed: int = 0) -> list[Config]:
        """Up to ``n`` distinct valid configs drawn uniformly, deterministic for ``seed``."""
        every = self.configs()
        if n >= len(every):
            return every
        return random.Random(seed).sample(every, n)
