"""The protocol's arithmetic in one process, for the paper's analyses (no Flower).

The analyses vary one thing at a time (which anchor, how large the shared set, which mix of
priors) over the *same* features, so they embed every sample with every prior once and then
replay the platform's and participants' steps with the very functions the protocol uses:
:func:`coopt_flwr.protocol.projection.projection_matrix` (W_k),
:func:`coopt_flwr.protocol.uniformity.uniformity` on the projected shared-set targets (the
platform's V), :func:`coopt_flwr.protocol.alignment.fit_alignment` (T_k),
:func:`coopt_flwr.registry.datasets.shard_split` (the shards) and
:func:`coopt_flwr.protocol.inconsistency.inconsistency` (G on the shared set, before and after
alignment).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from coopt_flwr.protocol.alignment import Alignment, fit_alignment
from coopt_flwr.protocol.anchor import choose_anchor, uniformity_order
from coopt_flwr.protocol.inconsistency import inconsistency
from coopt_flwr.protocol.participant import FeatureCache, embed_ids
from coopt_flwr.protocol.projection import project, projection_matrix
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData, shard_split

__all__ = [
    "ANCHOR_MODES",
    "Embedded",
    "Merged",
    "anchor_for",
    "embed_prior",
    "merge_targets",
    "project_all",
]

ANCHOR_MODES = ("none", "worst", "medium", "best")
"""No alignment, or alignment to the prior of the worst / median / best platform uniformity."""


@dataclass(frozen=True)
class Embedded:
    """One prior's features of the samples ``ids`` of D.

    Attributes
    ----------
    spec, kind : str
        The prior's spec and kind.
    ids : np.ndarray
        int64 (m,) sorted sample ids.
    features : np.ndarray
        float32 (m, l_k), rows in the order of ``ids``.
    seconds : float
        Embedding wall time.
    """

    spec: str
    kind: str
    ids: np.ndarray
    features: np.ndarray
    seconds: float

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Features of the given ids (each must be among ``self.ids``): float32 (len(ids), l_k)."""
        pos = np.searchsorted(self.ids, ids)
        if np.any(pos >= len(self.ids)) or not np.array_equal(
            self.ids[np.minimum(pos, len(self.ids) - 1)], ids
        ):
            raise KeyError(f"prior {self.spec}: features of some requested ids were not embedded")
        return self.features[pos]


