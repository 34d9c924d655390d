"""The custom-op example (examples/separable_conv): an op defined outside src/atrous.

Two parts. The kernels themselves, in this process: the float64 reference against
torch.nn.functional (an independent oracle), the generated Numba kernel and the Triton
kernel (under TRITON_INTERPRET=1 without a GPU) against the reference. Then the op as a
user meets it: registered by a function call in this process, and installed as a package
(a ``*.dist-info`` folder whose ``entry_points.txt`` is built from the example's own
pyproject.toml) that the real ``atrous`` CLI finds in subprocesses running verify, tune,
bench and report against a temporary tuning database.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import CUDA, HAS_TRITON, assert_close, seeded

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "separable_conv"
OP = "separable_conv2d"

#: Small cases: (x NCHW sizes, Cout, keyword arguments): dilation, stride, dilation larger
#: than the image, sizes that fill no tile, no bias.
CASES = [
    ((1, 5, 9, 11), 7, {"dilation": 2, "activation": "relu"}),
    ((2, 4, 7, 6), 6, {"padding": 3, "dilation": 3, "bias": False}),
    ((1, 3, 5, 5), 9, {"padding": 12, "dilation": 12}),
    ((1, 6, 8, 9), 4, {"stride": 2, "padding": (1, 2)}),
]


@pytest.fixture(scope="module")
def example() -> SimpleNamespace:
    """The example's modules, imported from examples/separable_conv (not installed)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        names = ("spec", "reference", "numba_cpu", "op")
        return SimpleNamespace(**{n: importlib.import_module(f"atrous_separable_conv.{n}")
                                  for n in names})
    finally:
        sys.path.remove(str(EXAMPLE))


def _problem(example, case, layout: str, dtype: str):
    (n, c, h, w), cout, kwargs = case
    kwargs = dict(kwargs)
    bias = (cout,) if kwargs.pop("bias", True) else None
    x = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    return example.spec.make_problem(x, (c, 1, 3, 3), (cout, c, 1, 1), bias, dtype,
                                     layout=layout, **kwargs)


def _inputs(problem, seed: int = 0) -> list[np.ndarray | None]:
    return [None if s is None else seeded(s, seed + i)
            for i, s in enumerate(problem.input_shapes.values())]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_reference_matches_torch(example, case, layout):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = _problem(example, case, layout, "float64")
    x, wd, wp, b = _inputs(p)
    ref = example.reference.reference(p, x, wd, wp, b)
    xt = torch.from_numpy(x if layout == "NCHW" else x.transpose(0, 3, 1, 2))
    pt, pb, pl, pr = p.padding
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), torch.from_numpy(wd), None, p.stride, 0,
                 p.dilation, p.c)
    y = F.conv2d(y, torch.from_numpy(wp), None if b is None else torch.from_numpy(b))
    y = (torch.relu(y) if p.activation == "relu" else y).numpy()
    np.testing.assert_allclose(ref, y if layout == "NCHW" else y.transpose(0, 2, 3, 1),
                               rtol=1e-12, atol=1e-12)


def test_problem_arguments(example):
    p = _problem(example, CASES[0], "NHWC", "float32")
    assert p.out_shape == (1, 9, 11, 7) and p.padding == (2, 2, 2, 2)
    assert p.executed_flops < p.flops  # taps in the padding are skipped
    assert len({_problem(example, c, "NCHW", "float32").key for c in CASES}) == len(CASES)
    make = example.spec.make_problem
    with pytest.raises(ValueError, match="dw_weight"):
        make((1, 4, 5, 5), (3, 1, 3, 3), (2, 4, 1, 1), None, "float32")
    with pytest.raises(ValueError, match="pw_weight"):
        make((1, 4, 5, 5), (4, 1, 3, 3), (2, 3, 1, 1), None, "float32")
    with pytest.raises(ValueError, match="bias"):
        make((1, 4, 5, 5), (4, 1, 3, 3), (2, 4, 1, 1), (3,), "float32")
    with pytest.raises(ValueError, match="stride 1"):
        make((1, 4, 5, 5), (4, 1, 3, 3), (2, 4, 1, 1), None, "float32", stride=2)
    with pytest.raises(TypeError, match="x must be a floating"):
        make((1, 4, 5, 5), (4, 1, 3, 3), (2, 4, 1, 1), None, "int32")
    with pytest.raises(ValueError, match="empty"):
        make((1, 4, 2, 2), (4, 1, 3, 3), (2, 4, 1, 1), None, "float32", padding="valid")
    with pytest.raises(ValueError, match=r"SepConvProblem\.c"):
        example.spec.SepConvProblem(1, 0, 5, 5, 2, 3, (1, 1), (1, 1, 1, 1), (1, 1), False,
                                    None, "float32", "NCHW")


