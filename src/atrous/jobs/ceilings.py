"""`atrous ceilings`: the machine's ceilings, measured by atrous itself: how fast memory
and arithmetic can go (stored as :class:`atrous.report.ceilings.Ceilings`).

A report places every kernel against these numbers, so they are measured on the machine
with the same tools the kernels use, never quoted from a data sheet:

- CPU memory bandwidth: a parallel read-only sum (``read``), a parallel copy (``copy``,
  bytes read plus bytes written) and a parallel fill (``write``), all in Numba, over
  arrays several times larger than the last-level cache;
- CPU arithmetic: a register-blocked FMA loop in Numba per dtype (``fma``: independent
  accumulators, fully unrolled, so the loop is bound by the FMA units alone) and a large
  float32 GEMM (``gemm``, NumPy's BLAS or PyTorch's, the faster one);
- GPU (lazily, through torch): device-to-device copy bandwidth and the matmul rate per
  dtype (float16, bfloat16, float32 with and without TF32).

Each ceiling is the best of a few repetitions: a ceiling is an upper bound, and the slower
repetitions are the machine's noise, not its limit.
"""

from __future__ import annotations

import datetime
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings
from atrous.report.store import ceilings_path, read_ceilings, write_ceilings

_MIB = 1024**2


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def best_of(run: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run``, after one untimed call (which
    absorbs compilation and first-touch page faults)."""
    run()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


# ---------------------------------------------------------------------------------- CPU


@functools.cache
def _bandwidth_kernels() -> tuple[Callable, Callable, Callable]:
    """Numba's parallel read, copy and fill over contiguous chunks (compiled once).

    Each parallel iteration hands one contiguous slice to a serial helper: inside the
    helper the loop's bounds and strides are plain, so LLVM vectorises it (an index loop
    written inline in the prange body is not, and runs several times slower).
    """
    from numba import njit, prange

    # fastmath lets LLVM reassociate the sum into vector lanes: the loop is then bound by
    # loads alone, which is what a read-bandwidth ceiling must measure.
    @njit(fastmath=True, cache=True)
    def sum_chunk(v):
        s = 0.0
        for i in range(v.size):
            s += v[i]
        return s

    @njit(cache=True)
    def copy_chunk(d, s):
        for i in range(s.size):
            d[i] = s[i]

    @njit(cache=True)
    def fill_chunk(d, value):
        for i in range(d.size):
            d[i] = value

    @njit(parallel=True, fastmath=True, cache=True)
    def read(a, chunks):
        step = (a.size + chunks - 1) // chunks
        partial = np.zeros(chunks)
        for c in prange(chunks):
            partial[c] = sum_chunk(a[c * step:min(a.size, (c + 1) * step)])
        return partial.sum()

    @njit(parallel=True, cache=True)
    def copy(dst, src, chunks):
        step = (src.size + chunks - 1) // chunks
        for c in prange(chunks):
            lo, hi = c * step, min(src.size, (c + 1) * step)
            copy_chunk(dst[lo:hi], src[lo:hi])

    @njit(parallel=True, cache=True)
    def fill(dst, value, chunks):
        step = (dst.size + chunks - 1) // chunks
        for c in prange(chunks):
            fill_chunk(dst[c * step:min(dst.size, (c + 1) * step)], value)

    return read, copy, fill


def cpu_bandwidth(nbytes: int, repeats: int = 5) -> list[Ceiling]:
    """Read, copy and write bandwidth over float64 arrays of ``nbytes`` each."""
    import numba

    read, copy, fill = _bandwidth_kernels()
    chunks = 8 * numba.get_num_threads()  # several chunks per thread evens out the work
    n = max(nbytes // 8, 1024)
    src = np.ones(n)  # written once, so every page is mapped before timing
    dst = np.zeros(n)
    size = f"{n * 8 / _MIB:.0f} MiB float64 arrays, {numba.get_num_threads()} threads," \
           f" best of {repeats}"
    t_read = best_of(lambda: read(src, chunks), repeats)
    t_copy = best_of(lambda: copy(dst, src, chunks), repeats)
    t_fill = best_of(lambda: fill(dst, 1.5, chunks), repeats)
    return [
        Ceiling("read", BANDWIDTH, n * 8 / t_read / 1e9, None, f"Numba parallel sum over {size}"),
        Ceiling("copy", BANDWIDTH, 2 * n * 8 / t_copy / 1e9, None,
                f"Numba parallel copy (bytes read + written) of {size}"),
        Ceiling("write", BANDWIDTH, n * 8 / t_fill / 1e9, None, f"Numba parallel fill of {size}"),
    ]


@functools.cache
def _fma_kernel(width: int) -> Callable:
    """A Numba kernel doing ``iters`` rounds of ``acc = acc * m + c`` on ``width``
    independent accumulators per thread.

    ``width`` is a compile-time constant, so LLVM unrolls the inner loop and keeps the
    accumulators in vector registers (a register-blocked loop): with enough independent
    chains to cover the FMA latency on every FMA unit, the loop runs at the FMA peak.
    Only ``contract`` is allowed (a*m + c -> fma), not reassociation, so LLVM cannot
    shorten the dependent chains.
    """
    from numba import njit, prange

    w = width

    @njit(parallel=True, fastmath={"contract"})
    def fma(seed, coef, iters, threads):
        out = np.zeros(threads, dtype=seed.dtype)
        for t in prange(threads):
            acc = seed[:w].copy()
            m, c = coef[0], coef[1]
            for _ in range(iters):
                for j in range(w):
                    acc[j] = acc[j] * m + c
            out[t] = acc.sum()
        return out

    return fma


def cpu_fma(dtype: str, iters: int = 200_000, repeats: int = 3,
            widths: tuple[int, ...] | None = None) -> Ceiling:
    """The FMA peak for ``dtype``: the best over accumulator widths of 8 and 16 vectors of
    64 bytes (8 is enough to hide the latency of two FMA units on current x86 and Arm
    cores; 16 guards against a core with more)."""
    import numba

    item = np.dtype(dtype).itemsize
    widths = widths or (8 * 64 // item, 16 * 64 // item)
    threads = numba.get_num_threads()
    coef = np.array([0.999, 0.001], dtype=dtype)  # a contraction: values stay finite
    best = 0.0
    for w in widths:
        seed = np.random.default_rng(0).random(w).astype(dtype)
        kernel = _fma_kernel(w)
        t = best_of(lambda k=kernel, s=seed: k(s, coef, iters, threads), repeats)
        best = max(best, 2 * w * iters * threads / t / 1e9)
    return Ceiling("fma", COMPUTE, best, dtype,
                   f"Numba register-blocked FMA loop, {threads} threads, accumulator widths"
                   f" {'/'.join(map(str, widths))}, best of {repeats}")


def cpu_gemm(n: int = 2048, repeats: int = 3) -> Ceiling:
    """A float32 n x n x n GEMM: NumPy's BLAS, and PyTorch's when installed (the faster)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    rates = {"numpy": 2 * n**3 / best_of(lambda: np.matmul(a, b, out=out), repeats) / 1e9}
    try:
        import torch
    except ImportError:
        pass
    else:
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        rates["torch"] = 2 * n**3 / best_of(lambda: torch.matmul(ta, tb, out=tout), repeats) / 1e9
    lib = max(rates, key=rates.__getitem__)
    shown = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
    return Ceiling("gemm", COMPUTE, rates[lib], "float32",
                   f"float32 {n}x{n}x{n} matmul, best of {repeats} ({shown} GFLOP/s)")


