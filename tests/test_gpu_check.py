"""The GPU check script's table and CSV paths, on the CPU under the Triton interpreter."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import HAS_TRITON

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not HAS_TRITON, reason="needs torch and triton")
def test_gpu_check_tiny_writes_validated_rows(tmp_path):
    path = tmp_path / "rows.csv"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny",
                             "--csv", str(path)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader(path.open()))
    assert {r["op"] for r in rows} == {"global_avg_pool", "dilated_conv2d", "upsample_bilinear"}
    assert {r["layout"] for r in rows} == {"NCHW", "NHWC"}
    checked = [r for r in rows if int(r["configs_checked"]) > 0]
    assert checked and all(r["ok"] == "True" for r in checked)
    assert all(float(r["ms_ours"]) > 0 for r in checked)
    assert "speedup" in result.stdout and f"{len(rows)} cases, 0 failed" in result.stdout
