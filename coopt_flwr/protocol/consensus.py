"""Resolution- and width-robust anchor scores from the participants' shared-set targets.

Uniformity V rewards targets that spread evenly over the sphere, and so ranks low-resolution
or random-network features as "more uniform" than good ones (Spearman −0.65 between V and
quality on a 15-prior pool). Spread is not information: pure noise is the most uniform of all.

**Consensus** (the anchor rule meant to replace argmin V). With X_p the (|S|, n) shared-set
targets of participant p and r(a→b) the cross-fitted (out-of-sample) relative residual of
the ridge map from X_a to X_b (:func:`coopt_flwr.protocol.alignment.cross_fitted_residual`),

    C_p = mean_{q≠p} ½ [ r(p→q) + r(q→p) ],     lower = better.

r(p→q) small: p's targets linearly contain what q's contain (p is *rich*). r(q→p) small: p's
targets are explained by the others (p is *shared signal*, not idiosyncratic noise). A prior
that generated the others scores best on both; a low-rank prior (low resolution, collapsed)
is easy to predict but predicts little; a noise-like prior predicts nothing and is predicted
by nothing, so it scores ≈ 1 or worse. Both directions are needed: "predicts" alone does not
penalise a prior that adds idiosyncratic or noisy dimensions to good ones (the anchor's targets
are what every aligned target is fitted to, so its unpredictable content spreads to all of D'),
and "is predicted" alone favours collapsed targets. Cross-fitting matters: in-sample, any
source with n ≥ |S| interpolates every target (residual → 0), whatever its quality. The
score is invariant to the scale of each participant's targets and, up to the small ridge
term, to any invertible linear transform of them (so to the random projection W_k).
Pass the scores to :func:`coopt_flwr.protocol.anchor.choose_anchor` (argmin, ties to the
lowest partition id).

**Effective rank** (Roy & Vetterli 2007) is a second, cheaper candidate that needs only one
participant's targets: exp of the entropy of the normalised singular values of the centred
matrix. It detects collapse (low resolution, rank-deficient or weak priors) but, like V,
measures spread rather than information, and is maximal for pure noise, so it is a
diagnostic or a screen (reject priors with tiny effective rank), not an anchor rule alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from coopt_flwr.protocol.alignment import Standardizer, cross_fitted_residual

__all__ = ["CONSENSUS_PARTNERS", "consensus_scores", "effective_rank", "pairwise_residuals", "partner_sets"]


#: Anchor-rule ``consensus``: each participant is scored against at most this many seeded
#: partners, so choosing the anchor costs about 2·K·8 cross-fits however large K grows.
CONSENSUS_PARTNERS = 8


def _prepared(shared: Mapping[int, np.ndarray], standardize: bool) -> dict[int, np.ndarray]:
    """The participants' targets as float64, checked (≥ 2, same rows), z-scored if asked."""
    arrays = {p: np.asarray(x, dtype=np.float64) for p, x in shared.items()}
    rows = {x.shape[0] if x.ndim == 2 else -1 for x in arrays.values()}
    if len(arrays) < 2 or len(rows) != 1 or -1 in rows:
        raise ValueError("consensus needs >= 2 participants with (|S|, n) targets on the same S")
    if standardize:
        arrays = {p: Standardizer.fit(x).apply(x) for p, x in arrays.items()}
    return arrays


