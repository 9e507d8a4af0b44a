"""Alignment of a participant's targets to the anchor's on the shared set (eq. 5).

    T_k = argmin_T ‖ X_k T − Y* ‖² + λ ‖T‖²,   X_k = W_k ψ_k(S_X),  Y* = W* ψ*(S_X)

Solved in closed form. With |S| small and n possibly larger than |S|, plain least squares
is ill-posed, so the ridge term λ = ``ridge`` · tr(XᵀX)/n (scale-free) keeps it well-posed;
``ridge=0`` gives the minimum-norm least-squares solution.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def fit_alignment(
    source: np.ndarray,
    anchor: np.ndarray,
    ridge: float = 1e-3,
    fit_intercept: bool = True,
) -> Alignment:
    """Fit T_k on the shared set.

    Parameters
    ----------
    source
        (|S|, n_in) the participant's projected shared-set targets X_k.
    anchor
        (|S|, n_out) the anchor's shared-set targets Y*, rows in the same sample order.
    ridge
        Relative ridge strength (≥ 0); λ = ridge · tr(XᵀX) / n_in.
    fit_intercept
        Also fit a bias (centering both sides), which absorbs mean offsets between priors.

    Returns
    -------
    Alignment
        The fitted map and its relative residual on the shared set.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(anchor, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"alignment needs (S, n_in) and (S, n_out), got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("alignment needs at least 2 shared samples")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("alignment got non-finite targets")
    if fit_intercept:
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    else:
        x_mean, y_mean = np.zeros(x.shape[1]), np.zeros(y.shape[1])
    xc, yc = x - x_mean, y - y_mean
    if ridge == 0:
        matrix = np.linalg.lstsq(xc, yc, rcond=None)[0]
    else:
        gram = xc.T @ xc
        lam = ridge * max(np.trace(gram), 1e-12) / x.shape[1]
        matrix = np.linalg.solve(gram + lam * np.eye(x.shape[1]), xc.T @ yc)
    bias = y_mean - x_mean @ matrix
    residual = relative_residual(x @ matrix + bias, y)
    return Alignment(matrix=matrix, bias=bias, residual=residual)
