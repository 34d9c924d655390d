"""`atrous bench` measures what users call, honestly: each library in a worker process of
its own (and a worker that loaded another library is caught), the plain and prepared
convolution calls, OpenVINO checked against the float64 reference (a wrong baseline gives
no time), executed work on the roofline, and a command per row that selects that row."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys

import pytest

from atrous.autotune.validate import random_inputs
from atrous.jobs import bench as bench_module
from atrous.jobs.bench import Settings, bench
from atrous.jobs.cases import small_cases
from atrous.jobs.isolation import Provenance, run_isolated
from atrous.jobs.suite import smoke_suite
from atrous.kernels.conv.spec import executed_flops
from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings

SMOKE_NHWC = smoke_suite("NHWC", "float32", (1,))
GAP = SMOKE_NHWC[0]
CONV = next(e for e in SMOKE_NHWC if "d2" in e.name)
POOLING_UPSAMPLE = next(e for e in SMOKE_NHWC if "x1x1->" in e.name)


class OneMillisecond:
    """Every sample takes 1 ms (picklable: worker processes import this module)."""

    policy = "test-1ms"

    def __call__(self, run, calls):
        return 1e-3


def _ceilings() -> Ceilings:
    return Ceilings("m", "cpu", "t", 1.0, [Ceiling("read", BANDWIDTH, 10.0, None, ""),
                                           Ceiling("fma", COMPUTE, 100.0, "float32", "")])


def _import_openvino() -> str:
    import openvino  # noqa: F401  (the point: a foreign library in the atrous worker)

    return "imported"


def test_each_library_is_timed_in_a_process_of_its_own(tmp_path):
    pytest.importorskip("openvino", reason="the isolation test times OpenVINO as the baseline")
    provenance: dict[str, Provenance] = {}
    settings = Settings(torch=False, onnx=False)  # atrous, OpenVINO, NumPy: quick imports
    rows = bench([POOLING_UPSAMPLE], settings=settings, ceilings=_ceilings(),
                 tuning=tmp_path / "tuning.json", sampler=OneMillisecond(),
                 provenance=provenance)
    assert list(provenance) == ["atrous", "openvino", "numpy"]
    pids = [p.pid for p in provenance.values()]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    # One after the other: no worker's threads exist while another one samples.
    spans = sorted((p.started, p.ended) for p in provenance.values())
    assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert provenance["atrous"].stray == () and "numba" in provenance["atrous"].libraries
    assert not {"torch", "onnxruntime", "openvino"} & set(provenance["atrous"].libraries)
    assert "openvino" in provenance["openvino"].libraries
    assert provenance["openvino"].stray == ()
    timed = [r for r in rows if r.ok]
    assert {r.implementation for r in timed} >= {"atrous-numba", "openvino", "numpy-reference"}
    assert all(r.isolation == "process" for r in timed)


def test_a_worker_that_loads_another_library_is_caught(monkeypatch):
    pytest.importorskip("openvino", reason="the job imports OpenVINO")
    result, provenance = run_isolated(_import_openvino, "atrous")
    assert result == "imported" and provenance.stray == ("openvino",)
    assert provenance.pid != os.getpid()

    # ... and its rows then hold no time, only the reason.
    def contaminated(job, family, device="cpu"):
        measured = job()
        return measured, Provenance(family, 1, 0.0, 1.0, ("torch",), ("numba", "torch"))

    monkeypatch.setattr(bench_module, "run_isolated", contaminated)
    rows = bench([GAP], settings=Settings(torch=False, onnx=False, openvino=False,
                                          numpy=False), sampler=OneMillisecond())
    assert rows and all(not r.ok for r in rows)
    assert all(r.note == "not isolated: torch was loaded in the atrous worker" for r in rows)


def test_a_failing_worker_leaves_notes(monkeypatch):
    def crash(job, family, device="cpu"):
        raise bench_module.WorkerFailed(f"the {family} worker exited with code -9")

    monkeypatch.setattr(bench_module, "run_isolated", crash)
    rows = bench([GAP], settings=Settings(onnx=False, openvino=False, numpy=False))
    assert {r.implementation for r in rows} == {"atrous-numba", "atrous-numba-default",
                                                "torch"}
    assert all(not r.ok and "exited with code -9" in r.note for r in rows)


def test_conv_rows_time_the_plain_and_the_prepared_call(tmp_path):
    rows = {r.implementation: r for r in bench(
        [CONV], settings=Settings(isolate=False, onnx=False, openvino=False, numpy=False,
                                  suite="smoke"),
        ceilings=_ceilings(), tuning=tmp_path / "tuning.json", sampler=OneMillisecond())}
    assert {"atrous-numba-plain", "atrous-numba-prepared"} <= set(rows)
    plain, prepared = rows["atrous-numba-plain"], rows["atrous-numba-prepared"]
    assert plain.ok and prepared.ok and plain.label == "atrous plain call"
    assert plain.first_call_ms is not None and plain.first_call_ms > 0
    assert json.loads(plain.config)["variant"] in ("tile", "gemm", "winograd")
    assert plain.isolation == "shared"
    p = CONV.problem
    for r in rows.values():
        assert r.command == ("atrous bench --case 'conv3x3 d2 16->8 5x5 b1' --layout NHWC"
                             " --suite smoke --no-numpy --no-onnx --no-openvino"
                             " --shared-process")
        assert r.flops == p.flops  # the dense-equivalent work, for every implementation
    # The roofline counts the work each config executes, not the dense 3x3.
    for r in (plain, prepared, rows["atrous-numba"]):
        work = executed_flops(p, json.loads(r.config))
        assert r.work_flops == work and work <= p.valid_flops < p.flops
        assert r.ceiling_fraction == pytest.approx(
            _ceilings().attainable_s(work, p.bytes, "float32")[0] / 1e-3)
    assert rows["torch"].work_flops == p.flops


def test_executed_flops_count_winograd_multiplies_and_valid_taps():
    p = next(e for e in smoke_suite("NCHW") if "d2" in e.name).problem
    gemm, wino = executed_flops(p, {"variant": "gemm"}), executed_flops(p, {"variant": "winograd"})
    assert gemm == executed_flops(p, {"variant": "tile"}) == p.valid_flops < p.flops
    assert wino < gemm
    from atrous.kernels.conv.winograd_cpu import plan

    ay, ax = plan(p.h, p.w, 2)
    assert wino == 2 * p.n * ay.products * ax.products * p.cin * p.cout
    assert executed_flops(p, {}, backend="numpy") == p.flops


def test_a_wrong_baseline_gives_no_time(monkeypatch):
    from atrous.jobs import bench_calls

    def off_by_one(compiled, x):
        good = compiled.create_infer_request()
        return lambda: good.infer({0: x})[0] + 1.0

    pytest.importorskip("openvino", reason="the check runs OpenVINO")
    monkeypatch.setattr(bench_calls, "openvino_call", off_by_one)
    rows = {r.implementation: r for r in bench(
        [GAP], settings=Settings(isolate=False, torch=False, onnx=False, numpy=False),
        sampler=OneMillisecond())}
    assert not rows["openvino"].ok
    assert rows["openvino"].note.startswith("failed: WrongResult: wrong result")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_openvino_matches_the_reference_on_the_small_cases(layout):
    pytest.importorskip("openvino", reason="OpenVINO is the baseline under test")
    from atrous.jobs.baselines import openvino_op
    from atrous.jobs.bench_calls import check_output

    for op_name in ("global_avg_pool", "dilated_conv2d", "upsample_bilinear"):
        for p in small_cases(op_name, layout, "float32"):
            inputs = {k: None if v is None else v.astype("float32")
                      for k, v in random_inputs(p, 3).items()}
            assert check_output(p, inputs, openvino_op(p, inputs)()) == "", p.key


def test_openvino_missing_is_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    rows = {r.implementation: r for r in bench(
        [GAP], settings=Settings(isolate=False, torch=False, onnx=False, numpy=False),
        sampler=OneMillisecond())}
    assert not rows["openvino"].ok and "openvino is not installed" in rows["openvino"].note


def test_a_rows_command_selects_exactly_its_case():
    import argparse

    from atrous.cli import build_parser
    from atrous.cli.report import _entries

    row_command = bench_module.command_line(POOLING_UPSAMPLE, Settings(suite="smoke"))
    assert row_command == "atrous bench --case 'upsample 8x1x1->5x5 b1' --layout NHWC --suite smoke"
    args = build_parser().parse_args(shlex.split(row_command)[1:])
    assert isinstance(args, argparse.Namespace)
    (entry,) = _entries(args)
    assert entry == POOLING_UPSAMPLE


def test_an_unknown_case_is_refused_before_measuring(tmp_path, capsys):
    from atrous.cli import main

    assert main(["bench", "--suite", "smoke", "--case", "no such case", "--db",
                 str(tmp_path / "t.json")]) == 2
    out = capsys.readouterr().out
    assert "'no such case' is not a case of suite 'smoke'" in out
    assert "upsample 8x1x1->5x5 b1" in out  # the cases it has
    assert not (tmp_path / "t.ceilings.json").exists()


def test_the_report_prints_each_rows_command_and_the_plain_call(tmp_path):
    from atrous.report.summary import summarize
    from atrous.report.tables import bench_table

    slow = Ceilings("m", "cpu", "t", 1.0, [Ceiling("read", BANDWIDTH, 10.0, None, ""),
                                           Ceiling("fma", COMPUTE, 0.01, "float32", "")])
    rows = bench([CONV], settings=Settings(isolate=False, onnx=False, openvino=False,
                                           numpy=False, suite="smoke"),
                 ceilings=slow, tuning=tmp_path / "tuning.json", sampler=OneMillisecond())
    table = bench_table("dilated_conv2d", rows)
    assert table.columns[3:6] == ["plain call", "first call", "prepare_conv"]
    assert table.columns[-1] == "command" and "GFLOP/s effective" in table.columns
    (cells,) = table.rows
    assert cells[-1].text == rows[0].command and cells[-1].text.startswith("atrous bench --case")
    line = summarize(rows)[0].line()
    assert line.startswith("dilated_conv2d: 1x PyTorch (plain call)")
    assert "of measured peak" in line and "prepared call 1x PyTorch" in line
    plain = next(r for r in rows if r.implementation == "atrous-numba-plain")
    assert f"effective {plain.gflops:.3g} GFLOP/s on the dense FLOPs" in line


def test_version_1_rows_files_are_still_read():
    from atrous.report.rows import from_document, to_document

    rows = bench([GAP], settings=Settings(isolate=False, torch=False, onnx=False,
                                          openvino=False, numpy=False),
                 sampler=OneMillisecond())
    doc = to_document(rows)
    doc["schema_version"] = 1
    for raw in doc["rows"]:
        for name in ("openvino_version", "first_call_ms", "isolation", "command"):
            del raw[name]
    read, problems = from_document(doc)
    assert problems == [] and [r.median_ms for r in read] == [r.median_ms for r in rows]
    assert all(r.command == "" and r.first_call_ms is None for r in read)
