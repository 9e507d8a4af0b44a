import numpy as np
import pytest

from coopt_flwr.protocol.inconsistency import inconsistency, tv_distance


def test_identical_sets_have_zero_distance():
    x = np.random.default_rng(0).standard_normal((100, 8))
    assert tv_distance(x, x.copy()) == 0.0


def test_same_distribution_is_near_zero():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    assert tv_distance(a, b) < 0.15


def test_disjoint_supports_approach_one():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 8)) * 0.1 + 5.0
    b = rng.standard_normal((300, 8)) * 0.1 - 5.0
    assert tv_distance(a, b) == pytest.approx(1.0)


def test_partial_overlap_is_between_and_bounded():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((500, 2)) + np.array([1.0, 0.0])
    b = rng.standard_normal((500, 2)) + np.array([-1.0, 0.0])
    d = tv_distance(a, b, normalize=False)
    # True TV of N(±1, I) along one axis is 2Φ(1) − 1 ≈ 0.68; k-NN underestimates slightly.
    assert 0.35 < d < 0.85


def test_scale_only_difference_is_no_inconsistency_by_default():
    x = np.random.default_rng(4).standard_normal((200, 8))
    assert tv_distance(x, 10 * x) == 0.0
    assert tv_distance(x, 10 * x, normalize=False) > 0.9


def test_inconsistency_mean_of_pairs_and_bounds():
    rng = np.random.default_rng(5)
    same = [rng.standard_normal((100, 4)) for _ in range(3)]
    far = [s + 20 * i for i, s in enumerate(same)]
    g_same = inconsistency([same[0]] * 3)
    g_far = inconsistency(far, normalize=False)
    assert g_same == 0.0
    assert g_far == pytest.approx(1.0)
    assert 0.0 <= inconsistency(same) <= 1.0


def test_pair_sampling_is_seeded():
    rng = np.random.default_rng(6)
    sets = [rng.standard_normal((30, 4)) + i for i in range(8)]
    a = inconsistency(sets, max_pairs=5, seed=1)
    assert a == inconsistency(sets, max_pairs=5, seed=1)


def test_errors():
    with pytest.raises(ValueError):
        inconsistency([np.ones((3, 2))])
    with pytest.raises(ValueError):
        tv_distance(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError):
        tv_distance(np.ones((3, 2)), np.ones((3, 2)), k=2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_nearest_votes_match_a_stable_sort_even_with_ties(seed, k):
    from coopt_flwr.protocol.inconsistency import _nearest_votes

    rng = np.random.default_rng(seed)
    # Few distinct values: most of every row is tied, the case the tie rule decides.
    pts = rng.integers(0, 3, size=(40, 2)).astype(np.float64)
    dist2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist2, np.inf)
    labels = rng.integers(0, 2, size=40)
    reference = labels[np.argsort(dist2, axis=1, kind="stable")[:, :k]].sum(axis=1)
    assert np.array_equal(_nearest_votes(dist2, labels, k), reference)
