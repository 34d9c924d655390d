"""`atrous verify`: every op x every config x layout x dtype on the small cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from atrous.core.registry import OPS, op
from atrous.dispatch import BACKEND_DTYPES
from atrous.jobs.cases import small_cases


@dataclass
class VerifyRow:
    """The outcome of one (op, backend, layout, dtype): worst error over all configs x cases."""

    op: str
    backend: str
    layout: str
    dtype: str
    configs: int = 0
    checks: int = 0
    failures: int = 0
    worst_rel_error: float = 0.0
    first_failure: str = ""

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.checks > 0


def verify(backend: str, *, ops: Iterable[str] | None = None,
           layouts: Iterable[str] = ("NCHW", "NHWC"),
           dtypes: Iterable[str] | None = None, device: str = "cpu",
           progress: Callable[[Iterable], Iterable] = iter) -> list[VerifyRow]:
    """Check every config of ``backend``'s Space on every small case; one row per
    (op, layout, dtype); ``ops`` defaults to every registered op that has ``backend``. An
    exception in a kernel counts as a failure, with its message."""
    from atrous.autotune import validate

    dtypes = tuple(dtypes or BACKEND_DTYPES[backend])
    if ops is None:
        ops = [name for name, opdef in OPS.items() if opdef.has_backend(backend)]
    rows = [VerifyRow(o, backend, la, dt) for o in ops for la in layouts for dt in dtypes
            if not (backend == "triton" and o == "dilated_conv2d" and dt == "bfloat16"
                    and device == "cpu")]  # the interpreter's bf16 tl.dot is wrong
    work = [(row, problem, cfg) for row in rows
            for problem in small_cases(row.op, row.layout, row.dtype)
            for cfg in op(row.op).space(problem, backend).configs()]
    for row in rows:
        cases = small_cases(row.op, row.layout, row.dtype)
        row.configs = len(op(row.op).space(cases[0], backend)) if cases else 0
        if not cases:  # nothing checked is no pass
            row.first_failure = f"{row.op} declares no verify cases (Op.cases)"
    for row, problem, cfg in progress(work):
        row.checks += 1
        try:
            result = validate.check(problem, backend, cfg, device=device)
            row.worst_rel_error = max(row.worst_rel_error, result.rel_error)
            passed, message = result.ok, str(result)
        except Exception as exc:  # a crashing config is a failure to report, not to raise
            passed, message = False, f"{type(exc).__name__}: {exc}"
        if not passed:
            row.failures += 1
            row.first_failure = row.first_failure or f"{problem.key} {cfg}: {message}"
    return rows
