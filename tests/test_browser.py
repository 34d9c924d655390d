"""The report page in a real headless browser (Playwright driving Debian's chromium, which
`.ci/run` installs): it loads without console errors or network requests, every plot loads
with a real size, every link resolves, the tables hold the expected rows, and a hostile
shape name stays text. Skipped, with the reason, only where no Chromium binary exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from browser_check import check_page, find_chromium
from report_fixture import HOSTILE, build

from atrous.report.compare import compare
from atrous.report.render import report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="SKIPPED LOUDLY: no Chromium binary on PATH, so the report page"
    " was not checked in a browser; install it with `apt-get install chromium` (.ci/run does)")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("browser"))


def test_the_report_page_loads_cleanly(fixture, tmp_path):
    index = report(fixture.db, machine=fixture.machine, out=tmp_path)
    page = check_page(index, screenshot=True)
    assert page.problems() == []
    assert page.title.startswith("atrous report: fixture0001")
    # Eight plots (time per op, landscapes, roofline, validation), each decoded to a real
    # picture: matplotlib's smallest figure here is several hundred pixels a side.
    assert len(page.images) == 8
    assert all(i["width"] >= 200 and i["height"] >= 100 for i in page.images), page.images
    # The section links at the top lead to sections that exist.
    assert {"#benchmarks", "#roofline", "#tuning", "#validation"} <= set(page.links)
    tables = page.tables
    assert [r[0] for r in tables["table-bench-global_avg_pool"]] == ["gap 16x5x5 b1"]
    assert [r[0] for r in tables["table-bench-dilated_conv2d"]] == [
        "conv1x1 16->8 5x5 b1", "conv3x3 d2 16->8 5x5 b1", "conv3x3 d6 16->8 5x5 b1", HOSTILE]
    assert len(tables["table-bench-upsample_bilinear"]) == 2
    assert len(tables["table-tuning"]) == 6
    assert [r[0] for r in tables["table-ceilings"]] == ["read", "copy", "fma", "gemm"]
    assert tables["table-missing"][0][:2] == ["ONNX Runtime",
                                              "onnxruntime is not installed (fixture)"]
    torch_ratio = tables["table-bench-dilated_conv2d"][0][8]  # after OpenVINO and NumPy
    assert torch_ratio == "1.40x"
    assert page.screenshot is not None and page.screenshot[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_compare_page_loads_cleanly(tmp_path):
    a = build(tmp_path, "machineA0001", "runA", hostile=False)
    build(tmp_path, "machineB0001", "runB", speed=2.0, hostile=False)
    page = check_page(compare("runA", "runB", a.db, tmp_path / "cmp"))
    assert page.problems() == []
    assert len(page.images) == 1 and page.images[0]["width"] > 0
    assert len(page.tables["table-compare-dilated_conv2d"]) == 3
    assert all(r[5] == "2.00x" for r in page.tables["table-compare-dilated_conv2d"])


def test_the_browser_check_sees_broken_pages(tmp_path):
    """The check itself catches what it must: a console error, an exception, an image
    that does not load, a request that leaves the file, and links that lead nowhere."""
    (tmp_path / "there.md").write_text("here")
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>broken</title><img src='missing.png'>"
                    "<img src='http://127.0.0.1:9/x.png'>"
                    "<a href='#nowhere'>a</a><a href='#t'>b</a><a href='there.md'>c</a>"
                    "<a href='gone.csv'>d</a><a href='https://example.com/'>e</a>"
                    "<script>console.error('boom'); undefinedFunction();</script>"
                    "<table id='t'><tbody><tr><td>a</td><td>b</td></tr></tbody></table>")
    check = check_page(page)
    assert any("boom" in e for e in check.console_errors)
    assert any("undefinedFunction" in e for e in check.console_errors)
    assert len(check.broken_images) == 2
    assert check.network_requests == ["http://127.0.0.1:9/x.png"]
    assert check.broken_links == ["#nowhere", "gone.csv", "https://example.com/"]
    assert check.tables == {"t": [["a", "b"]]}
    assert len(check.problems()) >= 6


def test_a_missing_page_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no such HTML file"):
        check_page(tmp_path / "absent.html")


@pytest.mark.slow
def test_a_measured_report_end_to_end(tmp_path):
    """The pipeline a user runs, on real measurements rather than fixture rows: tune the
    smoke suite into a fresh database, bench it with every installed library in its own
    process, render the report, and open it. About two minutes on 2 cores, hence `slow`."""
    db = str(tmp_path / "tuning.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def atrous(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "atrous.cli", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"atrous {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    smoke = ("--suite", "smoke", "--batch", "1", "--layout", "NCHW")
    atrous("tune", *smoke, "--total-budget", "20s", "--db", db)
    atrous("bench", *smoke, "--no-numpy", "--db", db)
    atrous("report", "--db", db, "--out", str(tmp_path / "report"))
    page = check_page(tmp_path / "report" / "index.html")
    assert page.problems() == []
    assert page.title.startswith("atrous report: ")
    assert len(page.images) >= 4 and all(i["width"] > 0 for i in page.images)
    for op in ("global_avg_pool", "dilated_conv2d", "upsample_bilinear"):
        rows = page.tables[f"table-bench-{op}"]
        assert rows, op
        # every row timed atrous: its time cell is a number, not "n/a" or a failure note
        assert all(float(r[2]) > 0 for r in rows), rows
    assert len(page.tables["table-tuning"]) >= 3
