"""The tuning database: round trip, atomic writes, concurrent writers, corrupt and foreign
files, export / import / merge, and the trial log that lets a tuning resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from atrous.autotune import database as dbmod
from atrous.autotune.database import (
    Database,
    DatabaseError,
    TuningFileWarning,
    default_path,
    merge_files,
    read_file,
)
from atrous.autotune.records import SCHEMA_VERSION, Record, SchemaError, Snapshot
from atrous.autotune.search import FAILED, OK, Trial
from atrous.autotune.timing import Timing
from atrous.autotune.triallog import RunKey, TrialLog

SRC = str(Path(__file__).resolve().parent.parent / "src")
FP = {"kind": "cpu", "brand": "Test CPU", "cores": 2, "caches": {"L3": 1 << 25},
      "id": "aaaaaaaaaaaa", "family": "x86_64:testcpu:avx2"}
FP2 = {**FP, "brand": "Other CPU", "id": "bbbbbbbbbbbb"}


def record(key: str = "global_avg_pool:NCHW:float32:n1c8h4w4:keep0", **over) -> Record:
    fields = dict(
        op="global_avg_pool", backend="numba", key=key, dtype="float32", layout="NCHW",
        features={"n": 1, "c": 8, "h": 4, "w": 4, "keepdims": False},
        config={"ROWS": 4, "SPLIT": 1, "threads": 1}, median_s=1e-4, p20_s=9e-5, p80_s=1.1e-4,
        default_config={"ROWS": 1, "SPLIT": 1, "threads": 2}, default_median_s=2e-4,
        runner_up_gap=0.1, validation_error=1e-7, strategy="exhaustive", seed=0, trials=8,
        failed=0, pruned=2, policy="cpu-cold-rotate-v1", source_hash="0123456789abcdef",
        tuned_at="2026-01-01T00:00:00+00:00", atrous_version="0.1.0", compile_s=0.5)
    fields.update(over)
    return Record(**fields)


@pytest.fixture
def db(tmp_path) -> Database:
    return Database(tmp_path / "tuning.json")


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch):
    monkeypatch.setattr(dbmod, "_reported", set())


def test_round_trip(db):
    rec = record()
    db.put(FP, rec)
    snap = db.read()
    assert snap.machines[FP["id"]].fingerprint == FP
    assert snap.machines[FP["id"]].records[rec.slot] == rec
    assert rec.speedup == pytest.approx(2.0)
    data = json.loads(db.path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["format"] == "atrous-tuning"


def test_missing_file_is_empty(db):
    assert db.read().machines == {}


def test_default_path_is_in_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "atrous" / "tuning.json"
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # as on the GPU machine
    assert default_path() == tmp_path / "atrous" / "tuning.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_path() == Path.home() / ".cache" / "atrous" / "tuning.json"


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(db, monkeypatch):
    db.put(FP, record())
    before = db.path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(dbmod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        db.put(FP, record(key="other"))
    assert db.path.read_bytes() == before
    assert sorted(p.name for p in db.path.parent.iterdir()) == ["tuning.json", "tuning.json.lock"]


def test_a_writer_killed_mid_write_leaves_the_old_file_intact(db, tmp_path):
    db.put(FP, record())
    before = db.path.read_bytes()
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {SRC!r})
        from atrous.autotune import database
        def stall(fd):  # the new content is written but not yet renamed: die here
            open({str(ready)!r}, "w").close()
            time.sleep(60)
        database.os.fsync = stall
        db = database.Database({str(db.path)!r})
        snap = db.read()
        snap.machines.clear()
        database.write_file(db.path, snap)
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the writer never reached the write"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert db.path.read_bytes() == before
    assert db.read().machines[FP["id"]].records


def _writer(path: str, tag: str, barrier, spans) -> None:
    """One of two concurrent tuners: wait for the other, then write 20 records."""
    db = Database(path)
    barrier.wait(timeout=60)  # both start writing at the same moment
    start = time.monotonic()
    for i in range(20):
        db.put(FP, record(key=f"{tag}-{i}"))
    spans.put((tag, start, time.monotonic()))


def test_two_processes_writing_at_once_both_land(db):
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    barrier, spans = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_writer, args=(str(db.path), tag, barrier, spans))
                for tag in ("a", "b")]
    for c in children:
        c.start()
    got = [spans.get(timeout=120) for _ in children]
    for c in children:
        c.join(timeout=60)
    assert [c.exitcode for c in children] == [0, 0]
    (_, start_a, end_a), (_, start_b, end_b) = got
    assert max(start_a, start_b) < min(end_a, end_b), "the two writers did not overlap"
    slots = db.read().machines[FP["id"]].records
    assert sorted(slots) == sorted(f"numba|{t}-{i}" for t in "ab" for i in range(20))


def test_a_corrupt_file_is_reported_once_and_read_as_empty(db):
    db.path.write_text('{"format": "atrous-tuning", "schema_versi')
    with pytest.warns(TuningFileWarning, match="corrupt"):
        assert db.read().machines == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert db.read().machines == {}  # reported once only


def test_writing_over_a_corrupt_file_moves_it_aside(db):
    db.path.write_text("not json at all")
    with pytest.warns(TuningFileWarning):
        db.put(FP, record())
    assert db.path.with_name("tuning.json.corrupt").read_text() == "not json at all"
    assert len(db.read().records()) == 1


def test_another_schema_version_is_ignored_and_never_overwritten(db):
    db.path.write_text(json.dumps({"format": "atrous-tuning", "schema_version": 99,
                                   "machines": {}}))
    before = db.path.read_text()
    with pytest.warns(TuningFileWarning, match="schema version 99"):
        assert db.read().machines == {}
    with pytest.raises(DatabaseError, match="another schema version"):
        db.put(FP, record())
    assert db.path.read_text() == before


def test_a_bad_record_is_dropped_and_the_rest_kept(db):
    db.put(FP, record())
    data = json.loads(db.path.read_text())
    data["machines"][FP["id"]]["records"]["numba|bad"] = {"op": "x", "median_s": "fast"}
    db.path.write_text(json.dumps(data))
    with pytest.warns(TuningFileWarning, match="1 bad entry"):
        assert len(db.read().records()) == 1
    with pytest.raises(SchemaError, match=r"numba\|bad"):
        read_file(db.path)


@pytest.mark.parametrize("change", [
    lambda r: r.update(config={"ROWS": [1, 2]}),
    lambda r: r.update(median_s=float("nan")),
    lambda r: r.update(median_s=-1.0),
    lambda r: r.update(trials=True),
    lambda r: r.update(key={"__class__": "os.system"}),
    lambda r: r.pop("policy"),
])
def test_imported_records_are_checked_as_data(change, tmp_path):
    snap = Snapshot()
    snap.put(FP, record())
    data = snap.to_json()
    rec = data["machines"][FP["id"]]["records"][record().slot]
    change(rec)
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data, allow_nan=True))
    with pytest.raises(SchemaError):
        read_file(path)


def test_export_import_merge(db, tmp_path):
    db.put(FP, record())
    db.put(FP2, record(config={"ROWS": 16, "SPLIT": 1, "threads": 2}))
    exported = tmp_path / "mine.json"
    assert len(db.export(exported, [FP["id"]]).records()) == 1
    assert set(read_file(exported).machines) == {FP["id"]}

    other = Database(tmp_path / "other" / "tuning.json")
    other.put(FP, record(config={"ROWS": 1, "SPLIT": 4, "threads": 2},
                         tuned_at="2026-06-01T00:00:00+00:00"))
    other.put(FP, record(key="global_avg_pool:NCHW:float32:n2c8h4w4:keep0"))
    assert other.import_files([exported]) == 1
    # same slot in both: the record tuned last (the one already there) wins
    mine = other.read().machines[FP["id"]].records
    assert mine[record().slot].config["SPLIT"] == 4 and len(mine) == 2

    merged = merge_files(tmp_path / "merged.json", [db.path, other.path])
    assert set(merged.machines) == {FP["id"], FP2["id"]}
    assert len(read_file(tmp_path / "merged.json").records()) == 3


def test_a_bad_import_changes_nothing(db, tmp_path):
    db.put(FP, record())
    before = db.path.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "atrous-tuning", "schema_version": SCHEMA_VERSION,
                               "machines": {"x": {"fingerprint": {}, "records": {}}}}))
    with pytest.raises(SchemaError, match="fingerprint"):
        db.import_files([bad])
    assert db.path.read_bytes() == before


def test_clear(db):
    db.put(FP, record())
    db.put(FP2, record())
    TrialLog(db.log_path).finish(RunKey("m", "numba", "k", "h", "p"), TrialLog(db.log_path)
                                 .start(RunKey("m", "numba", "k", "h", "p")))
    assert db.clear(FP2["id"]) == 1 and set(db.read().machines) == {FP["id"]}
    assert db.clear() == 1
    assert not db.path.exists() and not db.log_path.exists()


def _trial(rows: int, status: str = OK) -> Trial:
    timing = Timing.of([1e-3 * rows]) if status == OK else None
    return Trial({"ROWS": rows, "SPLIT": 1, "threads": 1}, status, timing)


def test_trial_log_resumes_an_unfinished_run_and_not_a_finished_one(tmp_path):
    log = TrialLog(tmp_path / "t.trials.jsonl")
    key = RunKey("m", "numba", "k", "h", "p")
    run = log.start(key)
    assert not run.resumed
    log.append(key, run, _trial(1))
    log.append(key, run, _trial(4, FAILED))
    log.append(RunKey("m", "numba", "other", "h", "p"), run, _trial(16))
    again = log.start(key)
    assert again.id == run.id and again.resumed and len(again.done) == 2
    assert log.start(RunKey("m", "numba", "k", "new-source-hash", "p")).id != run.id
    log.finish(key, again)
    assert not log.start(key).resumed


def test_trial_log_skips_a_line_cut_short(tmp_path):
    log = TrialLog(tmp_path / "t.trials.jsonl")
    key = RunKey("m", "numba", "k", "h", "p")
    run = log.start(key)
    log.append(key, run, _trial(1))
    with log.path.open("a") as f:
        f.write('{"type": "trial", "run": "' + run.id + '", "mach')  # killed mid-line
    log.append(key, run, _trial(4))
    assert len(log.start(key).done) == 2
    assert all(line.startswith("{") for line in log.path.read_text().splitlines())


def test_lock_file_sits_beside_the_database(db):
    db.put(FP, record())
    assert os.path.exists(str(db.path) + ".lock")
