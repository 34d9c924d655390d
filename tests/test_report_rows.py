"""`atrous bench` rows: the tidy schema, the tuned config taken from the database, the
rows files beside it, and missing baselines (no torch, no onnxruntime) leaving their
columns empty with a note instead of failing."""

from __future__ import annotations

import datetime
import json
import sys

import pytest

from atrous.autotune.database import Database
from atrous.autotune.hardware import cpu_fingerprint
from atrous.autotune.lookup import problem_features, source_hash
from atrous.autotune.records import Record
from atrous.jobs.bench import Settings, bench
from atrous.jobs.suite import smoke_suite
from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings
from atrous.report.rows import COLUMNS, BenchRow, from_csv, from_document, runs, to_csv, to_document
from atrous.report.store import ReportDataWarning, append_rows, bench_path, read_rows

GAP = smoke_suite("NCHW", "float32", (1,))[0]
IMPLS = {"atrous-numba", "atrous-numba-default", "torch", "onnxruntime", "openvino",
         "numpy-reference"}


class OneMillisecond:
    """A deterministic timer: every call takes 1 ms (the real call still runs once, as the
    warm-up, so every implementation is exercised)."""

    policy = "test-1ms"

    def __call__(self, run, calls):
        return 1e-3


def _ceilings() -> Ceilings:
    return Ceilings("m", "cpu", "t", 1.0, [Ceiling("read", BANDWIDTH, 10.0, None, ""),
                                           Ceiling("fma", COMPUTE, 100.0, "float32", "")])


#: In this process (the isolation has tests of its own in test_bench_isolation.py): fast,
#: and the missing-baseline test patches sys.modules here.
SHARED = Settings(isolate=False)


def _bench(tmp_path, entries=(GAP,)):
    return bench(list(entries), settings=SHARED, ceilings=_ceilings(),
                 tuning=tmp_path / "tuning.json", sampler=OneMillisecond())


def test_rows_hold_every_column(tmp_path):
    rows = _bench(tmp_path)
    assert {r.implementation for r in rows} == IMPLS
    p = GAP.problem
    for r in rows:
        assert tuple(r.to_json()) == COLUMNS
        assert r.ok and r.median_ms == pytest.approx(1.0) and r.policy == "test-1ms"
        assert r.op == p.op and r.layout == "NCHW" and r.dtype == "float32"
        assert r.shape == "1x16x5x5" and r.problem_key == p.key and r.name == GAP.name
        assert r.fingerprint == cpu_fingerprint()["id"] and r.run == rows[0].run
        assert r.atrous_version and r.numba_version
        datetime.datetime.fromisoformat(r.timestamp)
        assert r.gbps == pytest.approx(p.bytes / 1e-3 / 1e9)
        assert r.gflops == pytest.approx(p.flops / 1e-3 / 1e9)
        assert r.bound == "memory" and r.ceiling_fraction == pytest.approx(
            p.bytes / 10e9 / 1e-3)
    ours = {r.implementation: r for r in rows}
    assert json.loads(ours["atrous-numba"].config)
    assert ours["atrous-numba"].config_source == "default"  # nothing tuned in this database
    assert "timed once" in ours["atrous-numba-default"].note


def test_rows_round_trip_through_csv_and_json(tmp_path):
    rows = _bench(tmp_path)
    assert from_csv(to_csv(rows)) == rows
    assert from_document(json.loads(json.dumps(to_document(rows)))) == (rows, [])


def test_the_tuned_config_comes_from_the_database(tmp_path):
    p = GAP.problem
    from atrous.core.registry import op

    spec = op(p.op).spec
    default = spec.default_config(p, "numba")
    other = next(c for c in spec.space(p, "numba") if c != default)
    Database(tmp_path / "tuning.json").put(cpu_fingerprint(), Record(
        op=p.op, backend="numba", key=p.key, dtype=p.dtype, layout=p.layout,
        features=problem_features(p), config=dict(other), median_s=1e-3, p20_s=1e-3,
        p80_s=1e-3, default_config=dict(default), default_median_s=2e-3, runner_up_gap=None,
        validation_error=0.0, strategy="exhaustive", seed=0, trials=2, failed=0, pruned=0,
        policy="cpu-cold-rotate-v1", source_hash=source_hash(p.op, "numba"),
        tuned_at="2026-01-01T00:00:00+00:00", atrous_version="0.1.0"))
    ours = {r.implementation: r for r in _bench(tmp_path)}
    assert json.loads(ours["atrous-numba"].config) == other
    assert ours["atrous-numba"].config_source == "exact"
    assert json.loads(ours["atrous-numba-default"].config) == default
    assert ours["atrous-numba-default"].note == ""


