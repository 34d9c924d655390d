"""The fleet driver: `atrous tune --cluster` and `atrous bench --cluster`.

1. Connect to Ray, start one worker per CPU node (holding all its CPUs) or per GPU, each
   pinned to its node, and ask each for its fingerprint; group workers by fingerprint.
2. Each fingerprint gets every problem it does not have yet (fresh for the installed
   kernel source and timing policy); its workers take them one at a time, so two timings
   never share a machine, and same-fingerprint nodes split the work.
3. Results stream back: while a problem is tuned the driver polls its worker for the
   trial-log lines of the candidates measured so far and appends them to the trial log;
   when it ends, the record (and the rest of the lines) are checked and written before
   that worker gets its next problem. The driver is the only writer; workers tune into
   scratch files of their own (atrous.fleet.local).
4. A lost worker's problem goes back to its fingerprint's queue (atrous.fleet.queue) and
   resumes from the candidates that reached the trial log; a failing problem is a
   "failed" row, never a reason to stop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from atrous.autotune.database import Database
from atrous.autotune.records import Snapshot
from atrous.fleet import local
from atrous.fleet.cluster import connected, start_workers, stop_workers
from atrous.fleet.queue import Group, Worker, fill, group_workers
from atrous.fleet.results import (
    Outcome,
    ResultError,
    check_lines,
    check_tuning,
    resume_lines,
    store_trials,
    store_tuning,
)

#: Seconds between the driver's polls of busy workers for their trial-log lines.
POLL_S = 1.0
#: Seconds a poll waits for a worker's answer.
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Event:
    """What the driver just saw, for progress displays and tests.

    ``kind``: "start" (a worker took ``name``), "trials" (trial-log lines of ``name``
    came in while it is tuned), "result" (``outcome`` is in), "lost" (a worker died;
    ``name`` is the problem it was on, re-queued or untuned)."""

    kind: str
    group: Group
    worker: Worker | None = None
    name: str = ""
    outcome: Outcome | None = None


@dataclass
class FleetRun:
    """The outcome of a fleet run: per machine type, one Outcome per problem."""

    groups: dict[str, Group]
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def all(self) -> list[Outcome]:
        return [o for rows in self.outcomes.values() for o in rows]

    @property
    def untuned(self) -> list[Outcome]:
        return [o for o in self.all() if o.status == "untuned"]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.all() if o.status == "failed"]


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the worker (its process or its node) is gone."""
    ex = ray.exceptions
    return tuple(getattr(ex, n) for n in ("RayActorError", "WorkerCrashedError",
                                          "NodeDiedError", "ObjectLostError") if hasattr(ex, n))


def _machine_doc(snapshot: Snapshot, group: Group) -> dict[str, Any]:
    """This machine type's (and its family's) records: neighbour seeds for its worker."""
    return snapshot.only(lambda m: m.id == group.id or (
        bool(group.family) and m.family == group.family)).to_json()


class _Loop:
    """The dispatch loop shared by tune and bench: hand each idle worker its group's next
    item, wait for any answer, hand it to ``accept``; a lost worker's item is re-queued."""

    def __init__(self, ray: Any, groups: dict[str, Group],
                 submit: Callable[[Group, Worker, Any], Any],
                 accept: Callable[[Group, Worker, Any, Any], None],
                 fail: Callable[[Group, Worker, Any, str], None],
                 on_event: Callable[[Event], None], name: Callable[[Any], str],
                 poll: Callable[[Group, Worker, Any, Any], None] | None = None,
                 poll_s: float = POLL_S) -> None:
        self.ray, self.groups, self.submit_fn = ray, groups, submit
        self.accept, self.fail, self.on_event, self.name = accept, fail, on_event, name
        self.poll, self.poll_s = poll, poll_s
        self.inflight: dict[Any, tuple[Group, Worker]] = {}

    def drain(self) -> None:
        """Fetch what the busy workers measured so far (a worker that does not answer is
        left to its task's own outcome)."""
        ray, lost_errors = self.ray, _lost_errors(self.ray)
        asked = {w.handle.drain.remote(): (g, w) for g, w in self.inflight.values()}
        for ref, (group, worker) in asked.items():
            try:
                lines = ray.get(ref, timeout=DRAIN_TIMEOUT_S)
            except (*lost_errors, ray.exceptions.GetTimeoutError):
                continue
            if lines and self.poll is not None and worker.busy is not None:
                self.poll(group, worker, worker.busy, lines)

    def feed(self, group: Group) -> None:
        for worker in group.idle():
            item = group.take(worker)
            if item is None:
                return
            self.inflight[self.submit_fn(group, worker, item)] = (group, worker)
            self.on_event(Event("start", group, worker, self.name(item)))

    def lose(self, group: Group, worker: Worker) -> None:
        """``worker`` is gone: stop what is left of it, re-queue its item for a peer."""
        stop_workers(self.ray, [worker])
        item = group.lost(worker)
        self.on_event(Event("lost", group, worker, self.name(item)))
        self.feed(group)  # its item, now first in the queue, to an idle peer

    def run(self) -> None:
        ray, lost_errors = self.ray, _lost_errors(self.ray)
        for group in self.groups.values():
            self.feed(group)
        while self.inflight:
            ready, _ = ray.wait(list(self.inflight), num_returns=1,
                                timeout=self.poll_s if self.poll is not None else None)
            if not ready:
                self.drain()
                continue
            group, worker = self.inflight.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # the task raised: that item failed
                item = group.finished(worker)
                self.fail(group, worker, item, _first_line(exc))
            except (*lost_errors, ray.exceptions.RayError):  # the worker or its node is gone
                self.lose(group, worker)
                continue
            else:
                item = group.finished(worker)
                self.accept(group, worker, item, out)
            self.feed(group)
        for group in self.groups.values():
            group.drain_if_dead()


