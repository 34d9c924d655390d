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


#: The oldest Triton the project declares (the GPU image's), checked in a second venv. Its
#: interpreter needs NumPy < 2.4 (it converts shape-(1,) arrays with int(), which 2.4 refuses).
TRITON_OLD = ("triton==3.6.*", "numpy<2.4")
VENV_OLD = ROOT / ".venv-triton36"
PY_OLD = VENV_OLD / ("Scripts" if os.name == "nt" else "bin") / "python"


def setup_old_triton(base: Path = VENV) -> Path:
    """Create .venv-triton36: only TRITON_OLD installed, every other package reached in
    ``base`` through a .pth file that appends ``base``'s site-packages after its own (so its
    triton and numpy win). Cheap: two wheels, once per TRITON_OLD; returns its python."""
    stamp = VENV_OLD / ".atrous-setup"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    base_py = base / ("Scripts" if os.name == "nt" else "bin") / "python"
    base_site = subprocess.run([str(base_py), "-c", code], capture_output=True, text=True,
                               check=True).stdout.strip()
    digest = hashlib.sha256(" ".join((*TRITON_OLD, base_site)).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return PY_OLD
    if not PY_OLD.exists():
        venv.EnvBuilder(with_pip=True).create(VENV_OLD)
    sh(PY_OLD, "-m", "pip", "install", "--quiet", "--no-deps", *TRITON_OLD)
    own_site = subprocess.run([str(PY_OLD), "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()
    # .pth files run in name order after site-packages is on sys.path: addsitedir appends
    # the base venv's packages (and runs their own .pth files, e.g. editable installs).
    (Path(own_site) / "zz_atrous_base.pth").write_text(
        f"import site; site.addsitedir({base_site!r})\n")
    stamp.write_text(digest)
    return PY_OLD


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


#: What runs under the oldest Triton: the compile check's default configs for sm_90 (the GPU
#: image's H100 / H200 runs Triton 3.6) and the ops' Triton interpreter tests.
OLD_TRITON_TESTS = ("tests/test_compile_check.py", "tests/test_gap.py", "tests/test_upsample.py",
                    "tests/test_conv.py", "-k", "compile_check or triton")


def test_old_triton() -> None:
    """Run OLD_TRITON_TESTS in .venv-triton36 (set up on first use), as a subprocess."""
    py = setup_old_triton()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ATROUS_COMPILE_SET": "defaults:sm_90"}
    sh(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *OLD_TRITON_TESTS, env=env)


def test(extra: list[str]) -> None:
    """Lint, then run pytest on two worker processes (pytest-xdist; the suite is mostly
    single-threaded compiles and small kernels, so two workers use a 2-core CI machine),
    then the Triton 3.6 part (test_old_triton). Extra arguments go to pytest after ours, so
    they win: `-n 0` runs in one process, `--slow` adds the tests marked slow."""
    sh(BIN / "ruff", "check", "src", "tests", "benchmarks", "scripts", "examples")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sh(PY, "-m", "pytest", "-n", "2", *extra, env=env)
    test_old_triton()


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