def measure_cpu(*, bandwidth_bytes: int | None = None, fma_iters: int = 200_000,
                gemm_n: int = 2048, repeats: int = 10) -> list[Ceiling]:
    """Every CPU ceiling (a few seconds at the default sizes, plus Numba compilation).

    Args:
        bandwidth_bytes: bytes per array of the bandwidth tests (default: 4x the last-level
            cache, at least 64 MiB and at most 512 MiB, so the caches cannot hold them).
        fma_iters: rounds of the FMA loop per call.
        gemm_n: the GEMM's size.
        repeats: repetitions of each bandwidth test (the best counts).
    """

    from atrous.autotune.hardware import last_level_cache

    if bandwidth_bytes is None:
        bandwidth_bytes = min(max(4 * last_level_cache(), 64 * _MIB), 512 * _MIB)
    entries = cpu_bandwidth(bandwidth_bytes, repeats)
    entries += [cpu_fma(d, fma_iters) for d in ("float32", "float64")]
    entries.append(cpu_gemm(gemm_n))
    return entries


# ---------------------------------------------------------------------------------- GPU


def measure_gpu(device: str = "cuda", *, copy_bytes: int = 1 << 30, matmul_n: int = 8192,
                repeats: int = 10) -> list[Ceiling]:
    """Device-to-device copy bandwidth and the matmul rate per dtype on a CUDA GPU,
    timed with CUDA events (torch is imported here, only when asked)."""
    import torch

    def gpu_time(run: Callable[[], Any]) -> float:
        run()  # warm-up: cuBLAS heuristics, allocator
        torch.cuda.synchronize(device)
        best = math.inf
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    def copy_time(n: int) -> float:
        src = torch.ones(n, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        return gpu_time(lambda: dst.copy_(src))  # both freed on return

    n = copy_bytes // 4
    entries = [Ceiling("copy", BANDWIDTH, 2 * n * 4 / copy_time(n) / 1e9, None,
                       f"torch device-to-device copy of {copy_bytes / _MIB:.0f} MiB (bytes read"
                       f" + written), CUDA events, best of {repeats}")]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    kinds = (("float16", torch.float16, False), ("bfloat16", torch.bfloat16, False),
             ("float32", torch.float32, False), ("tf32", torch.float32, True))
    try:
        for name, dtype, allow in kinds:
            torch.backends.cuda.matmul.allow_tf32 = allow
            a = torch.randn(matmul_n, matmul_n, dtype=dtype, device=device)
            b = torch.randn(matmul_n, matmul_n, dtype=dtype, device=device)
            t = gpu_time(lambda a=a, b=b: torch.matmul(a, b))
            entries.append(Ceiling("matmul", COMPUTE, 2 * matmul_n**3 / t / 1e9, name,
                                   f"torch {name} {matmul_n}^3 matmul, CUDA events, best of"
                                   f" {repeats}"))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return entries


def measure(fingerprint: dict[str, Any], device: str = "cpu", **sizes: Any) -> Ceilings:
    """Measure the ceilings of ``device`` ("cpu" or "cuda[:N]"), the machine of
    ``fingerprint`` (``atrous.autotune.hardware.fingerprint``'s dict, stored with them);
    ``sizes`` go to :func:`measure_cpu` or :func:`measure_gpu`."""
    t0 = time.perf_counter()
    entries = measure_gpu(device, **sizes) if device.startswith("cuda") else measure_cpu(**sizes)
    return Ceilings(str(fingerprint["id"]), device, _now(), time.perf_counter() - t0, entries,
                    dict(fingerprint))


def ensure_ceilings(db: str | Path | None, device: str = "cpu", *, remeasure: bool = False,
                    **sizes: Any) -> Ceilings:
    """This machine's ceilings for ``device`` from the ceilings file beside ``db``,
    measured (and stored) first when missing or when ``remeasure``."""
    from atrous.autotune.hardware import fingerprint

    fp = fingerprint("triton" if device.startswith("cuda") else "numba", device)
    path = ceilings_path(db)
    stored = read_ceilings(path).get(fp["id"])
    if stored is not None and stored.entries and not remeasure:
        return stored
    fresh = measure(fp, device, **sizes)
    write_ceilings(path, fresh)
    return fresh
