"""Issue 13, the CLI: any input file fails with one clear line and exit status 2, never a
traceback; text from data is printed literally, never parsed as rich markup; `atrous tune`
and `atrous report` survive a bad trial log."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from hostile import GAP, document, gap, private_default, spoiled_files, tuned, write

from atrous.autotune import database as dbmod
from atrous.autotune.database import Database, TuningFileWarning, read_file
from atrous.autotune.hardware import cpu_fingerprint
from atrous.cli import main

SPOILED = spoiled_files()


@pytest.fixture(autouse=True)
def _strict(monkeypatch, tmp_path):
    """An exception a command does not handle itself fails the test (no safety net)."""
    private_default(monkeypatch, tmp_path)
    monkeypatch.setenv("ATROUS_TRACEBACK", "1")
    monkeypatch.setattr(dbmod, "_reported", set())
    monkeypatch.setattr("atrous.report.plots.available", lambda: False)  # fast reports


def run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr) of ``atrous argv``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningFileWarning)
        code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out + err


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("kind", sorted(SPOILED))
@pytest.mark.parametrize("action", ["import", "merge"])
def test_db_import_and_merge_of_a_bad_file_fail_with_one_line(kind, action, tmp_path, capsys):
    db = tmp_path / "tuning.json"
    Database(db).put(cpu_fingerprint(), tuned())
    before = db.read_bytes()
    bad = write(tmp_path / "bad.json", SPOILED[kind])
    argv = ["db", "--db", str(db), "import", str(bad)] if action == "import" else [
        "db", "merge", str(tmp_path / "merged.json"), str(bad)]
    code, out = run(argv, capsys)
    assert code == 2
    assert one_line(out).startswith(f"atrous db {action}: ") and "bad.json" in out
    assert db.read_bytes() == before and not (tmp_path / "merged.json").exists()


def test_db_show_prints_markup_in_data_literally_and_survives_unknown_ops(tmp_path, capsys):
    weird = "[/]m[/red]"
    fp = {**cpu_fingerprint(), "id": weird, "family": "[bold]fam[/bold]"}
    recs = [tuned(key=GAP.key + "[/red]"), tuned(gap(9), op="no_such_op"),
            tuned(gap(10), backend="[/]backend")]
    db = write(tmp_path / "tuning.json", document(*recs, fingerprint=fp))
    code, out = run(["db", "--db", str(db), "show"], capsys)
    assert code == 0
    flat = out.replace("\n", "").replace(" ", "").replace("│", "")
    for text in (weird, "[bold]fam[/bold]", "[/red]", "no_such_op", "[/]backend"):
        assert text in flat, text
    assert "unknown op or backend" in out.replace("\n", " ") or "unknown" in flat
    assert "1 machines, 3 records" in out


def test_an_error_message_holding_markup_is_printed_literally(tmp_path, capsys):
    missing = tmp_path / "[/red]missing[/].json"
    code, out = run(["db", "--db", str(tmp_path / "t.json"), "import", str(missing)], capsys)
    assert code == 2 and "[/red]missing[/].json" in one_line(out)


@pytest.mark.parametrize("kind", ["invalid utf-8", "nested 100000 deep", "5000-digit integer"])
def test_db_show_of_a_bad_database_prints_an_empty_table(kind, tmp_path, capsys):
    db = write(tmp_path / "tuning.json", SPOILED[kind])
    code, out = run(["db", "--db", str(db), "show"], capsys)
    assert code == 0 and "machines, 0 records" in out


@pytest.mark.parametrize("content", [SPOILED["nested 100000 deep"], SPOILED["invalid utf-8"],
                                     b'[{"op": "global_avg_pool", "x": [1, 8, ' + b"9" * 5000
                                     + b", 4]}]", b'{"shapes": [[[[]]]]}',
                                     b'[{"op": "[/red]", "x": [1]}]'])
def test_tune_with_a_bad_shapes_file_fails_with_one_line(content, tmp_path, capsys):
    shapes = write(tmp_path / "shapes.json", content)
    code, out = run(["tune", "--shapes", str(shapes), "--db", str(tmp_path / "t.json")],
                    capsys)
    assert code == 2 and one_line(out).startswith("atrous tune: ")


def _spoil_log(path: Path) -> None:
    lines = ["[" * 50_000, "9" * 5000, json.dumps({"type": "trial", "run": "[/red]",
                                                  "machine": cpu_fingerprint()["id"],
                                                  "trial": {"config": 1e400}})]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe{\n")


def test_tune_resumes_past_a_bad_trial_log(tmp_path, capsys):
    shapes = write(tmp_path / "shapes.json", [{"op": "global_avg_pool", "x": [1, 6, 5, 5],
                                               "name": "[/red]tiny[/]"}])
    db = Database(tmp_path / "t.json")
    _spoil_log(db.log_path)
    code, out = run(["tune", "--shapes", str(shapes), "--db", str(db.path), "--budget", "2",
                     "--no-torch"], capsys)
    assert code == 0 and "[/red]tiny[/]" in out  # a name from the file, printed literally
    assert [r.op for _, r in read_file(db.path).records()] == ["global_avg_pool"]


def test_report_survives_bad_trial_log_bench_rows_and_ceilings(tmp_path, capsys):
    db = Database(write(tmp_path / "tuning.json", document(tuned())))
    _spoil_log(db.log_path)
    write(tmp_path / "tuning.bench.json", SPOILED["invalid utf-8"])
    write(tmp_path / "tuning.ceilings.json", SPOILED["nested 100000 deep"])
    out_dir = tmp_path / "out"
    code, out = run(["report", "--db", str(db.path), "--out", str(out_dir)], capsys)
    assert code == 0, out
    assert (out_dir / "index.html").is_file() and (out_dir / "tuning.csv").is_file()


def test_report_with_nothing_usable_fails_with_one_line(tmp_path, capsys):
    db = write(tmp_path / "tuning.json", SPOILED["5000-digit integer"])
    code, out = run(["report", "--db", str(db), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_line(out).startswith("atrous report: ")
