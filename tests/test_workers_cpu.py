"""The CPU engines' task runner: every task once, errors raised, BLAS held to one thread and
given back, nesting, the serial fallback; and the ASPP engine through it:
the same bits on every run and with any number of workers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support import assert_close, seeded

import atrous
from atrous.kernels import workers_cpu

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def four_workers(monkeypatch):
    """Four workers even on a 2-core machine: more bands, more interleaving."""
    monkeypatch.setattr(workers_cpu, "workers", lambda: 4)
    monkeypatch.setattr(workers_cpu, "_blas", lambda: threadpoolctl.ThreadpoolController())


@pytest.fixture
def no_threadpoolctl(monkeypatch):
    """What a machine without threadpoolctl gets: tasks in order on the caller's thread."""
    monkeypatch.setattr(workers_cpu, "_blas", lambda: None)


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


def test_every_task_runs_once_on_a_worker(four_workers):
    seen, lock = [], threading.Lock()

    def task(k: int, worker: int) -> None:
        time.sleep(0.001)
        with lock:
            seen.append((k, worker, threading.get_ident()))

    with workers_cpu.task_runner() as run:
        run([lambda w, k=k: task(k, w) for k in range(40)])
    assert sorted(k for k, _, _ in seen) == list(range(40))
    assert {w for _, w, _ in seen} <= set(range(4))
    threads_of = {}
    for _, w, ident in seen:  # a worker index is one thread throughout a run
        assert threads_of.setdefault(w, ident) == ident


def test_blas_runs_single_threaded_inside_and_is_given_back(four_workers):
    before = _blas_threads()
    inside = []
    with workers_cpu.task_runner() as run:
        run([lambda w: inside.append(_blas_threads())])
    assert inside == [[1] * len(before)]
    assert _blas_threads() == before


def test_an_error_is_raised_and_stops_the_rest(four_workers):
    ran = []

    def boom(worker: int) -> None:
        raise ValueError("task 0 failed")

    def slow(worker: int) -> None:
        time.sleep(0.01)
        ran.append(worker)

    with pytest.raises(ValueError, match="task 0 failed"), workers_cpu.task_runner() as run:
        run([boom] + [slow] * 50)
    assert len(ran) < 50  # the queue was cleared
    with workers_cpu.task_runner() as run:  # and the runner works again afterwards
        run([slow] * 4)


def test_nested_runners_do_not_deadlock(four_workers):
    order = []

    def outer(worker: int) -> None:
        with workers_cpu.task_runner() as inner:  # inside a task: in order, this thread
            inner([lambda w, k=k: order.append((k, w)) for k in range(3)])

    done = threading.Event()

    def body() -> None:
        with workers_cpu.task_runner() as run:
            run([outer])
            with workers_cpu.task_runner() as again:  # on the holding thread: the same pool
                again([lambda w: order.append(("again", w))] * 2)
        done.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert done.wait(30), "nested task runners deadlocked"
    assert [k for k, _ in order[:3]] == [0, 1, 2] and {w for _, w in order[:3]} == {0}


def test_without_threadpoolctl_tasks_run_in_order_here(no_threadpoolctl):
    assert workers_cpu.workers() == 1
    before, seen = _blas_threads(), []
    with workers_cpu.task_runner() as run:
        run([lambda w, k=k: seen.append((k, w, threading.get_ident())) for k in range(5)])
    assert seen == [(k, 0, threading.get_ident()) for k in range(5)]
    assert _blas_threads() == before  # BLAS left as it is


def _aspp(n: int, layout: str) -> np.ndarray:
    from test_aspp import RATES, ReferenceASPP, randomized

    module = randomized(ReferenceASPP(12, RATES, 8))
    weights = atrous.prepare_aspp(module.state_dict(), RATES, dtype="float32")
    x = seeded((n, 12, 17, 15), 5).astype(np.float32)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return atrous.aspp(x, weights, layout=layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("n", [1, 3])
def test_aspp_bits_do_not_depend_on_workers(layout, n, monkeypatch):
    """Every output element is summed in one fixed order, whichever worker ran what."""
    first = _aspp(n, layout)
    assert np.array_equal(first, _aspp(n, layout))
    monkeypatch.setattr(workers_cpu, "workers", lambda: 4)
    assert np.array_equal(first, _aspp(n, layout))
    monkeypatch.setattr(workers_cpu, "workers", lambda: 1)
    monkeypatch.setattr(workers_cpu, "_blas", lambda: None)
    assert np.array_equal(_aspp(n, layout), first)  # single-threaded BLAS too


@pytest.mark.parametrize("rate", [1, 4, 6])  # 6 on 9x11: lines of one and two outputs
def test_winograd_parts_split_row_filters_without_changing_the_result(rate):
    """Few row filters are cut into more parts (tasks); every cut covers each product once.

    Not bit-equal: BLAS may run a product of fewer rows through other kernels (OpenBLAS's
    Haswell sgemm sums a short tail of rows in another order), so cuts agree to rounding."""
    from atrous.kernels.conv import winograd_cpu as winograd

    x = seeded((2, 9, 11, 16), 7).astype(np.float32)
    taps = seeded((3, 3, 16, 8), 8).astype(np.float32)
    ay, ax = winograd.plan(9, 11, rate)
    filters: dict = {}
    winograd.add_filters(taps, ay, ax, filters)
    outs = []
    for tasks in (1, 4 * len(ay.filters)):
        cuts = winograd.parts(ay, tasks)
        assert [c for cut in cuts for c in range(*cut)] == list(range(len(ay.filt)))
        assert all(len(set(ay.filt[a:b])) == 1 for a, b in cuts)
        made = [winograd.products(x, ay, ax, cut, filters) for cut in cuts]
        out = np.full((2, 9, 11, 8), np.nan, np.float32)
        for band in workers_cpu.even_ranges(18, 3):
            winograd.scatter(cuts, made, ay, ax, out, 0, band)
        outs.append(out)
    assert len(winograd.parts(ay, 4 * len(ay.filters))) > len(ay.filters)
    assert_close(outs[1], outs[0].astype(np.float64), "float32")
    want = atrous.dilated_conv2d(x.astype(np.float64), taps.transpose(3, 2, 0, 1)
                                 .astype(np.float64), padding="same", dilation=rate,
                                 layout="NHWC", backend="numpy")
    assert_close(outs[0], want, "float32")
