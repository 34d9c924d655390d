"""Ray: connecting to a cluster, and one tuning worker per node (CPU) or per GPU, each placed
on its node and holding what it times on, so that no two timings share a machine's cores.

Ray is optional (``pip install 'atrous[cluster]'``); nothing here imports it at module level.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from atrous.fleet.queue import Worker

INSTALL_HINT = "--cluster needs Ray: pip install 'atrous[cluster]'"
#: Seconds a worker may take to start and report its fingerprint before its node is skipped.
START_TIMEOUT_S = 120.0
BACKENDS = ("auto", "numba", "triton")


class ClusterError(RuntimeError):
    """The cluster cannot be used (Ray missing, no address, no worker could start)."""


def require_ray() -> Any:
    """The ``ray`` module, or ClusterError saying in one line how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` ("auto": the running cluster this machine
    belongs to; "ray://host:port": a remote cluster through Ray Client; "local": start a
    Ray instance on this machine for the run). An already connected process (a test that
    started its own cluster) is used as it is. Yields the ``ray`` module; disconnects (and
    stops a "local" instance) at the end, only when it connected here."""
    ray = require_ray()
    if not isinstance(address, str) or not address:
        raise ClusterError("--cluster needs an address: auto, ray://HOST:PORT or local")
    if ray.is_initialized():
        yield ray
        return
    try:
        # quiet: Ray's INFO lines would break the progress bars; workers' output stays there
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ImportError as exc:  # ray:// needs Ray Client (grpcio)
        raise ClusterError(f"{address!r} needs Ray Client ({exc}): pip install"
                           " 'atrous[cluster]'") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@functools.lru_cache(maxsize=1)
def worker_class() -> Any:
    """The Ray actor class of a node worker (made once, on first use)."""
    ray = require_ray()

    # Two threads: one tunes (one task at a time: the driver never sends a second), the
    # other answers `drain`, the driver's poll for the trial-log lines measured so far.
    @ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
    class NodeWorker:
        """Runs atrous.fleet.local on one node: tuning and benchmarking, one task at a
        time, its trial-log lines drained by the driver while it tunes."""

        def __init__(self, backend: str, device: str) -> None:
            import threading

            self.backend, self.device = backend, device
            self.lock = threading.Lock()
            self.lines: list[dict[str, Any]] = []

        def _keep(self, lines: list[dict[str, Any]]) -> None:
            with self.lock:
                self.lines += lines

        def drain(self) -> list[dict[str, Any]]:
            """The trial-log lines measured since the last call (each given once)."""
            with self.lock:
                out, self.lines = self.lines, []
            return out

        def facts(self) -> dict[str, Any]:
            from atrous.fleet import local

            return local.node_facts(self.backend, self.device)

        def tune(self, task: Any) -> dict[str, Any]:
            from atrous.fleet import local

            out = local.tune_here(task, sink=self._keep)
            out["trials"] = self.drain() + out["trials"]  # what no poll took, in order
            return out

        def bench(self, task: Any) -> dict[str, Any]:
            from atrous.fleet import local

            return local.bench_here(task)

    return NodeWorker


def plan(nodes: list[dict[str, Any]], backend: str = "auto") -> list[dict[str, Any]]:
    """The workers to start on ``nodes`` (``ray.nodes()`` entries): one per CPU node
    holding all its CPUs (Numba), one per GPU on GPU nodes (Triton, with the node's CPUs
    shared out). ``backend`` "auto" tunes GPUs where a node has them and the CPU elsewhere;
    "numba" every node's CPU; "triton" only the GPUs. Dead nodes and nodes with nothing
    to run on (a head started with ``--num-cpus 0``) get none."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    out = []
    for node in nodes:
        if not node.get("Alive", False):
            continue
        res = node.get("Resources") or {}
        cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        nid = str(node.get("NodeID", ""))
        host = str(node.get("NodeManagerAddress", ""))
        if gpus and backend in ("auto", "triton"):
            share = cpus // gpus
            out += [{"node": nid, "host": host, "backend": "triton", "device": "cuda",
                     "num_cpus": share, "num_gpus": 1, "name": f"{host} gpu{i}"}
                    for i in range(gpus)]
        elif cpus and backend in ("auto", "numba"):
            out.append({"node": nid, "host": host, "backend": "numba", "device": "cpu",
                        "num_cpus": cpus, "num_gpus": 0, "name": f"{host} cpu"})
    # the same host may carry several nodes (tests, containers): names stay unique
    counts = Counter(w["name"] for w in out)
    for w in out:
        if counts[w["name"]] > 1:
            w["name"] = f"{w['name']} node {w['node'][:6]}"
    return out


def start_workers(ray: Any, backend: str = "auto", *, timeout_s: float = START_TIMEOUT_S,
                  env: dict[str, str] | None = None
                  ) -> tuple[list[tuple[Worker, dict[str, Any]]], list[str]]:
    """Start the planned workers, each pinned to its node, and ask each for its fingerprint.

    Returns ``(worker, fingerprint)`` pairs and a note for every worker that did not start
    in ``timeout_s`` (its node is skipped). ``env`` adds environment variables to the
    workers (a runtime environment).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls = worker_class()
    planned = plan(ray.nodes(), backend)
    if not planned:
        raise ClusterError(f"the Ray cluster has no node to run {backend} tuning on"
                           " (no CPUs or GPUs offered)")
    handles = []
    for p in planned:
        options: dict[str, Any] = {
            "num_cpus": p["num_cpus"], "num_gpus": p["num_gpus"],
            "scheduling_strategy": NodeAffinitySchedulingStrategy(p["node"], soft=False)}
        if env:
            options["runtime_env"] = {"env_vars": dict(env)}
        handles.append(cls.options(**options).remote(p["backend"], p["device"]))
    refs = [h.facts.remote() for h in handles]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    started, notes = [], []
    for p, handle, ref in zip(planned, handles, refs, strict=True):
        why = None
        if ref in ready:
            try:
                facts = ray.get(ref)
            except Exception as exc:  # a node whose atrous cannot start: skip it, say why
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            why = f"did not start in {timeout_s:g} s (are its CPUs/GPUs held by another job?)"
        if why is not None:
            notes.append(f"{p['name']}: {why}")
            ray.kill(handle)
            continue
        worker = Worker(p["name"], p["node"], p["backend"], p["device"], handle,
                        facts.get("pid"), str(facts.get("host", p["host"])))
        started.append((worker, facts["fingerprint"]))
    if not started:
        raise ClusterError("no worker started: " + "; ".join(notes))
    return started, notes


def stop_workers(ray: Any, workers: list[Worker]) -> None:
    """Stop every worker (their processes end; nothing is left running)."""
    for w in workers:
        if w.handle is not None:
            with contextlib.suppress(Exception):  # already gone with its node
                ray.kill(w.handle)
