"""Alignment of a participant's targets to the anchor's on the shared set (eq. 5).

    T_k = argmin_T ‖ X_k T − Y* ‖² + λ ‖T‖²,   X_k = W_k ψ_k(S_X),  Y* = W* ψ*(S_X)

Solved in closed form. With |S| small and n possibly larger than |S|, plain least squares
is ill-posed, so the ridge term λ = ``ridge`` · tr(XᵀX)/n (scale-free) keeps it well-posed;
``ridge=0`` gives the minimum-norm least-squares solution.

``method="procrustes"`` instead restricts the map to a scaled rotation T = s·R, RᵀR = I, as in
orthonormal data collaboration: R = UVᵀ from the SVD UΣVᵀ of XcᵀYc (centred targets) and the
least-squares scale s = tr Σ / ‖Xc‖²_F. It cannot overfit (n(n−1)/2 + 1 parameters, well-posed
for any |S| ≥ 2) but needs n_in == n_out.

Also here: :class:`Standardizer`, per-dimension z-scoring of targets with its inverse, and
:func:`cross_fitted_residual`, the out-of-sample (K-fold) relative residual of an alignment,
which unlike the in-sample ``Alignment.residual`` does not go to 0 when n ≥ |S|.

``ridge="auto"`` (the run-config's default): :func:`select_ridge` picks the ridge strength from
:data:`RIDGE_GRID` with the smallest cross-fitted residual averaged over pairs of participants'
shared-set targets — label-free, and measured to matter: on CIFAR-10 with |S| = 500 and n = 512
the fixed 0.001 aligned ImageNet priors with an out-of-sample residual of 1.69 (worse than
predicting the anchor's mean), the selected 3.0 with 0.85 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """An affine map y ≈ x @ matrix + bias fitted on the shared set.

    Attributes
    ----------
    matrix
        float64 (n_in, n_out).
    bias
        float64 (n_out,); zeros when fitted without intercept.
    residual
        Relative residual on the shared set, ‖XT + b − Y‖_F / ‖Y − Ȳ‖_F: 0 is a perfect fit,
        about 1 is no better than predicting the anchor's mean target.
    """

    matrix: np.ndarray
    bias: np.ndarray

    residual: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Map (N, n_in) targets to float32 (N, n_out) aligned targets."""
        if x.ndim != 2 or x.shape[1] != self.matrix.shape[0]:
            raise ValueError(f"cannot align targets of shape {x.shape} with {self.matrix.shape}")
        return (np.asarray(x, dtype=np.float64) @ self.matrix + self.bias).astype(np.float32)

    @classmethod
    def identity(cls, dim: int) -> Alignment:
        """The anchor's own map: its targets are uploaded unchanged."""
        return cls(np.eye(dim), np.zeros(dim), 0.0)


def relative_residual(pred: np.ndarray, target: np.ndarray) -> float:
    """‖pred − target‖_F / ‖target − mean(target)‖_F for (N, n) arrays."""
    target = np.asarray(target, dtype=np.float64)
    spread = np.linalg.norm(target - target.mean(axis=0, keepdims=True))
    err = np.linalg.norm(np.asarray(pred, dtype=np.float64) - target)
    if spread == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return float(err / spread)


METHODS = ("ridge", "procrustes")

RIDGE_AUTO = "auto"
"""The ``ridge`` value that selects the strength by cross-fitted residual (:func:`select_ridge`)."""

