"""Seeds for tuning a problem: the winners of its neighbours, measured before any search.

Good configs of one op move together across shapes: the other layout of the same problem,
the other batch size, a nearby map size or rate, the same problem on a machine of the same
family. A tuning measures the nearest of those winners right after the default, so its
early-stopping bar is low from the start and a short search refines a known-good config
instead of looking for one (``search.local``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from atrous.autotune.lookup import distance, problem_features
from atrous.autotune.records import Snapshot
from atrous.autotune.search import Trial, config_key
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.space import Config, Space

#: Distance added for a winner of the other layout, and for one of another machine of this
#: family (sizes add |log ratio| each: batch 1 vs 4 is 0.9, 33 vs 65 rows and columns 1.3).
LAYOUT_PENALTY = 0.5
FAMILY_PENALTY = 1.0
#: Seeds measured per problem at most.
SEEDS = 3


@dataclass(frozen=True)
class Known:
    """A config that did well on some problem: its features, layout and an extra distance
    for where it comes from (another machine of the family)."""

    op: str
    backend: str
    features: dict[str, Any]
    layout: str
    config: Config
    penalty: float = 0.0


def from_snapshot(snapshot: Snapshot, fingerprint: Mapping[str, Any], op_name: str,
                  backend: str) -> list[Known]:
    """The tuned winners of ``op_name`` on ``backend`` in a database: this machine's, and
    (farther) those of other machines of its family. Stale ones too: a seed is only tried."""
    known = []
    for machine, rec in snapshot.records():
        same = machine.id == fingerprint["id"]
        if rec.op != op_name or rec.backend != backend or not (
                same or machine.family == fingerprint["family"]):
            continue
        known.append(Known(rec.op, rec.backend, dict(rec.features), rec.layout,
                           dict(rec.config), 0.0 if same else FAMILY_PENALTY))
    return known


def from_trials(problem: Problem, backend: str, trials: Iterable[Trial], keep: int = 2
                ) -> list[Known]:
    """The ``keep`` fastest "ok" configs of a problem just tuned."""
    ok = sorted((t for t in trials if t.ok), key=lambda t: t.median)[:keep]
    return [Known(problem.op, backend, problem_features(problem), problem.layout,
                  dict(t.config)) for t in ok]


def nearest(problem: Problem, backend: str, space: Space, known: Iterable[Known],
            limit: int = SEEDS) -> list[Config]:
    """Up to ``limit`` distinct configs of ``known`` that ``space`` allows, nearest problem
    first, never the default config (measured anyway): keys ``space`` lacks dropped,
    missing ones completed (the op's ``complete_config``)."""
    spec = op(problem.op)
    mine = problem_features(problem)
    ranked = sorted(
        (k for k in known if k.op == problem.op and k.backend == backend),
        key=lambda k: distance(mine, k.features) + k.penalty
        + (LAYOUT_PENALTY if k.layout != problem.layout else 0.0))
    default = config_key(spec.default_config(problem, backend))  # measured anyway
    seeds: dict[str, Config] = {}
    for k in ranked:
        # keys this Space lacks dropped (NCHW-only keys seeding NHWC), missing ones filled
        given = {c: v for c, v in k.config.items() if c in space.params}
        try:
            config = spec.complete_config(problem, backend, given)
        except (ValueError, TypeError, KeyError):
            continue
        if space.allows(config) and config_key(config) != default:
            seeds.setdefault(config_key(config), config)
        if len(seeds) >= limit:
            break
    return list(seeds.values())