def test_missing_baselines_leave_empty_columns_with_a_note(tmp_path, monkeypatch):
    for module in ("torch", "onnx", "onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)  # `import torch` now fails
    rows = {r.implementation: r for r in _bench(tmp_path)}
    assert set(rows) == IMPLS
    for name in ("torch", "onnxruntime", "openvino"):
        r = rows[name]
        assert not r.ok and r.median_ms is None and r.gbps is None and r.gflops is None
        assert r.ceiling_fraction is None and r.policy == ""
        assert "not installed" in r.note
    assert rows["atrous-numba"].ok and rows["numpy-reference"].ok
    from atrous.report.summary import summarize

    line = summarize(rows.values())[0].line()
    assert line.startswith("global_avg_pool: PyTorch not measured")
    assert "NumPy" in line
    from atrous.report.tables import bench_table, notes_table

    cells = bench_table("global_avg_pool", list(rows.values())).rows[0]
    assert [c.text for c in cells[4:7]] == ["n/a", "n/a", "n/a"]
    notes = notes_table(list(rows.values()))
    assert {r[0].text for r in notes.rows} == {"PyTorch", "ONNX Runtime", "OpenVINO"}


def test_rows_files_beside_the_database_keep_every_run(tmp_path):
    path = bench_path(tmp_path / "tuning.json")
    assert path == tmp_path / "tuning.bench.json"
    first, second = _bench(tmp_path), _bench(tmp_path)
    append_rows(path, first)
    append_rows(path, second)
    stored = read_rows(path)
    assert stored == first + second
    assert list(runs(stored)) == [first[0].run, second[0].run]
    assert from_csv(path.with_suffix(".csv").read_text()) == stored


def test_a_bad_row_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "tuning.bench.json"
    good = _bench(tmp_path)[0]
    doc = to_document([good])
    doc["rows"].append({**good.to_json(), "median_ms": "fast"})
    path.write_text(json.dumps(doc))
    with pytest.warns(ReportDataWarning, match="1 bad rows"):
        assert read_rows(path) == [good]


def test_a_row_is_checked_as_data():
    with pytest.raises(ValueError, match="not a number"):
        BenchRow.from_json({"median_ms": "x"})
    with pytest.raises(ValueError, match="not an atrous bench file"):
        from_document({"rows": []})


def test_the_bench_command_stores_rows_beside_the_database(tmp_path, monkeypatch, capsys):
    from atrous.cli import main
    from atrous.jobs import ceilings

    monkeypatch.setattr(ceilings, "measure", lambda fp, device="cpu", **kw: Ceilings(
        fp["id"], device, "t", 0.0, _ceilings().entries, fp))
    db = tmp_path / "tuning.json"
    assert main(["bench", "--suite", "smoke", "--batch", "1", "--layout", "NCHW", "--op",
                 "global_avg_pool", "--db", str(db), "--no-numpy", "--no-onnx",
                 "--no-openvino"]) == 0
    rows = read_rows(bench_path(db))
    assert {r.implementation for r in rows} == {"atrous-numba", "atrous-numba-default", "torch"}
    assert (tmp_path / "tuning.bench.csv").exists() and (tmp_path / "tuning.ceilings.json").exists()
    out = capsys.readouterr().out
    assert "global_avg_pool:" in out and "rows added to" in out


def test_the_summary_line_says_which_conv_variants_ran(tmp_path):
    from atrous.report.summary import summarize

    conv = next(e for e in smoke_suite("NHWC", "float32", (1,)) if "d2" in e.name)
    rows = bench([conv], settings=SHARED, ceilings=_ceilings(),
                 tuning=tmp_path / "tuning.json", sampler=OneMillisecond())
    ours = next(r for r in rows if r.implementation == "atrous-numba")
    variant = json.loads(ours.config)["variant"]
    assert f"variants run: {variant} x1" in summarize(rows)[0].line()
