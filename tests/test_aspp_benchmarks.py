"""The ASPP benchmark scripts run end to end on tiny shapes (the GPU one on the CPU under
the Triton interpreter when there is no GPU), so they cannot rot between the runs on real
hardware. They run in-process: the kernels compiled by the other tests are reused."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support import DEVICE, HAS_TRITON

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module, with its folder on sys.path for its
    helpers (as when it runs as a script)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not HAS_TRITON, reason="needs torch and triton")
def test_gpu_aspp_tiny(tmp_path, capsys):
    gpu_aspp = script("gpu_aspp")
    rows = gpu_aspp.compare_aspp(DEVICE, tiny=True)
    assert {r.part for r in rows} == {"aspp", "head"}
    assert {r.layout for r in rows} == {"NCHW", "NHWC"}
    assert all(r.ok and r.ms_atrous > 0 for r in rows), [r.error for r in rows]
    gpu_aspp.print_rows(rows)
    gpu_aspp.write_csv(rows, str(tmp_path / "rows.csv"))
    assert len(list(csv.DictReader((tmp_path / "rows.csv").open()))) == len(rows)
    assert "| speedup |" in capsys.readouterr().out


def test_aspp_bench_smoke(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "rows.csv"
    assert script("aspp_bench").main(["--smoke", "--no-compile", "--samples", "1",
                                      "--batches", "2", "--csv", str(path)]) == 0
    rows = list(csv.DictReader(path.open()))
    assert [(r["part"], r["layout"]) for r in rows] == [
        ("aspp", "NCHW"), ("aspp", "NHWC"), ("head", "NCHW"), ("head", "NHWC")]
    assert all(float(r["rel_l2"]) < 1e-5 and float(r["ms_atrous"]) > 0 for r in rows)
    assert "| eager/atrous |" in capsys.readouterr().out
