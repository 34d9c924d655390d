#!/usr/bin/env python3
"""Set up a virtual environment and run atrous's main job or its tests, with python3 alone.

    python3 scripts/dev.py main     # set up, verify every kernel, autotune, benchmark, report
    python3 scripts/dev.py test     # set up, then lint and run the test suite (--slow: all)
    python3 scripts/dev.py setup    # only set up .venv

Set-up is skipped when .venv already holds what pyproject.toml asks for.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
# The CPU build of PyTorch: a plain "torch" requirement would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def sh(*cmd: object, env: dict | None = None) -> None:
    """Run a command, echoing it; exit with its status if it fails."""
    print("+", " ".join(map(str, cmd)), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if code:
        sys.exit(code)


def setup() -> None:
    """Create .venv and install atrous (editable) with its dev extras, once per pyproject."""
    stamp = VENV / ".atrous-setup"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", TORCH)
    sh(PY, "-m", "pip", "install", "--quiet", "-e", ".[dev,report]")
    stamp.write_text(digest)


#: What the main command's tuning runs: both layouts of the default suite in five minutes
#: in all, shared by the problems by expected cost (each seeded with its neighbours' winners).
TUNE_ARGS = ("--layout", "NCHW", "NHWC", "--total-budget", "5m")


def main_job(extra: list[str]) -> None:
    """Check every kernel config against the reference, then tune every kernel of the
    default DeepLabV3 suite, NCHW and NHWC, on this machine (5 minutes in all, shared by
    the 56 problems by expected cost) into the user's tuning database, which every later
    `import atrous` uses; `atrous tune` prints the table. Problems already tuned for the
    installed kernels are skipped and an interrupted run resumes. Extra arguments go to
    `atrous tune` after TUNE_ARGS, so they win (e.g. --total-budget 10m, --force,
    --layout NHWC). Then `atrous bench` times the tuned kernels
    against their default configs, PyTorch, ONNX Runtime and NumPy (about 10 minutes on 2
    cores; rows stored beside the tuning database), and `atrous report` renders
    reports/<fingerprint id>/ from the stored data and prints the path of its index.html."""
    sh(BIN / "atrous", "info")
    sh(BIN / "atrous", "verify")
    sh(BIN / "atrous", "tune", *TUNE_ARGS, *extra)
    sh(BIN / "atrous", "bench")
    sh(BIN / "atrous", "report")


def test(extra: list[str]) -> None:
    """Lint, then run pytest on two worker processes (pytest-xdist; the suite is mostly
    single-threaded compiles and small kernels, so two workers use a 2-core CI machine).
    Extra arguments go to pytest after ours, so they win: `-n 0` runs in one process,
    `--slow` adds the tests marked slow."""
    sh(BIN / "ruff", "check", "src", "tests", "benchmarks", "scripts", "examples")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sh(PY, "-m", "pytest", "-n", "2", *extra, env=env)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["setup", "main", "test"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the job")
    args = parser.parse_args()
    setup()
    if args.job == "main":
        main_job(args.args)
    elif args.job == "test":
        test(args.args)


if __name__ == "__main__":
    cli()
