"""`atrous tune --cluster` on a real local Ray cluster (ray.cluster_utils starts several
nodes on this host), with distinct fingerprints per node through the testing-only
ATROUS_FINGERPRINT_OVERRIDE; plus the queue's, the planner's and the checks' rules alone.

The cluster: nodes a1 (the head) and a2 of machine type "a" and b1 of type "b", one CPU
each. Every node's processes carry an audit hook (a
``sitecustomize`` module on their PYTHONPATH) that refuses, and records, any open of a file
under the driver's folder: the workers must never open the tuning database.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atrous.autotune import hardware
from atrous.autotune.database import Database, read_file
from atrous.autotune.search import Budget
from atrous.autotune.timing import Plan
from atrous.autotune.tuner import Settings
from atrous.cli import main
from atrous.fleet.cluster import INSTALL_HINT, plan
from atrous.fleet.queue import MAX_LOSSES, Worker, fill, group_workers
from atrous.fleet.results import ResultError, check_tuning
from atrous.jobs.suite import SUITES

SRC = str(Path(__file__).resolve().parent.parent / "src")
AUDIT_HOOK = textwrap.dedent("""
    import os, sys
    _FORBIDDEN = os.environ.get("FLEET_TEST_FORBIDDEN")
    _OPENS = os.environ.get("FLEET_TEST_OPENS")
    if _FORBIDDEN and _OPENS:
        open(os.path.join(os.environ["FLEET_TEST_HOOKED"], str(os.getpid())), "w").close()

        def _hook(event, args):
            if event != "open" or not args or not isinstance(args[0], (str, bytes)):
                return
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_FORBIDDEN):
                with open(os.path.join(_OPENS, str(os.getpid())), "a") as f:
                    f.write(path + "\\n")
                raise PermissionError("fleet test: a worker opened " + path)
        sys.addaudithook(_hook)