def _first_line(exc: BaseException) -> str:
    """A task's error in one line: the original exception's type and message."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]


def _fresh(snapshot: Snapshot, group: Group, problem: Any, settings: Any) -> bool:
    machine = snapshot.machines.get(group.id)
    rec = machine.records.get(f"{group.backend}|{problem.key}") if machine else None
    return rec is not None and rec.source_hash == local.source_for(
        problem.op, group.backend) and rec.policy == local.policy_for(
        problem, group.backend, group.device, settings)


def tune_fleet(address: str, entries: Sequence[Any], *, database: Database, settings: Any,
               backend: str = "auto", force: bool = False, with_torch: bool = False,
               on_event: Callable[[Event], None] | None = None,
               on_groups: Callable[[dict[str, Group]], None] | None = None,
               start_timeout_s: float | None = None, poll_s: float = POLL_S) -> FleetRun:
    """Tune ``entries`` on every machine type of the Ray cluster at ``address``.

    Args:
        address: "auto", "ray://host:port" or "local" (see atrous.fleet.cluster.connected).
        entries: suite entries (name and Problem).
        database: the tuning database; the driver is its only writer.
        settings: atrous.autotune.tuner.Settings for every problem.
        backend: "auto" (Triton on GPUs, Numba on CPU-only nodes), "numba" or "triton".
        force: re-tune problems a machine type already has.
        with_torch: workers also time PyTorch's op (CPU nodes).
        on_event: called for every start, result and lost worker.
        on_groups: called once with the machine types found, before any work starts.
        start_timeout_s: seconds a worker may take to start (default: START_TIMEOUT_S).
        poll_s: seconds between polls of the busy workers for the candidates they have
            measured (written to the trial log as they come, so that a lost worker's
            problem resumes from them on another node of its machine type).
    """
    from atrous.fleet.cluster import START_TIMEOUT_S

    began = time.perf_counter()
    entries = list(entries)
    emit = on_event or (lambda e: None)
    with connected(address) as ray:
        pairs, notes = start_workers(ray, backend, timeout_s=start_timeout_s or START_TIMEOUT_S)
        try:
            groups = group_workers(pairs)
            run = FleetRun(groups, {g: [] for g in groups}, notes)
            snapshot = database.read()
            for group in groups.values():
                todo = []
                for i, e in enumerate(entries):
                    if not local.supports(group.backend, e.problem.dtype):
                        run.outcomes[group.id].append(Outcome(
                            e.name, e.problem, group.id, "skipped",
                            note=f"{group.backend} does not support {e.problem.dtype}"))
                    elif not force and _fresh(snapshot, group, e.problem, settings):
                        rec = snapshot.machines[group.id].records[
                            f"{group.backend}|{e.problem.key}"]
                        run.outcomes[group.id].append(Outcome(
                            e.name, e.problem, group.id, "cached", config=dict(rec.config),
                            median_s=rec.median_s, default_median_s=rec.default_median_s))
                    else:
                        todo.append(i)
                fill(group, todo)
            if on_groups is not None:
                on_groups(groups)

            def submit(group: Group, worker: Worker, i: int) -> Any:
                p = entries[i].problem
                source = local.source_for(p.op, group.backend)
                policy = local.policy_for(p, group.backend, group.device, settings)
                task = local.TuneTask(
                    entries[i], group.backend, group.device, settings,
                    _machine_doc(database.read(), group),
                    resume_lines(database, group.id, group.backend, p.key, source, policy),
                    with_torch)
                return worker.handle.tune.remote(task)

            def record(group: Group, worker: Worker, i: int, outcome: Outcome) -> None:
                run.outcomes[group.id].append(outcome)
                emit(Event("result", group, worker, entries[i].name, outcome))

            def accept(group: Group, worker: Worker, i: int, out: Any) -> None:
                e = entries[i]
                try:
                    rec, lines, row = check_tuning(out, group.id, group.backend, e.problem)
                except ResultError as exc:
                    fail(group, worker, i, f"worker's answer rejected: {exc}")
                    return
                store_tuning(database, group.fingerprint, rec, lines)
                record(group, worker, i, Outcome(
                    e.name, e.problem, group.id, str(row.get("status")), worker.name,
                    row.get("config") if isinstance(row.get("config"), dict) else None,
                    row["median_s"], row["default_median_s"], row["torch_median_s"],
                    row["seconds"] or 0.0, int(row.get("trials") or 0),
                    str(row.get("note") or "")))

            def fail(group: Group, worker: Worker, i: int, why: str) -> None:
                record(group, worker, i, Outcome(entries[i].name, entries[i].problem, group.id,
                                                 "failed", worker.name, note=why))

            def streamed(group: Group, worker: Worker, i: int, lines: Any) -> None:
                try:
                    check_lines(lines, group.id, group.backend, entries[i].problem.key)
                except ResultError:
                    return  # the final answer is checked again, and rejected there
                store_trials(database, lines)
                emit(Event("trials", group, worker, entries[i].name))

            _Loop(ray, groups, submit, accept, fail, emit, lambda i: entries[i].name,
                  poll=streamed, poll_s=poll_s).run()
            for group in groups.values():
                for i, why in group.untuned:
                    run.outcomes[group.id].append(Outcome(
                        entries[i].name, entries[i].problem, group.id, "untuned", note=why))
        finally:
            stop_workers(ray, [w for w, _ in pairs])
    order = {e.name + e.problem.key: n for n, e in enumerate(entries)}
    for rows in run.outcomes.values():
        rows.sort(key=lambda o: order.get(o.name + o.problem.key, 0))
    run.seconds = time.perf_counter() - began
    return run


@dataclass
class BenchFleet:
    """`atrous bench --cluster`'s outcome: benchmark rows per machine type."""

    groups: dict[str, Group]
    rows: dict[str, list[Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    untuned: list[str] = field(default_factory=list)


def bench_fleet(address: str, entries: Sequence[Any], *, db: Any, settings: Any,
                backend: str = "auto", on_event: Callable[[Event], None] | None = None,
                on_groups: Callable[[dict[str, Group]], None] | None = None,
                start_timeout_s: float | None = None) -> BenchFleet:
    """Benchmark ``entries`` on every machine type of the cluster at ``address``, against
    each type's records in the tuning database ``db``; the driver stores the rows (one run
    id per machine type) and ceilings beside it. Same-fingerprint nodes split the entries.
    """
    from atrous.fleet.cluster import START_TIMEOUT_S
    from atrous.report.ceilings import Ceilings
    from atrous.report.rows import BenchRow
    from atrous.report.store import (
        append_rows,
        bench_path,
        ceilings_path,
        read_ceilings,
        write_ceilings,
    )

    entries = list(entries)
    emit = on_event or (lambda e: None)
    database = Database(db) if not isinstance(db, Database) else db
    with connected(address) as ray:
        pairs, notes = start_workers(ray, backend, timeout_s=start_timeout_s or START_TIMEOUT_S)
        try:
            groups = group_workers(pairs)
            result = BenchFleet(groups, {g: [] for g in groups}, notes=notes)
            run_ids = {g: uuid.uuid4().hex[:12] for g in groups}
            for group in groups.values():
                n = len(group.live())
                chunks = [tuple(range(k, len(entries), n)) for k in range(n)]
                fill(group, [c for c in chunks if c])
            if on_groups is not None:
                on_groups(groups)

            def submit(group: Group, worker: Worker, chunk: tuple[int, ...]) -> Any:
                stored = read_ceilings(ceilings_path(database.path)).get(group.id)
                task = local.BenchTask(
                    [entries[i] for i in chunk], replace(settings, device=group.device),
                    _machine_doc(database.read(), group),
                    None if stored is None else stored.to_json())
                return worker.handle.bench.remote(task)

            def accept(group: Group, worker: Worker, chunk: Any, out: Any) -> None:
                try:
                    if not isinstance(out, dict) or out.get("fingerprint", {}).get(
                            "id") != group.id:
                        raise ValueError("the worker benchmarked another machine")
                    rows = [replace(BenchRow.from_json(r), run=run_ids[group.id])
                            for r in out.get("rows") or []]
                    ceilings = Ceilings.from_json(out["ceilings"]) if out.get(
                        "ceilings") else None
                except (ValueError, TypeError, KeyError) as exc:
                    fail(group, worker, chunk, f"worker's answer rejected: {exc}")
                    return
                if ceilings is not None and group.id not in read_ceilings(
                        ceilings_path(database.path)):
                    write_ceilings(ceilings_path(database.path), ceilings)
                append_rows(bench_path(database.path), rows)
                result.rows[group.id] += rows
                emit(Event("result", group, worker, f"{len(chunk)} cases"))

            def fail(group: Group, worker: Worker, chunk: Any, why: str) -> None:
                result.failures.append(f"{group.id} on {worker.name}: {why}")
                emit(Event("result", group, worker, f"{len(chunk)} cases"))

            _Loop(ray, groups, submit, accept, fail, emit,
                  lambda c: f"{len(c or ())} cases").run()
            for group in groups.values():
                for chunk, why in group.untuned:
                    result.untuned += [f"{group.id}: {entries[i].name} ({why})" for i in chunk]
        finally:
            stop_workers(ray, [w for w, _ in pairs])
    return result
