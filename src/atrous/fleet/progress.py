"""What a fleet run shows: a progress bar per machine type while it runs, a line per result
and per lost worker, and at the end a table per machine type (problem, best config,
median, speedup over the default config) and the problems left untuned."""

from __future__ import annotations

from typing import Any

from rich import progress as rp
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from atrous.fleet.driver import Event, FleetRun
from atrous.fleet.queue import Group


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _config(config: dict[str, Any] | None) -> str:
    """A config's keys, less those of the conv variants it did not pick."""
    if not config:
        return "-"
    from atrous.kernels.conv.schedule_cpu import own_keys

    return " ".join(f"{k}={v}" for k, v in own_keys(config).items())


def machine_label(group: Group) -> str:
    """A machine type in a few words: its id, family and what it is (CPU or GPU name)."""
    fp = group.fingerprint
    what = fp.get("brand") or fp.get("name") or ""
    nodes = len(group.workers)
    return (f"{group.id} {group.family}" + (f" ({what})" if what else "")
            + f", {nodes} worker{'s' if nodes != 1 else ''}")


class FleetProgress:
    """A rich progress display with one bar per machine type (use as a context manager;
    pass :meth:`groups` as ``on_groups`` and :meth:`event` as ``on_event``)."""

    def __init__(self, console: Any, what: str = "tuning") -> None:
        self.console, self.what = console, what
        columns = (rp.TextColumn("{task.description}"), rp.BarColumn(),
                   rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                   rp.TextColumn("{task.fields[now]}"))
        self.progress = rp.Progress(*columns, console=console, transient=True)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> FleetProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def groups(self, groups: dict[str, Group]) -> None:
        """Add one bar per machine type."""
        for gid, group in groups.items():
            self.console.print(f"machine {machine_label(group)}: {group.total} to do"
                               f" ({', '.join(w.name for w in group.workers)})",
                               highlight=False, markup=False, soft_wrap=True)
            self.tasks[gid] = self.progress.add_task(escape(f"{gid} {group.family}"),
                                                     total=group.total, now="")

    def event(self, e: Event) -> None:
        """Advance the bars and print a line per result and lost worker."""
        task = self.tasks.get(e.group.id)
        if task is None:
            return
        who = e.worker.name if e.worker else ""
        if e.kind == "start":
            self.progress.update(task, now=escape(f"{who}: {e.name}"))
        elif e.kind == "trials":
            self.progress.update(task, now=escape(f"{who}: {e.name}, measuring"))
        elif e.kind == "lost":
            self.console.print(f"  lost worker {who} on {e.group.id} while on {e.name}:"
                               f" re-queued for another worker of this machine type",
                               highlight=False, markup=False, soft_wrap=True)
        elif e.kind == "result":
            self.progress.advance(task)
            o = e.outcome
            if o is None:
                return
            shown = (f"{_ms(o.median_s)} ms, {o.speedup:.2f}x vs default" if o.speedup
                     else _ms(o.median_s) + " ms") if o.status != "failed" else o.note
            self.console.print(f"  {o.status:8s} {e.group.id} {o.name} ({o.problem.layout}"
                               f" {o.problem.dtype}) on {who}: {shown} [{o.seconds:.1f}s]",
                               highlight=False, markup=False, soft_wrap=True)


def tables(run: FleetRun) -> list[Table]:
    """One table per machine type: problem, status, best config, medians, speedup."""
    out = []
    for gid, rows in run.outcomes.items():
        group = run.groups[gid]
        table = Table(title=Text(f"machine {machine_label(group)}: median ms per call"))
        for col in ("problem", "layout", "dtype", "status", "best config", "tuned", "default",
                    "speedup", "worker", "note"):
            table.add_column(col, justify="right" if col in ("tuned", "default", "speedup")
                             else "left")
        for o in rows:
            table.add_row(*(Text(str(c)) for c in (
                o.name, o.problem.layout, o.problem.dtype, o.status, _config(o.config),
                _ms(o.median_s), _ms(o.default_median_s),
                "-" if o.speedup is None else f"{o.speedup:.2f}x", o.worker or "-",
                o.note[:80])))
        out.append(table)
    return out


def summary_lines(run: FleetRun) -> list[str]:
    """Counts per machine type, then each problem left untuned and why."""
    lines = []
    for gid, rows in run.outcomes.items():
        counts: dict[str, int] = {}
        for o in rows:
            counts[o.status] = counts.get(o.status, 0) + 1
        lines.append(f"{gid}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for o in run.untuned:
        lines.append(f"untuned on {o.machine}: {o.name} ({o.problem.layout}"
                     f" {o.problem.dtype}): {o.note}")
    lines += [f"worker not started: {n}" for n in run.notes]
    return lines


def bench_table(machine: str, rows: list[Any]) -> Table:
    """One machine type's benchmark: per case, the tuned atrous call, the default config and
    PyTorch (median ms), and PyTorch's time over the call a user gets."""
    from atrous.report.summary import tuned_row, user_row

    cases: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        cases.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    table = Table(title=Text(f"machine {machine}: benchmark median ms per call"))
    for col in ("case", "layout", "dtype", "atrous", "default", "torch", "x torch"):
        table.add_column(col, justify="left" if col in ("case", "layout", "dtype") else "right")

    def ms(row: Any) -> str:
        return f"{row.median_ms:.4g}" if row is not None and row.ok else "-"

    for (name, layout, dtype), cells in cases.items():
        tuned, ours, torch = tuned_row(cells), user_row(cells), cells.get("torch")
        default = cells.get(f"{tuned.implementation}-default") if tuned is not None else None
        ratio = (f"{torch.median_ms / ours.median_ms:.2f}x" if ours is not None and ours.ok
                 and torch is not None and torch.ok else "-")
        table.add_row(*(Text(c) for c in (name, layout, dtype, ms(ours), ms(default),
                                          ms(torch), ratio)))
    return table