""")
#: Four upsampling problems of the smoke suite: one kernel source (quick to compile in each
#: fresh worker), and enough problems for two nodes of one type to split.
NAMES = ("upsample 8x1x1->5x5 b1", "upsample 3x5x5 b1->17x17", "upsample 8x1x1->5x5 b4",
         "upsample 3x5x5 b4->17x17")
TINY = ["--budget", "2", "--strategy", "exhaustive", "--no-torch", "--suite", "smoke",
        "--batch", "1", "4", "--layout", "NCHW", "--op", "upsample_bilinear"]


def _settings() -> Settings:
    return Settings(strategy="exhaustive", budget=Budget(max_trials=2), confirm_s=0.05,
                    plan=Plan(samples=3, min_samples=1, max_time=0.05, warmup=0,
                              prune_ratio=1.25))


def _entries() -> list:
    return [e for e in SUITES["smoke"]("NCHW", "float32", (1, 4)) if e.name in NAMES]


def _override(brand: str) -> str:
    return json.dumps({"brand": brand})


# ------------------------------------------------------------------ without a cluster


def test_cluster_without_ray_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["tune", "--cluster", "auto", *TINY]) == 2
    out = capsys.readouterr().out.strip()
    assert INSTALL_HINT in out and len(out.splitlines()) == 1
    assert main(["bench", "--cluster", "auto", "--suite", "smoke"]) == 2
    assert "pip install 'atrous[cluster]'" in capsys.readouterr().out


def test_fingerprint_override_is_a_different_machine(monkeypatch):
    hardware.cpu_fingerprint.cache_clear()
    try:
        plain = hardware.cpu_fingerprint()
        hardware.cpu_fingerprint.cache_clear()
        monkeypatch.setenv(hardware.OVERRIDE_ENV, _override("node-a"))
        other = hardware.cpu_fingerprint()
        assert other["brand"] == "node-a" and other["id"] != plain["id"]
        assert other["family"] == plain["family"]
        hardware.cpu_fingerprint.cache_clear()
        monkeypatch.setenv(hardware.OVERRIDE_ENV, "[1, 2]")
        with pytest.raises(ValueError, match=hardware.OVERRIDE_ENV):
            hardware.cpu_fingerprint()
    finally:
        hardware.cpu_fingerprint.cache_clear()


def test_plan_one_worker_per_cpu_node_and_per_gpu():
    nodes = [
        {"NodeID": "head", "Alive": True, "Resources": {"memory": 1.0}},
        {"NodeID": "cpu1", "Alive": True, "NodeManagerAddress": "h1", "Resources": {"CPU": 8}},
        {"NodeID": "gpu1", "Alive": True, "NodeManagerAddress": "h2",
         "Resources": {"CPU": 16, "GPU": 2}},
        {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 8}},
    ]
    auto = plan(nodes)
    assert [(w["node"], w["backend"], w["num_cpus"], w["num_gpus"]) for w in auto] == [
        ("cpu1", "numba", 8, 0), ("gpu1", "triton", 8, 1), ("gpu1", "triton", 8, 1)]
    assert len({w["name"] for w in auto}) == 3
    assert [w["node"] for w in plan(nodes, "numba")] == ["cpu1", "gpu1"]
    assert plan(nodes, "numba")[1]["num_cpus"] == 16
    assert [w["node"] for w in plan(nodes, "triton")] == ["gpu1", "gpu1"]
    with pytest.raises(ValueError, match="backend"):
        plan(nodes, "cuda")


def test_queue_requeues_a_lost_workers_item_then_gives_up():
    a1, a2, b1 = (Worker(n, n, "numba", "cpu") for n in ("a1", "a2", "b1"))
    groups = group_workers([(a1, {"id": "A"}), (a2, {"id": "A"}), (b1, {"id": "B"})])
    assert sorted(groups) == ["A", "B"] and len(groups["A"].workers) == 2
    for g in groups.values():
        fill(g, [0, 1, 2])
    a = groups["A"]
    assert a.take(a1) == 0 and a.take(a2) == 1
    assert a.lost(a1) == 0 and list(a.pending) == [0, 2]  # first in line again
    assert a.take(a2) is None and a.take(a1) is None  # busy, and dead
    a.finished(a2)
    assert a.take(a2) == 0
    assert a.lost(a2) == 0  # the last worker: everything left is untuned
    assert not a.pending and {i for i, _ in a.untuned} == {0, 2}
    assert MAX_LOSSES == 2 and "lost 2 workers" in dict(a.untuned)[0]
    assert "every worker" in dict(a.untuned)[2]
    assert list(groups["B"].pending) == [0, 1, 2]  # another machine type: untouched


def test_check_tuning_rejects_answers_of_another_machine_or_problem():
    entry = _entries()[0]
    out = {"fingerprint": {"id": "other"}, "row": {}, "record": None, "trials": []}
    with pytest.raises(ResultError, match="not mine"):
        check_tuning(out, "mine", "numba", entry.problem)
    out["fingerprint"] = {"id": "mine"}
    out["trials"] = [{"type": "trial", "run": "r1", "machine": "mine", "backend": "numba",
                      "key": "another key", "trial": {}}]
    with pytest.raises(ResultError, match="another problem"):
        check_tuning(out, "mine", "numba", entry.problem)
    out["trials"][0]["key"] = entry.problem.key
    with pytest.raises(ResultError, match="bad trial"):
        check_tuning(out, "mine", "numba", entry.problem)
    out["trials"] = []
    out["record"] = {"op": "nonsense"}
    with pytest.raises(ResultError, match="bad record"):
        check_tuning(out, "mine", "numba", entry.problem)


# ------------------------------------------------------------------ a real Ray cluster


def _ray_processes(session: str) -> list[int]:
    """Processes whose command line names this cluster's session folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if session in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three one-CPU nodes on this host: a1, a2 (machine type a) and b1 (type b)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("fleet")
    hooks, opens, hooked, driver = (root / n for n in ("hooks", "opens", "hooked", "driver"))
    for d in (hooks, opens, hooked, driver):
        d.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT_HOOK)
    base = {"PYTHONPATH": os.pathsep.join([str(hooks), SRC, os.environ.get("PYTHONPATH", "")]),
            "FLEET_TEST_FORBIDDEN": str(driver), "FLEET_TEST_OPENS": str(opens),
            "FLEET_TEST_HOOKED": str(hooked)}

    def node(name: str, kind: str) -> dict:
        return {"num_cpus": 1, "include_dashboard": False, "env_vars": {
            **base, hardware.OVERRIDE_ENV: _override(f"fleet-test-{kind}"),
            # a worker that opened the default database would create it here
            "XDG_CACHE_HOME": str(root / f"cache-{name}")}}

    c = Cluster(initialize_head=True, head_node_args=node("a1", "a"))  # the head is a1
    session = None
    try:
        c.add_node(wait=False, **node("a2", "a"))
        b1 = c.add_node(wait=False, **node("b1", "b"))
        c.wait_for_nodes(timeout=60)
        ray.init(address=c.address, log_to_driver=False)
        session = Path(ray._private.worker._global_node.get_session_dir_path()).name
        yield {"ray": ray, "root": root, "driver": driver, "opens": opens, "hooked": hooked,
               "cluster": c, "b1": b1}
    finally:
        ray.shutdown()
        c.shutdown()
    deadline = time.monotonic() + 15
    while session and _ray_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session or not _ray_processes(session), "Ray left processes behind"
    assert not list(root.glob("cache-*")), "a worker opened a default tuning database"


