"""The smarter tuning: neighbour seeds measured first, best-first local search, early stop
of candidates that cannot win, a total budget split by expected cost, the tune table's
variant margin and the main command's two layouts. Timings are replayed or synthetic."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from atrous.autotune import seeds
from atrous.autotune.allot import Allotment, weight
from atrous.autotune.database import Database
from atrous.autotune.lookup import problem_features
from atrous.autotune.search import (
    OK,
    PRUNED,
    Budget,
    Trial,
    config_key,
    local,
    random_search,
)
from atrous.autotune.timing import Timing
from atrous.autotune.tuner import PRUNE_RATIO, Settings, tune_problem
from atrous.cli import _variant
from atrous.core.registry import op
from atrous.core.space import Space
from atrous.jobs.suite import Entry
from atrous.jobs.tune import Row, tune_entries, variant_times
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap.spec import default_config
from atrous.kernels.gap.spec import make_problem as gap_problem

SPACE = Space({"A": (1, 2, 3, 4, 5), "B": (1, 2, 3, 4, 5), "C": ("x", "y")})


def bowl(config) -> float:
    """A smooth table with its optimum at A=4, B=2, C=y."""
    return 1e-3 * (1 + abs(config["A"] - 4) + 0.7 * abs(config["B"] - 2)
                   + 0.3 * (config["C"] == "x"))


class Replay:
    def __init__(self, table=bowl):
        self.table, self.asked = table, []

    def __call__(self, config):
        self.asked.append(dict(config))
        return Trial(dict(config), OK, Timing.of([self.table(config)]))


def test_local_search_climbs_from_its_start_without_re_measuring_it():
    replay = Replay()
    start = {"A": 3, "B": 2, "C": "y"}  # one step from the optimum
    trials = local(SPACE, replay, Budget(max_trials=6), seed=1, start=[start])
    assert replay.asked[0] == start and len(trials) == 6  # the start is not counted
    assert all(sum(a[k] != start[k] for k in a) == 1 for a in replay.asked[1:5]), \
        "the first proposals change one key of the best start"
    assert min(trials, key=lambda t: t.median).config == {"A": 4, "B": 2, "C": "y"}


def test_local_search_from_a_good_seed_finds_the_optimum_sooner_than_random_order():
    optimum = {"A": 4, "B": 2, "C": "y"}

    def trials_to_optimum(strategy, seed):
        replay = Replay()
        strategy(SPACE, replay, Budget(), seed)
        return replay.asked.index(optimum)

    start = [{"A": 5, "B": 3, "C": "y"}]
    climbing = [trials_to_optimum(lambda *a: local(*a, start=start), s) for s in range(10)]
    shuffled = [trials_to_optimum(random_search, s) for s in range(10)]
    assert max(climbing) <= 16 and sum(climbing) * 2 < sum(shuffled)


def _gap(layout="NCHW", n=2):
    shape = (n, 8, 5, 5) if layout == "NCHW" else (n, 5, 5, 8)
    return gap_problem(shape, "float64", layout=layout)


def test_nearest_ranks_the_other_layout_before_other_shapes_and_skips_foreign_configs():
    p = _gap("NHWC")
    space = op(p.op).space(p, "numba")
    configs = [c for c in space.configs() if c != default_config(p, "numba")]
    twin, far, other_machine = configs[0], configs[1], configs[2]
    known = [
        seeds.Known(p.op, "numba", problem_features(gap_problem((4, 64, 33, 33), "float64")),
                    "NHWC", far),
        seeds.Known(p.op, "numba", problem_features(_gap("NCHW")), "NCHW", twin),
        seeds.Known(p.op, "numba", problem_features(p), "NHWC", other_machine,
                    seeds.FAMILY_PENALTY + 10.0),
        seeds.Known(p.op, "numba", problem_features(p), "NHWC", {"ROWS": 3, "junk": 1}),
        seeds.Known("dilated_conv2d", "numba", problem_features(p), "NHWC", configs[3]),
    ]
    got = seeds.nearest(p, "numba", space, known, limit=5)
    assert got == [twin, far, other_machine]


class TableTimer:
    """Seconds per call from the config; counts the timed calls of each config."""

    policy = "test-table-v1"

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, {}

    def __call__(self, run, calls):
        key = config_key(run.config)
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.seconds(run.config)


def gap_table(config) -> float:
    return 1e-3 * {16: 1.0, 4: 2.0, 1: 3.0}.get(config.get("ROWS", 16), 4.0) * (
        1.5 if config["SPLIT"] > 1 else 1.0) * (1.1 if config["threads"] == 1 else 1.0)


def test_seeds_are_measured_right_after_the_default_and_slow_candidates_stop_early(tmp_path):
    p = _gap()
    space = op(p.op).space(p, "numba")
    best = min(space.configs(), key=gap_table)
    order = []
    timer = TableTimer(gap_table)
    out = tune_problem(p, settings=Settings(strategy="random", budget=Budget()),
                       database=Database(tmp_path / "t.json"), sampler=timer,
                       on_trial=lambda prob, t: order.append(t), seeds=[best])
    assert order[0].config == default_config(p, "numba") and order[1].config == best
    assert out.record.config == best
    slow = [t for t in out.trials[1:]  # the default is timed before any best is known
            if gap_table(t.config) > PRUNE_RATIO * gap_table(best)]
    assert slow and all(t.status == PRUNED for t in slow)
    assert all(timer.calls[config_key(t.config)] <= 2 for t in slow), \
        "a candidate that cannot win stops after its first sample"
    assert all(t.status == OK for t in out.trials
               if gap_table(t.config) < 1.2 * gap_table(best))


def test_allotment_shares_what_is_left_by_weight():
    now = [0.0]
    allot = Allotment(100.0, [1.0, 3.0, 1.0], clock=lambda: now[0])
    assert allot.budget(0) == pytest.approx(20.0)
    now[0] = 5.0  # the first problem finished early: the others share its leftover
    assert allot.budget(1) == pytest.approx(95.0 * 3 / 4)
    now[0] = 99.9
    assert allot.budget(2) == pytest.approx(0.5)  # never below the floor
    big = conv_problem((4, 2048, 65, 65), (256, 2048, 3, 3), None, "float32", dilation=12,
                       padding="same")
    assert weight(big, 150) > 10 * weight(_gap(), 150)
    assert weight(_gap(), 4) < weight(_gap(), 40)  # small spaces need less time
    fixed = Allotment(100.0, [20.0, 10.0], [10.0, 0.0], clock=lambda: 0.0)
    assert fixed.budget(0) == pytest.approx(45.0)  # its reference and confirmation come on top
    with pytest.raises(ValueError, match="total budget"):
        Allotment(0.0, [1.0])


def test_allotment_learns_how_far_fixed_costs_run_over():
    """Problems whose reference and PyTorch timing take twice the predicted time leave
    less search time to those after them, so the whole run keeps to the total."""
    now = [0.0]
    allot = Allotment(100.0, [10.0, 10.0, 10.0], [5.0, 5.0, 5.0], clock=lambda: now[0])
    first = allot.budget(0)
    assert first == pytest.approx((100.0 - 15.0) / 3)
    now[0] = first + 10.0  # its fixed part took 10 s, not the 5 predicted
    allot.finished(0)
    assert allot.fixed_scale == pytest.approx(2.0)
    second = allot.budget(1)
    assert second == pytest.approx((100.0 - now[0] - 2 * 10.0) / 2)
    now[0] += second + 10.0
    allot.finished(1)
    third = allot.budget(2)
    now[0] += third + 10.0
    assert now[0] == pytest.approx(100.0)  # the predicted overrun fits the total exactly


def test_tune_entries_seeds_each_layout_from_the_other_within_a_total_budget(tmp_path):
    entries = [Entry("gap nchw", _gap("NCHW")), Entry("gap nhwc", _gap("NHWC"))]
    rows = tune_entries(entries, settings=Settings(strategy="exhaustive"),
                        database=Database(tmp_path / "t.json"), with_torch=False,
                        sampler=TableTimer(gap_table), total_s=20.0)
    assert [r.status for r in rows] == ["tuned", "tuned"]
    assert rows[0].seeds == 0 and rows[1].seeds > 0
    assert all(r.budget_s is not None and 0 < r.budget_s <= 20.0 for r in rows)


def _row(config, variants, pruned=frozenset()):
    p = _gap()
    return Row("case", p, "numba", "tuned", config, 1e-3, variants=variants,
               pruned_variants=pruned)


def test_tune_table_names_the_winning_variant_and_its_margin():
    trials = [Trial({"variant": "winograd"}, OK, Timing.of([1.0])),
              Trial({"variant": "winograd"}, OK, Timing.of([1.2])),
              Trial({"variant": "gemm"}, OK, Timing.of([1.18])),
              Trial({"variant": "tile"}, PRUNED, Timing.of([3.0], pruned=True))]
    variants, pruned = variant_times(trials)
    assert variants == {"winograd": 1.0, "gemm": 1.18, "tile": 3.0} and pruned == {"tile"}
    row = _row({"variant": "winograd"}, variants, pruned)
    assert _variant(row) == "winograd, +18% vs gemm"
    assert _variant(_row({"variant": "gemm"}, {"gemm": 1.0, "tile": 2.5}, {"tile"})) == \
        "gemm, >=+150% vs tile"
    assert _variant(_row({"variant": "tile"}, {"tile": 1.0})) == "tile"
    assert _variant(_row({"ROWS": 4}, {})) == "-"


def test_landscape_has_a_panel_per_variant_and_one_across_variants():
    from atrous.report import plots
    from atrous.report.data import TrialEntry

    trials = []
    for key in ("dilated_conv2d:a", "dilated_conv2d:b"):
        for variant, keys in (("tile", {"BLOCK_OW": (3, 4), "BLOCK_CO": (4, 5)}),
                              ("gemm", {"GEMM_BANDS": (1, 2), "GEMM_SPLIT": (1, 4)}),
                              ("winograd", {"WINO_TILE": (2, 3), "WINO_PARTS": (1, 2)})):
            (k1, v1), (k2, v2) = keys.items()
            for a in v1:
                for b in v2:
                    t = 1e-3 * (1 + a + b / 10) * {"tile": 3, "gemm": 2, "winograd": 1}[variant]
                    trial = Trial({"variant": variant, k1: a, k2: b, "threads": 2}, OK,
                                  Timing.of([t]))
                    trials.append(TrialEntry("r", "numba", key, 0.0, trial))
    backend, panels = plots.landscape_panels("dilated_conv2d", trials)
    assert backend == "numba" and len(panels) == 4
    assert [p.title for p in panels] == ['variant "gemm"', 'variant "tile"',
                                         'variant "winograd"', "variant against variant"]
    assert {panels[2].px, panels[2].py} == {"WINO_TILE", "WINO_PARTS"}
    versus = panels[3]
    assert versus.xs == ["gemm", "tile", "winograd"]
    assert versus.grid[0][2] == pytest.approx(1.0) and versus.grid[0][1] > 2.5
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed")
    plot = plots.landscape("dilated_conv2d", trials)
    assert plot is not None and plot.png.startswith(b"\x89PNG") and "4 panels" in plot.alt


def test_landscape_of_configs_with_different_keys_per_layout():
    """GAP's NCHW configs have ROWS, its NHWC ones do not: one panel holds both."""
    from atrous.report import plots
    from atrous.report.data import TrialEntry

    trials = [TrialEntry("r", "numba", "global_avg_pool:nchw", 0.0,
                         Trial({"ROWS": rows, "SPLIT": 1, "threads": 2}, OK,
                               Timing.of([1e-3 * rows]))) for rows in (4, 16)]
    trials += [TrialEntry("r", "numba", "global_avg_pool:nhwc", 0.0,
                          Trial({"SPLIT": split, "threads": 2}, OK, Timing.of([1e-3 * split])))
               for split in (1, 4)]
    backend, panels = plots.landscape_panels("global_avg_pool", trials)
    assert backend == "numba" and len(panels) == 1
    assert None in panels[0].xs + panels[0].ys and 4 in panels[0].xs + panels[0].ys


def _dev():
    spec = importlib.util.spec_from_file_location(
        "dev", Path(__file__).resolve().parent.parent / "scripts" / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_main_command_tunes_both_layouts_within_a_total_budget(monkeypatch):
    from atrous.cli import build_parser
    from atrous.jobs.suite import default_suite

    dev = _dev()
    args = build_parser().parse_args(["tune", *dev.TUNE_ARGS])
    assert args.layout == ["NCHW", "NHWC"] and args.total_budget == "5m"
    entries = [e for layout in args.layout for e in default_suite(layout)]
    assert len(entries) == 56 and {e.problem.layout for e in entries} == {"NCHW", "NHWC"}
    calls = []
    monkeypatch.setattr(dev, "sh", lambda *cmd, env=None: calls.append([str(c) for c in cmd]))
    dev.main_job(["--total-budget", "10m"])
    tune = next(c for c in calls if len(c) > 1 and c[1] == "tune")
    assert tune[2:] == [*dev.TUNE_ARGS, "--total-budget", "10m"]  # the user's args win
    assert build_parser().parse_args(tune[1:]).total_budget == "10m"
    assert math.isclose(Budget.parse("5m").max_seconds, 300.0)