@pytest.mark.parametrize("pw", ["tile", "blas"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_numba_kernel_matches_reference(example, case, layout, dtype, pw):
    p = _problem(example, case, layout, dtype)
    inputs = _inputs(p)
    ref = example.reference.reference(p, *inputs)
    out = np.full(p.out_shape, np.nan, dtype)
    config = {"PW": pw, "BLOCK_OW": 2, "BLOCK_CO": 4, "ORDER": "ox_outer", "threads": 2}
    example.numba_cpu.launch(p, config, out, *(None if a is None else a.astype(dtype)
                                               for a in inputs))
    assert_close(out, ref, dtype)


def test_numba_kernel_propagates_nonfinite_depthwise_weights(example):
    """0 * Inf in the zero padding is NaN in the reference (and in torch): the kernel must
    not hide it by skipping the padding taps."""
    p = _problem(example, CASES[0], "NHWC", "float64")
    x, wd, wp, b = _inputs(p)
    wd[2, 0, 0, 0] = np.inf
    ref = example.reference.reference(p, x, wd, wp, b)
    assert np.isnan(ref).any()
    for pw in ("tile", "blas"):
        out = np.full(p.out_shape, np.nan)
        config = {"PW": pw, "BLOCK_OW": 2, "BLOCK_CO": 4, "ORDER": "ox_outer", "threads": 2}
        example.numba_cpu.launch(p, config, out, x, wd, wp, b)
        assert_close(out, ref, "float64")


def test_generated_source_follows_the_config(example):
    src = example.numba_cpu.kernel_source(2, 4, "co_outer")
    assert "BO = 2" in src and "BC = 4" in src and "a1_3" in src and "a2_0" not in src
    assert src.index("for co in range(0, cout, BC)") < src.index("for ox in range(0, ow, BO)")
    other = example.numba_cpu.kernel_source(2, 4, "ox_outer")
    assert other.index("for ox in range(0, ow, BO)") < other.index("for co in range(0, cout")
    with pytest.raises(ValueError, match="ORDER"):
        example.numba_cpu.kernel_source(2, 4, "sideways")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES[:3])
def test_triton_kernel_matches_reference(example, case, layout):
    import torch

    sys.path.insert(0, str(EXAMPLE))
    try:
        triton_gpu = importlib.import_module("atrous_separable_conv.triton_gpu")
    finally:
        sys.path.remove(str(EXAMPLE))
    device = "cuda" if CUDA else "cpu"
    p = _problem(example, case, layout, "float32")
    inputs = _inputs(p)
    ref = example.reference.reference(p, *inputs)
    out = torch.full(p.out_shape, float("nan"), device=device)
    config = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2}
    triton_gpu.launch(p, config, out, *(None if a is None else
                                        torch.from_numpy(a).float().to(device) for a in inputs))
    assert_close(out, ref, "float32")


# ------------------------------------------------------------------ the op as a user meets it


@pytest.fixture(scope="module")
def registered(example):
    """The example's op registered in this process by ``atrous.register_op``, removed after."""
    from atrous import register_op, unregister_op

    sys.path.insert(0, str(EXAMPLE))
    try:
        op = importlib.import_module("atrous_separable_conv.op").OP
    finally:
        sys.path.remove(str(EXAMPLE))
    yield register_op(op)
    unregister_op(OP)


