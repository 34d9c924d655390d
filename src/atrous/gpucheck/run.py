"""Run the compile check: plan every case, compile each distinct launch once per target (in
a few processes), and check what came out.

Checks per compiled launch on a target:
- it compiles (a failure names kernel, config, dtype, layout, flags and target);
- its shared memory fits the target's per-block limit, or the op's Space for that target
  leaves the config out (then it is reported as excluded, not failed); for the convolution
  the Space's estimate must bound what Triton allocates;
- the convolution's PTX has tensor-core instructions (``mma`` / ``wgmma``) for float16,
  bfloat16 and TF32, and none for IEEE float32;
- a default config does not spill registers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from atrous.gpucheck.cases import Case, defaults, sweep
from atrous.gpucheck.compile import Compiled, compile_launch, key
from atrous.gpucheck.targets import KIB, Target, shared_memory_limit, target
from atrous.kernels.launch_plan import Launch

#: Kernels whose PTX must use tensor cores in 16-bit and TF32 (and must not in float32).
MMA_KERNELS = ("_conv_kernel",)


@dataclass
class Row:
    """One launch of one case compiled for one target, and what the checks found."""

    case: Case
    kernel: str
    target: str
    compiled: Compiled | None = None
    error: str = ""
    excluded: bool = False  # the target's Space leaves this config out (shared memory)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.failures

    def describe(self) -> str:
        """Kernel, target and the case: what a failure message starts with."""
        return f"{self.kernel} on {self.target}: {self.case.label}"


#: How much :func:`build` covers: "full" every Space config, "sample" the stratified sample
#: (both with every default config), "ci" the sample with one default case per distinct
#: (op, dtype, layout, flags, config, kernel size) and the ASPP at output stride 16 only,
#: "defaults" the CI set's default cases alone (what a second Triton is checked on in CI).
MODES = ("ci", "sample", "full", "defaults")


def build(mode: str = "sample") -> list[Case]:
    """The cases of ``mode`` (see MODES): default configs (the DeepLabV3 suite, 64-bit
    offsets, the ASPP path) and the Space sweep."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cases = [*defaults(), *(sweep(mode == "full") if mode != "defaults" else ())]
    if mode in ("sample", "full"):
        return cases
    seen: set[tuple] = set()
    kept = []
    for c in cases:
        kh = getattr(c.source, "kh", None)
        k = (c.op, c.dtype, c.layout, c.flags, tuple(c.config.items()), kh,
             c.problem if c.op == "aspp" else "")
        if (c.op == "aspp" and not c.problem.startswith("aspp 33x33")) or c.flags == "unfused":
            continue
        if k not in seen:
            seen.add(k)
            kept.append(c)
    return kept


_JOBS: list[tuple[Launch, Target]] = []  # set before the pool forks: workers read it


def _compile_job(index: int) -> Compiled | str:
    launch, tgt = _JOBS[index]
    try:
        return compile_launch(launch, tgt)
    except Exception as e:  # reported per row, never stops the check
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {' / '.join(text[:3])[:400]}"


def run(cases: Sequence[Case], targets: Iterable[str], *, workers: int | None = None,
        progress: Callable[[int, int], None] | None = None) -> list[Row]:
    """Compile ``cases`` for ``targets`` and check them; one Row per case, launch and target.

    Args:
        cases: from :func:`build` (or a subset).
        targets: target names ("sm_80", "sm_90").
        workers: compile processes (default: the CPU count); 1 compiles in this process.
        progress: called with (done, total) distinct compiles.
    """
    tgts = [target(t) for t in targets]
    rows: list[Row] = []
    plans: list[list[Launch]] = []
    for case in cases:
        try:
            plans.append(case.plan())
        except Exception as e:  # a launcher that refuses its own config is a failure
            plans.append([])
            for t in tgts:
                rows.append(Row(case, "(plan)", t.name, error=f"{type(e).__name__}: {e}",
                                failures=[f"planning failed: {type(e).__name__}: {e}"]))
    jobs: dict[tuple, int] = {}
    where: list[tuple[Row, int]] = []
    _JOBS.clear()
    for case, launches in zip(cases, plans, strict=True):
        for launch in launches:
            for t in tgts:
                k = key(launch, t)
                if k not in jobs:
                    jobs[k] = len(_JOBS)
                    _JOBS.append((launch, t))
                row = Row(case, launch.name, t.name)
                rows.append(row)
                where.append((row, jobs[k]))
    results = _compile_all(len(_JOBS), workers or os.cpu_count() or 1, progress)
    for row, job in where:
        result = results[job]
        if isinstance(result, str):
            row.error = result
            row.failures.append(f"compile failed: {result}")
        else:
            row.compiled = result
            check(row)
    return rows


def _compile_all(n: int, workers: int, progress: Callable[[int, int], None] | None
                 ) -> list[Compiled | str]:
    """Every job's result, in job order; ``workers`` forked processes when more than one."""
    out: list[Compiled | str] = []
    if workers <= 1 or n <= 1:
        for i in range(n):
            out.append(_compile_job(i))
            if progress:
                progress(i + 1, n)
        return out
    with multiprocessing.get_context("fork").Pool(min(workers, n)) as pool:
        for result in pool.imap(_compile_job, range(n)):
            out.append(result)
            if progress:
                progress(len(out), n)
    return out


def check(row: Row) -> None:
    """Add the row's failures (and its ``excluded`` mark) from its compiled result."""
    c, case = row.compiled, row.case
    assert c is not None
    limit = shared_memory_limit(row.target)
    assert limit is not None
    if c.shared_bytes > limit:
        if not case.default and not _allowed(case, row.target):
            row.excluded = True
        else:
            why = "a default config" if case.default else "its Space allows it"
            row.failures.append(f"needs {c.shared_bytes / KIB:.0f} KiB of shared memory, over"
                                f" the {limit // KIB} KiB per block of {row.target} ({why})")
    if row.kernel == "_conv_kernel" and case.source is not None and not case.default:
        from atrous.kernels.conv.spec import triton_shared_bytes

        bound = triton_shared_bytes(case.source, case.config, target(row.target).capability)
        if c.shared_bytes > bound:
            row.failures.append(f"shared memory {c.shared_bytes} B exceeds the Space's estimate"
                                f" {bound} B: the resource constraint could admit it")
    if row.kernel in MMA_KERNELS:
        if case.dtype == "float32" and c.tensor_cores:
            row.failures.append(f"IEEE float32 PTX has tensor-core instructions ({c.mma} mma,"
                                f" {c.wgmma} wgmma)")
        if case.dtype != "float32" and not c.tensor_cores:
            row.failures.append(f"{case.dtype} PTX has no tensor-core instructions")
    if case.default and c.spills:
        row.failures.append(f"default config spills: {c.registers} registers,"
                            f" {c.local_bytes} B of local memory per thread")


def _allowed(case: Case, tgt: str) -> bool:
    """Whether the op's Space for target ``tgt`` allows the case's config."""
    from atrous.core.registry import op

    spec = op(case.op).spec
    return spec.triton_space(case.source, tgt).allows(case.config)


def timed_run(mode: str, targets: Iterable[str], **kwargs: object) -> tuple[list[Row], float]:
    """:func:`run` over :func:`build` of ``mode``, and its wall seconds."""
    start = time.perf_counter()
    rows = run(build(mode), targets, **kwargs)  # type: ignore[arg-type]
    return rows, time.perf_counter() - start
