"""Shard plans: disjoint shards of the federation and the reassignment of lost contributions."""

from __future__ import annotations

import numpy as np
import pytest

from coopt_flwr.protocol.shards import disjoint_shards, quality_gate, reassign_lost


def test_disjoint_shards_cover_every_id_once_and_ignore_reply_order() -> None:
    a = disjoint_shards(103, [0, 1, 2], 3, seed=5)
    b = disjoint_shards(103, [2, 0, 1], 3, seed=5)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(103))


def test_absent_partitions_shards_are_spread_over_the_present_ones() -> None:
    full = disjoint_shards(100, [0, 1, 2, 3], 4, seed=0)
    part = disjoint_shards(100, [0, 2], 4, seed=0)
    assert set(part) == {0, 2}
    for p in part:  # a present partition keeps its own shard (cached features stay valid)
        assert np.isin(full[p], part[p]).all()
    assert np.array_equal(np.sort(np.concatenate(list(part.values()))), np.arange(100))
    with pytest.raises(ValueError, match="no partitions"):
        disjoint_shards(10, [], 2, seed=0)


def test_reassign_lost_avoids_partitions_that_already_hold_the_sample() -> None:
    n, r = 40, 2
    owner = np.full((r, n), -1, dtype=np.int64)
    owner[0] = np.arange(n) % 4  # partition 0..3 own slot 0; partition 3 fails below
    owner[1] = (np.arange(n) + 1) % 4
    lost_ids = np.flatnonzero((owner == 3).any(axis=0))
    owner[owner == 3] = -1
    picked = reassign_lost([lost_ids], owner, healthy=[0, 1, 2])
    got = np.concatenate(picked)
    assert np.array_equal(np.sort(got), lost_ids)  # each lost id placed exactly once
    for part, ids in zip([0, 1, 2], picked, strict=True):
        assert not (owner[:, ids] == part).any()  # never to a partition already contributing
    assert all(len(p) for p in picked)  # the work is spread, not dumped on one partition


def test_an_id_lost_twice_needs_two_new_contributors_or_stays_short() -> None:
    owner = np.full((2, 3), -1, dtype=np.int64)
    owner[:, 2] = [1, 1]  # healthy partition 1 already holds sample 2 (its other slot was lost)
    picked = reassign_lost([np.array([0, 2]), np.array([0])], owner, healthy=[0, 1])
    assert sorted(np.concatenate(picked).tolist()) == [0, 0, 2]  # id 0 twice, to 0 and 1
    assert 2 in picked[0] and 2 not in picked[1]
    assert [len(p) for p in reassign_lost([], owner, healthy=[0, 1])] == [0, 0]


def test_quality_gate_keeps_the_anchor_the_unscored_and_those_within_the_bound() -> None:
    residuals = {3: 0.0, 0: 0.85, 5: 0.99, 2: None, 7: float("nan"), 1: 0.95}
    assert quality_gate(residuals, 0.95) == [0, 1, 2, 3, 7]
    assert quality_gate(residuals, 100.0) == [0, 1, 2, 3, 5, 7]
    assert quality_gate(residuals, 1e-9) == [2, 3, 7]
    with pytest.raises(ValueError, match="max_residual must be > 0"):
        quality_gate(residuals, 0.0)
