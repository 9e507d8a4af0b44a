"""Continuous optimization: which participants upgrade their prior in which round (pure).

Each participant holds an *evolution path*, an ordered list of prior specs such as
``timm:resnet10t?size=32 > timm:resnet18?size=32 > efficientnet_lite0?size=64``; stage 0 is
the prior of round 1. From round 2 on, a seeded draw picks about ``fraction`` of the
participants among those not yet at the end of their path, and each picked one moves one stage
along it (re-embeds its shard with the new prior). The platform makes the draw and sends the
stage of every participant with each message; participants resolve their own spec.

Written as a path string, stages are separated by :data:`PATH_SEPARATOR` (``>``); a single
spec is a path of one stage (a participant that never upgrades).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PATH_SEPARATOR",
    "EvolutionStep",
    "choose_upgrades",
    "format_path",
    "parse_path",
    "plan_evolution",
    "upgrade_count",
]

PATH_SEPARATOR = ">"
_UPGRADE_STREAM = 0xE7  # keeps the upgrade draw independent of the other seeded streams


def parse_path(text: str) -> tuple[str, ...]:
    """Split an evolution path ``"a > b > c"`` into its stage specs.

    Raises
    ------
    ValueError
        For an empty path or an empty stage (``"a >> b"``, a trailing ``>``).
    """
    stages = tuple(s.strip() for s in str(text).split(PATH_SEPARATOR))
    if not stages or any(not s for s in stages):
        raise ValueError(f"evolution path {text!r} has an empty stage; write 'spec > spec > ...'")
    return stages


def format_path(path: Sequence[str]) -> str:
    """The inverse of :func:`parse_path`."""
    return f" {PATH_SEPARATOR} ".join(path)


def upgrade_count(num_participants: int, fraction: float) -> int:
    """How many participants upgrade in a round: ``fraction`` of them, rounded half up.

    At least one participant upgrades whenever ``fraction > 0`` (20 % of 2 participants would
    otherwise round to nobody, ever).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"upgrade fraction must lie in [0, 1], got {fraction}")
    if num_participants <= 0 or fraction == 0.0:
        return 0
    return max(1, min(num_participants, math.floor(fraction * num_participants + 0.5)))


def choose_upgrades(
    stages: Mapping[int, int],
    path_lengths: Mapping[int, int],
    fraction: float,
    seed: int,
    round_: int,
) -> list[int]:
    """The participants that upgrade at the start of round ``round_`` (none in round 1).

    Parameters
    ----------
    stages
        Partition id -> current stage (0-based) of every known participant.
    path_lengths
        Partition id -> number of stages of its path; a participant at its last stage (or
        with no known length) cannot upgrade.
    fraction
        Fraction in [0, 1] of *all* known participants that upgrade per round
        (:func:`upgrade_count`), capped by the number that still can.
    seed
        Run seed; with ``round_`` it fixes the draw.
    round_
        1-based round number.

    Returns
    -------
    list of int
        Sorted partition ids; the same arguments always give the same list.
    """
    if round_ <= 1:
        return []
    eligible = sorted(p for p, s in stages.items() if s + 1 < int(path_lengths.get(p, 1)))
    count = min(upgrade_count(len(stages), fraction), len(eligible))
    if count == 0:
        return []
    rng = np.random.default_rng([int(seed) & (2**63 - 1), int(round_), _UPGRADE_STREAM])
    picks = rng.choice(len(eligible), size=count, replace=False)
    return sorted(eligible[int(i)] for i in picks)


@dataclass(frozen=True)
class EvolutionStep:
    """One round of a planned evolution.

    Attributes
    ----------
    round : int
        1-based round.
    upgraded : tuple of int
        Partitions that moved one stage at the start of this round.
    stages : tuple of int
        Stage of every partition during this round, indexed by partition id.
    """

    round: int
    upgraded: tuple[int, ...]
    stages: tuple[int, ...]


def plan_evolution(
    path_lengths: Sequence[int], num_rounds: int, fraction: float, seed: int
) -> list[EvolutionStep]:
    """The whole schedule for a federation where every participant answers every round.

    The platform draws round by round with :func:`choose_upgrades`; this replays the same
    draws for partitions ``0..K-1`` with the given path lengths (what a run without failures
    does), e.g. to check a configuration before starting it.
    """
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    lengths = {p: int(n) for p, n in enumerate(path_lengths)}
    if any(n < 1 for n in lengths.values()):
        raise ValueError(f"every path needs at least one stage, got lengths {list(path_lengths)}")
    stages = dict.fromkeys(lengths, 0)
    plan = []
    for r in range(1, num_rounds + 1):
        upgraded = choose_upgrades(stages, lengths, fraction, seed, r)
        for p in upgraded:
            stages[p] += 1
        plan.append(EvolutionStep(r, tuple(upgraded), tuple(stages[p] for p in sorted(stages))))
    return plan
