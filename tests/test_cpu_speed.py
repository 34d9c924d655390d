"""benchmarks/cpu_speed.py: the target checks on hand-made cases (each target met, and
not met when one number is moved past its threshold), a case built from bench rows, and
one end-to-end run on the smoke suite."""

from __future__ import annotations

import csv
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from test_aspp_benchmarks import script

from atrous.core.args import from_nchw
from atrous.kernels.conv.spec import make_problem
from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings

cpu_speed = script("cpu_speed")
Case, Compile = cpu_speed.Case, cpu_speed.Compile


def passing() -> tuple[list, list]:
    """Cases and compile probes that meet every target (ratios are baseline / ours)."""
    cases = [
        Case("gap", "NCHW", "gap", 1.0, torch_ms=1.2, ort_ms=1.5, fraction=0.95),
        Case("logits", "NCHW", "upsample-logits", 1.0, torch_ms=4.0, ort_ms=3.5,
             fraction=0.6),
        Case("pool", "NCHW", "upsample-pool", 1.0, torch_ms=1.1, ort_ms=0.5),
        Case("d6", "NCHW", "conv-dilated", 1.0, torch_ms=1.5, ort_ms=1.4, tile_fraction=0.65),
        Case("d12", "NHWC", "conv-dilated", 1.0, torch_ms=3.0, tile_fraction=0.3),
        Case("1x1", "NCHW", "conv1x1", 1.0, torch_ms=0.95, ort_ms=0.5),
    ]
    compiles = [Compile("NCHW", {"global_avg_pool": ("gap", 0.3),
                                 "dilated_conv2d": ("d6", 1.0),
                                 "upsample_bilinear": ("logits", 0.5)}, import_s=0.2)]
    return cases, compiles


def _case(cases: list, name: str):
    return next(c for c in cases if c.name == name)


def _set(name: str, **values: float) -> Callable[[list, list], None]:
    def change(cases: list, compiles: list) -> None:
        for key, value in values.items():
            setattr(_case(cases, name), key, value)
    return change


def _slow_compile(cases: list, compiles: list) -> None:
    compiles[0].ops["dilated_conv2d"] = ("d6", 1.5)  # 0.3 + 1.5 + 0.5 > 2 s


def _both(cases: list, compiles: list) -> None:  # each >= 1x, the geomean 1.1x < 1.3x
    _set("d6", torch_ms=1.1, ort_ms=1.2)(cases, compiles)
    _set("d12", torch_ms=1.1)(cases, compiles)


BREAK = {
    "gap-bandwidth": _set("gap", fraction=0.85),
    "gap-torch": _set("gap", torch_ms=0.95),
    "logits-speed": _set("logits", ort_ms=2.9),  # PyTorch 4x alone is not enough
    "logits-bandwidth": _set("logits", fraction=0.45),
    "pool-torch": _set("pool", torch_ms=0.9),
    "dilated-every": _set("d6", ort_ms=0.95),  # geomean sqrt(0.95 * 3) stays above 1.3
    "dilated-geomean": _both,
    "dilated-tile": _set("d6", tile_fraction=0.55),
    "conv1x1-torch": _set("1x1", torch_ms=0.85),
    "compile": _slow_compile,
}


def test_every_target_is_met_on_passing_numbers():
    targets = cpu_speed.check_targets(*passing())
    assert [t.key for t in targets] == list(BREAK)
    assert all(t.met is True and t.verdict == "met" for t in targets), targets


@pytest.mark.parametrize("key", list(BREAK))
def test_a_number_past_its_threshold_fails_that_target_alone(key):
    cases, compiles = passing()
    BREAK[key](cases, compiles)
    verdicts = {t.key: t for t in cpu_speed.check_targets(cases, compiles)}
    assert verdicts[key].met is False and verdicts[key].verdict == "NOT MET"
    assert [k for k, t in verdicts.items() if not t.met] == [key]


def test_missing_numbers_are_not_applicable_and_named():
    cases = [Case("gap", "NCHW", "gap", 1.0), Case("d6", "NCHW", "conv-dilated", 1.0,
                                                     variants={"gemm"})]
    targets = {t.key: t for t in cpu_speed.check_targets(cases, [])}
    assert targets["gap-torch"].met is None and targets["gap-torch"].verdict == "n/a"
    assert targets["logits-speed"].detail == "no such shapes in this run"
    assert targets["dilated-tile"].met is None and "gemm" in targets["dilated-tile"].detail
    assert targets["compile"].met is None
    broken = [Compile("NHWC", error="probe exited 1: boom")]
    assert cpu_speed.check_targets(cases, broken)[-1].met is False
    # One shape without a baseline does not hide another that misses.
    two = [Case("a", "NCHW", "gap", 1.0), Case("b", "NCHW", "gap", 1.0, torch_ms=0.5)]
    gap = cpu_speed.check_targets(two, [])[1]
    assert gap.met is False and "1 not measured" in gap.detail and "0.50x (b NCHW)" in gap.detail


