"""Screening of participants' replies for dishonest or poisoned content (pure functions).

The merge already rejects replies that are malformed (see :mod:`coopt_flwr.protocol.merge`). The checks
here catch replies that are well-formed but wrong, using only what the platform holds: every
participant's shared-set targets S_k = W_k ψ_k(S) from the uniformity report, the anchor's
S_Y*, and each upload (aligned shared targets and aligned shard targets).

1. **Claimed uniformity.** A participant reports V of its own shared targets; the platform
   recomputes it from the targets it received. A mismatch means the claim is false.
2. **Information on S.** Out-of-sample (2-fold) ridge prediction of other participants' S
   targets from S_k. S_k is informative about a peer when the held-out relative residual is
   below ``max_residual`` (run-config ``screen-max-residual``, default 1: better than the
   peer's mean), or clearly below the residual the same fit reaches with the rows of S_k
   shuffled (a permutation null: same marginals, no pairing). The null matters: with n close
   to |S|/2 every fit overfits, and an honest ImageNet prior at low resolution reached
   residuals of 1.00-1.05 against its peers on CIFAR-10 (n = 128, |S| = 500) while its
   shuffled rows reached more; noise sits at the null. A participant informative about no
   peer carries nothing the others share, as random noise does, and is rejected. This runs
   before the anchor choice: noise is perfectly uniform and would otherwise win it.
3. **Honest alignment.** The platform refits T_k on (S_k, S_Y*) itself: the uploaded aligned
   shared targets must equal T_k S_k, and the claimed residual must match.
4. **Shard consistent with S.** S is a random sample of D, so the aligned shard targets of an
   honest participant follow the distribution of its shared targets aligned out of sample
   (cross-fitted: in-sample ones overfit the anchor when n approaches |S|). A k-NN
   two-sample estimate of their total-variation distance above ``max_tv`` (run-config
   ``screen-max-tv``) flags shard targets replaced by noise, constants, another prior's
   outputs, or a shifted copy. A prior with few distinct outputs (a human annotator's label
   codes) is its own exception: its in-sample alignment is no overfit, and the cross-fitted
   reference would split every label code into one atom per fold, which the k-NN estimate
   tells apart from the shard's single atom (honest annotators were rejected that way).
5. **Bounded scale.** The TV estimate compares directions, so magnitude is checked apart:
   every aligned shard row must lie within :data:`MAX_ROW_SCALE` times the reference's
   largest distance from its mean, and its norm must not fall below the reference's
   smallest norm divided by the same factor. One row multiplied by 10⁶ (or a shard by 10³)
   fails; honest rows, drawn from the same distribution as S, sit far inside the bound.

What screening cannot see (the threat model): a participant may apply any transformation to
its *own* prior's outputs before reporting (e.g. whiten them) — the platform only sees the
result, which is an honest-looking prior; single rows that stay inside the scale bound and
point in a plausible direction; and a participant that reports well but embeds a different
image set is caught only through the distribution of its targets.

Each check returns ``None`` when the reply passes, or the reason it fails.
"""

from __future__ import annotations

import numpy as np

from coopt_flwr.protocol.alignment import fit_alignment, relative_residual
from coopt_flwr.protocol.inconsistency import tv_distance
from coopt_flwr.protocol.uniformity import uniformity

#: Check 5's factor: an aligned shard row may lie at most this many times farther from the
#: reference's mean than its farthest row, and its norm be at most this many times smaller
#: than the reference's smallest norm.
MAX_ROW_SCALE = 4.0

#: A prior whose shared-set targets have at most this fraction of distinct rows is discrete
#: (label codes): its shard is compared with its in-sample alignment (see check 4).
DISCRETE_FRACTION = 0.5

#: Relative ridge of the held-out check: strong enough that an honest prior's fit on half of
#: a small S (|S|/2 samples, n features) does not overfit into a residual above 1.
HELD_OUT_RIDGE = 0.1


