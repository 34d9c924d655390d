"""The op registry and contract: built-ins, ``atrous.register_op``, the ``atrous.ops``
entry-point group (a bad plugin is one warning, never a crash), and an op defined outside
src/atrous going through the call path, the validation gate, verify, the tuner and a
``--shapes`` file with no change inside the package."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings

import numpy as np
import pytest

import atrous
from atrous.autotune.search import Budget
from atrous.autotune.tuner import Settings, tune_problem
from atrous.autotune.validate import check
from atrous.core import registry
from atrous.core.op import Arg, Op, SuiteContext
from atrous.jobs.shapes import load_shapes
from atrous.jobs.suite import smoke_suite
from atrous.jobs.verify import verify

# A whole op package, as a third party would ship it: the Op and a CPU backend module.
PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from atrous.core.args import check_dtype, check_layout, check_shape
from atrous.core.op import Arg, Op
from atrous.core.space import Space


@dataclass(frozen=True)
class ScaleProblem:
    shape: tuple
    dtype: str
    layout: str
    factor: float
    op = "{name}"

    @property
    def key(self):
        return f"{name}:{{self.layout}}:{{self.dtype}}:{{'x'.join(map(str, self.shape))}}"

    @property
    def out_shape(self):
        return self.shape

    @property
    def input_shapes(self):
        return {{"x": self.shape}}

    @property
    def flops(self):
        return int(np.prod(self.shape))

    @property
    def bytes(self):
        return 2 * int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class Scale(Op):
    name = "{name}"
    arguments = (Arg("x", array=True), Arg("factor", default=2.0, keyword_only=False),
                 Arg("layout", default="NCHW"))
    backends = {{"numba": "{package}.cpu"}}

    def make_problem(self, shapes, dtypes, *, factor=2.0, layout="NCHW"):
        layout = check_layout(layout)
        check_dtype("x", dtypes["x"])
        shape = check_shape("x", shapes["x"], 4, layout)
        return ScaleProblem(tuple(shape), dtypes["x"], layout, float(factor))

    def reference(self, problem, x):
        return x * problem.factor

    def space(self, problem, backend):
        return Space({{"ROWS": (1, 2, 4)}}) if backend == "numba" else Space({{}})

    def default_config(self, problem, backend):
        return {{"ROWS": 2}} if backend == "numba" else {{}}

    def cases(self, layout, dtype):
        return [self.make_problem({{"x": (1, 3, 5, 7)}}, {{"x": dtype}}, layout=layout)]

    def suite_entries(self, ctx):
        x = (ctx.batch, ctx.classes, ctx.feature, ctx.feature)
        return [(f"scale {{ctx.feature}}", self.make_problem({{"x": x}}, {{"x": ctx.dtype}}))]


OP = Scale()
'''

BACKEND = '''
import numpy as np


def launch(problem, config, out, x):
    rows = x.reshape(-1, x.shape[-1])
    target = out.reshape(rows.shape)
    step = config["ROWS"]
    for i in range(0, rows.shape[0], step):
        np.multiply(rows[i:i + step], problem.factor, out=target[i:i + step])
'''


def _write_plugin(root, package: str, name: str) -> None:
    folder = root / package
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent(PLUGIN.format(name=name,
                                                                       package=package)))
    (folder / "cpu.py").write_text(textwrap.dedent(BACKEND))


def _entry_points(root, lines: list[str]) -> None:
    info = root / "atrous_test_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: atrous-test-plugins\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[atrous.ops]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that loads again on first use (built-ins and entry points)."""
    monkeypatch.setattr(registry, "_ops", {})
    monkeypatch.setattr(registry, "_loaded", False)
    return registry


@pytest.fixture
def plugin(tmp_path, monkeypatch, fresh_registry):
    """The package ``scale_plugin`` (op ``scale_test``) importable from ``tmp_path``."""
    _write_plugin(tmp_path, "scale_plugin", "scale_test")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("scale_plugin")]:
        del sys.modules[name]


def test_the_builtins_are_registered_in_order():
    assert list(registry.OPS)[:3] == ["global_avg_pool", "dilated_conv2d", "upsample_bilinear"]
    conv = registry.op("dilated_conv2d")
    assert conv.inputs == ("x", "weight", "bias")
    assert [a.name for a in conv.options][:3] == ["stride", "padding", "dilation"]
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        registry.op("nope")


def test_register_op_rejects_what_is_no_op_and_taken_names(fresh_registry):
    with pytest.raises(TypeError, match="Op instance or subclass"):
        atrous.register_op(object())

    class Bad(Op):
        name = "Bad Name"
        arguments = (Arg("x", array=True),)

        def make_problem(self, shapes, dtypes, **options):
            raise NotImplementedError

        def reference(self, problem, *arrays):
            raise NotImplementedError

    with pytest.raises(ValueError, match="lower-case identifier"):
        atrous.register_op(Bad)

    class Taken(Bad):
        name = "dilated_conv2d"

    with pytest.raises(ValueError, match="already registered"):
        atrous.register_op(Taken, replace=True)  # never over a built-in
    with pytest.raises(ValueError, match="built-in"):
        atrous.unregister_op("global_avg_pool")


