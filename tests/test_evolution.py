"""Evolution logic: which participants upgrade, seeded, never past the end of their path."""

from __future__ import annotations

import itertools

import pytest

from coopt_flwr.evolution import (
    choose_upgrades,
    format_path,
    parse_path,
    plan_evolution,
    upgrade_count,
)


def test_parse_and_format_paths():
    assert parse_path("a?size=32 > timm:b?checkpoint=/x/y.pth&size=4>c") == (
        "a?size=32",
        "timm:b?checkpoint=/x/y.pth&size=4",
        "c",
    )
    assert parse_path(" human ") == ("human",)
    assert parse_path(format_path(("a", "b"))) == ("a", "b")
    for bad in ("a >> b", "a >", "", " > a"):
        with pytest.raises(ValueError, match="empty stage"):
            parse_path(bad)


@pytest.mark.parametrize(
    "k,fraction,expected",
    [(10, 0.2, 2), (4, 0.2, 1), (2, 0.2, 1), (5, 0.5, 3), (7, 0.0, 0), (3, 1.0, 3), (0, 0.2, 0)],
)
def test_upgrade_count(k, fraction, expected):
    assert upgrade_count(k, fraction) == expected


def test_upgrade_count_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        upgrade_count(4, 1.2)


def test_round_one_never_upgrades():
    assert choose_upgrades({0: 0, 1: 0}, {0: 3, 1: 3}, 1.0, 0, 1) == []


def test_fraction_of_all_participants_upgrades_each_round():
    stages = dict.fromkeys(range(10), 0)
    lengths = dict.fromkeys(range(10), 5)
    for r in range(2, 7):
        up = choose_upgrades(stages, lengths, 0.2, seed=3, round_=r)
        assert len(up) == 2 and up == sorted(set(up)) and set(up) <= set(stages)


def test_draw_is_seeded_and_differs_between_rounds_and_seeds():
    stages = dict.fromkeys(range(20), 0)
    lengths = dict.fromkeys(range(20), 4)
    a = choose_upgrades(stages, lengths, 0.2, seed=7, round_=2)
    assert a == choose_upgrades(dict(stages), dict(lengths), 0.2, seed=7, round_=2)
    others = {tuple(choose_upgrades(stages, lengths, 0.2, seed=s, round_=r)) for s in (7, 8) for r in (2, 3)}
    assert len(others) > 1


def test_participants_at_the_end_of_their_path_cannot_upgrade():
    stages = {0: 2, 1: 0, 2: 0, 3: 1}
    lengths = {0: 3, 1: 1, 2: 2, 3: 2}  # 0 at its end, 1 has one stage, 3 at its end
    for seed in range(20):
        assert choose_upgrades(stages, lengths, 1.0, seed, 2) == [2]
    assert choose_upgrades({0: 0}, {}, 1.0, 0, 2) == []  # unknown length: one stage


def test_plan_runs_every_path_to_its_end_and_stops():
    plan = plan_evolution([3, 2, 1, 4], num_rounds=12, fraction=0.25, seed=0)
    assert [s.round for s in plan] == list(range(1, 13))
    assert plan[0].upgraded == () and plan[0].stages == (0, 0, 0, 0)
    for before, after in itertools.pairwise(plan):
        moved = [p for p in range(4) if after.stages[p] != before.stages[p]]
        assert moved == list(after.upgraded) and len(moved) <= 1
        assert all(after.stages[p] == before.stages[p] + 1 for p in moved)
    assert plan[-1].stages == (2, 1, 0, 3)  # 6 upgrades in 11 rounds: all paths at their end
    assert 2 not in {p for s in plan for p in s.upgraded}
    assert plan == plan_evolution([3, 2, 1, 4], num_rounds=12, fraction=0.25, seed=0)


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_rounds"):
        plan_evolution([2], 0, 0.2, 0)
    with pytest.raises(ValueError, match="at least one stage"):
        plan_evolution([2, 0], 3, 0.2, 0)