def _installed_site(root: Path) -> Path:
    """A folder laid out as pip installs the example: the package, and a ``*.dist-info``
    whose ``entry_points.txt`` holds the entry points of the example's pyproject.toml."""
    import shutil

    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest itself depends on tomli there
        import tomli as tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = root / "site"
    shutil.copytree(EXAMPLE / "atrous_separable_conv", site / "atrous_separable_conv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in project["entry-points"].items()))
    return site


def test_registered_op_runs_through_the_call_path(registered, example):
    import atrous
    from atrous.autotune.validate import check
    from atrous.core.registry import OPS, op

    assert OPS[OP] is registered and op(OP) is registered and OP in sorted(OPS)
    assert atrous.register_op(registered) is registered  # the same instance again: a no-op
    with pytest.raises(ValueError, match="already registered"):
        atrous.register_op(type(registered)())
    sys.path.insert(0, str(EXAMPLE))
    try:
        from atrous_separable_conv import separable_conv2d
    finally:
        sys.path.remove(str(EXAMPLE))
    p = _problem(example, CASES[0], "NHWC", "float32")
    x, wd, wp, b = (a.astype("float32") for a in _inputs(p))
    ref = example.reference.reference(p, x, wd, wp, b)
    kwargs = {"dilation": 2, "activation": "relu", "layout": "NHWC"}
    assert_close(separable_conv2d(x, wd, wp, b, **kwargs), ref, "float32")
    # The declaration binds a call's arguments; explain says which config runs, and why.
    arrays, options = registered.bind((x, wd, wp, b), kwargs)
    assert registered.problem_from_arrays(arrays, options) == p
    why = atrous.explain(OP, x, wd, wp, b, **kwargs)
    assert why.source == "default" and why.config == registered.default_config(p, "numba")
    out = np.empty(p.out_shape, "float32")
    given = {"BLOCK_OW": 2, "ORDER": "ox_outer"}  # partial: the rest from the default
    assert separable_conv2d(x, wd, wp, b, config=given, out=out, **kwargs) is out
    assert_close(out, ref, "float32")
    assert_close(separable_conv2d(x, wd, wp, b, backend="numpy", **kwargs), ref, "float32")
    assert_close(atrous.call_op(OP, x, wd, wp, bias=b, **kwargs), ref, "float32")
    with pytest.raises(ValueError, match="BLOCK_OW"):
        separable_conv2d(x, wd, wp, b, config={"BLOCK_OW": 3}, **kwargs)
    with pytest.raises(ValueError, match="pw_weight"):
        separable_conv2d(x, wd, wp[:, :3], b, **kwargs)
    # The validation gate the tuner uses, on the prepared (packed) inputs too.
    assert check(p, "numba", {**registered.default_config(p, "numba"), "threads": 1}).ok


def _atrous(env: dict[str, str], *args: str) -> str:
    """Run the real ``atrous`` command in a subprocess; its output, asserting success."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "atrous.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"atrous {' '.join(args)} exited {done.returncode}:\n{output}"
    assert "PluginWarning" not in output and "skipping the op plugin" not in output, output
    return output


def test_installed_package_goes_through_verify_tune_bench_report(example, tmp_path):
    """The example installed as a package: the CLI finds it by its entry point alone."""
    import csv
    import json
    import os

    from atrous.autotune.database import Database
    from atrous.autotune.hardware import fingerprint
    from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings
    from atrous.report.store import ceilings_path, write_ceilings

    site = _installed_site(tmp_path)
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(site)]),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2",
           "COLUMNS": "200"}
    db = tmp_path / "tuning.json"

    out = _atrous(env, "verify", "--op", OP, "--dtype", "float32")
    rows = [line for line in out.splitlines() if OP in line]
    cases = example.op.OP.cases("NHWC", "float32")
    checks = len(example.op.OP.space(cases[0], "numba")) * len(cases)  # every config x case
    assert len(rows) == 2 and all(" ok " in r and f" {checks} " in r for r in rows), out

    out = _atrous(env, "tune", "--op", OP, "--suite", "smoke", "--batch", "1", "--budget", "3",
                  "--no-torch", "--db", str(db))
    records = [r for _, r in Database(str(db)).read().records()]
    assert {r.op for r in records} == {OP} and {r.backend for r in records} == {"numba"}
    assert len({r.key for r in records}) == 3, out  # two ASPP rates and the decoder

    # Stored ceilings (measuring them takes most of a minute): rows get roofline fractions.
    fp = fingerprint("numba", "cpu")
    write_ceilings(ceilings_path(db), Ceilings(fp["id"], "cpu", "2026-01-01T00:00:00+00:00", 0.0, [
        Ceiling("read", BANDWIDTH, 50.0, None, "test"),
        Ceiling("fma", COMPUTE, 100.0, "float32", "test")], fp))
    table = tmp_path / "rows.csv"
    case = "decoder sepconv 56->8 5x5 b1"  # one case: each library is timed in its own process
    _atrous(env, "bench", "--op", OP, "--suite", "smoke", "--batch", "1", "--layout", "NCHW",
            "--case", case, "--db", str(db), "--csv", str(table), "--no-openvino")
    rows = list(csv.DictReader(table.open()))
    assert {r["op"] for r in rows} == {OP} and {r["name"] for r in rows} == {case}
    timed = {r["implementation"] for r in rows if r["median_ms"]}
    # The baselines run where their libraries are installed (the dev extras have them).
    have = importlib.util.find_spec
    expected = {"atrous-numba", "numpy-reference"}
    expected |= {"torch"} if have("torch") else set()
    expected |= {"onnxruntime"} if have("onnx") and have("onnxruntime") else set()
    assert expected <= timed, rows
    tuned = [r for r in rows if r["implementation"] == "atrous-numba"]
    assert all(r["config_source"] == "exact" for r in tuned), tuned

    report = tmp_path / "report"
    _atrous(env, "report", "--db", str(db), "--out", str(report))
    page = (report / "index.html").read_text()
    assert OP in page and case.replace(">", "&gt;") in page
    assert OP in (report / "report.md").read_text()
    assert json.loads(json.dumps(records[0].config))  # stored configs are plain data


def test_readme_snippet_op_registered_by_a_call_passes_verify(capsys):
    """examples/bn_relu.py, the README's "write your own kernel": registered by a function
    call, then the real CLI (in this process) verifies every config of it."""
    from atrous import register_op, unregister_op
    from atrous.autotune.validate import check
    from atrous.cli import main

    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        snippet = importlib.import_module("bn_relu")
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    register_op(snippet.OP)
    try:
        assert main(["verify", "--op", "bn_relu", "--layout", "NCHW"]) == 0
        out = capsys.readouterr().out
        assert out.count("bn_relu") == 2 and out.count(" ok ") == 2, out  # float32, float64
        p = snippet.BnReluProblem(1, 3, 4, "float64")
        assert check(p, "numba", {"ROWS": 4}).ok
        x, out = np.full((1, 3, 4), np.nan), np.zeros((1, 3, 4))
        snippet.launch(p, {"ROWS": 1}, out, x, np.ones(3), np.ones(3))
        assert np.isnan(out).all()  # NaN propagates as in the reference, not ReLU'd to 0
    finally:
        unregister_op("bn_relu")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_triton_backend_through_the_gate(registered, example, dtype):
    """The Triton backend as atrous runs it (NaN-poisoned output, the tolerance table): on a
    GPU, or under TRITON_INTERPRET=1 (set by conftest) on CPU tensors."""
    from atrous.autotune.validate import check

    p = _problem(example, CASES[2], "NHWC", dtype)  # dilation larger than the image
    device = "cuda" if CUDA else "cpu"
    small = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2}
    for config in (registered.default_config(p, "triton"), small):
        result = check(p, "triton", config, device=device)
        assert result.ok, str(result)