def test_an_op_registered_by_a_call_runs_everywhere(plugin, tmp_path):
    from scale_plugin import OP

    atrous.register_op(OP)
    assert registry.op("scale_test") is OP
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    # the call path: the declared arguments by position and name, every backend
    np.testing.assert_array_equal(atrous.call_op("scale_test", x, 3.0), x * 3.0)
    np.testing.assert_allclose(atrous.call_op("scale_test", x, factor=0.5, backend="numpy"),
                               x * 0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'scale'"):
        atrous.call_op("scale_test", x, scale=2)
    with pytest.raises(ValueError, match="no 'triton' backend"):
        OP.backend("triton")
    assert "default config {'ROWS': 2}" in str(atrous.explain("scale_test", x))
    # the validation gate, verify and the tuner
    problem = OP.make_problem({"x": (1, 3, 5, 7)}, {"x": "float32"})
    assert check(problem, "numba", {"ROWS": 4}).ok
    rows = verify("numba", ops=["scale_test"], layouts=["NCHW"], dtypes=["float32"])
    assert [(r.ok, r.configs, r.checks) for r in rows] == [(True, 3, 3)]
    db = atrous.autotune.database.Database(tmp_path / "tuning.json")
    out = tune_problem(problem, settings=Settings(strategy="exhaustive", budget=Budget()),
                       database=db)
    assert out.record.config in ({"ROWS": 1}, {"ROWS": 2}, {"ROWS": 4})
    stored = [r for _, r in db.read().records()]
    assert [r.key for r in stored] == [problem.key]  # stored under the op's own key
    # suites and --shapes files come from the declaration
    assert any(e.problem.op == "scale_test" for e in smoke_suite())
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps([{"op": "scale_test", "x": [1, 2, 3, 4], "factor": 4}]))
    (entry,) = load_shapes(shapes, ["NHWC"], ["float64"])
    assert (entry.problem.factor, entry.problem.layout, entry.problem.dtype) == (
        4.0, "NHWC", "float64")
    shapes.write_text(json.dumps([{"op": "scale_test", "x": [1, 2, 3, 4], "size": 4}]))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['size'\]"):
        load_shapes(shapes, ["NCHW"], ["float32"])
    atrous.unregister_op("scale_test")
    assert "scale_test" not in registry.OPS


def test_entry_points_load_once_and_a_bad_plugin_is_one_warning(plugin):
    _write_plugin(plugin, "scale_clash", "dilated_conv2d")  # a built-in's name
    _entry_points(plugin, ["scale_test = scale_plugin:Scale",  # a class: instantiated
                           "missing = no_such_module:OP",
                           "clash = scale_clash:OP",
                           "notop = json:loads"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "scale_test" in registry.OPS  # the first use loads the plugins
        assert registry.op("dilated_conv2d").__module__.startswith("atrous.kernels")
    messages = sorted(str(w.message) for w in caught
                      if issubclass(w.category, registry.PluginWarning))
    assert len(messages) == 3, messages
    assert "'clash'" in messages[0] and "already taken" in messages[0]
    assert "'missing'" in messages[1] and "ModuleNotFoundError" in messages[1]
    assert "'notop'" in messages[2] and "Op instance or subclass" in messages[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second round of warnings
        assert registry.op("scale_test").name == "scale_test"
        assert len(registry.OPS) == 4


def test_the_contract_defaults():
    class Minimal(Op):
        name = "minimal"
        arguments = (Arg("x", array=True), Arg("w", array=True, optional=True),
                     Arg("k", default=1, keyword_only=False))

        def make_problem(self, shapes, dtypes, **options):
            return (shapes, dtypes, options)

        def reference(self, problem, *arrays):
            return arrays[0]

    m = Minimal()
    assert m.inputs == ("x", "w") and [a.name for a in m.options] == ["k"]
    assert m.bind((1, None, 3), {}) == ({"x": 1, "w": None}, {"k": 3})
    assert m.bind((1,), {"k": 2}) == ({"x": 1, "w": None}, {"k": 2})
    with pytest.raises(TypeError, match="missing the array argument 'x'"):
        m.bind((), {"k": 2})
    with pytest.raises(TypeError, match="multiple values for argument 'k'"):
        m.bind((1, None, 3), {"k": 2})
    assert m.space(None, "numba").configs() == [{}]
    assert m.default_config(None, "numba") == {}
    assert m.complete_config(None, "numba", {"a": 1}) == {"a": 1}
    assert m.seed_configs(None, "numba") == [] and m.cases("NCHW", "float32") == []
    assert m.prepare(None, "numba", {}, [1, 2]) == [1, 2]
    ctx = SuiteContext(5, (2,), 17, 1, 16, 8, 3, "NCHW", "float32")
    assert m.suite_entries(ctx) == []
    with pytest.raises(atrous.core.op.Unavailable, match="no PyTorch baseline"):
        m.torch_baseline(None, {})
    with pytest.raises(atrous.core.op.Unavailable, match="no ONNX model"):
        m.onnx_model(None, {})
