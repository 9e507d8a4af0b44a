"""Fixed random (Johnson-Lindenstrauss) projections from a prior's width to the target width.

Priors of different widths l_k (512 for ResNet-18, 1280 for EfficientNet-Lite0, 10 for a
human prior's one-hot labels ...) meet in one n-dimensional target space through W_k
(Proposition 1 of the CoOpt paper). W_k must be identical every time a participant
rebuilds it, so it is a pure function of (in_dim, out_dim, seed).
"""

from __future__ import annotations

import numpy as np


def projection_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """Seeded Gaussian JL projection.

    Parameters
    ----------
    in_dim
        Feature width l_k of the prior.
    out_dim
        Target width n.
    seed
        Seed; the same (in_dim, out_dim, seed) always gives the same matrix.

    Returns
    -------
    np.ndarray
        float32 (in_dim, out_dim), entries N(0, 1/out_dim), so that
        E‖x W‖² = ‖x‖² for a row vector x (squared norms are preserved in expectation).
    """
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projection dims must be positive, got in_dim={in_dim}, out_dim={out_dim}")
    # Mixing the dimensions into the seed keeps two priors of different widths that share a
    # run seed from drawing correlated matrices.
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, in_dim, out_dim])
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def project(features: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a projection to a batch of features.

    Parameters
    ----------
    features
        (N, in_dim) features of a prior.
    matrix
        (in_dim, out_dim) matrix from :func:`projection_matrix`.

    Returns
    -------
    np.ndarray
        float32 (N, out_dim) targets W_k ψ_k(x).
    """
    if features.ndim != 2 or features.shape[1] != matrix.shape[0]:
        raise ValueError(
            f"features of shape {features.shape} do not fit a projection of shape {matrix.shape}"
        )
    return np.asarray(features, dtype=np.float32) @ matrix
