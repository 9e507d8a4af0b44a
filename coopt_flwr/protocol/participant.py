"""A participant's side of the protocol, free of Flower: embed, project, report, align.

The Flower ClientApp (:mod:`coopt_flwr.client_app`) only unpacks messages, calls these
functions and packs the replies; everything here is testable with plain arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from coopt_flwr.protocol.alignment import Alignment, Standardizer, fit_alignment
from coopt_flwr.protocol.projection import project, projection_matrix
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData

if TYPE_CHECKING:  # the priors module loads torch; the protocol steps only call ``embed``
    from coopt_flwr.registry.priors import Prior


@dataclass
class FeatureCache:
    """Features of one prior by sample id, kept across rounds so nothing is embedded twice.

    Attributes
    ----------
    prior
        Spec of the prior the features came from; a different prior invalidates the cache.
    ids
        int64 (m,) sorted sample ids.
    features
        float32 (m, l_k) rows in the order of ``ids``.
    """

    prior: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    features: np.ndarray | None = None

    def lookup(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split ``wanted`` ids into a hit mask and the cached rows of the hits.

        Returns
        -------
        tuple
            bool (len(wanted),) mask of cached ids, and float32 (hits, l_k) their rows.
        """
        if self.features is None or len(self.ids) == 0:
            return np.zeros(len(wanted), dtype=bool), np.zeros((0, 0), dtype=np.float32)
        pos = np.searchsorted(self.ids, wanted)
        pos_clipped = np.minimum(pos, len(self.ids) - 1)
        hit = self.ids[pos_clipped] == wanted
        return hit, self.features[pos_clipped[hit]]

    def add(self, ids: np.ndarray, features: np.ndarray) -> None:
        """Insert rows for new ids (ids already cached are ignored)."""
        if len(ids) == 0:
            return
        if self.features is None:
            all_ids, all_feats = ids, features
        else:
            keep = ~np.isin(ids, self.ids)
            all_ids = np.concatenate([self.ids, ids[keep]])
            all_feats = np.concatenate([self.features, features[keep]])
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order].astype(np.int64)
        self.features = np.ascontiguousarray(all_feats[order], dtype=np.float32)


Progress = Callable[[int, int], None]  # (embedded so far, to embed)


def shared_set(images: np.ndarray, labels: np.ndarray | None) -> ImageData:
    """S as the platform sends it in local data mode: its images and, if it has them, labels.

    Parameters
    ----------
    images
        uint8 (|S|, H, W, 3).
    labels
        int64 (|S|,) or ``None``.

    Returns
    -------
    ImageData
        The set, indexed by ``0 .. |S|-1`` (not by the ids the platform names it with).
    """
    classes = int(labels.max()) + 1 if labels is not None and len(labels) else None
    return ImageData(name="shared-set", images=images, labels=labels, num_classes=classes)


def check_shard_ids(shard_ids: np.ndarray, num_samples: int) -> None:
    """Refuse a shard assignment naming samples outside this node's ``num_samples``."""
    if len(shard_ids) and (shard_ids.min() < 0 or shard_ids.max() >= num_samples):
        raise ValueError(f"shard ids outside this node's {num_samples} samples")


def embed_ids(
    prior: Prior,
    data: ImageData,
    ids: np.ndarray,
    cache: FeatureCache,
    batch_size: int = 1024,
    progress: Progress | None = None,
) -> tuple[np.ndarray, int]:
    """Features of the samples ``ids``, from the cache where possible.

    Parameters
    ----------
    prior
        The participant's prior ψ_k.
    data
        The data set holding the images (and labels, for a human prior).
    ids
        int64 (m,) sample ids, any order, no duplicates.
    cache
        Feature cache of this prior; updated in place.
    batch_size
        Images handed to the prior per call (the prior batches again internally).
    progress
        Called after each chunk with (embedded so far, to embed); long shards report.

    Returns
    -------
    tuple
        float32 (m, l_k) features in the order of ``ids``, and how many came from the cache.
    """
    ids = np.asarray(ids, dtype=np.int64)
    hit, cached_rows = cache.lookup(ids)
    out = np.empty((len(ids), prior.feature_dim), dtype=np.float32)
    if hit.any():
        out[hit] = cached_rows
    todo = ids[~hit]
    if len(todo):
        rows = []
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            labels = data.labels[chunk] if data.labels is not None else None
            rows.append(prior.embed(data.batch(chunk), labels))
            if progress is not None:
                progress(start + len(chunk), len(todo))
        fresh = np.concatenate(rows).astype(np.float32)
        if fresh.shape != (len(todo), prior.feature_dim) or not np.all(np.isfinite(fresh)):
            raise ValueError(
                f"prior {prior.spec} produced features of shape {fresh.shape} "
                f"(expected {(len(todo), prior.feature_dim)}) or non-finite values"
            )
        out[~hit] = fresh
        cache.add(todo, fresh)
    return out, int(hit.sum())


