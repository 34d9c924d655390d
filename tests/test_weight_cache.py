"""The weight cache behind plain calls: a changed weight is never served stale, freed
arrays leave, the byte budget holds, threads get their own results, and the first call with
new weights does not pay for Winograd filters."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import atrous
from atrous import plain_conv, weight_cache
from atrous.autotune import lookup
from atrous.core.tolerance import compare
from atrous.kernels.conv import gemm_cpu, weights_cpu, winograd_cpu
from atrous.kernels.conv.reference import reference
from atrous.kernels.conv.spec import make_problem

torch = pytest.importorskip("torch")

OPTIONS = {"padding": "same", "dilation": 2}


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    """No tuning file (heuristic defaults), generated kernels in a temporary folder, an
    empty cache with the default budget before and after."""
    monkeypatch.setattr(lookup._settings, "enabled", False)
    monkeypatch.setenv("ATROUS_KERNEL_CACHE", str(tmp_path_factory.getbasetemp() / "kernels"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))
    atrous.clear_weight_cache()
    yield
    atrous.set_weight_cache_limit(weight_cache.DEFAULT_LIMIT)
    atrous.clear_weight_cache()


def _hits() -> tuple[int, int]:
    info = atrous.weight_cache_info()
    return info["hits"], info["misses"]


def _since(before: tuple[int, int]) -> tuple[int, int]:
    """(hits, misses) since ``before`` (the counters run for the whole process)."""
    now = _hits()
    return now[0] - before[0], now[1] - before[1]


def _arrays(seed: int, layout: str = "NCHW", cin: int = 6, cout: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, 9, 10)).astype(np.float32)
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return xl, w, b


def _check(x, w, b, layout: str, config=None, out=None) -> None:
    """One plain call into a NaN-poisoned ``out``, against the float64 reference."""
    xh, wh, bh = (a.numpy() if isinstance(a, torch.Tensor) else a for a in (x, w, b))
    p = make_problem(xh.shape, wh.shape, bh.shape, "float32", layout=layout, **OPTIONS)
    ref = reference(p, xh.astype(np.float64), wh.astype(np.float64), bh.astype(np.float64))
    if out is None:
        out = np.full(p.out_shape, np.nan, np.float32)
        out = torch.from_numpy(out) if isinstance(x, torch.Tensor) else out
    got = atrous.dilated_conv2d(x, w, b, layout=layout, config=config, out=out, **OPTIONS)
    assert got is out
    result = compare(got.numpy() if isinstance(got, torch.Tensor) else got, ref, "float32")
    assert result.ok, result


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("variant", [None, "winograd", "gemm"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_weight_changed_in_place_gives_the_new_result(kind, variant, layout):
    x, w, b = _arrays(1, layout)
    if kind == "torch":
        x, w, b = (torch.from_numpy(a) for a in (x, w, b))
    config = None if variant is None else {"variant": variant}
    before = _hits()
    for step in range(4):  # new, hit, changed (a miss), hit (Winograd filters from call 2)
        _check(x, w, b, layout, config)
        if step == 1:
            w[1:3] *= -0.5  # in place: the same object, new values (torch: a new version)
    assert _since(before) == (2, 2) and atrous.weight_cache_info()["entries"] == 1


def test_inference_tensors_are_checked_by_content():
    x, w, b = _arrays(2)
    before = _hits()
    with torch.inference_mode():  # no version counter: checked like NumPy arrays
        tw = torch.from_numpy(w).clone()
        tx, tb = torch.from_numpy(x), torch.from_numpy(b)
        _check(tx, tw, tb, "NCHW", {"variant": "winograd"})
        tw[0, 0, 1, 1] += 3.0
        _check(tx, tw, tb, "NCHW", {"variant": "winograd"})
        _check(tx, tw, tb, "NCHW", {"variant": "winograd"})
    assert _since(before) == (1, 2)


def test_equal_content_in_a_new_array_and_a_different_array():
    x, w, b = _arrays(3)
    before = _hits()
    _check(x, w, b, "NCHW")
    _check(x, w.copy(), b, "NCHW")  # a new object: its own entry, the same values
    _check(x, np.ascontiguousarray(w[::-1]), b, "NCHW")  # other values, same shape
    noncontiguous = np.asfortranarray(w)
    _check(x, noncontiguous, b, "NCHW")
    noncontiguous[0] += 1.0
    _check(x, noncontiguous, b, "NCHW")
    assert _since(before) == (0, 5)


def test_freed_weights_leave_the_cache_and_are_not_kept_alive():
    x, _, b = _arrays(4)
    refs = []
    for seed in range(6):  # freed arrays' addresses (ids) are often reused
        w = _arrays(10 + seed)[1]
        _check(x, w, b, "NCHW")
        _check(x, w, b, "NCHW")
        refs.append(weakref.ref(w))
        del w
        assert atrous.weight_cache_info()["entries"] == 0
    gc.collect()
    assert all(r() is None for r in refs)
    tw = torch.from_numpy(_arrays(20)[1]).clone()
    _check(torch.from_numpy(x), tw, torch.from_numpy(b), "NCHW")
    assert atrous.weight_cache_info()["entries"] == 1
    ref = weakref.ref(tw)
    del tw
    assert ref() is None and atrous.weight_cache_info()["entries"] == 0


def test_the_byte_budget_holds_and_evicts_least_recently_used():
    x, _, b = _arrays(5)
    weights = [_arrays(30 + i)[1] for i in range(4)]
    _check(x, weights[0], b, "NCHW")
    per_entry = atrous.weight_cache_info()["bytes"]  # packing + private copy
    assert per_entry >= 2 * weights[0].nbytes
    atrous.set_weight_cache_limit(2 * per_entry)
    for w in weights[1:]:
        _check(x, weights[0], b, "NCHW", {"variant": "gemm"})  # keep the first one recent
        _check(x, w, b, "NCHW", {"variant": "gemm"})
        info = atrous.weight_cache_info()
        assert info["bytes"] <= info["limit"] and info["entries"] == 2
    before = _hits()
    _check(x, weights[0], b, "NCHW", {"variant": "gemm"})
    assert _since(before) == (1, 0)
    atrous.set_weight_cache_limit(per_entry // 2)  # smaller than one entry: nothing kept
    assert atrous.weight_cache_info()["entries"] == 0
    _check(x, weights[1], b, "NCHW")
    assert atrous.weight_cache_info()["bytes"] == 0
    atrous.set_weight_cache_limit(0)
    _check(x, weights[1], b, "NCHW")
    assert atrous.weight_cache_info()["entries"] == 0
    for bad in (-1, 1.5, True, "1GB"):
        with pytest.raises(ValueError, match="limit"):
            atrous.set_weight_cache_limit(bad)


def test_winograd_filters_count_against_the_budget():
    x, w, b = _arrays(6)
    _check(x, w, b, "NCHW", {"variant": "gemm"})
    packed_only = atrous.weight_cache_info()["bytes"]
    _check(x, w, b, "NCHW", {"variant": "winograd"})
    assert atrous.weight_cache_info()["bytes"] > packed_only
    atrous.set_weight_cache_limit(packed_only)  # the filters no longer fit: evicted
    assert atrous.weight_cache_info()["entries"] == 0


def test_two_threads_with_different_weights_get_their_own_results():
    x, _, b = _arrays(7, cin=8, cout=6)
    jobs = [(_arrays(40 + i, cin=8, cout=6)[1], layout)
            for i, layout in enumerate(["NCHW", "NHWC", "NCHW"])]
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def work(w: np.ndarray, layout: str) -> None:
        xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        start.wait()
        try:
            for step in range(6):
                _check(xl, w, b, layout)
                if step == 2:
                    w[0] += 1.0
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert atrous.weight_cache_info()["entries"] == len(jobs)


def test_clear_empties_the_cache():
    x, w, b = _arrays(8)
    _check(x, w, b, "NCHW")
    assert atrous.weight_cache_info()["entries"] == 1
    atrous.clear_weight_cache()
    info = atrous.weight_cache_info()
    assert (info["entries"], info["bytes"]) == (0, 0)
    _check(x, w, b, "NCHW")
    assert atrous.weight_cache_info()["misses"] == info["misses"] + 1


def test_first_call_runs_gemm_and_the_second_makes_winograd_filters(monkeypatch):
    """A tuned "winograd" config whose transform does not pay at once (this small map):
    the first call with new weights runs "gemm", the next ones Winograd with filters made
    once; a config naming the variant, or a transform that pays, runs Winograd at once."""
    ran: list[str] = []
    for module, name in ((gemm_cpu, "gemm"), (winograd_cpu, "winograd")):
        real = module.run
        monkeypatch.setattr(module, "run", lambda *a, _r=real, _n=name: ran.append(_n) or _r(*a))
    made: list[int] = []
    real_mixed = winograd_cpu.mixed  # the filter transform itself
    monkeypatch.setattr(winograd_cpu, "mixed",
                        lambda *a, **k: made.append(1) or real_mixed(*a, **k))
    x, w, b = _arrays(9)
    ex = atrous.explain("dilated_conv2d", x, w, b, **OPTIONS)
    assert ex.config["variant"] == "winograd"  # the heuristic default here
    for _ in range(3):
        _check(x, w, b, "NCHW")
    assert ran == ["gemm", "winograd", "winograd"]
    assert len(made) == 1  # the second call makes them; the third finds them ready
    ran.clear()
    _check(x, w.copy(), b, "NCHW", {"variant": "winograd"})
    assert ran == ["winograd"]
    ran.clear()
    monkeypatch.setattr(weights_cpu, "TRANSFORM_FIXED", 0.0)  # a transform that pays at once
    monkeypatch.setattr(weights_cpu, "TRANSFORM_PER_FILTER", 0.0)
    _check(x, w.copy(), b, "NCHW")
    assert ran == ["winograd"]


def test_a_tuned_winograd_schedule_runs_as_gemm_s_own_config_on_a_first_call(monkeypatch):
    """A tuned "winograd" config with non-default Winograd keys (another tile, more tasks):
    a first call that runs "gemm" instead runs gemm's own valid config, and the next calls
    the tuned schedule with its own filters."""
    from atrous import dispatch
    from atrous.autotune.lookup import Choice
    from atrous.kernels.conv.spec import complete_config

    x, w, b = _arrays(9)
    problem, _, _ = atrous.api.prepare_call("dilated_conv2d", {"x": x, "weight": w, "bias": b},
                                            OPTIONS)
    space = atrous.kernels.conv.spec.space(problem, "numba")
    tuned = space.validate(complete_config(problem, "numba", {
        "variant": "winograd", "WINO_TILE": 2, "WINO_PARTS": 1, "WINO_ORDER": "largest"}))
    real_choose = dispatch.choose

    def choose(p, backend, config, device="cpu"):
        if config is None and p.op == "dilated_conv2d":
            return Choice(dict(tuned), "exact", "a tuned record")
        return real_choose(p, backend, config, device)

    monkeypatch.setattr(dispatch, "choose", choose)
    ran: list[str] = []
    for module, name in ((gemm_cpu, "gemm"), (winograd_cpu, "winograd")):
        real = module.run
        monkeypatch.setattr(module, "run", lambda *a, _r=real, _n=name: ran.append(_n) or _r(*a))
    _, first = plain_conv.for_plain_call(problem, w.copy(), None)
    assert first["variant"] == "gemm" and space.validate(first) == first
    for _ in range(2):
        _check(x, w, b, "NCHW")
    assert ran == ["gemm", "winograd"]


@pytest.mark.parametrize("size,rates,layout,pays", [
    (33, (6, 12, 18), "NCHW", (True, True, True)),
    (33, (6, 12, 18), "NHWC", (True, False, True)),  # 64 filter pairs at rate 12: gemm first
    (65, (12, 24, 36), "NHWC", (True, True, True)),
])
def test_the_first_call_policy_at_aspp_shapes(size, rates, layout, pays):
    for rate, want in zip(rates, pays, strict=True):
        p = make_problem((1, size, size, 2048), (256, 2048, 3, 3), None, "float32",
                         padding="same", dilation=rate, layout="NHWC")
        if layout == "NCHW":
            p = make_problem((1, 2048, size, size), (256, 2048, 3, 3), None, "float32",
                             padding="same", dilation=rate)
        assert weights_cpu.winograd_pays_at_once(p) is want
    p4 = make_problem((4, 33, 33, 2048), (256, 2048, 3, 3), None, "float32",
                      padding="same", dilation=12, layout="NHWC")
    assert weights_cpu.winograd_pays_at_once(p4)  # four images share the transform


def test_aspp_state_dicts_are_folded_once_until_they_change():
    from test_torch_reference import ReferenceASPP, randomized

    module = randomized(ReferenceASPP(8, (1, 2), 4)).float()
    params = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    x = np.random.default_rng(11).standard_normal((1, 8, 7, 6)).astype(np.float32)
    before = _hits()
    first = atrous.aspp(x, params, rates=(1, 2))
    np.testing.assert_array_equal(atrous.aspp(x, params, rates=(1, 2)), first)
    assert _since(before) == (1, 1)
    params["convs.1.0.weight"][0] *= 2.0
    want = atrous.aspp(x, atrous.prepare_aspp(params, (1, 2)))
    np.testing.assert_array_equal(atrous.aspp(x, params, rates=(1, 2)), want)
    assert not np.array_equal(want, first)
