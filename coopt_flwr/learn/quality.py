"""Cheap measures of target quality and the statistics the paper's analyses report.

:func:`rankdata`, :func:`spearman` and :func:`probe_split` are pure numpy; importing this module
does not import torch. Only :func:`target_probe_accuracy` needs it: it imports the torch linear
probe (:func:`coopt_flwr.learn.probe.linear_probe`) when called.

* :func:`target_probe_accuracy`: how linearly separable the classes are in the merged targets
  themselves, a linear probe fitted on the targets of a seeded train split of D and scored on
  the rest. It needs no student training, so it can be measured after every round.
* :func:`spearman`: Spearman's rank correlation (average ranks for ties), for "uniformity
  against accuracy" (the paper reports ρ = −0.97).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ProbeSplit", "probe_split", "rankdata", "spearman", "target_probe_accuracy"]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of a 1-D array, ties sharing their average rank.

    Parameters
    ----------
    x
        Shape (N,), finite.

    Returns
    -------
    np.ndarray
        float64 (N,).
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"rankdata needs a 1-D array, got shape {a.shape}")
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(1, len(a) + 1, dtype=np.float64)
    # Average the ranks of each group of equal values.
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation ρ of two paired samples.

    Parameters
    ----------
    x, y
        Shape (N,), N ≥ 2, finite.

    Returns
    -------
    float
        ρ in [−1, 1]: the Pearson correlation of the (average) ranks; NaN when either sample
        is constant (no ranking to correlate).
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"spearman needs two 1-D samples of one length >= 2, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman got non-finite values")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0.0:
        return float("nan")
    return float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))


@dataclass(frozen=True)
class ProbeSplit:
    """A seeded split of sample ids into probe-train and probe-test ids (both sorted int64)."""

    train: np.ndarray
    test: np.ndarray


def probe_split(
    num_samples: int,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> ProbeSplit:
    """Split ids ``0..N-1`` at random into disjoint train and test parts.

    Parameters
    ----------
    num_samples
        N, at least 2.
    test_fraction
        Share of the ids in the test part, in (0, 1); each part gets at least one id.
    seed
        Seed of the permutation.
    max_train, max_test
        Caps on the part sizes (the probe's cost grows with them); None = no cap.
    """
    if num_samples < 2:
        raise ValueError(f"probe_split needs at least 2 samples, got {num_samples}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng([int(seed), 0x9B5]).permutation(num_samples).astype(np.int64)
    n_test = min(num_samples - 1, max(1, round(test_fraction * num_samples)))
    test, train = perm[:n_test], perm[n_test:]
    if max_test is not None:
        test = test[: max(1, int(max_test))]
    if max_train is not None:
        train = train[: max(1, int(max_train))]
    return ProbeSplit(train=np.sort(train), test=np.sort(test))


def target_probe_accuracy(
    targets: np.ndarray, labels: np.ndarray, split: ProbeSplit, available: np.ndarray | None = None
) -> float:
    """Linear-probe accuracy of the targets themselves: fit on ``split.train``, score on ``split.test``.

    Parameters
    ----------
    targets
        float (N, n), one row per sample id (rows of unavailable samples are ignored).
    labels
        int (N,) class ids.
    split
        Which ids train and which test the probe (:func:`probe_split`).
    available
        Optional bool (N,): samples that have a target (e.g. ``MergedTargets.filled``); the
        others are dropped from both parts.

    Returns
    -------
    float
        Top-1 accuracy in [0, 1] of :func:`coopt_flwr.learn.probe.linear_probe`.
    """
    from coopt_flwr.learn.probe import linear_probe  # torch: only here, the statistics stay pure

    y = np.asarray(targets)
    lab = np.asarray(labels)
    if y.ndim != 2 or lab.shape != (y.shape[0],):
        raise ValueError(f"targets (N, n) and labels (N,) expected, got {y.shape} and {lab.shape}")
    train, test = split.train, split.test
    if available is not None:
        ok = np.asarray(available, dtype=bool)
        train, test = train[ok[train]], test[ok[test]]
    if len(train) == 0 or len(test) == 0:
        raise ValueError("target_probe_accuracy: no samples with targets in the train or test part")
    return linear_probe(y[train], lab[train], y[test], lab[test])
