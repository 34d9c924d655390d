"""The compile check's rows summarised per kernel, target, dtype and layout: what the CLI,
the GPU check script and the docs print."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict

from atrous.gpucheck.run import Row

HEADERS = ("op", "kernel", "target", "dtype", "layout", "compiles", "failed", "excluded",
           "regs max", "spilling (defaults)", "smem max KiB", "tensor cores", "s / compile")


def summarize(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """One line per (op, kernel, target, dtype, layout), in the HEADERS' order. Compiles
    count distinct cases; "spilling" counts spilling rows and, in brackets, the defaults'."""
    groups: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.case.op, r.kernel, r.target, r.case.dtype, r.case.layout)].append(r)
    lines = []
    for k in sorted(groups):
        g = groups[k]
        done = [r.compiled for r in g if r.compiled is not None]
        spilling = [r for r in g if r.compiled is not None and r.compiled.spills]
        mma = {c.tensor_cores for c in done}
        kinds = sorted({("wgmma" if c.wgmma else "mma") for c in done if c.tensor_cores})
        cores = ("-" if not done else "/".join(kinds) if mma == {True}
                 else "none" if mma == {False} else "some: " + "/".join(kinds))
        secs = [c.seconds for c in done]
        lines.append((*k, str(len(g)), str(sum(not r.ok for r in g)),
                       str(sum(r.excluded for r in g)),
                       str(max((c.registers for c in done), default=0)),
                       f"{len(spilling)} ({sum(r.case.default for r in spilling)})",
                       f"{max((c.shared_bytes for c in done), default=0) / 1024:.0f}", cores,
                       f"{sum(secs) / len(secs):.2f}" if secs else "-"))
    return lines


def failures(rows: Sequence[Row]) -> list[str]:
    """One line per failing row: kernel, target, case and what failed."""
    return [f"{r.describe()}: {'; '.join(r.failures)}" for r in rows if r.failures]


def markdown(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table."""
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(line) + " |" for line in summarize(rows)]
    return "\n".join(out)


def records(rows: Sequence[Row]) -> list[dict[str, object]]:
    """The rows as plain dicts (for ``--json``): the case, the kernel, the target, what the
    compile measured and the failures."""
    out = []
    for r in rows:
        c = r.case
        out.append({"op": c.op, "problem": c.problem, "dtype": c.dtype, "layout": c.layout,
                    "flags": c.flags, "config": c.config, "default": c.default,
                    "kernel": r.kernel, "target": r.target, "excluded": r.excluded,
                    "error": r.error, "failures": r.failures,
                    **(asdict(r.compiled) if r.compiled else {})})
    return out
