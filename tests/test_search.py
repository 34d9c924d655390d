"""Search strategies against replayed timing tables: no kernel runs, no clock is read."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest

from atrous.autotune.search import (
    FAILED,
    OK,
    STRATEGIES,
    Budget,
    Trial,
    best,
    config_key,
    exhaustive,
    random_search,
    strategy,
    tpe,
)
from atrous.autotune.timing import Timing
from atrous.core.space import Space

HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="optuna is not installed"
                                  " (pip install 'atrous[tune]')")

SPACE = Space({"BLOCK_M": (16, 32, 64, 128), "BLOCK_N": (16, 32, 64), "warps": (1, 2, 4)},
              ("BLOCK_M * BLOCK_N <= 4096",))
OPTIMUM = {"BLOCK_M": 64, "BLOCK_N": 32, "warps": 2}


def recorded_time(config: dict) -> float:
    """A made-up but structured timing table: a bowl around OPTIMUM."""
    return 1e-3 * (1 + abs(config["BLOCK_M"].bit_length() - 7) + abs(config["BLOCK_N"]
                   .bit_length() - 6) * 0.7 + abs(config["warps"] - 2) * 0.3)


class Replay:
    """measure() replaying the table; counts what was asked and advances a fake clock."""

    def __init__(self, table=recorded_time, failing=()):
        self.table, self.failing = table, {config_key(c) for c in failing}
        self.asked: list[dict] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def __call__(self, config: dict) -> Trial:
        assert SPACE.allows(config), f"a strategy proposed an invalid config {config}"
        self.asked.append(dict(config))
        t = self.table(config)
        self.now += t * 1000  # each trial "takes" a second per millisecond of run time
        if config_key(config) in self.failing:
            return Trial(dict(config), FAILED, reason="wrong result")
        return Trial(dict(config), OK, Timing.of([t]))


def test_table_optimum_is_valid_and_unique():
    times = sorted((recorded_time(c), config_key(c)) for c in SPACE)
    assert times[0][1] == config_key(OPTIMUM) and times[0][0] < times[1][0]


def test_exhaustive_measures_every_config_once_and_finds_the_optimum():
    replay = Replay()
    trials = exhaustive(SPACE, replay, Budget(), 0)
    assert replay.asked == SPACE.configs()
    assert best(trials).config == OPTIMUM


def test_exhaustive_stops_at_the_trial_budget():
    replay = Replay()
    trials = exhaustive(SPACE, replay, Budget(max_trials=5), 0)
    assert len(trials) == 5 and replay.asked == SPACE.configs()[:5]


def test_time_budget_stops_the_search():
    replay = Replay()
    trials = random_search(SPACE, replay, Budget(max_seconds=10.0, clock=replay.clock), 3)
    # every trial takes >= 1 s of fake time; the one that crosses 10 s is the last
    assert 1 < len(trials) < len(SPACE)
    assert replay.now >= 10.0 and replay.now - replay.table(trials[-1].config) * 1000 < 10.0


@pytest.mark.parametrize("search", [random_search, pytest.param(tpe, marks=needs_optuna)])
def test_budget_and_seed_are_respected(search):
    runs = {}
    for seed in (0, 0, 1):
        replay = Replay()
        trials = search(SPACE, replay, Budget(max_trials=8), seed)
        assert len(trials) == 8 == len({config_key(t.config) for t in trials})
        runs.setdefault(seed, []).append([config_key(c) for c in replay.asked])
    assert runs[0][0] == runs[0][1], "same seed, same trials"
    assert runs[0][0] != runs[1][0], "another seed, other trials"


@pytest.mark.parametrize("search", [random_search, pytest.param(tpe, marks=needs_optuna)])
def test_a_budget_covering_the_space_finds_the_optimum(search):
    replay = Replay()
    trials = search(SPACE, replay, Budget(max_trials=len(SPACE) + 10), 7)
    assert len(trials) == len(SPACE)  # each config once, then the search ends
    assert best(trials).config == OPTIMUM


@needs_optuna
def test_tpe_beats_its_own_random_start():
    """After its random start-up trials TPE concentrates near the optimum: over many seeds
    its best-of-12 is at least as good on average as random search's."""
    def mean_best(search):
        return sum(best(search(SPACE, Replay(), Budget(max_trials=12), s)).median
                   for s in range(6)) / 6

    assert mean_best(tpe) <= mean_best(random_search) * 1.05


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_failed_candidates_never_win(name):
    if name == "tpe" and not HAS_OPTUNA:
        pytest.skip("optuna is not installed")
    replay = Replay(failing=[OPTIMUM])
    trials = strategy(name)(SPACE, replay, Budget(), 0)
    assert any(t.status == FAILED for t in trials)
    assert best(trials).config != OPTIMUM


def test_tpe_without_optuna_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"atrous\[tune\]"):
        tpe(SPACE, Replay(), Budget(max_trials=3), 0)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy 'annealing'"):
        strategy("annealing")


@pytest.mark.parametrize(("text", "trials", "seconds"), [
    ("30s", None, 30.0), ("2m", None, 120.0), ("20", 20, None), ("20,45s", 20, 45.0),
    ("10 trials, 1.5s", 10, 1.5), ("none", None, None)])
def test_budget_parse(text, trials, seconds):
    b = Budget.parse(text)
    assert (b.max_trials, b.max_seconds) == (trials, seconds)


@pytest.mark.parametrize("text", ["fast", "-3", "2.5", "0", "0s"])
def test_budget_parse_rejects(text):
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(text)


def test_trial_json_round_trip():
    t = Trial({"A": 1, "B": "x"}, OK, Timing.of([1e-3, 2e-3, 3e-3], calls=4, first_call=0.5,
                                                 policy="p"), 1e-7, 0.4)
    back = Trial.from_json(t.to_json())
    assert back == t
    assert Trial.from_json(Trial({"A": 1}, FAILED, reason="boom").to_json()).reason == "boom"
    with pytest.raises(ValueError, match="malformed"):
        Trial.from_json({"config": {}, "status": "great"})


def test_replay_table_covers_every_combination():
    # sanity of the fixture: the constraint removes some of the product
    product = list(itertools.product(*SPACE.params.values()))
    assert 0 < len(SPACE) < len(product)
