"""What machine this is: facts for `atrous info`, and the fingerprint that keys tuning data.

A fingerprint is a flat dict of the facts that change which kernel config is fastest (for
a CPU: brand, LLVM's CPU name and features, cores, cache sizes, numba and llvmlite
versions; for a GPU: name, compute capability, SM count, L2 size, driver and CUDA
versions, triton and torch versions), plus ``id`` (a short stable hash of those facts) and
``family`` (a coarser key such as ``x86_64:znver4:avx512`` or ``cuda:sm_90`` that lookups
fall back to). Fingerprints are computed once per process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

Fingerprint = dict[str, Any]
_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


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


def llvm_cpu_features() -> list[str]:
    """The CPU features LLVM enables for this host ("avx2", "avx512f", ...), sorted."""
    import llvmlite.binding as llvm

    flat = llvm.get_host_cpu_features().flatten()
    return sorted(f[1:] for f in flat.split(",") if f.startswith("+"))


def version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_sizes() -> dict[str, int]:
    """Bytes of each data/unified cache level of CPU 0 ("L1d", "L2", "L3"), where Linux
    reports them; empty elsewhere."""
    sizes: dict[str, int] = {}
    for index in sorted(_CACHE_DIR.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = value
    return sizes


def last_level_cache() -> int:
    """Bytes of the largest CPU cache (32 MiB when the OS does not say)."""
    return max(cache_sizes().values(), default=32 * 1024**2)


def _vector_isa(features: list[str], machine: str) -> str:
    present = set(features)
    for isa in ("avx512f", "avx2", "avx", "sve", "neon", "sse4.2", "sse2"):
        if isa in present:
            return isa.removesuffix("f")
    return machine


#: Testing only: a JSON object of facts merged into this process's CPU and GPU
#: fingerprints (``{"brand": "node-a"}``), so that simulated nodes of a test's Ray cluster on
#: one host are different machines. Never set it for real tuning: records would be filed
#: under a machine that does not exist.
OVERRIDE_ENV = "ATROUS_FINGERPRINT_OVERRIDE"


def _override() -> dict[str, Any]:
    """The testing-only facts of ``ATROUS_FINGERPRINT_OVERRIDE`` (empty when unset); a
    value that is not a flat JSON object of scalars is an error naming the variable."""
    raw = os.environ.get(OVERRIDE_ENV)
    if not raw:
        return {}
    try:
        facts = json.loads(raw)
    except ValueError:
        facts = None
    if not isinstance(facts, dict) or not all(
            isinstance(v, (str, int, float, bool)) or v is None for v in facts.values()):
        raise ValueError(f"{OVERRIDE_ENV} must be a flat JSON object (testing only), got"
                         f" {raw[:200]!r}")
    return facts


def _seal(facts: Fingerprint, family: str) -> Fingerprint:
    """Add ``id`` (12 hex digits of a hash of the facts) and ``family`` to ``facts``
    (the testing-only ``ATROUS_FINGERPRINT_OVERRIDE`` facts merged in first)."""
    extra = _override()
    facts = {**facts, **{k: v for k, v in extra.items() if k != "family"}}
    family = str(extra.get("family", family))
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    return {**facts, "id": digest, "family": family}


@functools.lru_cache(maxsize=1)
def cpu_fingerprint() -> Fingerprint:
    """The fingerprint of this CPU and its Numba toolchain (computed once per process)."""
    features = llvm_cpu_features()
    machine, cpu = platform.machine(), llvm_cpu_name()
    facts = {
        "kind": "cpu",
        "machine": machine,
        "brand": cpu_brand(),
        "llvm_cpu": cpu,
        "features_hash": hashlib.sha256(",".join(features).encode()).hexdigest()[:12],
        "cores": os.cpu_count() or 1,
        "caches": cache_sizes(),
        "numba": version("numba"),
        "llvmlite": version("llvmlite"),
    }
    return _seal(facts, f"{machine}:{cpu}:{_vector_isa(features, machine)}")


@functools.lru_cache(maxsize=16)
def gpu_fingerprint(index: int = 0) -> Fingerprint:
    """The fingerprint of CUDA device ``index`` and its Triton/torch stack."""
    import torch

    props = torch.cuda.get_device_properties(index)
    major, minor = props.major, props.minor
    facts = {
        "kind": "cuda",
        "name": props.name,
        "capability": f"{major}.{minor}",
        "sms": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "memory_bytes": props.total_memory,
        "driver": _cuda_driver_version(),
        "cuda": torch.version.cuda,
        "triton": version("triton"),
        "torch": version("torch"),
    }
    return _seal(facts, f"cuda:sm_{major}{minor}")


def _cuda_driver_version() -> str | None:
    """The CUDA driver version as "major.minor", or None where torch cannot tell."""
    try:
        from torch._C import _cuda_getDriverVersion  # not public; absent in some builds

        v = int(_cuda_getDriverVersion())
        return f"{v // 1000}.{v % 1000 // 10}"
    except (ImportError, RuntimeError, ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=1)
def interpreter_fingerprint() -> Fingerprint:
    """The fingerprint of Triton's CPU interpreter (TRITON_INTERPRET=1, a debugging mode):
    its timings say nothing about a GPU, so it is a machine of its own."""
    facts = {"kind": "triton-interpreter", "cpu": cpu_fingerprint()["id"],
             "triton": version("triton"), "torch": version("torch")}
    return _seal(facts, "triton-interpreter")


def fingerprint(backend: str, device: str = "cpu") -> Fingerprint:
    """The fingerprint that keys ``backend``'s tuning data for arrays on ``device``
    ("cpu", "cuda" or "cuda:N"): the CPU for Numba; the GPU (or, for Triton on the CPU,
    the interpreter) for Triton."""
    if backend != "triton":
        return cpu_fingerprint()
    if not device.startswith("cuda"):
        return interpreter_fingerprint()
    index = int(device.split(":", 1)[1]) if ":" in device else _current_cuda_index()
    return gpu_fingerprint(index)


def _current_cuda_index() -> int:
    import torch

    return torch.cuda.current_device()


def describe() -> dict[str, str]:
    """Machine and library facts, as strings, for `atrous info` and report headers."""
    fp = cpu_fingerprint()
    facts = {
        "cpu": fp["brand"],
        "llvm cpu": fp["llvm_cpu"],
        "cores": str(fp["cores"]),
        "caches": ", ".join(f"{k} {v // 1024} KiB" for k, v in fp["caches"].items()) or "?",
        "machine": platform.machine(),
        "fingerprint": f"{fp['id']} (family {fp['family']})",
        "python": platform.python_version(),
    }
    for pkg in ("atrous", "numpy", "numba", "llvmlite", "torch", "triton", "optuna"):
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
