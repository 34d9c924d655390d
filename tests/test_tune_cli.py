"""`atrous tune` end to end on the smoke suite, then a fresh process running the tuned
config; `atrous db`; shape files. Nothing touches the real user cache: XDG_CACHE_HOME
points into a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atrous.autotune import lookup
from atrous.autotune.database import Database, read_file
from atrous.autotune.hardware import cpu_fingerprint
from atrous.cli import main
from atrous.jobs.shapes import load_shapes

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The user cache directory, redirected; the lookup reads the default path again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    saved = (lookup._settings.path, lookup._settings.enabled)
    lookup.use_tuning(None)
    yield tmp_path / "cache" / "atrous" / "tuning.json"
    lookup._settings.path, lookup._settings.enabled = saved


def test_tune_smoke_suite_then_a_fresh_process_runs_the_tuned_config(cache, capsys):
    tune = ["tune", "--suite", "smoke", "--batch", "1", "--layout", "NHWC", "--op",
            "dilated_conv2d", "--budget", "2", "--strategy", "exhaustive", "--no-torch"]
    code = main(tune)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "atrous tune (numba)" in out and "tuned in" in out
    records = {r.key: r for _, r in read_file(cache).records()}
    assert len(records) == 3  # the 1x1 and the two dilated convs
    conv = next(r for r in records.values() if ":d2x2:" in r.key)
    assert conv.strategy == "exhaustive" and conv.trials == 2 and conv.validation_error < 2e-5

    script = textwrap.dedent("""
        import json
        import numpy as np
        import atrous
        from atrous.autotune.validate import random_inputs
        from atrous.kernels.conv.spec import make_problem
        from atrous.kernels.conv.reference import reference
        p = make_problem((1, 5, 5, 16), (8, 16, 3, 3), None, "float32", padding="same",
                         dilation=2, layout="NHWC")
        inp = random_inputs(p, 1)
        x, w = inp["x"].astype("float32"), inp["weight"].astype("float32")
        e = atrous.explain("dilated_conv2d", x, w, padding="same", dilation=2, layout="NHWC")
        y = atrous.dilated_conv2d(x, w, padding="same", dilation=2, layout="NHWC")
        ref = reference(p, x.astype(float), w.astype(float), None)
        err = float(np.abs(y - ref).max() / np.abs(ref).max())
        print(json.dumps({"source": e.source, "config": e.config, "key": e.key, "err": err}))
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["source"] == "exact" and seen["key"] == conv.key
    assert seen["config"] == conv.config and seen["err"] < 2e-5

    # a second run finds everything tuned and re-tunes nothing
    assert main(tune) == 0
    assert capsys.readouterr().out.count("cached") >= 3


def test_tune_a_shapes_file(tmp_path, capsys):
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps([{"op": "global_avg_pool", "x": [1, 6, 7, 7],
                                   "name": "tiny gap"}]))
    db = tmp_path / "t.json"
    assert main(["tune", "--shapes", str(shapes), "--db", str(db), "--budget", "2",
                 "--no-torch"]) == 0
    assert "tiny gap" in capsys.readouterr().out
    assert [r.op for _, r in read_file(db).records()] == ["global_avg_pool"]


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "soon"], "cannot read 'soon'"),
    (["--device", "cuda", "--backend", "numba"], "runs on the CPU"),
    (["--dtype", "float16"], "does not support float16"),
    (["--shapes", "/nonexistent/shapes.json"], "No such file"),
])
def test_tune_rejects_bad_arguments(args, message, tmp_path, capsys):
    assert main(["tune", "--db", str(tmp_path / "t.json"), *args]) == 2
    assert message in capsys.readouterr().out.replace("\n", " ")


def test_shapes_file_errors(tmp_path):
    def load(data):
        path = tmp_path / "s.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return load_shapes(path, ["NCHW"], ["float32"])

    entries = load({"shapes": [
        {"op": "dilated_conv2d", "x": [1, 8, 9, 9], "weight": [4, 8, 3, 3], "dilation": 2,
         "padding": "same"},
        {"op": "upsample_bilinear", "x": [1, 3, 4, 4], "size": [9, 9], "layout": "NHWC"}]})
    assert [e.problem.layout for e in entries] == ["NCHW", "NHWC"]
    assert entries[0].problem.dilation == (2, 2) and entries[1].problem.oh == 9
    with pytest.raises(ValueError, match="not valid JSON"):
        load("[{")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['dilation'\]"):
        load([{"op": "global_avg_pool", "x": [1, 2, 3, 4], "dilation": 2}])
    with pytest.raises(ValueError, match="list of integers"):
        load([{"op": "global_avg_pool", "x": "big"}])
    with pytest.raises(ValueError, match="op must be one of"):
        load([{"op": "softmax", "x": [1]}])
    with pytest.raises(ValueError, match=r"s.json\[0\] \(dilated_conv2d\).*groups"):
        load([{"op": "dilated_conv2d", "x": [1, 8, 9, 9], "weight": [4, 8, 3, 3],
               "groups": 3}])


def test_db_commands(tmp_path, capsys):
    from test_database import FP, record

    db = Database(tmp_path / "tuning.json")
    db.put(FP, record())
    db.put(cpu_fingerprint(), record())
    base = ["db", "--db", str(db.path)]
    assert main([*base, "show"]) == 0
    shown = capsys.readouterr().out
    assert "2 machines, 2 records" in shown and "stale" in shown  # a made-up source hash
    out = tmp_path / "export.json"
    assert main([*base, "export", str(out), "--machine", FP["id"]]) == 0
    assert set(read_file(out).machines) == {FP["id"]}
    other = tmp_path / "other.json"
    assert main(["db", "--db", str(other), "import", str(out)]) == 0
    assert "imported 1 records" in capsys.readouterr().out
    merged = tmp_path / "merged.json"
    assert main([*base, "merge", str(merged), str(db.path), str(other)]) == 0
    assert len(read_file(merged).records()) == 2
    assert main([*base, "clear", "--machine", FP["id"]]) == 0
    assert len(db.read().records()) == 1
    assert main([*base, "clear"]) == 0 and not db.path.exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main([*base, "import", str(bad)]) == 2
    assert "not an atrous tuning file" in capsys.readouterr().out