def prior_targets(
    features: np.ndarray, shared_features: np.ndarray, w: np.ndarray, standardize: bool
) -> np.ndarray:
    """Targets W_k ψ_k(x) of ``features``, z-scored first with S's statistics if asked.

    Parameters
    ----------
    features
        (m, l_k) prior features to turn into targets.
    shared_features
        (|S|, l_k) the prior's features of the shared set: their per-dimension mean and
        standard deviation standardize ``features`` (run-config ``standardize-targets``), so
        the uniformity report, the alignment and the upload all see the same targets.
    w
        (l_k, n) the participant's projection W_k.
    standardize
        Z-score per feature dimension before projecting; ``False`` projects the raw features.

    Returns
    -------
    np.ndarray
        float32 (m, n).
    """
    if not standardize:
        return project(features, w)
    # Without it one feature of a large scale (a logit, a one-hot count) dominates W_k's mix.
    return project(Standardizer.fit(shared_features).apply(features), w)


@dataclass(frozen=True)
class UniformityReport:
    """What a participant sends back for ``query.uniformity``."""

    shared_targets: np.ndarray  # float32 (|S|, n)
    uniformity: float  # V on the raw features ψ_k(S)
    target_uniformity: float  # V on the projected targets W_k ψ_k(S), what the platform checks
    feature_dim: int
    cached: int
    seconds: float


def uniformity_report(
    prior: Prior,
    data: ImageData,
    shared_ids: np.ndarray,
    target_dim: int,
    seed: int,
    cache: FeatureCache,
    progress: Progress | None = None,
    standardize: bool = False,
) -> UniformityReport:
    """Embed the shared set and project it: S_Y^(k) = W_k ψ_k(S_X).

    ``data`` holds S (the platform's D, or in local data mode the S images the platform sent)
    and ``shared_ids`` index it. ``standardize`` z-scores the features first
    (:func:`prior_targets`); the reported ``uniformity`` is always of the raw features.
    """
    start = time.perf_counter()
    feats, cached = embed_ids(prior, data, shared_ids, cache, progress=progress)
    w = projection_matrix(prior.feature_dim, target_dim, seed)
    targets = prior_targets(feats, feats, w, standardize)
    return UniformityReport(
        shared_targets=targets,
        uniformity=uniformity(feats),
        target_uniformity=uniformity(targets),
        feature_dim=prior.feature_dim,
        cached=cached,
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class AlignedUpload:
    """What a participant sends back for ``train.align``."""

    ids: np.ndarray  # int64 (m,)
    targets: np.ndarray  # float32 (m, n) T_k W_k ψ_k(D^(k))
    shared_aligned: np.ndarray  # float32 (|S|, n) T_k W_k ψ_k(S)
    residual: float
    cached: int
    seconds: float


def aligned_upload(
    prior: Prior,
    data: ImageData,
    shard_ids: np.ndarray,
    shared_ids: np.ndarray,
    anchor_targets: np.ndarray,
    is_anchor: bool,
    target_dim: int,
    seed: int,
    ridge: float,
    cache: FeatureCache,
    progress: Progress | None = None,
    shared_data: ImageData | None = None,
    shared_cache: FeatureCache | None = None,
    method: str = "ridge",
    standardize: bool = False,
) -> AlignedUpload:
    """Fit T_k on the shared set and apply it to the shard (the anchor keeps T = I).

    ``shard_ids`` index ``data``; ``shared_ids`` index ``shared_data`` (default ``data``),
    whose features are cached in ``shared_cache`` (default ``cache``). In local data mode the
    shard is the node's own data and S the images the platform sent, two different sources.
    ``method`` is the alignment (run-config ``alignment``: ``"ridge"`` or ``"procrustes"``),
    ``standardize`` the run-config ``standardize-targets`` (:func:`prior_targets`); both must
    be what the platform uses to check the upload.
    """
    start = time.perf_counter()
    if anchor_targets.shape != (len(shared_ids), target_dim):
        raise ValueError(
            f"anchor targets of shape {anchor_targets.shape} do not match the shared set "
            f"({len(shared_ids)}, {target_dim})"
        )
    w = projection_matrix(prior.feature_dim, target_dim, seed)
    shared_feats, cached_s = embed_ids(
        prior,
        data if shared_data is None else shared_data,
        shared_ids,
        cache if shared_cache is None else shared_cache,
        progress=progress,
    )
    shard_feats, cached_d = embed_ids(prior, data, shard_ids, cache, progress=progress)
    source = prior_targets(shared_feats, shared_feats, w, standardize)
    if is_anchor:
        fit = Alignment.identity(target_dim)
    else:
        fit = fit_alignment(source, anchor_targets, ridge=ridge, method=method)
    return AlignedUpload(
        ids=np.asarray(shard_ids, dtype=np.int64),
        targets=fit.apply(prior_targets(shard_feats, shared_feats, w, standardize)),
        shared_aligned=fit.apply(source),
        residual=fit.residual,
        cached=cached_s + cached_d,
        seconds=time.perf_counter() - start,
    )
