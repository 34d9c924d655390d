"""Issue 13, property-based: random JSON documents, valid files with one part replaced,
and random bytes, as tuning files and trial logs, fed to the lookup, the tuner's write,
`atrous db show/import/merge` and `atrous report`. No exception escapes a lookup or a
write, the CLI exits 0 or 2 without a traceback, and nothing is written outside the
example's folder. Derandomized and bounded: the same examples every run, in seconds."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import warnings
from pathlib import Path

import pytest
from hostile import GAP, document, gap, private_default, tuned
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrous.autotune import database as dbmod
from atrous.autotune import lookup
from atrous.autotune.database import Database, DatabaseError, TuningFileWarning
from atrous.autotune.hardware import cpu_fingerprint
from atrous.autotune.search import OK, Trial
from atrous.autotune.timing import Timing
from atrous.autotune.triallog import RunKey, TrialLog
from atrous.cli import main
from atrous.report.data import read_trials
from atrous.report.store import ReportDataWarning

FUZZ = settings(derandomize=True, max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- values: every JSON type, numbers at and past the edges, text that looks like markup
SCALARS = (st.none() | st.booleans() | st.integers()
           | st.integers(min_value=10 ** 30, max_value=10 ** 400)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "[/]", "[/red]", "../../x", "=HYPERLINK(1)", "\ud800", "\x00"])
           | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


def _valid() -> dict:
    return document(tuned(), tuned(gap(9), {"ROWS": 4, "SPLIT": 1, "threads": 1}))


@st.composite
def replaced(draw) -> dict:
    """A valid tuning file with one part (a field, a record, a machine id, the envelope)
    replaced by a random value."""
    doc = _valid()
    machine_id = next(iter(doc["machines"]))
    machine = doc["machines"][machine_id]
    slot = next(iter(machine["records"]))
    where = draw(st.sampled_from(["field", "field", "record", "fingerprint", "machine id",
                                  "slot", "version", "machines"]))
    value = draw(VALUES)
    if where == "field":
        field = draw(st.sampled_from(sorted(machine["records"][slot])))
        machine["records"][slot][field] = value
    elif where == "record":
        machine["records"][slot] = value
    elif where == "fingerprint":
        machine["fingerprint"][draw(st.sampled_from(["id", "family", "brand", "x"]))] = value
    elif where == "machine id":
        doc["machines"] = {draw(st.text(max_size=12)): machine}
    elif where == "slot":
        machine["records"] = {draw(st.text(max_size=12)): machine["records"][slot]}
    elif where == "version":
        doc["schema_version"] = value
    else:
        doc["machines"] = value
    return doc


def _dump(doc) -> bytes:
    return json.dumps(doc).encode("utf-8", "surrogatepass")


@st.composite
def mangled(draw) -> bytes:
    """A valid file's bytes, cut short and with a few bytes overwritten."""
    data = bytearray(_dump(_valid()))
    del data[draw(st.integers(1, len(data))):]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


TUNING_FILES = (replaced().map(_dump) | VALUES.map(_dump) | st.binary(max_size=200)
                | mangled())

RUNKEY = RunKey("m", "numba", GAP.key, "h", "p")
GOOD_TRIAL = Trial({"ROWS": 1, "SPLIT": 1, "threads": 1}, OK, Timing.of([1e-3] * 3), 1e-7,
                   0.1).to_json()


