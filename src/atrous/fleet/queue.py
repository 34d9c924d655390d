"""The fleet's work queue: workers grouped by fingerprint, each group's items handed out one
at a time to its idle workers, and what happens when a worker is lost.

Pure bookkeeping (no Ray here), so its rules are tested directly:

- every fingerprint gets every item; workers of one fingerprint split them (each item goes
  to one worker at a time, so timing is never shared);
- a lost worker's item goes back to the front of its group's queue, for a worker of the
  same fingerprint that has not lost it yet; an item lost ``MAX_LOSSES`` times, or left
  when no worker of its fingerprint is alive, is "untuned" (with why);
- an item that fails on a live worker is a result like any other (the caller records it),
  never a reason to stop the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Workers an item may take down with it before it is given up (a problem that crashes
#: its worker's process must not take every node of a fingerprint).
MAX_LOSSES = 2


@dataclass(eq=False)
class Worker:
    """One tuning worker: a Ray actor (``handle``) holding a node's CPUs or one GPU."""

    name: str
    node: str
    backend: str
    device: str
    handle: Any = None
    pid: int | None = None
    host: str = ""
    alive: bool = True
    busy: Any = None  # the item it is working on, or None when idle
    done: int = 0


@dataclass
class Group:
    """The workers of one fingerprint and its share of the work."""

    id: str
    fingerprint: dict[str, Any]
    backend: str
    device: str
    workers: list[Worker] = field(default_factory=list)
    pending: deque = field(default_factory=deque)
    total: int = 0
    losses: dict[Any, list[str]] = field(default_factory=dict)
    untuned: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def family(self) -> str:
        return str(self.fingerprint.get("family", ""))

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.alive and w.busy is None]

    def take(self, worker: Worker) -> Any | None:
        """The next item for ``worker`` (marked busy with it), or None. An item is not
        handed back to a worker that was lost on it (such workers are dead anyway), nor to a
        dead or busy worker."""
        if not worker.alive or worker.busy is not None:
            return None
        for _ in range(len(self.pending)):
            item = self.pending.popleft()
            if worker.name not in self.losses.get(item, ()):
                worker.busy = item
                return item
            self.pending.append(item)
        return None

    def finished(self, worker: Worker) -> Any:
        """``worker`` finished its item (whatever the outcome); returns the item."""
        item, worker.busy = worker.busy, None
        worker.done += 1
        return item

    def lost(self, worker: Worker) -> Any:
        """``worker`` died: its item is re-queued first (or untuned after MAX_LOSSES);
        when no worker is left alive, everything pending is untuned. Returns the item."""
        worker.alive = False
        item, worker.busy = worker.busy, None
        if item is not None:
            who = self.losses.setdefault(item, [])
            who.append(worker.name)
            if len(who) >= MAX_LOSSES:
                self.untuned.append((item, f"lost {len(who)} workers while on it"
                                           f" ({', '.join(who)})"))
            else:
                self.pending.appendleft(item)
        self.drain_if_dead()
        return item

    def drain_if_dead(self) -> None:
        """No live worker left: whatever is pending is untuned."""
        if self.live() or not self.pending:
            return
        why = "every worker of this fingerprint was lost" if self.workers else \
            "no worker of this fingerprint started"
        while self.pending:
            self.untuned.append((self.pending.popleft(), why))


def group_workers(workers: list[tuple[Worker, dict[str, Any]]]) -> dict[str, Group]:
    """Group ``(worker, fingerprint)`` pairs by fingerprint id (queues still empty: the
    driver fills each with what that machine type lacks)."""
    groups: dict[str, Group] = {}
    for worker, fp in workers:
        group = groups.get(fp["id"])
        if group is None:
            group = groups[fp["id"]] = Group(fp["id"], dict(fp), worker.backend, worker.device)
        group.workers.append(worker)
    return groups


def fill(group: Group, items: list[Any]) -> None:
    """Give ``group`` its work."""
    group.pending = deque(items)
    group.total = len(items)