def _done_lines(db: Database) -> list[dict]:
    lines = [json.loads(x) for x in db.log_path.read_text().splitlines()]
    return [x for x in lines if x["type"] == "done"]


def _machines(db: Database) -> dict[str, str]:
    """Fingerprint id -> brand of every machine in the database."""
    return {m.id: m.fingerprint["brand"] for m in db.read().machines.values()}


def test_fleet_tunes_every_machine_type_once_then_nothing(cluster, capsys):
    db = Database(cluster["driver"] / "tuning.json")
    args = ["tune", "--cluster", "auto", "--db", str(db.path), *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    brands = _machines(db)
    assert sorted(brands.values()) == ["fleet-test-a", "fleet-test-b"]
    snapshot = read_file(db.path)  # strictly valid
    keys = {e.problem.key for e in _entries()}
    for mid in brands:
        assert {r.key for r in snapshot.machines[mid].records.values()} == keys
        assert f"machine {mid}" in out  # a table per machine type
    # each problem tuned once per machine type (one finished run each)
    done = [(x["machine"], x["key"]) for x in _done_lines(db)]
    assert sorted(done) == sorted((m, k) for m in brands for k in keys)
    a = next(m for m, b in brands.items() if b == "fleet-test-a")
    assert "2 workers" in out and f"{a}: {len(NAMES)} tuned" in out
    # no worker opened the driver's files (and the workers did carry the audit hook)
    assert list(cluster["hooked"].iterdir())
    assert list(cluster["opens"].iterdir()) == []

    log_before = db.log_path.read_text()
    assert main(args) == 0  # a rerun tunes nothing
    out = capsys.readouterr().out
    assert db.log_path.read_text() == log_before
    assert all(f"{m}: {len(NAMES)} cached" in out for m in brands)


def test_fleet_bench_each_machine_type_one_run(cluster, capsys):
    from atrous.report.ceilings import BANDWIDTH, Ceiling, Ceilings
    from atrous.report.rows import runs
    from atrous.report.store import bench_path, ceilings_path, read_rows, write_ceilings

    db = cluster["driver"] / "tuning.json"
    if not db.exists():
        pytest.skip("needs the fleet run above")
    machines = _machines(Database(db))
    for mid in machines:  # stored ceilings: the workers need not measure them
        write_ceilings(ceilings_path(db), Ceilings(mid, "cpu", "2026-01-01T00:00:00+00:00",
                                                   0.1, [Ceiling("read", BANDWIDTH, 10.0,
                                                                 None, "test")]))
    assert main(["bench", "--cluster", "auto", "--db", str(db), "--suite", "smoke", "--batch",
                 "1", "--layout", "NCHW", "--op", "upsample_bilinear", "--no-numpy",
                 "--no-torch", "--no-onnx", "--no-openvino", "--shared-process"]) == 0
    out = capsys.readouterr().out
    rows = read_rows(bench_path(db))
    by_run = runs(rows)
    assert sorted(rs[0].fingerprint for rs in by_run.values()) == sorted(machines)
    for rs in by_run.values():  # one run per machine type, every case in it
        assert {r.fingerprint for r in rs} == {rs[0].fingerprint}
        assert {r.name for r in rs} == set(NAMES[:2])  # batch 1
    assert all(f"machine {mid}: benchmark" in out for mid in machines)
    assert list(cluster["opens"].iterdir()) == []


def test_fleet_report_renders_every_machine(cluster, capsys):
    db = cluster["driver"] / "tuning.json"
    if not db.exists():
        pytest.skip("needs the fleet run above")
    out_dir = cluster["root"] / "report"
    assert main(["report", "--fleet", "--db", str(db), "--out", str(out_dir)]) == 0
    html = (out_dir / "index.html").read_text()
    md = (out_dir / "report.md").read_text()
    for mid in _machines(Database(db)):
        assert mid in html and f"{mid} ms" in md
    assert "fleet-test-a" in html and "fleet-test-b" in html
    assert "tuned problems" in capsys.readouterr().out
    from atrous.report.store import bench_path

    if bench_path(db).exists():  # the benchmark above ran
        assert "Benchmarks, every machine side by side" in html


def test_faults_lost_worker_resumed_on_its_peer_lost_node_untuned(cluster):
    """Type a loses a worker mid-problem: its peer resumes the problem. Type b loses its
    only node: its problems are listed untuned. (The last test on the cluster: b1 does
    not come back.)"""
    from atrous.fleet.driver import tune_fleet

    db = Database(cluster["driver"] / "kill" / "tuning.json")
    events, killed, pids = [], {}, set()

    def on_event(e):
        pids.add(e.worker.pid if e.worker else None)
        events.append((e.kind, e.group.fingerprint["brand"], e.worker.name if e.worker else "",
                       e.name))
        if e.kind == "start" and e.group.fingerprint["brand"] == "fleet-test-b" and \
                "b1" not in killed:
            killed["b1"] = e.name
            cluster["cluster"].remove_node(cluster["b1"], allow_graceful=False)
        if e.group.fingerprint["brand"] != "fleet-test-a" or e.worker is None:
            return
        if e.kind == "result" and "worker" not in killed:
            killed["worker"] = e.worker.name  # it finished one: kill it in its next, once
        elif e.kind == "trials" and killed.get("worker") == e.worker.name and \
                "problem" not in killed:  # its first candidates reached the driver
            killed["problem"] = e.name
            os.kill(e.worker.pid, signal.SIGKILL)

    # candidates of at least 3 samples of 20 ms: a problem lasts several polls
    slow = Settings(strategy="exhaustive", budget=Budget(max_trials=3), confirm_s=0.05,
                    plan=Plan(samples=3, min_samples=3, max_time=0.2, warmup=0,
                              prune_ratio=10.0))
    run = tune_fleet("auto", _entries(), database=db, settings=slow, on_event=on_event,
                     poll_s=0.05)
    assert "problem" in killed and "b1" in killed, events
    a = next(g for g in run.groups.values() if g.fingerprint["brand"] == "fleet-test-a")
    b = next(g for g in run.groups.values() if g.fingerprint["brand"] == "fleet-test-b")
    lost = [ev for ev in events if ev[0] == "lost"]
    assert [ev for ev in lost if ev[1] == "fleet-test-a"] == [
        ("lost", "fleet-test-a", killed["worker"], killed["problem"])]
    assert [ev[3] for ev in lost if ev[1] == "fleet-test-b"] == [killed["b1"]]
    rows = {o.name: o for o in run.outcomes[a.id]}
    assert all(o.status in ("tuned", "resumed") for o in rows.values()), rows
    # finished by its peer, from the candidates the lost worker had measured
    assert rows[killed["problem"]].worker != killed["worker"]
    assert rows[killed["problem"]].status == "resumed"
    assert [o.status for o in run.outcomes[b.id]] == ["untuned"] * len(NAMES)
    assert all("lost" in o.note for o in run.outcomes[b.id])
    assert not run.failed and len(run.untuned) == len(NAMES)
    snapshot = read_file(db.path)
    assert len(snapshot.machines[a.id].records) == len(NAMES)  # nothing finished lost
    assert b.id not in snapshot.machines
    # every worker carried the audit hook, and none opened the driver's files
    assert pids - {None} <= {int(p.name) for p in cluster["hooked"].iterdir()}
    assert list(cluster["opens"].iterdir()) == []


def test_log_tail_gives_whole_lines_once(tmp_path):
    from atrous.fleet.local import LogTail

    path = tmp_path / "t.trials.jsonl"
    tail = LogTail(path)
    assert tail.new() == []  # no log yet
    path.write_bytes(b'{"a": 1}\n{"b"')  # a line still being written
    assert tail.new() == [{"a": 1}]
    with path.open("ab") as f:
        f.write(b': 2}\n')
    assert tail.new() == [{"b": 2}] and tail.new() == []


def test_report_fleet_without_data_is_one_line(tmp_path, capsys):
    assert main(["report", "--fleet", "--db", str(tmp_path / "none.json"), "--out",
                 str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out.strip()
    assert "nothing to report" in out and len(out.splitlines()) == 1
