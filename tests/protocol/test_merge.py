import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coopt_flwr.protocol.merge import (
    MAX_TARGET_MAGNITUDE,
    MergedTargets,
    ReplyError,
    RoundContributions,
    check_ids,
    check_targets,
)


def test_check_targets_accepts_floats_and_casts():
    out = check_targets(np.ones((3, 4), dtype=np.float64), 3, 4, "t")
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.ones((3, 5), dtype=np.float32), "shape"),
        (np.ones((3,), dtype=np.float32), "shape"),
        (np.ones((3, 4), dtype=np.int64), "dtype"),
        (np.array([[np.nan] * 4] * 3, dtype=np.float32), "non-finite"),
        (np.array([[np.inf] * 4] * 3, dtype=np.float32), "non-finite"),
        (np.full((3, 4), 2e6, dtype=np.float32), "beyond 1e"),
        (np.full((3, 4), -1e37, dtype=np.float32), "magnitude"),
    ],
)
def test_check_targets_rejects(arr, match):
    with pytest.raises(ReplyError, match=match):
        check_targets(arr, 3, 4, "t")


def test_check_targets_accepts_values_up_to_the_bound():
    edge = np.full((3, 4), -MAX_TARGET_MAGNITUDE, dtype=np.float32)
    np.testing.assert_array_equal(check_targets(edge, 3, 4, "t"), edge)


def test_check_ids():
    assert check_ids(np.array([3, 1, 2]), np.array([1, 2, 3]), "x").tolist() == [3, 1, 2]
    with pytest.raises(ReplyError, match="duplicated"):
        check_ids(np.array([1, 1, 2]), np.array([1, 2, 3]), "x")
    with pytest.raises(ReplyError, match="differ"):
        check_ids(np.array([1, 2, 4]), np.array([1, 2, 3]), "x")
    with pytest.raises(ReplyError, match="integer"):
        check_ids(np.array([1.0, 2.0]), np.array([1, 2]), "x")


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        elements=None,
    )
)
def test_check_targets_never_lets_bad_data_through(arr):
    # Property: whatever arrives, the result is either a finite float32 array of the
    # requested shape, or a ReplyError (never another exception, never silent garbage).
    try:
        out = check_targets(arr, 2, 3, "t")
    except ReplyError:
        return
    assert out.dtype == np.float32 and out.shape == (2, 3) and np.all(np.isfinite(out))


@settings(max_examples=60, deadline=None)
@given(ids=hnp.arrays(dtype=np.int64, shape=st.integers(0, 12), elements=st.integers(-3, 15)))
def test_check_ids_property(ids):
    expected = np.arange(6)
    try:
        out = check_ids(ids, expected, "x")
    except ReplyError:
        return
    assert sorted(out.tolist()) == list(range(6))


def test_merged_targets_tracks_filled_and_missing():
    m = MergedTargets(6, 2)
    m.add(np.array([0, 2]), np.ones((2, 2), np.float32), participant=3, round_=1)
    np.testing.assert_array_equal(m.missing_ids(), [1, 3, 4, 5])
    t = m.tensors()
    assert t["ids"].tolist() == [0, 2] and t["participant"].tolist() == [3, 3]
    assert t["round"].dtype == np.int64 and t["targets"].dtype == np.float32
    with pytest.raises(ReplyError):
        m.add(np.array([6]), np.ones((1, 2), np.float32), 0, 1)


def test_grow_keeps_rows_and_adds_empty_ones_and_clear_empties_again():
    m = MergedTargets(3, 2)
    m.add(np.array([0, 2]), np.ones((2, 2), np.float32), participant=5, round_=1, stage=1)
    m.grow(6)
    assert m.num_samples == 6 and m.targets.shape == (6, 2)
    np.testing.assert_array_equal(m.filled, [True, False, True, False, False, False])
    np.testing.assert_array_equal(m.targets[[0, 2]], 1.0)
    assert np.isnan(m.targets[3:]).all() and (m.round[3:] == -1).all() and (m.stage[3:] == -1).all()
    m.add(np.array([5]), np.zeros((1, 2), np.float32), participant=6, round_=2)
    m.clear(np.array([0]))
    np.testing.assert_array_equal(m.missing_ids(), [0, 1, 3, 4])
    with pytest.raises(ValueError, match="shrink"):
        m.grow(2)