def _row(ms: float | None, config: dict | None = None, note: str = "") -> SimpleNamespace:
    return SimpleNamespace(median_ms=ms, ok=ms is not None, config_dict=config or {},
                           config_source="exact", note=note)


def test_a_case_from_bench_rows_uses_valid_work_and_the_fma_peak():
    ceilings = Ceilings("m", "cpu", "now", 1.0, [
        Ceiling("read", BANDWIDTH, 40.0, None, ""), Ceiling("write", BANDWIDTH, 20.0, None, ""),
        Ceiling("fma", COMPUTE, 100.0, "float32", ""),
        Ceiling("gemm", COMPUTE, 500.0, "float32", "")])  # not the conv roof
    p = make_problem(from_nchw(1, 8, 9, 9, "NHWC"), (4, 8, 3, 3), None, "float32",
                     padding="same", dilation=4, layout="NHWC")
    assert p.valid_flops < p.flops
    rows = {"atrous-numba": _row(0.01, {"variant": "gemm"}),
            "atrous-numba-default": _row(0.02, {"variant": "tile"}), "torch": _row(0.02),
            "onnxruntime": _row(None, note="no NHWC")}
    case = cpu_speed.build_case(p, "conv", rows, ceilings)
    assert case.role == "conv-dilated" and case.variant == "gemm" and case.source == "exact"
    assert case.gflops == pytest.approx(p.valid_flops / 0.01 / 1e6)
    assert case.fraction == pytest.approx(case.gflops / 100.0)
    assert case.tile_fraction == pytest.approx(p.valid_flops / 0.02 / 1e6 / 100.0)
    assert case.vs(case.best_ms) == pytest.approx(2.0) and case.ort_ms is None
    # Configs without a variant key are all the tile kernel.
    plain = cpu_speed.build_case(p, "conv", {"atrous-numba": _row(0.01)}, ceilings)
    assert plain.tile_fraction == pytest.approx(plain.fraction)


def test_the_smoke_suite_end_to_end(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from atrous.autotune.hardware import cpu_fingerprint
    from atrous.report.store import ceilings_path, write_ceilings

    db = tmp_path / "tuning.json"  # no tuning records: default configs; ceilings given
    write_ceilings(ceilings_path(db), Ceilings(cpu_fingerprint()["id"], "cpu", "test", 0.0, [
        Ceiling("read", BANDWIDTH, 30.0, None, "test"),
        Ceiling("write", BANDWIDTH, 25.0, None, "test"),
        Ceiling("fma", COMPUTE, 200.0, "float32", "test")]))
    md, rows_csv = tmp_path / "speed.md", tmp_path / "rows.csv"
    code = cpu_speed.main(["--suite", "smoke", "--batch", "1", "--no-numpy", "--db", str(db),
                           "--markdown", str(md), "--csv", str(rows_csv)])
    out = capsys.readouterr().out
    assert code == 0, out
    entries = cpu_speed.suite_entries("smoke", ["NCHW", "NHWC"], ["float32"], [1], None)
    assert len(entries) == 14 and any(e.name.endswith("(projection)") for e in entries)
    for e in entries:
        assert e.name in out
    assert "fingerprint: " in out and "threads: numba" in out
    assert "NCHW: import" in out and "NHWC: import" in out
    lines = out[out.index("TARGETS"):].splitlines()[1:11]
    assert [line.split()[0] in ("met", "NOT", "n/a") for line in lines] == [True] * 10
    for target in cpu_speed.check_targets(*passing()):
        assert target.name in out
    tile = next(line for line in lines if "tile kernel" in line)
    assert "n/a" not in tile  # the tile variant is timed where the bench ran another
    text = md.read_text()
    assert "| case | layout | atrous ms |" in text and "conv1x1 32->8 5x5 b1 (projection)" in text
    assert text.count("\n- **") == 10
    rows = list(csv.DictReader(rows_csv.open()))
    assert {(r["name"], r["layout"]) for r in rows} == {(e.name, e.problem.layout)
                                                        for e in entries}

