"""The `atrous` command: info, verify (passing and failing) and bench on the smoke suite."""

from __future__ import annotations

import csv

import numpy as np

from atrous.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    assert "numba" in capsys.readouterr().out


def test_verify_passes(capsys):
    code = main(["verify", "--op", "global_avg_pool", "--layout", "NCHW", "--dtype", "float64"])
    assert code == 0
    assert "ok" in capsys.readouterr().out


def test_verify_fails_on_a_wrong_kernel(monkeypatch, capsys):
    from atrous.kernels.gap import numba_cpu

    real = numba_cpu.launch

    def off_by_one(problem, config, out, x):
        real(problem, config, out, x)
        out[...] += 1e-3

    monkeypatch.setattr(numba_cpu, "launch", off_by_one)
    code = main(["verify", "--op", "global_avg_pool", "--layout", "NHWC", "--dtype", "float64"])
    assert code == 1
    assert "FAILED" in capsys.readouterr().out


def test_bench_smoke_suite_writes_rows(tmp_path, monkeypatch):
    from atrous.jobs import ceilings

    # No ceilings measured (seconds of work): rows then leave their fractions empty.
    monkeypatch.setattr(ceilings, "measure", lambda fp, device="cpu", **kw: ceilings.Ceilings(
        fp["id"], device, "now", 0.0))
    path = tmp_path / "rows.csv"
    assert main(["bench", "--suite", "smoke", "--batch", "1", "--layout", "NHWC",
                 "--db", str(tmp_path / "tuning.json"), "--csv", str(path)]) == 0
    rows = list(csv.DictReader(path.open()))
    impls = {r["implementation"] for r in rows}
    assert {"atrous-numba", "numpy-reference"} <= impls
    assert len({r["name"] for r in rows}) == 6  # GAP, 1x1, two rates, two upsamples
    timed = [r for r in rows if r["median_ms"]]
    assert all(np.isfinite(float(r["median_ms"])) and float(r["median_ms"]) > 0 for r in timed)
    assert all(r["note"] for r in rows if not r["median_ms"])  # ONNX Runtime: NCHW only
    # Each library in a process of its own; every row names the command that repeats it.
    assert {r["isolation"] for r in timed} == {"process"}
    assert all(r["command"].startswith(f"atrous bench --case '{r['name']}' --layout NHWC"
                                       " --suite smoke --db ") for r in rows)