def embed_prior(
    spec: str,
    data: ImageData,
    ids: np.ndarray | None = None,
    *,
    seed: int = 0,
    batch_size: int = 128,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Embedded:
    """Embed ``ids`` (all of D by default) with the prior ``spec`` built with ``seed``.

    The ClientApp builds participant k's prior with ``seed + k``; pass the same to replay it.
    """
    from coopt_flwr.registry.priors import create_prior

    prior = create_prior(spec, seed=seed, batch_size=batch_size, device=device or None)
    wanted = np.arange(len(data), dtype=np.int64) if ids is None else np.unique(np.asarray(ids, np.int64))
    start = time.perf_counter()
    feats, _ = embed_ids(prior, data, wanted, FeatureCache(prior=spec), batch_size=1024, progress=progress)
    return Embedded(spec, prior.kind, wanted, feats, time.perf_counter() - start)


def project_all(embedded: Sequence[Embedded], target_dim: int, seed: int) -> list[np.ndarray]:
    """W_k ψ_k for every prior, over all its embedded ids: float32 (m_k, n) each.

    W_k depends on (l_k, n, seed), as in :func:`coopt_flwr.protocol.participant.uniformity_report`.
    """
    return [project(e.features, projection_matrix(e.features.shape[1], target_dim, seed)) for e in embedded]


def anchor_for(values: Sequence[float], mode: str) -> int | None:
    """Index of the anchor for an :data:`ANCHOR_MODES` mode given the platform's uniformity values.

    ``best`` is the platform's own rule (:func:`coopt_flwr.protocol.anchor.choose_anchor`:
    lowest V, ties to the lowest index); ``worst`` the highest V; ``medium`` the median rank
    (the lower middle for an even count); ``none`` None.
    """
    if mode not in ANCHOR_MODES:
        raise ValueError(f"anchor mode must be one of {ANCHOR_MODES}, got {mode!r}")
    if mode == "none":
        return None
    by_index = dict(enumerate(values))
    if mode == "best":
        return choose_anchor(by_index)
    order = uniformity_order(by_index)
    return order[-1] if mode == "worst" else order[(len(order) - 1) // 2]


@dataclass
class Merged:
    """The merged targets of one replayed round.

    Attributes
    ----------
    targets : np.ndarray
        float32 (N, n), row i the target of sample i.
    participant : np.ndarray
        int64 (N,) index of the prior that produced each row.
    uniformity : list of float
        The platform's V of each prior (on its projected shared-set targets).
    anchor : int or None
        Index of the anchor prior, None without alignment.
    g_before, g_after : float or None
        G on the shared set before and after alignment (None for one prior), as the platform
        measures it.
    g_eval : float or None
        G after alignment on a fixed evaluation set of samples (``eval_ids``), the same images
        for every participant: comparable across shared-set sizes, unlike G on S itself,
        where a small S is both fitted and measured (None without ``eval_ids``).
    residuals : list of float
        Relative alignment residual of each prior on the shared set (0 for the anchor and
        without alignment).
    shared_targets : list of np.ndarray
        Each prior's shared-set targets as uploaded (aligned, or projected without alignment).
    """

    targets: np.ndarray
    participant: np.ndarray
    uniformity: list[float]
    anchor: int | None
    g_before: float | None
    g_after: float | None
    residuals: list[float] = field(default_factory=list)
    g_eval: float | None = None
    shared_targets: list[np.ndarray] = field(default_factory=list, repr=False)


def merge_targets(
    embedded: Sequence[Embedded],
    projected: Sequence[np.ndarray],
    num_samples: int,
    shared_ids: np.ndarray,
    mode: str = "best",
    *,
    seed: int = 0,
    ridge: float = 1e-3,
    g_max_samples: int = 512,
    eval_ids: np.ndarray | None = None,
) -> Merged:
    """Replay one protocol round: shards, uniformity, anchor, alignment, merge, G.

    Parameters
    ----------
    embedded, projected
        Per prior (participant k = list index): its features and W_k ψ_k over the same ids,
        which must cover the shared set and the prior's shard.
    num_samples
        N = |D|; participant k gets shard k of :func:`coopt_flwr.registry.datasets.shard_split`.
    shared_ids
        int64 (|S|,) the shared set.
    mode
        Anchor choice, one of :data:`ANCHOR_MODES` (``best`` is the protocol's).
    seed
        The run seed (shards and the G estimate).
    ridge, g_max_samples
        As the run-config keys ``ridge`` and ``g-max-samples``.
    eval_ids
        Optional int64 sample ids on which to measure ``g_eval`` (every prior's aligned targets
        of these same samples).
    """
    k = len(embedded)
    if k == 0 or len(projected) != k:
        raise ValueError("merge_targets needs one projected array per embedded prior")
    shared_ids = np.asarray(shared_ids, dtype=np.int64)
    shared = [p[np.searchsorted(e.ids, shared_ids)] for e, p in zip(embedded, projected, strict=True)]
    for e in embedded:
        e.rows(shared_ids)  # raises if the shared set was not embedded
    values = [uniformity(s) for s in shared]
    anchor = anchor_for(values, mode)
    fits = [
        Alignment.identity(s.shape[1])
        if anchor is None or i == anchor
        else fit_alignment(s, shared[anchor], ridge=ridge)
        for i, s in enumerate(shared)
    ]
    shards = shard_split(num_samples, k, seed)
    n = projected[0].shape[1]
    targets = np.full((num_samples, n), np.nan, dtype=np.float32)
    participant = np.full(num_samples, -1, dtype=np.int64)
    for i, (e, p, fit, ids) in enumerate(zip(embedded, projected, fits, shards, strict=True)):
        ids = np.sort(ids)
        e.rows(ids)  # raises if the shard was not embedded
        targets[ids] = fit.apply(p[np.searchsorted(e.ids, ids)])
        participant[ids] = i
    uploaded = [fit.apply(s) for fit, s in zip(fits, shared, strict=True)]
    g_before = inconsistency(shared, max_samples=g_max_samples, seed=seed) if k > 1 else None
    g_after = inconsistency(uploaded, max_samples=g_max_samples, seed=seed) if k > 1 else None
    g_eval = None
    if eval_ids is not None and k > 1:
        eval_ids = np.asarray(eval_ids, dtype=np.int64)
        for e in embedded:
            e.rows(eval_ids)  # raises if the evaluation set was not embedded
        on_eval = [
            fit.apply(p[np.searchsorted(e.ids, eval_ids)])
            for e, p, fit in zip(embedded, projected, fits, strict=True)
        ]
        g_eval = inconsistency(on_eval, max_samples=g_max_samples, seed=seed)
    return Merged(
        targets=targets,
        participant=participant,
        uniformity=values,
        anchor=anchor,
        g_before=g_before,
        g_after=g_after,
        residuals=[float(f.residual) for f in fits],
        g_eval=g_eval,
        shared_targets=uploaded,
    )
