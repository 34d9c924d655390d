"""The op registry: every op atrous can run, verify, tune, bench and report.

Three sources fill it, on first use (the first :func:`op` / :data:`OPS` access), once:

1. the built-in ops, named below as ``module:attribute`` (imported by name, so this bottom
   layer depends on no op);
2. the ``atrous.ops`` entry-point group of installed packages: each entry point names an
   :class:`~atrous.core.op.Op` instance or subclass (``my_pkg.ops:MyOp``). A plugin that
   fails to import, is no Op, or reuses a taken name is skipped with one warning
   (:class:`PluginWarning`), never an error;
3. :func:`register_op` calls (``atrous.register_op``), at any time.
"""

from __future__ import annotations

import importlib
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from atrous.core.op import Op

BACKENDS = ("numba", "triton", "numpy")
#: The entry-point group an installed package declares its ops in.
ENTRY_POINT_GROUP = "atrous.ops"

#: The built-in ops, as ``module:attribute`` of their Op instances.
BUILTIN = ("atrous.kernels.gap.op:OP", "atrous.kernels.conv.op:OP",
           "atrous.kernels.upsample.op:OP")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_ops: dict[str, Op] = {}
_lock = threading.RLock()
_loaded = False


class PluginWarning(UserWarning):
    """An ``atrous.ops`` entry point that could not be loaded (it is skipped)."""


def _check(candidate: Any) -> Op:
    """``candidate`` as an Op instance (a subclass is instantiated), or TypeError/ValueError."""
    if isinstance(candidate, type) and issubclass(candidate, Op):
        candidate = candidate()
    if not isinstance(candidate, Op):
        raise TypeError(f"an op must be an atrous.core.op.Op instance or subclass, got"
                        f" {type(candidate).__name__}")
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"an op's name must be a lower-case identifier (a-z, 0-9, _; at most"
                         f" 64 characters), got {name!r}")
    arguments = getattr(candidate, "arguments", None)
    if not isinstance(arguments, tuple) or not candidate.inputs:
        raise ValueError(f"op {name!r}: arguments must be a tuple of Arg holding at least one"
                         " array input")
    unknown = sorted(set(candidate.backends) - {"numba", "triton"})
    if unknown:
        raise ValueError(f"op {name!r}: unknown backend(s) {unknown}; backends are"
                         " 'numba' and 'triton' ('numpy' is always the reference)")
    return candidate


def register_op(candidate: Op | type[Op], *, replace: bool = False) -> Op:
    """Register an op defined outside atrous, so the public call path and every job
    (``atrous verify/tune/bench/report --op NAME``) can use it.

    Args:
        candidate: an :class:`~atrous.core.op.Op` instance, or a subclass (instantiated
            with no arguments).
        replace: allow replacing an op registered under the same name (never a built-in).

    Returns:
        The registered instance.

    Raises:
        TypeError: ``candidate`` is no Op.
        ValueError: a bad name or declaration, or the name is taken.
    """
    checked = _check(candidate)
    with _lock:
        _load()
        current = _ops.get(checked.name)
        if current is not None and current is not checked and (
                not replace or _is_builtin(current)):
            raise ValueError(f"an op named {checked.name!r} is already registered"
                                 f" ({current!r})")
        _ops[checked.name] = checked
    return checked


def unregister_op(name: str) -> None:
    """Remove an op registered by :func:`register_op` or an entry point (not a built-in);
    a name that is not registered is ignored."""
    with _lock:
        _load()
        current = _ops.get(name)
        if current is not None and _is_builtin(current):
            raise ValueError(f"{name!r} is a built-in op and cannot be removed")
        _ops.pop(name, None)


def _is_builtin(candidate: Op) -> bool:
    return type(candidate).__module__.startswith("atrous.kernels.")


def _load_builtins() -> None:
    for target in BUILTIN:
        module, _, attribute = target.partition(":")
        found = _check(getattr(importlib.import_module(module), attribute))
        _ops[found.name] = found


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    try:
        points = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken installed distribution's metadata
        warnings.warn(f"atrous: cannot read the {ENTRY_POINT_GROUP!r} entry points"
                      f" ({type(exc).__name__}: {exc})", PluginWarning, stacklevel=3)
        return
    for point in sorted(points, key=lambda p: p.name):
        try:
            found = _check(point.load())
            if found.name in _ops:
                raise ValueError(f"the name {found.name!r} is already taken by"
                                 f" {_ops[found.name]!r}")
        except Exception as exc:  # any failure of third-party code: skip it, say why
            warnings.warn(f"atrous: skipping the op plugin {point.name!r} ({point.value}):"
                          f" {type(exc).__name__}: {str(exc)[:300]}", PluginWarning,
                          stacklevel=3)
            continue
        _ops[found.name] = found


def _load() -> None:
    """Fill the registry once: built-ins, then entry points (a thread-safe no-op after)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # set first: a plugin that looks up an op while loading sees built-ins
        _load_builtins()
        _load_entry_points()


def op(name: str) -> Op:
    """The registered op called ``name``; ValueError for an unknown op."""
    found = _ops.get(name) if _loaded else None
    if found is not None:
        return found
    _load()
    if name not in _ops:
        raise ValueError(f"unknown op {name!r}; known: {sorted(_ops)}")
    return _ops[name]


class _Ops(Mapping[str, Op]):
    """A read-only live view of the registry (name -> Op), loading it on first use."""

    def __getitem__(self, name: str) -> Op:
        _load()
        return _ops[name]

    def __iter__(self) -> Iterator[str]:
        _load()
        return iter(list(_ops))

    def __len__(self) -> int:
        _load()
        return len(_ops)

    def __repr__(self) -> str:
        return f"OPS({sorted(self)})"


#: Every registered op by name, built-ins first (a live, read-only mapping).
OPS: Mapping[str, Op] = _Ops()
