"""What machine this is: CPU brand, LLVM's name for the CPU, cores, and library versions.

The autotuner issue turns this into a fingerprint with a stable id and a family key.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path


def cpu_brand() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def llvm_cpu_name() -> str:
    """The CPU name LLVM (and so Numba) compiles for, e.g. "znver3"."""
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name()


def version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, str]:
    """Machine and library facts, as strings, for `atrous info` and report headers."""
    facts = {
        "cpu": cpu_brand(),
        "llvm cpu": llvm_cpu_name(),
        "cores": str(os.cpu_count()),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    for pkg in ("atrous", "numpy", "numba", "llvmlite", "torch", "triton"):
        facts[pkg] = version(pkg) or "not installed"
    return facts


def cuda_device() -> str | None:
    """The name of the first CUDA GPU, or None (also when torch is missing)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)