def pairwise_residuals(
    shared: Mapping[int, np.ndarray],
    *,
    ridge: float = 1e-3,
    folds: int = 5,
    seed: int = 0,
    standardize: bool = False,
) -> dict[tuple[int, int], float]:
    """Cross-fitted relative residual r(p→q) of every ordered pair of participants.

    Parameters
    ----------
    shared
        Partition id → (|S|, n_p) shared-set targets, rows in the same sample order for all;
        widths n_p may differ.
    ridge, folds, seed
        As in :func:`coopt_flwr.protocol.alignment.cross_fitted_residual` (ridge method, with
        intercept; the same fold split for every pair).
    standardize
        Z-score each participant's targets per dimension first (:class:`Standardizer`), so
        every target dimension weighs the same in the residual.

    Returns
    -------
    dict
        (p, q) → r(p→q) for all p ≠ q: how badly p's targets predict q's out of sample.
    """
    arrays = _prepared(shared, standardize)
    return {
        (p, q): cross_fitted_residual(arrays[p], arrays[q], folds=folds, seed=seed, ridge=ridge)
        for p in arrays
        for q in arrays
        if p != q
    }


def partner_sets(ids: Sequence[int], partners: int | None = None, seed: int = 0) -> dict[int, list[int]]:
    """The participants each one is scored against: all others, or a seeded few.

    Parameters
    ----------
    ids
        The distinct partition ids (non-negative).
    partners
        At most this many partners each (≥ 1); ``None`` or ≥ K − 1: all the others.
    seed
        Seed of the choice; p's partners depend only on (seed, p, ids), not on the order.

    Returns
    -------
    dict
        Partition id → its partners, in the order of ``ids``.
    """
    order = [int(p) for p in ids]
    if partners is not None and partners < 1:
        raise ValueError(f"partners must be >= 1, got {partners}")
    chosen: dict[int, list[int]] = {}
    for p in order:
        others = [q for q in order if q != p]
        if partners is not None and partners < len(others):
            # Per-participant seed: adding or dropping someone else reshuffles no one's draw.
            rng = np.random.default_rng([int(seed) % 2**32, p])
            keep = set(rng.choice(sorted(others), size=partners, replace=False).tolist())
            others = [q for q in others if q in keep]
        chosen[p] = others
    return chosen


def consensus_scores(
    shared: Mapping[int, np.ndarray],
    *,
    ridge: float = 1e-3,
    folds: int = 5,
    seed: int = 0,
    standardize: bool = False,
    partners: int | None = None,
) -> dict[int, float]:
    """Consensus anchor score C_p = mean_{q≠p} ½ [r(p→q) + r(q→p)] (lower = better).

    Parameters
    ----------
    shared
        Partition id → (|S|, n_p) shared-set targets (same rows for all; ≥ 2 participants).
    ridge, folds, seed, standardize
        As in :func:`pairwise_residuals`; ``seed`` also draws the partners.
    partners
        Score each participant against at most this many others (:func:`partner_sets`), so
        the cost grows as 2·K·partners cross-fits rather than K²; ``None``: all others.

    Returns
    -------
    dict
        Partition id → C_p; ``choose_anchor(consensus_scores(shared))`` is the anchor.
    """
    arrays = _prepared(shared, standardize)
    pairs: dict[tuple[int, int], float] = {}

    def r(p: int, q: int) -> float:  # each ordered pair fitted once, shared by both scores
        if (p, q) not in pairs:
            pairs[p, q] = cross_fitted_residual(arrays[p], arrays[q], folds=folds, seed=seed, ridge=ridge)
        return pairs[p, q]

    chosen = partner_sets(list(arrays), partners, seed)
    return {p: float(np.mean([0.5 * (r(p, q) + r(q, p)) for q in chosen[p]])) for p in arrays}


def effective_rank(x: np.ndarray) -> float:
    """Effective rank exp(H(σ/Σσ)) of the column-centred (N, n) matrix, in [1, min(N, n)].

    Parameters
    ----------
    x
        (N, n) finite targets, N ≥ 2.

    Returns
    -------
    float
        1 for rank ≤ 1 (also for a constant matrix), min(N, n) when all singular values of the
        centred matrix are equal.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"effective rank needs finite (N >= 2, n) targets, got shape {a.shape}")
    sigma = np.linalg.svd(a - a.mean(axis=0), compute_uv=False)
    total = sigma.sum()
    if total <= 0:
        return 1.0
    p = sigma[sigma > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))
