"""Call-time lookup: every fallback level, stale and invalid records, reloading, explain,
and the op calls running what the database says."""

from __future__ import annotations

import time

import numpy as np
import pytest

import atrous
from atrous.autotune import lookup
from atrous.autotune.database import Database
from atrous.autotune.hardware import cpu_fingerprint
from atrous.autotune.lookup import find, problem_features, source_hash
from atrous.autotune.records import Record
from atrous.kernels.conv.spec import VARIANT_KEYS
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap.spec import make_problem as gap_problem


def conv(h: int, dilation: int = 2, dtype: str = "float32", layout: str = "NCHW"):
    return conv_problem((1, 16, h, h) if layout == "NCHW" else (1, h, h, 16), (8, 16, 3, 3),
                        None, dtype, padding="same", dilation=dilation, layout=layout)


def tuned(problem, config, *, source=None, tuned_at="2026-01-01T00:00:00+00:00") -> Record:
    return Record(
        op=problem.op, backend="numba", key=problem.key, dtype=problem.dtype,
        layout=problem.layout, features=problem_features(problem), config=config,
        median_s=1e-3, p20_s=1e-3, p80_s=1e-3, default_config={}, default_median_s=2e-3,
        runner_up_gap=None, validation_error=0.0, strategy="exhaustive", seed=0, trials=1,
        failed=0, pruned=0, policy="cpu-warm-median-v1",
        source_hash=source or source_hash(problem.op, "numba"), tuned_at=tuned_at,
        atrous_version="test")


# full configs: the other variants' keys at their defaults
FIXED = {k: v for keys in VARIANT_KEYS.values() for k, v in keys.items()}
CFG_A = {**FIXED, "variant": "tile", "BLOCK_CO": 5, "BLOCK_OW": 3, "threads": 1}
CFG_B = {**FIXED, "variant": "tile", "BLOCK_CO": 5, "BLOCK_OW": 4, "threads": 1}


@pytest.fixture
def db(tmp_path):
    """A fresh tuning file in use for the test; the previous setting restored after."""
    saved = (lookup._settings.path, lookup._settings.enabled)
    database = Database(tmp_path / "tuning.json")
    atrous.use_tuning(database.path)
    yield database
    lookup._settings.path, lookup._settings.enabled = saved


def here():
    return cpu_fingerprint()


def kin():
    """Another machine of this machine's family."""
    return {**here(), "brand": "a sibling", "id": "0123456789ab"}


def test_no_file_means_the_heuristic_default(db):
    p = conv(9)
    choice = find(p, "numba")
    assert choice.source == "default" and "no tuning file" in choice.detail
    assert choice.config == atrous.core.registry.op(p.op).default_config(p, "numba")


def test_tuning_off(db):
    db.put(here(), tuned(conv(9), CFG_A))
    atrous.use_tuning(False)
    assert find(conv(9), "numba").source == "default"
    assert atrous.explain("dilated_conv2d", *_arrays(conv(9)), padding="same",
                          dilation=2).tuning_file is None


def test_exact(db):
    db.put(here(), tuned(conv(9), CFG_A))
    choice = find(conv(9), "numba")
    assert (choice.source, choice.config, choice.machine) == ("exact", CFG_A, here()["id"])


def test_nearest_tuned_shape_of_the_same_op_dtype_and_layout(db):
    db.put(here(), tuned(conv(9), CFG_A))
    db.put(here(), tuned(conv(40), CFG_B))
    assert find(conv(11), "numba").config == CFG_A
    near = find(conv(33), "numba")
    assert (near.source, near.config, near.key) == ("nearest", CFG_B, conv(40).key)
    assert near.distance > 0
    # another dtype or layout is another bucket
    assert find(conv(11, dtype="float64"), "numba").source == "default"
    assert find(conv(11, layout="NHWC"), "numba").source == "default"


def test_a_record_whose_config_is_invalid_here_is_skipped(db):
    db.put(here(), tuned(conv(9), {"BLOCK_CO": 5, "BLOCK_OW": 3, "threads": 64}))
    db.put(here(), tuned(conv(40), CFG_B))
    choice = find(conv(9), "numba")
    assert (choice.source, choice.config) == ("nearest", CFG_B)


def test_a_stale_record_is_ignored(db):
    db.put(here(), tuned(conv(9), CFG_A, source="an-old-kernel"))
    assert find(conv(9), "numba").source == "default"


def test_same_family_then_default(db):
    db.put(kin(), tuned(conv(40), CFG_B))
    choice = find(conv(9), "numba")
    assert (choice.source, choice.config, choice.machine) == ("family", CFG_B, kin()["id"])
    db.put(kin(), tuned(conv(9), CFG_A))
    assert find(conv(9), "numba").config == CFG_A  # the family's exact key first
    db.clear(kin()["id"])
    db.put({**kin(), "family": "x86_64:other:avx2"}, tuned(conv(9), CFG_A))
    assert find(conv(9), "numba").source == "default"


def test_this_machine_comes_before_the_family(db):
    db.put(kin(), tuned(conv(9), CFG_A))
    db.put(here(), tuned(conv(40), CFG_B))
    assert find(conv(9), "numba").source == "nearest"


def test_a_rewritten_file_is_reloaded(db):
    db.put(here(), tuned(conv(9), CFG_A))
    assert find(conv(9), "numba").config == CFG_A
    db.put(here(), tuned(conv(9), CFG_B, tuned_at="2026-02-01T00:00:00+00:00"))
    assert find(conv(9), "numba").config == CFG_B


def test_lookup_is_cheap(db):
    db.put(here(), tuned(conv(9), CFG_A))
    p = conv(9)
    find(p, "numba")
    start = time.perf_counter()
    for _ in range(2000):
        find(p, "numba")
    assert (time.perf_counter() - start) / 2000 < 5e-4  # a stat and a dict lookup


def _arrays(p):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(p.in_shape).astype(p.dtype),
            rng.standard_normal(p.weight_shape).astype(p.dtype))


def test_explain_and_the_call_use_the_tuned_config(db, monkeypatch):
    p = conv(9)
    db.put(here(), tuned(p, CFG_A))
    x, w = _arrays(p)
    e = atrous.explain(atrous.dilated_conv2d, x, w, padding="same", dilation=2)
    assert (e.source, e.config, e.backend, e.key) == ("exact", CFG_A, "numba", p.key)
    assert "exact" in str(e) and str(db.path) in str(e)

    from atrous.kernels.conv import numba_cpu

    seen = []
    real = numba_cpu.launch
    monkeypatch.setattr(numba_cpu, "launch",
                        lambda prob, cfg, *a: (seen.append(cfg), real(prob, cfg, *a)))
    atrous.dilated_conv2d(x, w, padding="same", dilation=2)
    assert seen == [CFG_A]
    given = atrous.explain("dilated_conv2d", x, w, padding="same", dilation=2,
                           config={"threads": 2})
    assert given.source == "given" and given.config["threads"] == 2


def test_explain_rejects_unknown_ops():
    with pytest.raises(ValueError, match="unknown op"):
        atrous.explain("softmax", np.zeros((1, 2, 3, 4), np.float32))


def test_use_tuning_rejects_nonsense():
    with pytest.raises(TypeError):
        atrous.use_tuning(42)


def test_features_flatten_pairs_and_drop_dtype_and_layout():
    f = problem_features(gap_problem((2, 3, 4, 5), "float32"))
    assert f == {"n": 2, "c": 3, "h": 4, "w": 5, "keepdims": False}
    g = problem_features(conv(9))
    assert g["dilation_0"] == 2 and "dtype" not in g and g["activation"] is None
