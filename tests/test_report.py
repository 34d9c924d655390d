"""`atrous report`: rendering from a fixture database (written through the tuner's and the
benchmark's own APIs), the summary lines, escaping, the Markdown twin, compare mode, and
the command line."""

from __future__ import annotations

import argparse
import csv
import re

import pytest
from report_fixture import HOSTILE, build

from atrous.cli.report import add_report_parsers
from atrous.report import plots
from atrous.report.compare import compare, resolve
from atrous.report.data import SelectionError, load
from atrous.report.render import report
from atrous.report.rows import COLUMNS


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def rendered(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return report(fixture.db, machine=fixture.machine, out=out)


def test_the_report_directory_holds_every_file(rendered):
    out = rendered.parent
    assert {p.name for p in out.iterdir()} >= {"index.html", "report.md", "results.csv",
                                               "tuning.csv", "plots"}
    names = {p.stem for p in (out / "plots").glob("*.png")}
    ops = ("global_avg_pool", "dilated_conv2d", "upsample_bilinear")
    assert names == {"roofline", "validation", *(f"time-{o}" for o in ops),
                     *(f"landscape-{o}" for o in ops)}
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_lines_compare_with_pytorch_and_the_ceilings(fixture):
    from atrous.report.summary import summarize

    lines = {s.op: s.line() for s in summarize(load(fixture.db).rows)}
    assert lines["dilated_conv2d"].startswith("dilated_conv2d: 1.4x PyTorch, 71% of measured peak")
    assert lines["global_avg_pool"].startswith("global_avg_pool: 1.4x PyTorch, 71% of measured"
                                               " bandwidth")
    assert "2x ONNX Runtime" in lines["global_avg_pool"]
    assert "1.2x the default config" in lines["dilated_conv2d"]


def test_the_page_is_self_contained_and_holds_the_tables(rendered, fixture):
    html = rendered.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 8
    for table in ("bench-global_avg_pool", "bench-dilated_conv2d", "bench-upsample_bilinear",
                  "ceilings", "tuning", "missing"):
        assert f'id="table-{table}"' in html
    assert "1.4x PyTorch" in html
    assert "onnxruntime is not installed (fixture)" in html  # the missing baseline's note
    assert "machine" in html and fixture.machine in html and "tuning time" in html


def test_text_is_escaped_in_html_and_markdown(rendered):
    html = rendered.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html  # the CPU brand of the fingerprint
    md = (rendered.parent / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_markdown_has_the_same_tables(rendered):
    html = rendered.read_text()
    md = (rendered.parent / "report.md").read_text()
    for table in re.findall(r'<table id="table-([^"]+)">', html):
        body = html.split(f'<table id="table-{table}">', 1)[1].split("</table>", 1)[0]
        html_rows = body.count("<tr>") - 1  # minus the header row
        caption = re.search(r"<caption>(.*?)</caption>", body).group(1)
        block = md.split(f"**{caption.replace('_', chr(92) + '_')}**", 1)[1].split("\n\n", 2)[1]
        assert len(block.splitlines()) - 2 == html_rows, table
    assert "![" in md and "(plots/roofline.png)" in md


def test_results_csv_holds_the_rows(rendered, fixture):
    rows = list(csv.DictReader((rendered.parent / "results.csv").open()))
    assert tuple(rows[0]) == COLUMNS
    assert {r["fingerprint"] for r in rows} == {fixture.machine}
    assert len(rows) == 6 * 5 + 2
    tuning = list(csv.DictReader((rendered.parent / "tuning.csv").open()))
    assert len(tuning) == 6


def test_without_matplotlib_the_report_has_tables_and_a_note(fixture, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    index = report(fixture.db, machine=fixture.machine, out=tmp_path)
    html = index.read_text()
    assert "<img" not in html and "matplotlib is not installed" in html
    assert 'id="table-bench-dilated_conv2d"' in html


def test_nothing_to_report_is_a_clear_error(tmp_path):
    with pytest.raises(SelectionError, match="nothing to report"):
        load(tmp_path / "empty.json")
    with pytest.raises(SelectionError, match="no data for machine"):
        load(tmp_path / "empty.json", machine="nope")


def test_compare_two_machines_side_by_side(tmp_path):
    a = build(tmp_path, "machineA0001", "runA", hostile=False)
    b = build(tmp_path, "machineB0001", "runB", speed=2.0, hostile=False)
    index = compare(a.machine, b.machine, a.db, tmp_path / "cmp")
    html = index.read_text()
    assert "<strong>dilated_conv2d</strong>: B runs 2x as fast as A" in html
    assert html.count('src="data:image/png;base64,') == 1
    body = html.split('<table id="table-compare-dilated_conv2d">', 1)[1].split("</table>")[0]
    assert body.count("<tr>") - 1 == 3
    assert 'id="table-compare-tuning"' in html
    rows = list(csv.DictReader((index.parent / "results.csv").open()))
    assert {r["fingerprint"] for r in rows} == {a.machine, b.machine}
    # a run id works as a selector too, and an unknown one is an error
    assert resolve("runB", a.db).machine == b.machine
    with pytest.raises(SelectionError):
        resolve("nonsense", a.db)


def test_the_report_command_prints_the_path(fixture, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_report_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--db", str(fixture.db), "--machine", fixture.machine,
                              "--out", str(tmp_path / "r")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'r' / 'index.html'}" in out
    assert "dilated_conv2d: 1.4x PyTorch" in out
    args = parser.parse_args(["report", "--db", str(tmp_path / "none.json")])
    assert args.func(args) == 2


def test_hostile_name_reaches_the_rows_unchanged(fixture):
    assert any(r.name == HOSTILE for r in load(fixture.db).rows)
