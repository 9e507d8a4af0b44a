"""Uniformity of a prior's features on the shared set (Wang & Isola, 2020).

    V(ψ; S) = log mean_{i≠j} exp(-t ‖f_i − f_j‖²),   f = ψ(x) / ‖ψ(x)‖,   t = 2

Lower is better: features spread evenly over the hypersphere. On the unit sphere
‖f_i − f_j‖² = 2 − 2 f_i·f_j ≤ 4, so V lies in [-4t, 0] = [-8, 0] for t = 2: 0 when every
feature points the same way (collapse), -4t only when every pair is antipodal, i.e. two
opposite features (N = 2). Orthogonal features (‖f_i − f_j‖² = 2) give -2t. An all-zero row
is at squared distance 1 from every unit row and 0 from another zero row, inside the bound.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalize each row of (N, d) ``x``; an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def uniformity(features: np.ndarray, t: float = 2.0) -> float:
    """Uniformity value V of a set of features.

    Parameters
    ----------
    features
        (N, d) features, N ≥ 2; they are L2-normalized here.
    t
        Temperature of the Gaussian potential (2 in the paper).

    Returns
    -------
    float
        V = log of the mean of exp(-t‖f_i − f_j‖²) over ordered pairs i ≠ j.
    """
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs (N>=2, d) features, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("uniformity got non-finite features")
    f = normalize_rows(x)
    gram = f @ f.T
    # ‖f_i − f_j‖² = ‖f_i‖² + ‖f_j‖² − 2 f_i·f_j; zero rows (norm 0) are handled exactly.
    sq = np.sum(f * f, axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    n = x.shape[0]
    off = ~np.eye(n, dtype=bool)
    logits = -t * dist2[off]
    # log-mean-exp, stable for any t.
    peak = logits.max()
    return float(peak + np.log(np.mean(np.exp(logits - peak))))
