import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coopt_flwr.protocol.merge import MergedTargets, ReplyError, check_ids, check_targets


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
    ],
)
def test_check_targets_rejects(arr, match):
    with pytest.raises(ReplyError, match=match):
        check_targets(arr, 3, 4, "t")


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
