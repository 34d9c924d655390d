"""Issue 13, the data side: tuning files, trial logs, bench rows and ceilings are untrusted
data (any bytes degrade to "ignored, with one warning"), writes keep shared files shared,
data never becomes a path, CSV cells never run, replayed trials are validated again, and
the stale-record hash covers every kernel source file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile import GAP, GAP_CONFIG, document, gap, private_default, spoiled_files, tuned, write

import atrous
from atrous.autotune import database as dbmod
from atrous.autotune import lookup, sources
from atrous.autotune.database import Database, TuningFileWarning
from atrous.autotune.hardware import cpu_fingerprint
from atrous.autotune.search import OK, Trial
from atrous.autotune.timing import Timing
from atrous.autotune.triallog import RunKey, TrialLog
from atrous.core.registry import op
from atrous.report.data import read_trials
from atrous.report.store import read_ceilings, read_rows

SPOILED = spoiled_files()


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    private_default(monkeypatch, tmp_path)
    monkeypatch.setattr(dbmod, "_reported", set())
    saved = (lookup._settings.path, lookup._settings.enabled)
    yield
    lookup._settings.path, lookup._settings.enabled = saved


def _use(path: Path) -> None:
    atrous.use_tuning(path)


# ------------------------------------------------------------- 1. malformed content


@pytest.mark.parametrize("kind", sorted(SPOILED))
def test_any_content_is_ignored_with_one_warning_and_a_lookup_never_fails(kind, tmp_path):
    path = write(tmp_path / "tuning.json", SPOILED[kind])
    _use(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = lookup.find(GAP, "numba")
        again = lookup.find(gap(7), "numba")
    assert {first.source, again.source} <= {"default", "exact", "nearest"}
    reports = [w for w in caught if issubclass(w.category, TuningFileWarning)]
    assert len(reports) <= 1, [str(w.message) for w in reports]
    if kind not in ("NaN", "1e400", "5000-digit integer", "10**400", "lone surrogate",
                    "nested 900 deep in a record"):
        assert len(reports) == 1  # a whole-file problem is reported (record ones: see below)


def test_a_bad_record_is_dropped_and_the_file_still_serves_lookups(tmp_path):
    doc = document(tuned(), tuned(gap(12), {"ROWS": 4, "SPLIT": 1, "threads": 1}))
    machine = next(iter(doc["machines"].values()))
    machine["records"][f"numba|{GAP.key}"]["median_s"] = 10 ** 400  # a 401-digit integer
    path = write(tmp_path / "tuning.json", doc)
    _use(path)
    with pytest.warns(TuningFileWarning, match="1 bad entry"):
        choice = lookup.find(GAP, "numba")
    assert choice.source == "nearest" and choice.key == gap(12).key


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_a_config_value_of_another_type_is_never_used(value, tmp_path):
    _use(write(tmp_path / "tuning.json", document(tuned(config={**GAP_CONFIG, "ROWS": value}))))
    assert lookup.find(GAP, "numba").source == "default"


def test_the_op_call_runs_on_a_corrupt_file(tmp_path):
    _use(write(tmp_path / "tuning.json", SPOILED["nested 100000 deep"]))
    x = np.random.default_rng(7).standard_normal((1, 8, 6, 6)).astype(np.float32)
    with pytest.warns(TuningFileWarning, match="nested too deeply"):
        out = atrous.global_avg_pool(x, keepdims=True)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)


def test_a_huge_or_odd_size_feature_does_not_break_the_nearest_search(tmp_path):
    odd = [{"h": 1e308, "w": 1e308}, {"h": -5}, {"h": "tall"}, {"h": 2 ** 63}, {"h": True}]
    records = [tuned(gap(40 + i), {"ROWS": 4, "SPLIT": 1, "threads": 1},
                     features={**tuned(gap(40 + i)).features, **f}) for i, f in enumerate(odd)]
    records.append(tuned(gap(12)))
    path = write(tmp_path / "tuning.json", document(*records))
    _use(path)
    for h in (3, 6, 100, 4000):
        choice = lookup.find(gap(h), "numba")
        assert choice.source == "nearest" and choice.distance is not None
        assert np.isfinite(choice.distance)


@pytest.mark.parametrize("kind", sorted(SPOILED))
def test_the_tuners_write_survives_any_content(kind, tmp_path):
    db = Database(write(tmp_path / "tuning.json", SPOILED[kind]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        db.put(cpu_fingerprint(), tuned(gap(9)))
        assert [r.key for _, r in db.read().records()] >= [gap(9).key]


def test_every_corrupt_file_is_kept_under_its_own_name(tmp_path):
    db = Database(tmp_path / "tuning.json")
    contents = [b"first corrupt file", b"second corrupt file", b"\xff third"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        for content in contents:
            db.path.write_bytes(content)
            db.put(cpu_fingerprint(), tuned())
    backups = sorted(tmp_path.glob("tuning.json.corrupt*"))
    assert sorted(p.read_bytes() for p in backups) == sorted(contents)


def _trial_line(runkey: RunKey, run: str, trial: dict, **over) -> str:
    line = {"type": "trial", "run": run, **runkey.__dict__, "at": 1.0e9, "trial": trial,
            **over}
    return json.dumps(line)


def _ok_trial(config: dict, median: float = 1e-3) -> dict:
    return Trial(dict(config), OK, Timing.of([median] * 3), 1e-7, 0.1).to_json()


def test_a_trial_log_with_bad_lines_resumes_from_the_good_ones(tmp_path):
    key = RunKey("m", "numba", GAP.key, "h", "p")
    good = _ok_trial(GAP_CONFIG)
    bad = [{**good, "timing": {**good["timing"], "times": [1e400]}},
           {**good, "timing": {**good["timing"], "calls": 10 ** 400}},
           {**good, "config": {"ROWS": [[[1]]]}}, {**good, "timing": None},
           {**good, "error": "small"}, "not an object"]
    lines = [_trial_line(key, "run1", b) for b in bad]
    lines += [_trial_line(key, "run1", good), "[" * 50_000, "\ud800", "9" * 5000,
              _trial_line(key, "run1", {**good, "status": [[[[]]]] * 2, "reason": [0] * 9})]
    path = tmp_path / "tuning.trials.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n\xff\xfe\n")
    run = TrialLog(path).start(key)
    assert run.id == "run1" and [t.config for t in run.done.values()] == [GAP_CONFIG]
    assert [t.trial.config for t in read_trials(path, "m")] == [GAP_CONFIG]


def test_bench_rows_and_ceilings_files_of_any_content_read_as_empty(tmp_path):
    for kind, content in SPOILED.items():
        path = write(tmp_path / f"{len(kind)}.json", content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert read_rows(path) == [], kind
            assert read_ceilings(path) == {}, kind


def test_a_corrupt_bench_or_ceilings_file_is_kept_before_it_is_replaced(tmp_path):
    from atrous.report.ceilings import BANDWIDTH, Ceiling, Ceilings
    from atrous.report.rows import COLUMNS, BenchRow
    from atrous.report.store import append_rows, write_ceilings

    raw = {c: "" for c in COLUMNS}
    raw.update(name="case", run="r1", median_ms=1.0)
    rows_file = write(tmp_path / "t.bench.json", SPOILED["invalid utf-8"])
    ceilings_file = write(tmp_path / "t.ceilings.json", SPOILED["nested 100000 deep"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        append_rows(rows_file, [BenchRow.from_json(raw)])
        append_rows(rows_file, [BenchRow.from_json(raw)])
        write_ceilings(ceilings_file, Ceilings("m", "cpu", "now", 1.0,
                                               [Ceiling("read", BANDWIDTH, 5.0, None, "t")]))
    assert (tmp_path / "t.bench.json.corrupt").read_bytes() == SPOILED["invalid utf-8"]
    assert len(read_rows(rows_file)) == 2
    assert (tmp_path / "t.ceilings.json.corrupt").read_bytes() == SPOILED["nested 100000 deep"]
    assert list(read_ceilings(ceilings_file)) == ["m"]


# ------------------------------------------------------------- 3. shared files


def test_a_symlinked_database_stays_a_link_and_its_target_is_written(tmp_path):
    shared = tmp_path / "shared" / "tuning.json"
    shared.parent.mkdir()
    Database(shared).put(cpu_fingerprint(), tuned())
    link = tmp_path / "mine" / "tuning.json"
    link.parent.mkdir()
    link.symlink_to(shared)
    db = Database(link)
    db.put(cpu_fingerprint(), tuned(gap(9)))
    assert link.is_symlink() and link.resolve() == shared.resolve()
    assert len(Database(shared).read().records()) == 2
    assert Path(str(db.lock().lock_file)) == Path(str(shared) + ".lock")
    assert not list(link.parent.glob("*.tmp")) and not list(shared.parent.glob(".*.tmp"))


def test_writes_keep_a_files_mode_and_give_new_files_the_umask_mode(tmp_path):
    db = Database(tmp_path / "tuning.json")
    old = os.umask(0o022)
    try:
        db.put(cpu_fingerprint(), tuned())
        assert stat.S_IMODE(db.path.stat().st_mode) == 0o644
        os.chmod(db.path, 0o664)
        db.put(cpu_fingerprint(), tuned(gap(9)))
        assert stat.S_IMODE(db.path.stat().st_mode) == 0o664
        export = tmp_path / "export.json"
        db.export(export)
        assert stat.S_IMODE(export.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ------------------------------------------------------------- 4. data never a path


def test_a_machine_id_from_data_never_leads_out_of_the_reports_folder(tmp_path, monkeypatch):
    from atrous.report.render import report

    work = tmp_path / "cwd"
    (work / "elsewhere" / "plots").mkdir(parents=True)
    keep = work / "elsewhere" / "plots" / "mine.png"
    keep.write_bytes(b"not atrous's")
    monkeypatch.chdir(work)
    evil = "../elsewhere"
    fp = {**cpu_fingerprint(), "id": evil}
    db = tmp_path / "db" / "tuning.json"
    db.parent.mkdir()
    write(db, document(tuned(key=GAP.key), fingerprint=fp))
    index = report(db, machine=evil)
    assert index.resolve().is_relative_to((work / "reports").resolve())
    assert keep.read_bytes() == b"not atrous's"


def test_a_report_deletes_only_the_plots_it_wrote(tmp_path):
    from atrous.report.page import Page, Plot, Section
    from atrous.report.render import write_page

    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    theirs = out / "plots" / "theirs.png"
    theirs.write_bytes(b"a user's plot")
    png = b"\x89PNG\r\n\x1a\n"

    def page(*names: str) -> Page:
        return Page("t", [], [], [Section("s", "S", plots=[Plot(n, n, png, n) for n in names])],
                    "now")

    write_page(page("a", "b"), out)
    write_page(page("b"), out)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["b.png", "theirs.png"]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    import csv
    import io

    from atrous.report.render import records_csv
    from atrous.report.rows import COLUMNS, BenchRow, to_csv

    formula = "=HYPERLINK(\"http://x\",\"y\")"
    rec = tuned(strategy=formula, policy="+1", atrous_version="@x")
    cells = next(csv.DictReader(io.StringIO(records_csv([rec]))))
    assert (cells["strategy"], cells["policy"], cells["atrous_version"]) == (
        "'" + formula, "'+1", "'@x")
    raw = {c: "" for c in COLUMNS}
    raw.update(name="-2+3", note="\tcmd", median_ms=-1.5)
    row = BenchRow.from_json(raw)
    cells = next(csv.DictReader(io.StringIO(to_csv([row]))))
    assert (cells["name"], cells["note"], cells["median_ms"]) == ("'-2+3", "'\tcmd", "-1.5")


# ------------------------------------------------------------- 5. replayed trials


def test_an_edited_trial_log_cannot_crown_a_config_that_fails_the_gate(tmp_path, monkeypatch):
    from atrous.autotune.search import Budget, config_key
    from atrous.autotune.tuner import Settings, tune_problem
    from atrous.core.registry import op
    from atrous.kernels.gap import numba_cpu

    problem = gap(8)
    space = op(problem.op).space(problem, "numba")
    default = op(problem.op).default_config(problem, "numba")
    forged = next(c for c in space if config_key(c) != config_key(default))
    real = numba_cpu.launch

    def broken(prob, config, out, x):  # the forged config computes garbage
        real(prob, config, out, x)
        if config_key(config) == config_key(forged):
            out[...] = 1e3

    monkeypatch.setattr(numba_cpu, "launch", broken)

    class Timer:
        policy = "test-table-v1"

        def __call__(self, run, calls):
            return 1e-3

    db = Database(tmp_path / "tuning.json")
    key = RunKey(cpu_fingerprint()["id"], "numba", problem.key,
                 lookup.source_hash(problem.op, "numba"), Timer.policy)
    db.log_path.write_text(_trial_line(key, "abc123", _ok_trial(forged, 1e-9)) + "\n")
    settings = Settings(strategy="exhaustive", budget=Budget())
    out = tune_problem(problem, settings=settings, database=db, sampler=Timer())
    assert out.resumed == 1
    assert out.record.config != forged
    log = [json.loads(line) for line in db.log_path.read_text().splitlines()]
    assert any(ln.get("trial", {}).get("config") == forged and ln["trial"]["status"] == "failed"
               for ln in log)


# ------------------------------------------------------------- 6. the stale hash


def test_the_source_hash_covers_the_spec_and_shared_kernel_modules(tmp_path, monkeypatch):
    names = {name for name, _ in sources.kernel_sources(
        op("dilated_conv2d").source_modules("numba"))}
    assert {"kernels/conv/spec.py", "kernels/conv/numba_cpu.py", "kernels/codegen.py",
            "core/args.py", "kernels/workers_cpu.py", "kernels/threads_cpu.py",
            "kernels/conv/weights_cpu.py", "kernels/conv/winograd_cpu.py",
            "kernels/conv/gemm_cpu.py"} <= names
    assert not {"dispatch.py", "api.py", "core/registry.py"} & names  # the call path is not
    copy = tmp_path / "atrous"
    shutil.copytree(sources._root("atrous"), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sources, "_root", lambda package: copy)

    def fresh_hash() -> str:
        lookup.source_hash.cache_clear()
        return lookup.source_hash("dilated_conv2d", "numba")

    try:
        seen = {fresh_hash()}
        for edited in ("kernels/conv/spec.py", "kernels/codegen.py", "kernels/workers_cpu.py",
                       "core/args.py"):
            with (copy / edited).open("a") as f:
                f.write("\n# edited\n")
            seen.add(fresh_hash())
        assert len(seen) == 5, "every edit makes old records stale"
        assert fresh_hash() == fresh_hash()  # deterministic
    finally:
        lookup.source_hash.cache_clear()
