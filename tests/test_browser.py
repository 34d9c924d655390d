"""The report page in a real headless browser (Debian's chromium, which `.ci/run` installs):
it loads without console errors or network requests, every image loads, the tables hold
the expected rows, and a hostile shape name stays text. Skipped, with the reason, only
where no Chromium can be found."""

from __future__ import annotations

import pytest
from report_fixture import HOSTILE, build

from atrous.report.browser import find_chromium, inspect_page
from atrous.report.compare import compare
from atrous.report.render import report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="SKIPPED LOUDLY: no Chromium on PATH, so the report page was not"
    " checked in a browser; install it with `apt-get install chromium` (.ci/run does)")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("browser"))


def test_the_report_page_loads_cleanly(fixture, tmp_path):
    index = report(fixture.db, machine=fixture.machine, out=tmp_path)
    page = inspect_page(index, screenshot=True)
    assert page.console_errors == []
    assert page.network_requests == []
    assert len(page.images) == 8 and page.broken_images == []
    assert page.title.startswith("atrous report: fixture0001")
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
    assert page.screenshot is not None and page.screenshot[:4] == b"\x89PNG"


def test_the_compare_page_loads_cleanly(tmp_path):
    a = build(tmp_path, "machineA0001", "runA", hostile=False)
    build(tmp_path, "machineB0001", "runB", speed=2.0, hostile=False)
    page = inspect_page(compare("runA", "runB", a.db, tmp_path / "cmp"))
    assert page.console_errors == [] and page.network_requests == []
    assert len(page.images) == 1 and page.broken_images == []
    assert len(page.tables["table-compare-dilated_conv2d"]) == 3
    assert all(r[5] == "2.00x" for r in page.tables["table-compare-dilated_conv2d"])


def test_the_browser_check_sees_broken_pages(tmp_path):
    """The check itself catches what it must: a console error, an exception, an image
    that does not load, and a request that leaves the file."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>broken</title><img src='missing.png'>"
                    "<img src='http://127.0.0.1:9/x.png'>"
                    "<script>console.error('boom'); undefinedFunction();</script>"
                    "<table id='t'><tbody><tr><td>a</td><td>b</td></tr></tbody></table>")
    check = inspect_page(page)
    assert any("boom" in e for e in check.console_errors)
    assert any("undefinedFunction" in e for e in check.console_errors)
    assert len(check.broken_images) == 2
    assert check.network_requests == ["http://127.0.0.1:9/x.png"]
    assert check.tables == {"t": [["a", "b"]]}
