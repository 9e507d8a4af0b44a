from collections import defaultdict

import numpy as np
import pytest

from coopt_flwr.protocol.ensemble import assign_redundant, combine_targets

IDS = np.arange(600, dtype=np.int64) * 3 + 5


def _owners(out: dict[int, np.ndarray]) -> dict[int, list[int]]:
    owners: dict[int, list[int]] = defaultdict(list)
    for partition, ids in out.items():
        for i in ids.tolist():
            owners[i].append(partition)
    return owners


@pytest.mark.parametrize(
    "groups,r",
    [(None, 1), (None, 2), ([0, 0, 1, 1, 2, 2], 3), ([0, 1, 0, 1, 0, 1], 2), (None, 6)],
)
def test_each_id_gets_r_distinct_partitions_with_balanced_loads(groups, r):
    partitions = [3, 9, 4, 11, 0, 7]
    out = assign_redundant(IDS, partitions, groups, r, seed=1)
    assert list(out) == partitions
    owners = _owners(out)
    assert sorted(owners) == IDS.tolist()
    assert all(len(p) == r and len(set(p)) == r for p in owners.values())
    loads = [len(v) for v in out.values()]
    assert max(loads) - min(loads) <= 1 and sum(loads) == r * len(IDS)
    for ids in out.values():
        assert ids.dtype == np.int64 and np.all(np.diff(ids) > 0)
    label = dict(zip(partitions, groups or partitions, strict=True))
    if r <= len(set(label.values())):
        assert all(len({label[p] for p in ps}) == r for ps in owners.values())


def test_r1_is_a_disjoint_cover():
    out = assign_redundant(IDS, range(4), None, 1, seed=0)
    merged = np.concatenate(list(out.values()))
    np.testing.assert_array_equal(np.sort(merged), IDS)


def test_uneven_groups_reach_the_fewest_same_group_copies():
    # 3 partitions of prior 0, one each of priors 1 and 2, r = 2: prior 0 holds 3/5 of the
    # 2·N copies, so at least 6N/5 − N = N/5 ids must get both copies from prior 0.
    groups = [0, 0, 0, 1, 2]
    out = assign_redundant(IDS, range(5), groups, 2, seed=3)
    same = sum(groups[a] == groups[b] for a, b in _owners(out).values())
    assert same == len(IDS) // 5


def test_deterministic_with_seed():
    a = assign_redundant(IDS, range(5), [0, 1, 0, 1, 2], 2, seed=7)
    b = assign_redundant(IDS, range(5), [0, 1, 0, 1, 2], 2, seed=7)
    c = assign_redundant(IDS, range(5), [0, 1, 0, 1, 2], 2, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "ids,partitions,groups,r",
    [
        (IDS, range(3), None, 4),
        (IDS, range(3), None, 0),
        (IDS, [1, 1, 2], None, 1),
        (IDS, range(3), [0, 1], 1),
        (np.array([1, 1, 2]), range(3), None, 1),
        (np.array([1.0, 2.0]), range(3), None, 1),
    ],
)
def test_assign_errors(ids, partitions, groups, r):
    with pytest.raises(ValueError):
        assign_redundant(ids, partitions, groups, r, seed=0)


def test_combine_is_the_weighted_mean_each_id_once():
    ids = [np.array([5, 1, 3]), np.array([3, 9]), np.array([1, 3])]
    ys = [
        np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 3.0]], np.float32),
        np.array([[6.0, 0.0], [7.0, 7.0]], np.float32),
        np.array([[4.0, 4.0], [0.0, 9.0]], np.float32),
    ]
    out_ids, out = combine_targets(ids, ys, weights=[1.0, 2.0, np.array([1.0, 3.0])])
    np.testing.assert_array_equal(out_ids, [1, 3, 5, 9])
    assert out.dtype == np.float32
    want = {
        1: (1 * np.array([2.0, 2.0]) + 1 * np.array([4.0, 4.0])) / 2,
        3: (1 * np.array([3.0, 3.0]) + 2 * np.array([6.0, 0.0]) + 3 * np.array([0.0, 9.0])) / 6,
        5: np.array([1.0, 0.0]),
        9: np.array([7.0, 7.0]),
    }
    np.testing.assert_allclose(out, np.stack([want[i] for i in out_ids]), rtol=1e-6)
    _, plain = combine_targets(ids, [y.astype(np.float64) for y in ys])  # unweighted
    assert plain.dtype == np.float64
    np.testing.assert_allclose(plain[1], [3.0, 4.0])  # mean of (3, 3), (6, 0), (0, 9)


def test_assign_then_combine_round_trip():
    out = assign_redundant(IDS, range(4), None, 2, seed=0)
    truth = np.stack([IDS, -IDS], axis=1).astype(np.float64)
    row = {i: k for k, i in enumerate(IDS.tolist())}
    parts = list(out.values())
    ids, y = combine_targets(parts, [truth[[row[i] for i in p.tolist()]] for p in parts])
    np.testing.assert_array_equal(ids, IDS)
    np.testing.assert_allclose(y, truth)


@pytest.mark.parametrize(
    "ids,ys,weights",
    [
        ([np.array([1])], [], None),
        ([np.array([1, 1])], [np.ones((2, 2))], None),
        ([np.array([1]), np.array([2])], [np.ones((1, 2)), np.ones((1, 3))], None),
        ([np.array([1])], [np.ones((2, 2))], None),
        ([np.array([1])], [np.ones((1, 2))], [-1.0]),
        ([np.array([1])], [np.ones((1, 2))], [0.0]),
        ([np.array([1])], [np.ones((1, 2))], [1.0, 2.0]),
        ([np.array([1])], [np.full((1, 2), np.nan)], None),
    ],
)
def test_combine_errors(ids, ys, weights):
    with pytest.raises(ValueError):
        combine_targets(ids, ys, weights)
