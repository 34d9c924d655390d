"""The op contract: what an op (built in, or defined in another package) gives atrous so
that the public call path, ``atrous verify``, ``atrous tune``, ``atrous bench`` and
``atrous report`` can all handle it.

An op is an instance of a subclass of :class:`Op`. It declares its arguments ONCE, in
:attr:`Op.arguments`; everything that needs them (the ``--shapes`` files of ``atrous tune``,
the call-time problem built from arrays, the verify cases, the suites, the baselines)
derives from that declaration. Every hook below has a default, so a minimal op writes only
:meth:`Op.make_problem` and :meth:`Op.reference`, names its backend modules, and gives a
:meth:`Op.space` and :meth:`Op.default_config` per backend it tunes::

    class Scale(Op):
        name = "scale"
        arguments = (Arg("x", array=True), Arg("factor", default=2.0),
                     Arg("layout", default="NCHW"))
        backends = {"numba": "my_package.scale_numba"}   # a module with launch(...)

        def make_problem(self, shapes, dtypes, *, factor=2.0, layout="NCHW"):
            return ScaleProblem(shapes["x"], dtypes["x"], layout, float(factor))

        def reference(self, problem, x):
            return x * problem.factor

    atrous.register_op(Scale())

A backend module (named in :attr:`Op.backends`) holds the kernels and
``launch(problem, config, out, *arrays)``, which writes the result into ``out`` (a
C-contiguous array of ``problem.out_shape`` and ``problem.dtype``) from the op's array
inputs in :attr:`Op.inputs` order (contiguous NumPy arrays for "numba", torch tensors on
the GPU for "triton"; an optional array the caller left out is ``None``).
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from atrous.core.arrays import dtype_name
from atrous.core.space import Config, Space

Shape = tuple[int, ...]


@runtime_checkable
class Problem(Protocol):
    """What atrous reads from every op's problem (a frozen dataclass in the built-in ops).

    A problem is the validated, hashable description of one call: shapes, dtype, layout and
    parameters, never the data. Its dataclass fields are also the features the tuning
    database uses to find the nearest tuned shape (numbers are sizes, the rest categories).
    """

    op: str  #: the registered op name
    dtype: str  #: the data dtype name ("float32", ...)
    layout: str  #: "NCHW" or "NHWC" (an op without layouts says "NCHW")

    @property
    def key(self) -> str:
        """The tuning key: a string holding everything that can change the best config."""
        ...

    @property
    def out_shape(self) -> Shape:
        """The output's shape."""
        ...

    @property
    def input_shapes(self) -> Mapping[str, Shape | None]:
        """Each array input's shape by name (None for an optional input left out)."""
        ...

    @property
    def flops(self) -> int:
        """The dense work in floating-point operations (a multiply-add counts two)."""
        ...

    @property
    def bytes(self) -> int:
        """The fewest bytes a kernel must move (inputs read once, output written once)."""
        ...


#: The problem type of one op (its frozen dataclass); hooks of ``Op[P]`` receive a ``P``.
P = TypeVar("P", bound=Problem)


@dataclass(frozen=True)
class Arg:
    """One declared argument of an op's public call.

    Attributes:
        name: the keyword name, as in the Python call and in ``--shapes`` files.
        array: True for an array input (its shape and dtype reach :meth:`Op.make_problem`;
            in a ``--shapes`` file it is given as a list of sizes). The first array is the
            main input ``x``: it decides the device and the output's kind.
        optional: for an array: it may be None (a bias).
        default: for a non-array option: the value when it is not given.
        keyword_only: for a non-array option: False lets it also be passed by position
            after the arrays (as ``upsample_bilinear``'s ``size``).
        doc: one line for help texts.
    """

    name: str
    array: bool = False
    optional: bool = False
    default: Any = None
    keyword_only: bool = True
    doc: str = ""


@dataclass(frozen=True)
class SuiteContext:
    """One point of a shape suite, for :meth:`Op.suite_entries`: a DeepLabV3-style feature
    map (``feature`` x ``feature``), its atrous ``rates``, the final ``image`` size, the
    batch and the channel widths of the ASPP head, in ``layout`` and ``dtype``."""

    feature: int
    rates: tuple[int, ...]
    image: int
    batch: int
    in_channels: int
    out_channels: int
    classes: int
    layout: str
    dtype: str


class Unavailable(RuntimeError):
    """A baseline (or backend) that cannot run this problem here; the message says why
    (benchmark rows carry it as their note)."""