RIDGE_GRID: tuple[float, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Relative ridge strengths :func:`select_ridge` chooses from (log-spaced, the old fixed 0.001 included)."""

RIDGE_AUTO_FALLBACK = 1.0
"""``auto``'s strength where nothing can be cross-fitted (one participant, |S| < 3): mid-grid."""

RIDGE_SELECTION_PAIRS = 16
"""At most this many ordered participant pairs (seeded sample) score each ridge strength."""


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    """Shared validation of (|S|, n_in) sources and (|S|, n_out) anchor targets."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"alignment needs (S, n_in) and (S, n_out), got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("alignment needs at least 2 shared samples")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("alignment got non-finite targets")


def _ridge_matrix(xc: np.ndarray, yc: np.ndarray, ridge: float) -> np.ndarray:
    """(n_in, n_out) ridge solution on centred (S, n_in), (S, n_out) arrays."""
    if ridge == 0:
        return np.linalg.lstsq(xc, yc, rcond=None)[0]
    gram = xc.T @ xc
    lam = ridge * max(np.trace(gram), 1e-12) / xc.shape[1]
    return np.linalg.solve(gram + lam * np.eye(xc.shape[1]), xc.T @ yc)


def _procrustes_matrix(xc: np.ndarray, yc: np.ndarray, scale: bool) -> np.ndarray:
    """(n, n) s·R minimising ‖Xc s R − Yc‖_F over orthogonal R (and s > 0 when ``scale``)."""
    u, sigma, vt = np.linalg.svd(xc.T @ yc)
    rotation = u @ vt
    if not scale:
        return rotation
    norm2 = float(np.sum(xc * xc))
    return rotation * (float(sigma.sum()) / norm2 if norm2 > 0 else 1.0)


def fit_alignment(
    source: np.ndarray,
    anchor: np.ndarray,
    ridge: float = 1e-3,
    fit_intercept: bool = True,
    method: str = "ridge",
    scale: bool = True,
) -> Alignment:
    """Fit T_k on the shared set.

    Parameters
    ----------
    source
        (|S|, n_in) the participant's projected shared-set targets X_k.
    anchor
        (|S|, n_out) the anchor's shared-set targets Y*, rows in the same sample order.
    ridge
        Relative ridge strength (≥ 0); λ = ridge · tr(XᵀX) / n_in. Unused by Procrustes.
    fit_intercept
        Also fit a bias (centering both sides), which absorbs mean offsets between priors.
    method
        ``"ridge"`` (any widths) or ``"procrustes"`` (T = s·R with R orthogonal; n_in == n_out).
    scale
        Procrustes only: fit the global scale s (least squares); else s = 1.

    Returns
    -------
    Alignment
        The fitted map and its relative residual on the shared set (in-sample).

    Raises
    ------
    ValueError
        Mismatched or non-finite arrays, |S| < 2, ridge < 0, an unknown method, or
        Procrustes with n_in != n_out.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(anchor, dtype=np.float64)
    _check_pair(x, y)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; expected one of {METHODS}")
    if method == "procrustes" and x.shape[1] != y.shape[1]:
        raise ValueError(f"procrustes needs n_in == n_out, got {x.shape[1]} and {y.shape[1]}")
    if fit_intercept:
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    else:
        x_mean, y_mean = np.zeros(x.shape[1]), np.zeros(y.shape[1])
    xc, yc = x - x_mean, y - y_mean
    if method == "ridge":
        matrix = _ridge_matrix(xc, yc, ridge)
    else:
        matrix = _procrustes_matrix(xc, yc, scale)
    bias = y_mean - x_mean @ matrix
    residual = relative_residual(x @ matrix + bias, y)
    return Alignment(matrix=matrix, bias=bias, residual=residual)


def cross_fitted_residual(
    source: np.ndarray,
    anchor: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    **fit_kwargs: Any,
) -> float:
    """Out-of-sample relative residual of aligning ``source`` to ``anchor`` (K-fold).

    The rows are shuffled (seeded) into ``folds`` near-equal folds; each fold is predicted by
    :func:`fit_alignment` fitted on the other folds, and the held-out predictions P of all rows
    give ‖P − Y‖_F / ‖Y − Ȳ‖_F (Ȳ the mean over all of S), as :func:`relative_residual`.
    About 1 means no better than the anchor's mean; above 1 is worse (over-fitting).

    Parameters
    ----------
    source
        (|S|, n_in) the participant's shared-set targets.
    anchor
        (|S|, n_out) the anchor's shared-set targets, rows in the same order.
    folds
        Number of folds, 2 ≤ folds ≤ |S|; every training part needs ≥ 2 rows.
    seed
        Seed of the row shuffle.
    **fit_kwargs
        Passed to :func:`fit_alignment` (ridge, fit_intercept, method, scale).

    Returns
    -------
    float
        The cross-fitted relative residual (≥ 0).
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(anchor, dtype=np.float64)
    _check_pair(x, y)
    n = x.shape[0]
    pred = np.empty_like(y)
    for held in _folds_of(n, folds, seed):
        train = np.setdiff1d(np.arange(n), held, assume_unique=True)
        fit = fit_alignment(x[train], y[train], **fit_kwargs)
        pred[held] = x[held] @ fit.matrix + fit.bias
    return relative_residual(pred, y)


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension z-scoring of targets, y = (x − mean) / scale, and its inverse.

    Attributes
    ----------
    mean
        float64 (n,) per-dimension mean of the fitted targets.
    scale
        float64 (n,) per-dimension standard deviation; 1 where a dimension is (numerically)
        constant, so such a dimension is centred but never divided by ~0.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Fit on (N, n) finite targets, N ≥ 1."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1 or not np.all(np.isfinite(a)):
            raise ValueError(f"standardizer needs finite (N, n) targets, got shape {a.shape}")
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        tiny = 1e-12 * np.maximum(np.abs(mean), 1.0)
        return cls(mean=mean, scale=np.where(std > tiny, std, 1.0))

    def _check(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim != 2 or a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"standardizer of width {self.mean.shape[0]} got shape {a.shape}")
        return a

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, n) targets → (N, n) z-scores, float64."""
        return (self._check(x).astype(np.float64) - self.mean) / self.scale

    def invert(self, y: np.ndarray) -> np.ndarray:
        """(N, n) z-scores → (N, n) targets in the original units, float64."""
        return self._check(y).astype(np.float64) * self.scale + self.mean


def cv_folds(num_rows: int, max_folds: int = 5) -> int | None:
    """Folds for cross-fitting ``num_rows`` rows, at most ``max_folds``, such that every training
    part keeps at least 2 rows; ``None`` when no split into 2 or more folds allows that."""
    for folds in range(min(max_folds, num_rows), 1, -1):
        if num_rows - -(-num_rows // folds) >= 2:
            return folds
    return None


def _folds_of(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """The seeded row folds of :func:`cross_fitted_residual` (and of the ridge path)."""
    if not 2 <= folds <= n or n - -(-n // folds) < 2:
        raise ValueError(f"cannot cross-fit {n} shared samples with {folds} folds")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def ridge_path_residuals(
    source: np.ndarray,
    anchor: np.ndarray,
    ridges: Sequence[float],
    *,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted relative residual of the ridge alignment (with intercept) for every strength.

    Equal to ``cross_fitted_residual(source, anchor, folds=folds, seed=seed, ridge=r)`` for each
    r > 0 of ``ridges`` (same folds, same λ = r · tr(XᵀX)/n_in), but one eigendecomposition of
    each training fold's Gram matrix serves the whole path.

    Parameters
    ----------
    source, anchor
        (|S|, n_in) and (|S|, n_out) finite shared-set targets, rows in the same order.
    ridges
        Relative strengths, each > 0.
    folds, seed
        As in :func:`cross_fitted_residual`.

    Returns
    -------
    np.ndarray
        float64 (len(ridges),) residuals.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(anchor, dtype=np.float64)
    _check_pair(x, y)
    grid = np.asarray(ridges, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.any(~np.isfinite(grid) | (grid <= 0)):
        raise ValueError(f"ridge path needs finite strengths > 0, got {list(ridges)}")
    n = x.shape[0]
    preds = np.empty((len(grid), *y.shape))
    for held in _folds_of(n, folds, seed):
        train = np.setdiff1d(np.arange(n), held, assume_unique=True)
        x_mean, y_mean = x[train].mean(axis=0), y[train].mean(axis=0)
        xc = x[train] - x_mean
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        evals = np.maximum(evals, 0.0)
        proj = evecs.T @ (xc.T @ (y[train] - y_mean))  # (n_in, n_out) in the eigenbasis
        held_eig = (x[held] - x_mean) @ evecs  # (h, n_in)
        trace = max(float(evals.sum()), 1e-12)
        for j, r in enumerate(grid):
            lam = r * trace / x.shape[1]
            preds[j, held] = held_eig @ (proj / (evals + lam)[:, None]) + y_mean
    return np.array([relative_residual(p, y) for p in preds])


def select_ridge(
    shared: Sequence[np.ndarray],
    *,
    grid: Sequence[float] = RIDGE_GRID,
    folds: int = 5,
    seed: int = 0,
    max_pairs: int = RIDGE_SELECTION_PAIRS,
) -> tuple[float, np.ndarray]:
    """The ridge strength of ``grid`` with the least mean cross-fitted residual over pairs.

    Every ordered pair (p, q) of participants, or a seeded sample of ``max_pairs`` of them,
    scores each strength by the out-of-sample residual of aligning p's shared-set targets to
    q's (:func:`ridge_path_residuals`); the strength with the smallest mean wins (ties: the
    larger, the better-posed). No labels, only what the platform holds after the uniformity
    report. The anchor is not known yet when the consensus rule needs a ridge, so every pair
    counts, not only pairs with the anchor.

    Parameters
    ----------
    shared
        K ≥ 2 arrays (|S|, n_k) of the participants' shared-set targets, rows in one order.
    grid, folds, seed, max_pairs
        Candidate strengths (> 0), cross-fitting folds and seed, the cap on scored pairs.

    Returns
    -------
    ridge : float
        The chosen strength.
    scores : np.ndarray
        float64 (len(grid),) the mean residual of every strength.
    """
    if len(shared) < 2:
        raise ValueError(f"select_ridge needs at least 2 participants, got {len(shared)}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    pairs = [(p, q) for p in range(len(shared)) for q in range(len(shared)) if p != q]
    if len(pairs) > max_pairs:
        pick = np.random.default_rng([seed, 0x51D]).choice(len(pairs), size=max_pairs, replace=False)
        pairs = [pairs[i] for i in np.sort(pick)]
    scores = np.mean(
        [ridge_path_residuals(shared[p], shared[q], grid, folds=folds, seed=seed) for p, q in pairs],
        axis=0,
    )
    best = np.flatnonzero(scores <= scores.min() * (1 + 1e-9))
    return float(np.asarray(grid, dtype=np.float64)[best[-1]]), scores


def resolve_ridge(
    ridge: float | None, shared: Sequence[np.ndarray], *, seed: int = 0, max_folds: int = 5
) -> float:
    """The round's ridge strength: ``ridge`` itself, or for ``None`` (run-config ``"auto"``)
    :func:`select_ridge` over the participants' shared-set targets (:data:`RIDGE_AUTO_FALLBACK`
    for fewer than 2 participants or too few shared samples to cross-fit)."""
    if ridge is not None:
        return float(ridge)
    folds = cv_folds(len(shared[0]), max_folds) if shared else None
    if len(shared) < 2 or folds is None:
        return RIDGE_AUTO_FALLBACK
    return select_ridge(shared, folds=folds, seed=seed)[0]