def held_out_residual(
    source: np.ndarray, anchor: np.ndarray, ridge: float = HELD_OUT_RIDGE, seed: int = 0
) -> float:
    """2-fold cross-fitted relative residual of predicting ``anchor`` from ``source``.

    Parameters
    ----------
    source
        (|S|, n_in) a participant's shared-set targets.
    anchor
        (|S|, n_out) the anchor's shared-set targets, same row order.
    ridge
        Relative ridge strength of each fold's fit.
    seed
        Seed of the random split into two halves.

    Returns
    -------
    float
        ‖Ŷ − Y‖_F / ‖Y − Ȳ‖_F over both held-out halves (Ŷ from the other half's fit, Ȳ the
        mean of the other half): 0 is perfect, about 1 is no better than the mean, larger is
        worse than the mean.
    """
    x, y = np.asarray(source, dtype=np.float64), np.asarray(anchor, dtype=np.float64)
    if len(x) != len(y) or len(x) < 4:
        raise ValueError(f"held_out_residual needs >= 4 paired rows, got {len(x)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(x))
    halves = (order[: len(x) // 2], order[len(x) // 2 :])
    err = spread = 0.0
    for fit_rows, test_rows in (halves, halves[::-1]):
        fit = fit_alignment(x[fit_rows], y[fit_rows], ridge=ridge)
        err += float(np.sum((fit.apply(x[test_rows]) - y[test_rows]) ** 2))
        spread += float(np.sum((y[test_rows] - y[fit_rows].mean(axis=0)) ** 2))
    if spread == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return float(np.sqrt(err / spread))


def check_claimed_uniformity(shared_targets: np.ndarray, claimed: float, tol: float = 1e-3) -> str | None:
    """Check 1: the claimed V of the participant's own shared targets (|S|, n)."""
    actual = uniformity(shared_targets)
    if not np.isfinite(claimed) or abs(actual - claimed) > tol * max(1.0, abs(actual)):
        return f"claimed uniformity {claimed:.4f} disagrees with its own shared targets ({actual:.4f})"
    return None


def check_information(
    shared_targets: np.ndarray,
    peers: list[np.ndarray],
    max_residual: float,
    max_peers: int = 8,
    permutations: int = 10,
    min_z: float = 4.0,
    seed: int = 0,
) -> str | None:
    """Check 2: S_k (|S|, n) predicts at least one peer's shared targets out of sample.

    Run before the anchor is chosen (a noise participant has the most uniform targets and
    would otherwise become the anchor). With fewer than 2 peers there is no majority to judge
    against and the check passes.

    Parameters
    ----------
    shared_targets
        (|S|, n) the participant's shared-set targets.
    peers
        The other participants' (|S|, n) shared-set targets.
    max_residual
        A held-out residual below this is informative outright (1: better than the mean); the
        run-config's ``screen-max-residual``.
    max_peers
        Compare with at most this many peers (seeded choice), bounding the cost at scale.
    permutations
        Row shuffles of S_k that give the null residual's mean μ₀ and spread σ₀ for a peer.
    min_z
        Above ``max_residual``, informative when (μ₀ − residual) / σ₀ ≥ ``min_z`` (σ₀ floored
        at 1e-3, so a tiny spread cannot make a negligible gap significant).
    seed
        Seed of the peer choice, the folds and the shuffles.
    """
    if len(peers) < 2:
        return None
    x = np.asarray(shared_targets)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(peers), size=min(max_peers, len(peers)), replace=False)
    best: tuple[float, float, float] | None = None  # (z, residual, null mean) of the best peer
    for i in sorted(chosen):
        residual = held_out_residual(x, peers[i], seed=seed)
        if residual < max_residual:
            return None
        nulls = np.array(
            [held_out_residual(x[rng.permutation(len(x))], peers[i], seed=seed) for _ in range(permutations)]
        )
        mu, sigma = float(nulls.mean()), max(float(nulls.std(ddof=1)) if permutations > 1 else 0.0, 1e-3)
        z = (mu - residual) / sigma
        if z >= min_z:
            return None
        if best is None or z > best[0]:
            best = (z, residual, mu)
    assert best is not None
    z, residual, mu = best
    return (
        f"shared-set targets carry no information shared with any other participant (best held-out "
        f"residual {residual:.3f} >= {max_residual:g}, and only {z:.1f} sigma below the {mu:.3f} of "
        f"its shuffled rows; {min_z:g} needed)"
    )


def check_alignment(
    shared_targets: np.ndarray,
    anchor_targets: np.ndarray,
    shared_aligned: np.ndarray,
    claimed_residual: float,
    ridge: float,
    is_anchor: bool,
    tol: float = 1e-3,
    method: str = "ridge",
) -> str | None:
    """Check 3: the upload's aligned shared targets are T_k S_k, with T_k the platform's own fit.

    Parameters
    ----------
    shared_targets
        (|S|, n) S_k from the participant's uniformity report.
    anchor_targets
        (|S|, n) S_Y*, what the participant was asked to align to.
    shared_aligned
        (|S|, n) the aligned shared targets it uploaded.
    claimed_residual
        The alignment residual it reported.
    ridge
        The run's relative ridge strength (the participant's fit uses the same).
    is_anchor
        The anchor keeps T = I.
    tol
        Relative tolerance (float32 transport and summation order).
    method
        The run's alignment method (run-config ``alignment``), as the participant used it.
    """
    if is_anchor:
        expected, residual = np.asarray(shared_targets, dtype=np.float64), 0.0
    else:
        fit = fit_alignment(shared_targets, anchor_targets, ridge=ridge, method=method)
        expected, residual = fit.apply(shared_targets).astype(np.float64), fit.residual
    gap = relative_residual(shared_aligned, expected)
    if not gap <= tol:
        return f"aligned shared targets are not the alignment of its own shared targets (gap {gap:.3g})"
    if not abs(float(claimed_residual) - residual) <= tol * max(1.0, residual):
        return f"claimed alignment residual {claimed_residual:.4f} differs from the platform's {residual:.4f}"
    return None


def cross_fitted_alignment(
    source: np.ndarray,
    anchor: np.ndarray,
    ridge: float,
    folds: int = 5,
    seed: int = 0,
    method: str = "ridge",
) -> np.ndarray:
    """Out-of-sample aligned shared targets: each fold aligned by a map fitted on the others.

    An honest participant's shard targets are its alignment applied to images the map was not
    fitted on; its aligned *shared* targets are in-sample and, when n approaches |S|, fit the
    anchor far more closely than any unseen image can. These cross-fitted targets are the
    honest reference for the shard.

    Parameters
    ----------
    source, anchor
        (|S|, n_in) and (|S|, n_out) a participant's and the anchor's shared-set targets.
    ridge
        The run's relative ridge strength.
    folds
        Number of folds (at least 2, at most |S| / 2).
    seed
        Seed of the fold assignment.
    method
        The run's alignment method (:func:`coopt_flwr.protocol.alignment.fit_alignment`).

    Returns
    -------
    np.ndarray
        float32 (|S|, n_out).
    """
    x, y = np.asarray(source, dtype=np.float64), np.asarray(anchor, dtype=np.float64)
    folds = max(2, min(int(folds), len(x) // 2))
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty((len(x), y.shape[1]), dtype=np.float32)
    for test_rows in np.array_split(order, folds):
        fit_rows = np.setdiff1d(order, test_rows)
        fit = fit_alignment(x[fit_rows], y[fit_rows], ridge=ridge, method=method)
        out[test_rows] = fit.apply(x[test_rows])
    return out


def is_discrete(targets: np.ndarray, fraction: float = DISCRETE_FRACTION) -> bool:
    """Whether (m, n) ``targets`` hold at most ``fraction`` · m distinct rows (label codes)."""
    t = np.asarray(targets)
    return len(t) > 0 and len(np.unique(t, axis=0)) <= fraction * len(t)


def shard_reference(
    shared_targets: np.ndarray,
    anchor_targets: np.ndarray,
    ridge: float,
    is_anchor: bool,
    seed: int = 0,
    method: str = "ridge",
) -> np.ndarray:
    """What a participant's honest aligned shard targets look like, from its shared targets.

    The anchor's own S targets (it keeps T = I); a discrete prior's (:func:`is_discrete`)
    in-sample alignment T_k S_k; otherwise the cross-fitted (out-of-sample) alignment
    (:func:`cross_fitted_alignment`).

    Returns
    -------
    np.ndarray
        float32 (|S|, n_out).
    """
    if is_anchor:
        return np.asarray(shared_targets, dtype=np.float32)
    if is_discrete(shared_targets):
        fit = fit_alignment(shared_targets, anchor_targets, ridge=ridge, method=method)
        return fit.apply(shared_targets).astype(np.float32)
    return cross_fitted_alignment(shared_targets, anchor_targets, ridge, seed=seed, method=method)


def _row_distances(x: np.ndarray, mu: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """float64 (m,) ‖x_i − μ‖ and ‖x_i‖ of the rows of x (m, n), cast ``chunk`` rows at a time.

    A whole uploaded part cast to float64, with its temporaries, cost the platform about 6x
    the part's bytes per upload (0.19x the merged size in the memory check).
    """
    far = np.empty(len(x), dtype=np.float64)
    norms = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), chunk):
        rows = np.asarray(x[start : start + chunk], dtype=np.float64)
        far[start : start + len(rows)] = np.linalg.norm(rows - mu, axis=1)
        norms[start : start + len(rows)] = np.linalg.norm(rows, axis=1)
    return far, norms


def check_shard_scale(
    reference: np.ndarray, shard_targets: np.ndarray, max_scale: float = MAX_ROW_SCALE
) -> str | None:
    """Check 5: every aligned shard row (m, n) of a magnitude the reference (|S|, n) allows.

    Row i fails when ‖t_i − μ‖ > ``max_scale`` · max_j ‖r_j − μ‖ (μ the reference's mean) or
    ‖t_i‖ < min_j ‖r_j‖ / ``max_scale``. Passes with fewer than 2 reference rows.
    """
    ref = np.asarray(reference, dtype=np.float64)
    if len(ref) < 2 or len(shard_targets) == 0:
        return None
    mu = ref.mean(axis=0)
    spread = float(np.linalg.norm(ref - mu, axis=1).max())
    floor = float(np.linalg.norm(ref, axis=1).min())
    far, norms = _row_distances(shard_targets, mu)
    i = int(np.argmax(far))
    if far[i] > max_scale * spread:
        ratio = far[i] / spread if spread > 0 else float("inf")
        return (
            f"shard target row {i} lies {ratio:.3g}x farther from the mean of its shared-set targets "
            f"than any of them (at most {max_scale:g}x): magnitude poisoning"
        )
    j = int(np.argmin(norms))
    if norms[j] * max_scale < floor:
        return (
            f"shard target row {j} has norm {norms[j]:.3g}, under 1/{max_scale:g} of its smallest "
            f"shared-set target norm {floor:.3g}: magnitude poisoning"
        )
    return None


def check_shard_distribution(
    shared_targets: np.ndarray,
    anchor_targets: np.ndarray,
    shard_targets: np.ndarray,
    ridge: float,
    is_anchor: bool,
    max_tv: float,
    max_samples: int,
    seed: int = 0,
    method: str = "ridge",
) -> str | None:
    """Checks 5 and 4: aligned shard targets (m, n) of honest magnitude, distributed like
    honest out-of-sample ones.

    The reference is the participant's own S targets (|S|, n) as they would be aligned if
    unseen (:func:`shard_reference`). The scale check (:func:`check_shard_scale`) runs
    whenever the reference is sound (the anchor's S, or |S| ≥ 20: a cross-fit on fewer rows
    says little); the distribution check is skipped (passes) when either side has fewer
    than 20 rows: too few for the estimate. ``max_tv`` is the run-config's ``screen-max-tv``,
    ``max_samples`` its ``g-max-samples`` (points per side of the TV estimate), ``method``
    its ``alignment``.
    """
    if len(shared_targets) < (2 if is_anchor else 20):
        return None
    reference = shard_reference(shared_targets, anchor_targets, ridge, is_anchor, seed=seed, method=method)
    reason = check_shard_scale(reference, shard_targets)
    if reason or len(shared_targets) < 20 or len(shard_targets) < 20:
        return reason
    tv = tv_distance(reference, shard_targets, max_samples=max_samples, seed=seed)
    if tv > max_tv:
        return (
            f"shard targets are distributed unlike its own shared-set targets (TV {tv:.2f} > {max_tv:g}): "
            "possible poisoning"
        )
    return None
