"""A fixture tuning database, trial log, benchmark rows and ceilings, written through the
same APIs `atrous tune` and `atrous bench` use, with made-up timings chosen so that the
summary lines are known: atrous 1.4x faster than PyTorch, at 71% of the roofline bound."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from atrous.autotune.database import Database
from atrous.autotune.lookup import problem_features, source_hash
from atrous.autotune.records import Record
from atrous.autotune.search import FAILED, OK, Trial
from atrous.autotune.timing import Timing
from atrous.autotune.triallog import Run, RunKey, TrialLog
from atrous.core.registry import op
from atrous.jobs.suite import smoke_suite
from atrous.report.ceilings import BANDWIDTH, COMPUTE, Ceiling, Ceilings
from atrous.report.rows import BenchRow
from atrous.report.store import append_rows, bench_path, ceilings_path, write_ceilings

POLICY = "cpu-warm-median-v1"
HOSTILE = "conv <script>alert(1)</script> <img src=x onerror=console.error('xss')>"
TUNED_AT = "2026-01-02T03:04:05+00:00"


def fingerprint(machine: str) -> dict:
    return {"kind": "cpu", "machine": "x86_64", "brand": "Fixture CPU <b>bold</b>",
            "llvm_cpu": "znver4", "features_hash": "0123456789ab", "cores": 2,
            "caches": {"L1d": 32768, "L2": 1048576}, "numba": "0.0", "llvmlite": "0.0",
            "id": machine, "family": "x86_64:znver4:avx512"}


def ceilings(machine: str) -> Ceilings:
    return Ceilings(machine, "cpu", TUNED_AT, 1.0, [
        Ceiling("read", BANDWIDTH, 500.0, None, "fixture"),
        Ceiling("copy", BANDWIDTH, 400.0, None, "fixture"),
        Ceiling("fma", COMPUTE, 200.0, "float32", "fixture"),
        Ceiling("gemm", COMPUTE, 150.0, "float32", "fixture"),
    ], fingerprint(machine))


def row(entry, machine: str, run: str, impl: str, seconds: float | None, roof: Ceilings, *,
        note: str = "", name: str | None = None, config: dict | None = None) -> BenchRow:
    """A row as `atrous bench` writes it (fraction of the roofline from ``roof``)."""
    p = entry.problem
    work = getattr(p, "valid_flops", p.flops) if impl.startswith("atrous") else p.flops
    bound = roof.attainable_s(work, p.bytes, p.dtype)
    ms = None if seconds is None else seconds * 1e3
    return BenchRow(
        run=run, timestamp=TUNED_AT, fingerprint=machine, device="cpu",
        name=name or entry.name, op=p.op, backend="numba" if impl.startswith("atrous") else impl,
        implementation=impl, shape="x".join(map(str, p.in_shape)),
        out_shape="x".join(map(str, p.out_shape)), layout=p.layout, dtype=p.dtype,
        problem_key=p.key, config=json.dumps(config) if config else "",
        config_source="exact" if impl == "atrous-numba" else "default" if config else "",
        median_ms=ms, p20_ms=None if ms is None else ms * 0.95,
        p80_ms=None if ms is None else ms * 1.1, gbps=None if seconds is None
        else p.bytes / seconds / 1e9, gflops=None if seconds is None else p.flops / seconds / 1e9,
        bound=bound[1], ceiling_fraction=None if seconds is None else bound[0] / seconds,
        flops=p.flops, work_flops=work, bytes=p.bytes, policy="" if seconds is None else POLICY,
        note=note, atrous_version="0.1.0", numba_version="0.0", triton_version="",
        torch_version="2.0", onnxruntime_version="")


@dataclass
class Fixture:
    db: Path
    machine: str
    run: str
    entries: list


def build(tmp: Path, machine: str = "fixture0001", run: str = "run000000001", *,
          speed: float = 1.0, hostile: bool = True) -> Fixture:
    """Write the fixture files beside ``tmp/tuning.json``; ``speed`` divides every time
    (a second machine or run of the same shapes, ``speed`` times faster)."""
    db = Database(tmp / "tuning.json")
    fp = fingerprint(machine)
    roof = ceilings(machine)
    write_ceilings(ceilings_path(db.path), roof)
    entries = smoke_suite("NCHW", "float32", (1,))
    log = TrialLog(db.log_path)
    rows = []
    for entry in entries:
        p = entry.problem
        spec = op(p.op)
        space = list(spec.space(p, "numba"))
        default = spec.default_config(p, "numba")
        tuned = space[-1]
        work = getattr(p, "valid_flops", p.flops)
        best = roof.attainable_s(work, p.bytes, p.dtype)[0] / 0.71 / speed
        db.put(fp, Record(
            op=p.op, backend="numba", key=p.key, dtype=p.dtype, layout=p.layout,
            features=problem_features(p), config=dict(tuned), median_s=best, p20_s=best * 0.95,
            p80_s=best * 1.1, default_config=dict(default), default_median_s=best * 1.2,
            runner_up_gap=0.05, validation_error=3e-7, strategy="exhaustive", seed=0,
            trials=len(space), failed=1, pruned=0, policy=POLICY,
            source_hash=source_hash(p.op, "numba"), tuned_at=TUNED_AT, atrous_version="0.1.0"))
        key = RunKey(machine, "numba", p.key, source_hash(p.op, "numba"), POLICY)
        tuning_run = Run(f"tune-{p.op}-{len(rows)}")
        for i, config in enumerate(space):
            if i == 0:
                trial = Trial(dict(config), FAILED, error=0.5, reason="fixture: wrong result")
            else:
                t = best * (1 + 0.3 * (len(space) - 1 - i))
                trial = Trial(dict(config), OK, Timing.of([t, t * 1.05, t * 0.97], calls=3,
                                                         policy=POLICY), error=1e-7 * (1 + i))
            log.append(key, tuning_run, trial)
        log.finish(key, tuning_run)
        rows += [row(entry, machine, run, "atrous-numba", best, roof, config=dict(tuned)),
                 row(entry, machine, run, "atrous-numba-default", best * 1.2, roof,
                     config=dict(default)),
                 row(entry, machine, run, "torch", best * 1.4, roof),
                 row(entry, machine, run, "numpy-reference", best * 30, roof)]
        if p.op == "upsample_bilinear":
            rows.append(row(entry, machine, run, "onnxruntime", None, roof,
                            note="onnxruntime is not installed (fixture)"))
        else:
            rows.append(row(entry, machine, run, "onnxruntime", best * 2.0, roof))
    if hostile:  # a shape name that would inject markup if it were not escaped
        conv = next(e for e in entries if e.problem.op == "dilated_conv2d")
        best = roof.attainable_s(conv.problem.valid_flops, conv.problem.bytes, "float32")[0]
        rows += [row(conv, machine, run, "atrous-numba", best / 0.71 / speed, roof,
                     name=HOSTILE, config={"BLOCK_CO": 4}),
                 row(conv, machine, run, "torch", best / 0.71 / speed * 1.4, roof, name=HOSTILE)]
    append_rows(bench_path(db.path), rows)
    return Fixture(db.path, machine, run, entries)