@st.composite
def log_lines(draw) -> bytes:
    """A trial log: good lines, lines with one part replaced, random JSON and bytes."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        line = {"type": "trial", "run": "r1", **RUNKEY.__dict__, "at": 1.0e9,
                "trial": json.loads(json.dumps(GOOD_TRIAL))}
        kind = draw(st.sampled_from(["good", "top", "trial", "timing", "json", "bytes"]))
        if kind == "top":
            line[draw(st.sampled_from(sorted(line)))] = draw(VALUES)
        elif kind == "trial":
            line["trial"][draw(st.sampled_from(sorted(GOOD_TRIAL)))] = draw(VALUES)
        elif kind == "timing":
            line["trial"]["timing"][draw(st.sampled_from(["times", "calls", "first_call",
                                                          "policy", "pruned"]))] = draw(VALUES)
        lines.append(draw(st.binary(max_size=60)) if kind == "bytes"
                     else _dump(draw(VALUES)) if kind == "json" else _dump(line))
    return b"\n".join(lines) + b"\n"


_counter = itertools.count()


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    private_default(monkeypatch, tmp_path)
    monkeypatch.setenv("ATROUS_TRACEBACK", "1")  # an unhandled exception fails the test
    monkeypatch.setattr("atrous.report.plots.available", lambda: False)
    saved = (lookup._settings.path, lookup._settings.enabled)
    yield
    lookup._settings.path, lookup._settings.enabled = saved


def _example_dir(tmp_path: Path) -> Path:
    folder = tmp_path / f"ex{next(_counter)}"
    (folder / "work").mkdir(parents=True)
    dbmod._reported.clear()
    return folder


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@FUZZ
@given(content=TUNING_FILES)
def test_a_lookup_never_raises(tmp_path, content):
    path = _example_dir(tmp_path) / "work" / "tuning.json"
    path.write_bytes(content)
    lookup.use_tuning(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        for problem in (GAP, gap(7), gap(300)):
            assert lookup.find(problem, "numba").source in ("exact", "nearest", "default")


@FUZZ
@given(content=TUNING_FILES, log=log_lines())
def test_the_tuners_write_and_the_trial_log_never_raise(tmp_path, content, log):
    work = _example_dir(tmp_path) / "work"
    db = Database(work / "tuning.json")
    db.path.write_bytes(content)
    db.log_path.write_bytes(log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        try:
            db.put(cpu_fingerprint(), tuned(gap(5)))
        except DatabaseError as exc:  # only a newer atrous's file is refused, untouched
            assert "another schema version" in str(exc)
            assert db.path.read_bytes() == content
        else:
            assert gap(5).key in {r.key for _, r in db.read().records()}
    run = TrialLog(db.log_path).start(RUNKEY)
    assert all(t.config == GOOD_TRIAL["config"] for t in run.done.values())
    assert all(e.trial.config == GOOD_TRIAL["config"] for e in read_trials(db.log_path, "m"))
    assert _tree(work.parent) <= {"work", *(f"work/{n}" for n in os.listdir(work))}


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        warnings.simplefilter("ignore", ReportDataWarning)
        code = main(argv)
    text = out.getvalue() + err.getvalue()
    assert code in (0, 2), (argv, text)
    assert "Traceback" not in text
    return code, text


@FUZZ
@given(content=TUNING_FILES, log=log_lines())
def test_the_cli_fails_cleanly_and_writes_only_in_its_folders(tmp_path, monkeypatch, content,
                                                              log):
    root = _example_dir(tmp_path)
    work, cwd = root / "work", root / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # `atrous report` without --out writes under ./reports/
    given_file = work / "given.json"
    given_file.write_bytes(content)
    (work / "given.trials.jsonl").write_bytes(log)
    mine = work / "tuning.json"
    mine.write_bytes(_dump(_valid()))
    outside = _tree(tmp_path) - {p for p in _tree(tmp_path) if p.startswith(root.name)}

    _cli(["db", "--db", str(given_file), "show"])
    code, _ = _cli(["db", "--db", str(mine), "import", str(given_file)])
    if code == 2:
        assert mine.read_bytes() == _dump(_valid())  # a refused import changes nothing
    _cli(["db", "merge", str(work / "merged.json"), str(given_file)])
    _cli(["report", "--db", str(given_file), "--out", str(root / "out")])
    _cli(["report", "--db", str(given_file)])

    allowed = ("work", "out", "cwd")
    for name in _tree(root):
        parts = Path(name).parts
        assert parts[0] in allowed, name
        if parts[0] == "cwd" and len(parts) > 1:
            assert parts[1] == "reports" and len(parts) <= 4, name
    assert {p for p in _tree(tmp_path) if not p.startswith(root.name)} == outside


def _bench_document() -> dict:
    from atrous.report.rows import COLUMNS, BenchRow, to_document

    rows = []
    for impl, ms in (("atrous-numba", 1.0), ("torch", 1.5), ("atrous-numba-default", 1.2)):
        raw = {c: "" for c in COLUMNS}
        raw.update(run="r1", timestamp="2026-01-01T00:00:00+00:00", fingerprint="m1",
                   device="cpu", name="gap", op="global_avg_pool", backend="numba",
                   implementation=impl, shape="1x8x6x6", out_shape="1x8x1x1", layout="NCHW",
                   dtype="float32", problem_key=GAP.key, config='{"ROWS": 1}',
                   config_source="exact", median_ms=ms, p20_ms=ms, p80_ms=ms, gbps=1.0,
                   gflops=1.0, bound="memory", ceiling_fraction=0.5, flops=288, work_flops=288,
                   bytes=1184, policy="cpu-warm-median-v1")
        rows.append(BenchRow.from_json(raw))
    return to_document(rows)


def _ceilings_document() -> dict:
    return {"format": "atrous-ceilings", "schema_version": 1, "machines": {"m1": {
        "machine": "m1", "device": "cpu", "measured_at": "now", "seconds": 1.0,
        "fingerprint": {"id": "m1", "family": "f"},
        "entries": [{"name": "read", "kind": "bandwidth", "value": 10.0, "dtype": None,
                     "method": "t"}, {"name": "fma", "kind": "compute", "value": 10.0,
                                     "dtype": "float32", "method": "t"}]}}}


@st.composite
def bench_and_ceilings(draw) -> tuple[bytes, bytes]:
    """A bench-rows file and a ceilings file, each valid with one part replaced."""
    rows, ceilings = _bench_document(), _ceilings_document()
    row = rows["rows"][draw(st.integers(0, 2))]
    numbers = ["median_ms", "p20_ms", "p80_ms", "gbps", "gflops", "ceiling_fraction", "flops",
               "work_flops", "bytes"]
    field = draw(st.sampled_from([*numbers, "config"]) | st.sampled_from(sorted(row)))
    row[field] = draw(st.sampled_from([0, -1, 0.0, -0.5, "0", 10 ** 30, "{" * 3000,
                                       '{"ROWS": ' + "9" * 5000 + "}", "[1]"]) | VALUES)
    body = ceilings["machines"]["m1"]
    where = draw(st.sampled_from(["machine", "entry", "fingerprint"]))
    if where == "machine":
        body[draw(st.sampled_from(sorted(body)))] = draw(VALUES)
    elif where == "entry":
        body["entries"][0][draw(st.sampled_from(sorted(body["entries"][0])))] = draw(VALUES)
    else:
        body["fingerprint"][draw(st.text(max_size=4))] = draw(VALUES)
    return _dump(rows), _dump(ceilings)


@FUZZ
@given(files=bench_and_ceilings())
def test_report_survives_any_bench_rows_and_ceilings(tmp_path, files):
    root = _example_dir(tmp_path)
    db = root / "work" / "tuning.json"
    (root / "work" / "tuning.bench.json").write_bytes(files[0])
    (root / "work" / "tuning.ceilings.json").write_bytes(files[1])
    _cli(["report", "--db", str(db), "--machine", "m1", "--out", str(root / "out")])
    assert {Path(n).parts[0] for n in _tree(root)} <= {"work", "out"}