class Op(ABC, Generic[P]):
    """The contract of one op, generic in its problem type (``class MyOp(Op[MyProblem])``).
    Subclass it, set the class attributes, implement
    :meth:`make_problem` and :meth:`reference`, override the hooks your op needs, and
    register an instance (:func:`atrous.register_op` or the ``atrous.ops`` entry-point
    group). Instances must be stateless: one is shared by every thread.

    Class attributes:
        name: the op's name (a Python identifier), as in ``atrous verify --op NAME``.
        arguments: the declared arguments (:class:`Arg`), arrays first, in call order.
        backends: backend name ("numba", "triton") -> the importable module holding its
            kernels and ``launch`` (imported on first use, so a GPU stack loads only when
            its backend runs). The "numpy" backend is always :meth:`reference`.
    """

    name: ClassVar[str]
    arguments: ClassVar[tuple[Arg, ...]]
    backends: ClassVar[Mapping[str, str]] = {}

    # ------------------------------------------------------------------ the declaration

    @functools.cached_property
    def inputs(self) -> tuple[str, ...]:
        """The names of the array inputs, in call order (from :attr:`arguments`)."""
        return tuple(a.name for a in self.arguments if a.array)

    @functools.cached_property
    def options(self) -> tuple[Arg, ...]:
        """The declared non-array arguments (from :attr:`arguments`)."""
        return tuple(a for a in self.arguments if not a.array)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split a call's ``*args, **kwargs`` into (arrays by name, options by name) by the
        declaration: arrays and non-keyword-only options by position, anything by name.
        Raises TypeError naming the argument for a missing, unknown or repeated one."""
        positional = [a for a in self.arguments if a.array or not a.keyword_only]
        if len(args) > len(positional):
            raise TypeError(f"{self.name}() takes {len(positional)} positional arguments"
                            f" but {len(args)} were given")
        given: dict[str, Any] = {a.name: v for a, v in zip(positional, args, strict=False)}
        known = {a.name for a in self.arguments}
        for key, value in kwargs.items():
            if key not in known:
                raise TypeError(f"{self.name}() got an unexpected keyword argument {key!r};"
                                f" it takes {sorted(known)}")
            if key in given:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            given[key] = value
        arrays: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for a in self.arguments:
            if a.array:
                if given.get(a.name) is None and not a.optional:
                    raise TypeError(f"{self.name}() missing the array argument {a.name!r}")
                arrays[a.name] = given.get(a.name)
            elif a.name in given:
                options[a.name] = given[a.name]
        return arrays, options

    # ------------------------------------------------------------------ problems

    @abstractmethod
    def make_problem(self, shapes: Mapping[str, Shape | None], dtypes: Mapping[str, str | None],
                     **options: Any) -> P:
        """Check the arguments and return the frozen Problem.

        Args:
            shapes: each array input's shape by name (None for an optional one left out).
            dtypes: each array input's dtype name by name (None likewise).
            options: the declared non-array arguments that were given (the others take
                their declared defaults: give them the same defaults here).

        Raises:
            ValueError or TypeError naming the argument, for anything invalid.
        """

    def problem_from_arrays(self, arrays: Mapping[str, Any], options: Mapping[str, Any]
                            ) -> P:
        """The Problem of a call on ``arrays`` (NumPy arrays or tensors, by name) with
        ``options``: their shapes and dtypes go to :meth:`make_problem`."""
        shapes: dict[str, Shape | None] = {}
        dtypes: dict[str, str | None] = {}
        for n, a in arrays.items():  # a plain loop: this runs on every public call
            if a is None:
                shapes[n] = dtypes[n] = None
            elif type(a) is np.ndarray:
                shapes[n], dtypes[n] = a.shape, a.dtype.name
            else:  # int(): a traced tensor's sizes may be symbolic; a problem holds ints
                shapes[n], dtypes[n] = tuple(int(s) for s in a.shape), dtype_name(a)
        return self.make_problem(shapes, dtypes, **options)

    @abstractmethod
    def reference(self, problem: P, *arrays: Any) -> Any:
        """The slow, obvious float64 NumPy result of ``problem`` on float64 ``arrays``
        (in :attr:`inputs` order; None for an optional input left out). It defines what
        "correct" means for every backend and config."""

    # ------------------------------------------------------------------ backends and configs

    def has_backend(self, backend: str) -> bool:
        """Whether this op has kernels for ``backend`` ("numpy" always: the reference)."""
        return backend == "numpy" or backend in self.backends

    def backend(self, backend: str) -> ModuleType:
        """The module of ``backend``'s kernels, whose ``launch(problem, config, out,
        *arrays)`` runs a config (imported once, on first use)."""
        if backend not in self.backends:
            raise ValueError(f"op {self.name!r} has no {backend!r} backend; it has"
                             f" {sorted(self.backends)} and 'numpy'")
        return importlib.import_module(self.backends[backend])

    def space(self, problem: P, backend: str) -> Space:
        """The tunable configs of ``backend`` for ``problem``. Default: one empty config."""
        return Space({})

    def default_config(self, problem: P, backend: str) -> Config:
        """A heuristic config that is good without tuning; it must be in :meth:`space`.
        Default: the first config of the Space ({} for an empty one)."""
        return next(iter(self.space(problem, backend)), {})

    def complete_config(self, problem: P, backend: str, given: Config) -> Config:
        """A full config from a partial one a user passed (``config=``); the result is then
        checked against :meth:`space`. Default: the default config updated by ``given``."""
        return {**self.default_config(problem, backend), **given}

    def seed_configs(self, problem: P, backend: str) -> list[Config]:
        """Configs the tuner measures first, after the default (for example the best of each
        algorithm variant). Default: none."""
        return []

    def prepare(self, problem: P, backend: str, config: Config, arrays: list[Any]
                ) -> list[Any]:
        """Inputs for repeated calls of one problem and config (the tuner and ``atrous
        bench`` time calls on them): the place to pack weights once, as a user's prepared
        call would. Default: the arrays unchanged."""
        return arrays

    # ------------------------------------------------------------------ costs and keys

    def flops(self, problem: P) -> int:
        """The dense work of ``problem`` in FLOPs. Default: ``problem.flops``."""
        return int(problem.flops)

    def bytes(self, problem: P) -> int:
        """The fewest bytes ``problem`` moves. Default: ``problem.bytes``."""
        return int(problem.bytes)

    def executed_flops(self, problem: P, config: Config | None, backend: str) -> int:
        """The FLOPs ``config`` actually executes on ``backend`` (an algorithm that skips
        or saves work does fewer than :meth:`flops`). Default: :meth:`flops`."""
        return self.flops(problem)

    def tuning_key(self, problem: P) -> str:
        """The tuning database's key of ``problem``. Default: ``problem.key``."""
        return str(problem.key)

    def source_modules(self, backend: str) -> tuple[str, ...]:
        """Modules whose source decides ``backend``'s kernels: a tuned record stored before
        an edit of any of them (or of a module of the same top-level package they import)
        is stale. Default: the backend module and the module defining this class."""
        return (self.backends[backend], type(self).__module__)

    # ------------------------------------------------------------------ jobs

    def cases(self, layout: str, dtype: str) -> list[P]:
        """Small problems covering the op's edge cases (sizes 1, odd sizes, sizes no block
        divides); ``atrous verify`` runs every config of every Space on them. Default:
        none (verify then reports the op as having no cases)."""
        return []

    def suite_entries(self, ctx: SuiteContext) -> list[tuple[str, P]]:
        """This op's (name, problem) entries at one point of a shape suite (``atrous tune``
        and ``atrous bench`` run suites). Default: none."""
        return []

    def torch_baseline(self, problem: P, inputs: Mapping[str, Any]) -> Callable[[], Any]:
        """A zero-argument callable running PyTorch's equivalent of ``problem`` on
        ``inputs`` (NumPy arrays, or tensors already on a device). Default: raises
        :class:`Unavailable`."""
        raise Unavailable(f"{self.name} has no PyTorch baseline")

    def onnx_model(self, problem: P, inputs: Mapping[str, Any]) -> Any:
        """The ONNX model (``onnx.ModelProto``, input "x", output "y") of ``problem``, other
        inputs as initializers, for the ONNX Runtime baseline. Default: raises
        :class:`Unavailable`."""
        raise Unavailable(f"{self.name} has no ONNX model")

    def openvino_model(self, problem: P, inputs: Mapping[str, Any]) -> Any:
        """The ``openvino.Model`` of ``problem`` (input "x"), for the OpenVINO baseline.
        Default: raises :class:`Unavailable`."""
        raise Unavailable(f"{self.name} has no OpenVINO model")

    def __repr__(self) -> str:
        return f"<op {self.name} ({type(self).__module__}.{type(self).__qualname__})>"