def test_merged_targets_count_contributions():
    m = MergedTargets(4, 2)
    m.add(np.array([0, 1]), np.ones((2, 2), np.float32), participant=2, round_=1)
    m.add(np.array([3]), np.ones((1, 2), np.float32), np.array([5]), 1, stage=np.array([1]), contributions=3)
    np.testing.assert_array_equal(m.contributions, [1, 1, 0, 3])
    assert m.tensors()["contributions"].tolist() == [1, 1, 3]
    m.clear(np.array([1]))
    m.grow(5)
    np.testing.assert_array_equal(m.contributions, [1, 0, 0, 3, 0])
    assert m.contributions.dtype == np.int64


def _rows(value: float, k: int = 2) -> np.ndarray:
    return np.full((k, 2), value, np.float32)


def test_round_contributions_merge_the_weighted_mean_by_partition():
    c = RoundContributions(5, 2, redundancy=3)
    c.add(np.array([0, 1]), _rows(1.0), participant=7, stage=2, weight=1.0)
    c.add(np.array([1, 0]), np.array([[3.0, 3.0], [5.0, 5.0]], np.float32), participant=4, weight=3.0)
    c.add(np.array([1, 3]), _rows(9.0), participant=9)
    np.testing.assert_array_equal(c.counts(), [2, 3, 0, 1, 0])
    merged = MergedTargets(5, 2)
    merged.add(np.array([2]), _rows(-1.0, 1), participant=0, round_=1)  # an earlier round's row
    counts = c.merge_into(merged, round_=2, chunk=2)
    np.testing.assert_array_equal(counts, [2, 3, 0, 1, 0])
    np.testing.assert_allclose(merged.targets[0], (1 * 1.0 + 3 * 5.0) / 4)
    np.testing.assert_allclose(merged.targets[1], (1 * 1.0 + 3 * 3.0 + 9.0) / 5)
    np.testing.assert_allclose(merged.targets[3], 9.0)
    # the primary contributor is the lowest partition; samples without a row keep theirs
    assert merged.participant.tolist() == [4, 4, 0, 9, -1]
    assert merged.stage.tolist() == [0, 0, 0, 0, -1] and merged.round.tolist() == [2, 2, 1, 2, -1]
    assert merged.contributions.tolist() == [2, 3, 1, 1, 0]


def test_round_contributions_do_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    ids = np.arange(50)
    parts = {p: rng.standard_normal((50, 3)).astype(np.float32) for p in (3, 1, 8)}
    outs = []
    for order in ((3, 1, 8), (8, 3, 1)):
        c, m = RoundContributions(50, 3, 3), MergedTargets(50, 3)
        for p in order:
            c.add(ids, parts[p], p, weight=0.1 + p)
        c.merge_into(m, 1)
        outs.append(m.targets.copy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_a_removed_participant_leaves_the_others_rows_exactly():
    c = RoundContributions(3, 2, redundancy=2)
    c.add(np.array([0, 1, 2]), np.arange(6, dtype=np.float32).reshape(3, 2), participant=1)
    c.add(np.array([0, 2]), _rows(100.0), participant=0)
    c.remove(np.array([0, 2]), participant=0)
    c.remove(np.array([1]), participant=5)  # not a contributor: nothing happens
    c.add(np.array([2]), _rows(10.0, 1), participant=3)  # a reassigned contribution
    m = MergedTargets(3, 2)
    c.merge_into(m, 1)
    np.testing.assert_array_equal(m.targets[:2], [[0, 1], [2, 3]])
    np.testing.assert_allclose(m.targets[2], [7.0, 7.5])
    assert m.participant.tolist() == [1, 1, 1] and m.contributions.tolist() == [1, 1, 2]


def test_round_contributions_refuse_what_the_assignment_forbids():
    c = RoundContributions(3, 2, redundancy=2)
    c.add(np.array([0]), _rows(1.0, 1), participant=0)
    with pytest.raises(ReplyError, match="sent twice"):
        c.add(np.array([0]), _rows(1.0, 1), participant=0)
    c.add(np.array([0]), _rows(1.0, 1), participant=1)
    with pytest.raises(ReplyError, match="already have 2 contributions"):
        c.add(np.array([0, 1]), _rows(1.0), participant=2)
    with pytest.raises(ReplyError, match="outside"):
        c.add(np.array([3]), _rows(1.0, 1), participant=2)
    with pytest.raises(ValueError, match="weight"):
        c.add(np.array([1]), _rows(1.0, 1), participant=2, weight=0.0)
    with pytest.raises(ValueError, match="redundancy"):
        RoundContributions(3, 2, redundancy=0)
