"""Machine ceilings: the CPU measurements on tiny sizes, the roofline arithmetic, storage
beside the tuning database (measured once, then read), and `atrous ceilings`."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from atrous.jobs import ceilings as ceil
from atrous.jobs.ceilings import ensure_ceilings
from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings
from atrous.report.store import (
    ReportDataWarning,
    ceilings_path,
    read_ceilings,
    write_ceilings,
)


def test_cpu_bandwidth_on_a_tiny_array():
    entries = ceil.cpu_bandwidth(1 << 20, repeats=2)
    assert [e.name for e in entries] == ["read", "copy", "write"]
    for e in entries:
        assert e.kind == BANDWIDTH and e.dtype is None and e.unit == "GB/s"
        assert math.isfinite(e.value) and e.value > 0
        assert "MiB" in e.method


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_loop_counts_its_flops(dtype):
    c = ceil.cpu_fma(dtype, iters=200, repeats=1, widths=(16,))
    assert c.kind == COMPUTE and c.dtype == dtype and c.value > 0
    # the kernel really computes the recurrence it is credited for
    kernel = ceil._fma_kernel(16)
    import numpy as np

    seed = np.full(16, 1.0, dtype=dtype)
    coef = np.array([0.5, 1.0], dtype=dtype)
    out = kernel(seed, coef, 3, 2)  # x -> x/2 + 1 three times from 1: 1.875
    assert np.allclose(out, 16 * 1.875)


def test_gemm_on_a_tiny_matrix():
    c = ceil.cpu_gemm(32, repeats=1)
    assert c.name == "gemm" and c.dtype == "float32" and c.value > 0


def _ceilings(machine: str = "m1") -> Ceilings:
    return Ceilings(machine, "cpu", "2026-01-01T00:00:00+00:00", 1.0, [
        Ceiling("read", BANDWIDTH, 40.0, None, "x"), Ceiling("copy", BANDWIDTH, 30.0, None, "x"),
        Ceiling("fma", COMPUTE, 200.0, "float32", "x"),
        Ceiling("gemm", COMPUTE, 150.0, "float32", "x")], {"id": machine})


def test_roofline_bound():
    c = _ceilings()
    assert c.bandwidth() == 40.0 and c.peak("float32") == 200.0 and c.peak("float64") is None
    t, bound = c.attainable_s(flops=1e9, nbytes=1e9, dtype="float32")  # 1 FLOP/B: memory
    assert bound == "memory" and t == pytest.approx(1 / 40)
    t, bound = c.attainable_s(flops=1e12, nbytes=1e9, dtype="float32")  # 1000 FLOP/B
    assert bound == "compute" and t == pytest.approx(5.0)
    assert c.attainable_s(1e9, 1e9, "float64") is None


def test_json_round_trip_and_checks():
    c = _ceilings()
    assert Ceilings.from_json(json.loads(json.dumps(c.to_json()))) == c
    bad = c.to_json()
    bad["entries"][0]["value"] = float("nan")
    with pytest.raises(ValueError, match="positive number"):
        Ceilings.from_json(bad)
    bad["entries"][0].update(value=1.0, kind="magic")
    with pytest.raises(ValueError, match="unknown kind"):
        Ceilings.from_json(bad)


def test_stored_by_fingerprint_beside_the_database(tmp_path):
    db = tmp_path / "tuning.json"
    path = ceilings_path(db)
    assert path == tmp_path / "tuning.ceilings.json"
    write_ceilings(path, _ceilings("m1"))
    write_ceilings(path, _ceilings("m2"))
    assert set(read_ceilings(path)) == {"m1", "m2"}
    path.write_text("{not json")
    with pytest.warns(ReportDataWarning, match="unreadable"):
        assert read_ceilings(path) == {}


def test_measured_once_then_read(tmp_path, monkeypatch):
    calls = []

    def fake_measure(fingerprint, device="cpu", **sizes):
        calls.append(device)
        return _ceilings(fingerprint["id"])

    monkeypatch.setattr(ceil, "measure", fake_measure)
    db = tmp_path / "tuning.json"
    first = ensure_ceilings(db)
    again = ensure_ceilings(db)
    assert calls == ["cpu"] and first == again
    ensure_ceilings(db, remeasure=True)
    assert calls == ["cpu", "cpu"]


def test_the_ceilings_command(tmp_path, monkeypatch, capsys):
    from atrous.cli.report import add_report_parsers

    monkeypatch.setattr(ceil, "measure", lambda fp, device="cpu", **kw: _ceilings(fp["id"]))
    parser = argparse.ArgumentParser()
    add_report_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ceilings", "--db", str(tmp_path / "tuning.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "200.0 GFLOP/s" in out and "memory roof 40.0 GB/s" in out
