"""Calls fail cleanly instead of computing garbage: ``out=`` never aliases an input and is
a writable array, every size and parameter is checked where it enters (API, Problems,
``--shapes`` files), inputs that need grad are refused, and the suite is hermetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import KERNEL_CACHE, SESSION_CACHE
from support import assert_close, seeded

import atrous
from atrous.autotune.database import default_path
from atrous.cli import main
from atrous.jobs.shapes import load_shapes
from atrous.kernels import codegen
from atrous.kernels.conv.spec import ConvProblem
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap.spec import GapProblem
from atrous.kernels.gap.spec import make_problem as gap_problem
from atrous.kernels.upsample.spec import UpsampleProblem
from atrous.kernels.upsample.spec import make_problem as upsample_problem

X_SHAPE, W_SHAPE = (1, 4, 6, 6), (4, 4, 3, 3)


def _call(op, x, w, out, backend="numba"):
    """One op on x (and w), writing into ``out``; outputs are x-shaped for conv."""
    if op == "dilated_conv2d":
        return atrous.dilated_conv2d(x, w, padding=1, out=out, backend=backend)
    if op == "global_avg_pool":
        return atrous.global_avg_pool(x, out=out, backend=backend)
    return atrous.upsample_bilinear(x, (3, 3), out=out, backend=backend)


OUT_SHAPES = {"dilated_conv2d": X_SHAPE, "global_avg_pool": X_SHAPE[:2],
              "upsample_bilinear": (*X_SHAPE[:2], 3, 3)}
OPS = list(OUT_SHAPES)


# ---- out= ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_out_overlapping_an_input_is_refused_naming_both(op):
    """A buffer that shares memory with x (wholly or in part) or with the weight is a
    ValueError naming out and the input, and nothing is written."""
    size = int(np.prod(OUT_SHAPES[op]))
    buffer = seeded((4 * 144 + size,), 1).astype(np.float32)
    x = buffer[:144].reshape(X_SHAPE)
    w = buffer[144:288].reshape(W_SHAPE)
    before = buffer.copy()
    for start, name in [(0, "x"), (100, "x"), (150, "weight")]:
        if name == "weight" and op != "dilated_conv2d":
            continue
        out = buffer[start:start + size].reshape(OUT_SHAPES[op])
        with pytest.raises(ValueError, match=f"out overlaps the memory of {name}"):
            _call(op, x, w, out)
    np.testing.assert_array_equal(buffer, before)


@pytest.mark.parametrize("op", OPS)
def test_out_in_the_same_buffer_but_apart_from_the_inputs_is_used(op):
    """Sharing a buffer is fine when no byte is shared, even inside an input's bounds: x's
    two images are rows of a wider buffer and out fills the gap after the first."""
    holder = np.full((2, 144 + 288), np.nan, np.float32)
    x = holder[:, :144].reshape(2, *X_SHAPE[1:])
    x[...] = seeded(x.shape, 2)
    w = seeded(W_SHAPE, 3).astype(np.float32)
    shape = (2, *OUT_SHAPES[op][1:])
    out = holder[0, 144:144 + int(np.prod(shape))].reshape(shape)
    assert np.may_share_memory(out, x) and not np.shares_memory(out, x)
    expected = _call(op, x.copy(), w, None, backend="numpy")
    got = _call(op, x, w, out)
    assert got is out
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_torch_out_sharing_storage_or_memory_with_an_input_is_refused():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(seeded(X_SHAPE, 4).astype(np.float32))
    w = torch.from_numpy(seeded(W_SHAPE, 5).astype(np.float32))
    with pytest.raises(ValueError, match="out overlaps the memory of x"):
        atrous.dilated_conv2d(x, w, padding=1, out=x)
    flat = torch.from_numpy(seeded((144 + 100,), 6).astype(np.float32))
    with pytest.raises(ValueError, match="out overlaps the memory of x"):
        atrous.global_avg_pool(flat[:144].view(X_SHAPE), out=flat[140:144].view(1, 4))
    # two tensors over one NumPy buffer: different storages, the same memory
    base = seeded((288,), 7).astype(np.float32)
    xa, out = torch.from_numpy(base[:144]).view(X_SHAPE), torch.from_numpy(base[100:244])
    with pytest.raises(ValueError, match="out overlaps the memory of x"):
        atrous.dilated_conv2d(xa, w, padding=1, out=out.view(X_SHAPE))
    apart = torch.full((144,), float("nan")).view(X_SHAPE)
    flat[144:148] = float("nan")
    result = atrous.global_avg_pool(flat[:144].view(X_SHAPE), out=flat[144:148].view(1, 4))
    np.testing.assert_allclose(result.numpy(), flat[:144].view(X_SHAPE).mean((2, 3)).numpy(),
                               rtol=1e-5)
    assert atrous.dilated_conv2d(x, w, padding=1, out=apart) is apart


@pytest.mark.parametrize("op", OPS)
def test_read_only_or_non_array_out_is_a_type_error_naming_out(op):
    x = seeded(X_SHAPE, 8).astype(np.float32)
    w = seeded(W_SHAPE, 9).astype(np.float32)
    frozen = np.full(OUT_SHAPES[op], np.nan, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match=r"out must be a writable numpy\.ndarray"):
        _call(op, x, w, frozen)
    assert np.isnan(frozen).all()
    for bad in (np.full(OUT_SHAPES[op], np.nan).tolist(), "out", 3.0):
        with pytest.raises(TypeError, match=r"out must be a numpy\.ndarray.*got"):
            _call(op, x, w, bad)


def test_aspp_out_overlapping_x_is_refused():
    pytest.importorskip("torch")
    from test_torch_reference import ReferenceASPP, randomized

    module = randomized(ReferenceASPP(6, (2, 3), 6))  # out has x's shape: out=x is possible
    weights = atrous.prepare_aspp(module.state_dict(), (2, 3), dtype="float32")
    x = seeded((1, 6, 7, 5), 13).astype(np.float32)
    with pytest.raises(ValueError, match="out overlaps the memory of x"):
        atrous.aspp(x, weights, out=x)
    with pytest.raises(TypeError, match=r"out must be a numpy\.ndarray"):
        atrous.aspp(x, weights, out=x.tolist())
    out = np.full(x.shape, np.nan, np.float32)
    assert atrous.aspp(x, weights, out=out) is out and np.isfinite(out).all()


# ---- shapes and parameters -------------------------------------------------------------

BAD_SIZES = [-5, 0, 2.0, True, np.float32(3), 2**70]


@pytest.mark.parametrize("size", BAD_SIZES, ids=repr)
def test_every_op_rejects_a_bad_size_naming_the_argument(size):
    good = [1, 4, 6, 6]
    for position in range(4):
        shape = [*good[:position], size, *good[position + 1:]]
        for call, name in [
            (lambda s: gap_problem(s, "float32"), "x"),
            (lambda s: upsample_problem(s, "float32", 3), "x"),
            (lambda s: conv_problem(s, W_SHAPE, None, "float32"), "x"),
            (lambda s: conv_problem(X_SHAPE, s, None, "float32"), "weight"),
        ]:
            with pytest.raises(ValueError, match=f"^{name} "):
                call(tuple(shape))


def test_sizes_whose_product_cannot_be_indexed_are_refused():
    huge = (2**20, 2**20, 2**20, 1)  # each size fine, 2**60 elements together
    with pytest.raises(ValueError, match=r"x would have 1152921504606846976 elements"):
        gap_problem(huge, "float32")
    with pytest.raises(ValueError, match="output"):  # padding makes the output too big
        conv_problem((4, 4, 6, 6), (4, 4, 1, 1), None, "float32", padding=2**29)
    with pytest.raises(ValueError, match=r"size=.*gives an output of"):
        upsample_problem((8, 8, 6, 6), "float32", (2**29, 2**29))
    with pytest.raises(ValueError, match=r"scale_factor=.*gives an output of"):
        upsample_problem((8, 8, 6, 6), "float32", scale_factor=1e17)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"stride": True}, TypeError, "stride must be an int"),
    ({"stride": 1.0}, TypeError, "stride must be an int"),
    ({"stride": 10**30}, ValueError, "stride must be at most"),
    ({"stride": -1}, ValueError, "stride must be >= 1"),
    ({"dilation": (1, False)}, TypeError, "dilation must be an int"),
    ({"dilation": 10**30}, ValueError, "dilation must be at most"),
    ({"padding": 10**30}, ValueError, "padding must be at most"),
    ({"padding": -2}, ValueError, "padding must be >= 0"),
    ({"padding": 1.5}, TypeError, "padding must be an int"),
    ({"groups": True}, ValueError, "groups must be a positive int"),
    ({"groups": 2.0}, ValueError, "groups must be a positive int"),
    ({"groups": 10**30}, ValueError, "groups=1000000000000000000000000000000 must divide"),
    ({"groups": -4}, ValueError, "groups must be a positive int"),
])
def test_conv_parameters_are_checked(kwargs, exc, match):
    x = np.ones(X_SHAPE, np.float32)
    with pytest.raises(exc, match=match):
        atrous.dilated_conv2d(x, np.ones(W_SHAPE, np.float32), **kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"size": True}, TypeError, "size must be"),
    ({"size": 2.5}, TypeError, "size must be"),
    ({"size": -3}, ValueError, "size must be positive"),
    ({"size": 10**30}, ValueError, "size=.*gives an output"),
    ({"scale_factor": True}, TypeError, "scale_factor must be"),
    ({"scale_factor": 10**400}, ValueError, "scale_factor must be positive and finite"),
    ({"scale_factor": float("nan")}, ValueError, "scale_factor must be positive and finite"),
    ({"scale_factor": -1.0}, ValueError, "scale_factor must be positive"),
])
def test_upsample_parameters_are_checked(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        atrous.upsample_bilinear(np.ones(X_SHAPE, np.float32), **kwargs)


def test_problems_cannot_be_built_with_bad_fields():
    conv = dict(n=1, cin=4, h=6, w=6, cout=4, kh=3, kw=3, stride=(1, 1), padding=(1, 1, 1, 1),
                dilation=(1, 1), groups=1, has_bias=False, activation=None, dtype="float32",
                layout="NCHW")
    assert ConvProblem(**conv).out_shape == (1, 4, 6, 6)
    for field, value in [("h", -5), ("n", 0), ("cin", 4.0), ("kh", True), ("w", 2**70),
                         ("stride", (0, 1)), ("padding", (1, 1)), ("dilation", (1, 1.0)),
                         ("groups", 3), ("dtype", "int8"), ("layout", "HWCN"),
                         ("activation", "gelu"), ("kh", 9)]:
        with pytest.raises(ValueError, match="empty" if value == 9 else field):
            ConvProblem(**{**conv, field: value})
    gap = dict(n=1, c=4, h=6, w=6, dtype="float32", layout="NCHW", keepdims=False)
    assert GapProblem(**gap).out_shape == (1, 4)
    for field, value in [("c", -1), ("h", np.int64(6)), ("keepdims", 1)]:
        with pytest.raises(ValueError, match=f"GapProblem.{field}"):
            GapProblem(**{**gap, field: value})
    up = dict(n=1, c=4, h=6, w=6, oh=3, ow=3, mode="half_pixel", scale_h=None, scale_w=None,
              dtype="float32", layout="NCHW")
    assert UpsampleProblem(**up).out_shape == (1, 4, 3, 3)
    for field, value in [("oh", 0), ("ow", -3), ("mode", "cubic"), ("scale_h", -1.0)]:
        with pytest.raises(ValueError, match="UpsampleProblem"):
            UpsampleProblem(**{**up, field: value})


def test_a_shapes_file_with_bad_sizes_fails_with_one_line(tmp_path, capsys):
    path = tmp_path / "shapes.json"
    for shape in ([1, -5, 7, 7], [1, 0, 7, 7], [1, 2**70, 7, 7]):
        path.write_text(json.dumps([{"op": "global_avg_pool", "x": shape}]))
        with pytest.raises(ValueError, match=r"shapes.json\[0\].x must hold positive sizes"):
            load_shapes(path, ["NCHW"], ["float32"])
        assert main(["tune", "--shapes", str(path), "--db", str(tmp_path / "t.json")]) == 2
        out = capsys.readouterr().out
        assert "positive sizes" in out and "Traceback" not in out
    path.write_text(json.dumps([{"op": "dilated_conv2d", "x": [1, 4, 6, 6],
                                 "weight": [4, 4, 3, 3], "dilation": 10**30}]))
    with pytest.raises(ValueError, match=r"\(dilated_conv2d\): dilation must be at most"):
        load_shapes(path, ["NCHW"], ["float32"])
    for content in (b"\xff\xfe[", b"[" * 100_000, b"[" + b"9" * 5000 + b"]"):
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not valid JSON"):
            load_shapes(path, ["NCHW"], ["float32"])
    path.write_text(json.dumps([{"op": ["dilated_conv2d"], "x": [1]}]))
    with pytest.raises(ValueError, match="op must be one of"):
        load_shapes(path, ["NCHW"], ["float32"])


# ---- inference only --------------------------------------------------------------------

def test_inputs_that_need_grad_are_refused_by_every_op():
    """The README's promise: with autograd on, an input that requires grad is a
    RuntimeError naming it; under no_grad the same call runs."""
    torch = pytest.importorskip("torch")
    import atrous.torch as at

    x = torch.from_numpy(seeded(X_SHAPE, 10).astype(np.float32))
    w = torch.from_numpy(seeded(W_SHAPE, 11).astype(np.float32))
    b = torch.from_numpy(seeded((4,), 12).astype(np.float32))
    calls = {
        "global_avg_pool": lambda m, x, w, b: m.global_avg_pool(x),
        "dilated_conv2d": lambda m, x, w, b: m.dilated_conv2d(x, w, b, padding=1),
        "upsample_bilinear": lambda m, x, w, b: m.upsample_bilinear(x, (3, 3)),
    }
    for op, call in calls.items():
        wanting = {"x": (x.clone().requires_grad_(), w, b)}
        if op == "dilated_conv2d":
            wanting["weight"] = (x, w.clone().requires_grad_(), b)
            wanting["bias"] = (x, w, b.clone().requires_grad_())
        for name, args in wanting.items():
            for module, prefix in ((atrous, "atrous"), (at, "atrous.torch")):
                with pytest.raises(RuntimeError,
                                   match=rf"{prefix}\.{op} is inference-only.*{name} requires"):
                    call(module, *args)
                with torch.no_grad():  # (a conv's first call may run another variant)
                    expected = call(atrous, x, w, b).double().numpy()
                    assert_close(call(module, *args), expected, "float32")
    with torch.inference_mode():
        assert atrous.global_avg_pool(x.clone().requires_grad_()).shape == (1, 4)


# ---- hermetic tests --------------------------------------------------------------------

def test_the_suite_never_touches_the_users_caches():
    """conftest points the default tuning file at a fresh folder for this session and the
    kernel cache at the repository's ignored .pytest_cache, before atrous is imported."""
    real = Path.home() / ".cache" / "atrous"
    assert default_path().is_relative_to(SESSION_CACHE)
    assert codegen.cache_dir() == KERNEL_CACHE
    assert KERNEL_CACHE.is_relative_to(Path(__file__).resolve().parent.parent / ".pytest_cache")
    assert not default_path().is_relative_to(real) and not KERNEL_CACHE.is_relative_to(real)
    assert SESSION_CACHE.name.startswith("atrous-tests-")
