"""Evolution logic: which participants upgrade, seeded, never past the end of their path."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from harness import InProcessGrid, register_counting_prior

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.protocol.evolution import (
    choose_upgrades,
    format_path,
    parse_path,
    plan_evolution,
    upgrade_count,
)
from coopt_flwr.store.storage import load_optimized
from strategies.coopt import CoOptStrategy


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


# ----------------------------------------------------------------------------- through the protocol
# The real ClientApp and strategy with real Flower messages on an in-process grid, and priors
# that count what they embed.

N_DIGITS = 1797
PATHS = [
    "counting:a0 > counting:a1 > counting:a2",
    "counting:b0",
    "counting:c0 > counting:c1",
    "counting:d0 > counting:d1 > counting:d2",
]


def _evolve(tmp_path, rounds, fraction=0.25, paths=PATHS, seed=42, fault=None, **kw):
    embedded = register_counting_prior()
    cfg = {
        "priors": ",".join(paths),
        "num-rounds": rounds,
        "upgrade-fraction": fraction,
        "seed": seed,
        "output-dir": str(tmp_path / "out"),
        "target-dim": 8,
        "node-wait-timeout": 5.0,
        "step-timeout": 30.0,
        "g-max-samples": 64,
    }
    cfg.update(kw)
    settings = Settings.from_config({}, cfg)
    grid = InProcessGrid(make_client_app({"priors": cfg["priors"]}), len(paths), fault=fault)
    per_round: list[Counter] = []

    def hook(result, merged):
        per_round.append(Counter(embedded))  # cumulative counts after this round
        return {"filled": int(merged.filled.sum())}

    strategy = CoOptStrategy(settings, N_DIGITS, log=lambda s: None, poll_interval=0.01, on_round=hook)
    embedded.clear()
    result = strategy.run(grid)
    return result, settings, per_round


def test_upgrades_follow_the_seeded_plan_and_each_participant_uses_its_stage(tmp_path):
    result, _settings, _ = _evolve(tmp_path, rounds=5)
    plan = plan_evolution([3, 1, 2, 3], 5, 0.25, 42)
    assert [r.upgraded for r in result.rounds] == [list(s.upgraded) for s in plan]
    assert sum(len(r.upgraded) for r in result.rounds) == 4  # one per round from round 2
    for r, step in zip(result.rounds, plan, strict=True):
        for n in r.nodes:
            assert n.status == "ok"
            assert n.stage == step.stages[n.partition_id]
            assert n.prior == parse_path(PATHS[n.partition_id])[n.stage]
            assert n.num_stages == len(parse_path(PATHS[n.partition_id]))
    entries = result.summary["rounds"]
    assert [e["upgraded"] for e in entries] == [list(s.upgraded) for s in plan]
    assert all(e["metrics"] == {"filled": N_DIGITS} for e in entries)
    assert 1 not in {p for s in plan for p in s.upgraded}  # a one-stage path never upgrades


def test_only_upgraded_participants_re_embed(tmp_path):
    result, _, per_round = _evolve(tmp_path, rounds=5)
    shared = result.summary["shared-samples"]
    previous: Counter = Counter()
    for r, counts in zip(result.rounds, per_round, strict=True):
        fresh = counts - previous
        previous = counts
        nodes = {n.partition_id: n for n in r.nodes}
        changed = set(range(4)) if r.round == 1 else set(r.upgraded)
        # exactly the prior of each changed participant embedded S ∪ its shard, once
        expected = {}
        for p in changed:
            n = nodes[p]
            shard_in_s = n.cached - (shared if r.round == 1 or p in r.upgraded else 0)
            expected[n.prior] = shared + n.samples - shard_in_s
        assert dict(fresh) == expected, f"round {r.round}"
        for p, n in nodes.items():
            if p not in changed:  # S twice and the whole shard from the cache
                assert n.cached == 2 * shared + n.samples


def test_ids_stay_unique_and_complete_with_round_and_stage_after_several_rounds(tmp_path):
    result, settings, _ = _evolve(tmp_path, rounds=4)
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert out["targets"].shape == (N_DIGITS, 8) and np.isfinite(out["targets"]).all()
    assert np.all(out["round"] == 4)
    last = {n.partition_id: n for n in result.rounds[-1].nodes}
    for p, n in last.items():
        rows = out["participant"] == p
        assert rows.sum() == n.samples and np.all(out["stage"][rows] == n.stage)
    assert result.summary["complete"]


def test_upgrade_to_a_broken_prior_fails_that_participant_only(tmp_path):
    paths = ["counting:a0 > nosuchprior:x", "counting:b0", "counting:c0"]
    result, settings, _ = _evolve(tmp_path, rounds=2, fraction=1.0, paths=paths)
    second = {n.partition_id: n for n in result.rounds[1].nodes}
    assert result.rounds[1].upgraded == [0]
    assert second[0].status == "failed" and "nosuchprior" in second[0].reason
    assert second[1].status == second[2].status == "ok"
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert np.all(out["round"] == 2) and 0 not in set(out["participant"].tolist())


def test_node_refuses_a_stage_beyond_its_path(tmp_path):
    settings = Settings.from_config(
        {}, {"priors": "counting:a0,counting:b0", "output-dir": str(tmp_path), "step-timeout": 30.0}
    )
    register_counting_prior()
    grid = InProcessGrid(make_client_app({"priors": "counting:a0,counting:b0"}), 2)
    strategy = CoOptStrategy(settings, N_DIGITS, log=lambda s: None, poll_interval=0.01)
    strategy.stages = {0: 0, 1: 3}
    result = strategy.run_round(grid, 1)
    failed = [n for n in result.nodes if n.status != "ok"]
    assert len(failed) == 1 and failed[0].status == "failed"
    assert "asks partition 1 for evolution stage 3" in failed[0].reason


def test_settings_parse_paths_and_upgrade_fraction(tmp_path):
    s = Settings.from_config({}, {"priors": "a > b,c", "upgrade-fraction": 0.5})
    assert s.paths == (("a", "b"), ("c",)) and s.upgrade_fraction == 0.5
    assert s.prior_for(0, 1) == "b" and s.prior_for(3) == "c" and s.path_for(2) == ("a", "b")
    with pytest.raises(ValueError, match="no evolution stage"):
        s.prior_for(1, 1)
    with pytest.raises(ValueError, match="upgrade-fraction"):
        Settings.from_config({}, {"upgrade-fraction": 1.5})
    with pytest.raises(ValueError, match="empty stage"):
        Settings.from_config({}, {"priors": "a >> b"})
