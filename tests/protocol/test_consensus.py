import numpy as np
import pytest

from coopt_flwr.protocol.alignment import cross_fitted_residual
from coopt_flwr.protocol.anchor import choose_anchor
from coopt_flwr.protocol.consensus import (
    consensus_scores,
    effective_rank,
    pairwise_residuals,
    partner_sets,
)


def _pool(seed: int = 0, rows: int = 120) -> dict[int, np.ndarray]:
    """Participant 0 generated the others: a latent Z seen fully, noisily, low-rank, partially."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 12))

    def lin(a: np.ndarray, n: int) -> np.ndarray:
        return a @ rng.standard_normal((a.shape[1], n))

    def noise(n: int, std: float) -> np.ndarray:
        return std * rng.standard_normal((rows, n))

    return {
        0: lin(z, 32) + noise(32, 0.01),
        1: lin(z, 24) + noise(24, 2.0),  # noisy, narrower
        2: lin(lin(z, 2), 32) + noise(32, 0.1),  # low-rank ("low resolution")
        3: lin(z[:, :6], 16) + noise(16, 0.3),  # partial view
        4: rng.standard_normal((rows, 48)),  # pure noise
    }


@pytest.mark.parametrize("standardize", [False, True])
def test_consensus_picks_the_generating_prior_and_ranks_noise_last(standardize):
    scores = consensus_scores(_pool(), standardize=standardize)
    assert set(scores) == {0, 1, 2, 3, 4}
    assert choose_anchor(scores) == 0
    assert max(scores, key=scores.get) == 4
    assert scores[4] > 0.9


def test_consensus_matches_its_definition():
    pool = {k: v for k, v in _pool(1, rows=60).items() if k in (0, 2, 4)}
    pairs = pairwise_residuals(pool, folds=3, seed=2)
    assert set(pairs) == {(p, q) for p in pool for q in pool if p != q}
    assert pairs[0, 2] == pytest.approx(cross_fitted_residual(pool[0], pool[2], folds=3, seed=2))
    scores = consensus_scores(pool, folds=3, seed=2)
    want = np.mean([pairs[0, 2] + pairs[2, 0], pairs[0, 4] + pairs[4, 0]]) / 2
    assert scores[0] == pytest.approx(want)


def test_consensus_is_scale_free():
    pool = _pool(2, rows=60)
    scaled = {k: v * (10.0**k) + k for k, v in pool.items()}
    a, b = consensus_scores(pool, folds=3), consensus_scores(scaled, folds=3)
    for k in pool:
        assert a[k] == pytest.approx(b[k], rel=1e-6)


@pytest.mark.parametrize(
    "shared",
    [{0: np.ones((5, 2))}, {0: np.ones((5, 2)), 1: np.ones((6, 2))}, {0: np.ones(5), 1: np.ones(5)}],
)
def test_consensus_errors(shared):
    with pytest.raises(ValueError):
        consensus_scores(shared)


def test_effective_rank():
    n = 7
    identity_like = np.vstack([np.eye(n), -np.eye(n)])  # centred, all singular values equal
    assert effective_rank(identity_like) == pytest.approx(n)
    rng = np.random.default_rng(3)
    rank1 = np.outer(rng.standard_normal(50), rng.standard_normal(9)) + 4.0
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(np.full((4, 3), 2.0)) == 1.0
    pool = _pool(4)
    assert effective_rank(pool[2]) < effective_rank(pool[0]) < effective_rank(pool[4])
    # Definition: exp of the entropy of the normalised singular values of the centred matrix.
    x = pool[3]
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    with pytest.raises(ValueError):
        effective_rank(np.ones((1, 3)))


def test_partner_sets_are_all_others_or_a_seeded_few():
    ids = [4, 0, 9, 2, 7]
    full = partner_sets(ids)
    assert full == {p: [q for q in ids if q != p] for p in ids}
    assert partner_sets(ids, partners=4) == full == partner_sets(ids, partners=10)
    few = partner_sets(ids, partners=2, seed=3)
    assert all(len(v) == 2 and p not in v and set(v) <= set(ids) for p, v in few.items())
    assert few == partner_sets(ids, partners=2, seed=3)
    # a participant's partners depend on the seed, not on the order the ids come in
    again = partner_sets(list(reversed(ids)), partners=2, seed=3)
    assert {p: set(v) for p, v in again.items()} == {p: set(v) for p, v in few.items()}
    assert any(set(partner_sets(ids, 2, seed=s)[0]) != set(few[0]) for s in range(4, 12))
    with pytest.raises(ValueError, match="partners"):
        partner_sets(ids, partners=0)


def test_consensus_with_partners_scores_against_the_chosen_few():
    pool = _pool(5, rows=60)
    assert consensus_scores(pool, folds=3, partners=4) == consensus_scores(pool, folds=3)
    pairs = pairwise_residuals(pool, folds=3, seed=1)  # the seed also splits the folds
    chosen = partner_sets(list(pool), partners=2, seed=1)
    scores = consensus_scores(pool, folds=3, seed=1, partners=2)
    for p, partners in chosen.items():
        want = np.mean([0.5 * (pairs[p, q] + pairs[q, p]) for q in partners])
        assert scores[p] == pytest.approx(want)
    # with 3 of 4 partners the generating prior still wins and noise still ranks last
    scores = consensus_scores(_pool(), partners=3)
    assert choose_anchor(scores) == 0 and max(scores, key=scores.get) == 4
