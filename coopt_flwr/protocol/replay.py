"""The protocol's arithmetic in one process, for the paper's analyses (no Flower).

The analyses vary one thing at a time (which anchor, how large the shared set, which mix of
priors) over the *same* features, so they embed every sample with every prior once and then
replay the platform's and participants' steps with the very functions the protocol uses:
:func:`coopt_flwr.protocol.projection.projection_matrix` (W_k),
:func:`coopt_flwr.protocol.uniformity.uniformity` on the projected shared-set targets (the
platform's V), :func:`coopt_flwr.protocol.alignment.fit_alignment` (T_k),
:func:`coopt_flwr.protocol.shards.disjoint_shards` (the shards, gated by
:func:`coopt_flwr.protocol.shards.quality_gate` when asked) and
:func:`coopt_flwr.protocol.inconsistency.inconsistency` (G on the shared set, before and after
alignment).

Options mirror the protocol's later run-config keys: ``anchor-rule`` (uniformity V or the
consensus score, :func:`coopt_flwr.protocol.consensus.consensus_scores`), ``alignment`` (ridge or
Procrustes), ``standardize`` (z-score each prior's features on the shared set before W_k) and
``redundancy`` r (every sample embedded by r participants of different priors,
:func:`coopt_flwr.protocol.ensemble.assign_redundant`, merged by their mean,
:func:`coopt_flwr.protocol.ensemble.combine_targets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from coopt_flwr.protocol.alignment import (
    METHODS,
    RIDGE_AUTO,
    Alignment,
    cross_fitted_residual,
    cv_folds,
    fit_alignment,
    resolve_ridge,
)
from coopt_flwr.protocol.anchor import choose_anchor, uniformity_order
from coopt_flwr.protocol.consensus import CONSENSUS_PARTNERS, consensus_scores
from coopt_flwr.protocol.ensemble import assign_redundant, combine_targets
from coopt_flwr.protocol.inconsistency import inconsistency
from coopt_flwr.protocol.participant import FeatureCache, embed_ids, prior_targets
from coopt_flwr.protocol.projection import projection_matrix
from coopt_flwr.protocol.shards import disjoint_shards, quality_gate
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData

__all__ = [
    "ANCHOR_MODES",
    "ANCHOR_RULES",
    "Embedded",
    "Merged",
    "anchor_for",
    "embed_prior",
    "merge_targets",
    "project_all",
]

ANCHOR_MODES = ("none", "worst", "medium", "best")
"""No alignment, or alignment to the prior of the worst / median / best anchor score."""

ANCHOR_RULES = ("uniformity", "consensus")
"""The anchor score: the platform's uniformity V, or the consensus score C (both lower = better)."""

CV_FOLDS = 5
"""Folds of the cross-fitted residuals and consensus scores (fewer for a tiny shared set)."""


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


def project_all(
    embedded: Sequence[Embedded],
    target_dim: int,
    seed: int,
    standardize_on: np.ndarray | None = None,
) -> list[np.ndarray]:
    """W_k ψ_k for every prior, over all its embedded ids: float32 (m_k, n) each.

    W_k depends on (l_k, n, seed), as in :func:`coopt_flwr.protocol.participant.uniformity_report`.
    With ``standardize_on`` (shared-set ids), each prior's features are first z-scored per
    dimension with a :class:`~coopt_flwr.protocol.alignment.Standardizer` fitted on its
    features of those ids (the run-config's ``standardize``).
    """
    ids = None if standardize_on is None else np.asarray(standardize_on, dtype=np.int64)
    return [  # the participant's own function, so the replay's targets are the protocol's
        prior_targets(
            e.features,
            e.features if ids is None else e.rows(ids),
            projection_matrix(e.features.shape[1], target_dim, seed),
            standardize=ids is not None,
        )
        for e in embedded
    ]


def anchor_for(values: Sequence[float], mode: str) -> int | None:
    """Index of the anchor for an :data:`ANCHOR_MODES` mode given the platform's uniformity values.

    ``best`` is the platform's own rule (:func:`coopt_flwr.protocol.anchor.choose_anchor`:
    lowest V, ties to the lowest index); ``worst`` the highest V; ``medium`` the median rank
    (the lower middle for an even count); ``none`` None. Any lower-is-better score works in
    place of V (e.g. the consensus score).
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
        float32 (N, n), row i the target of sample i (the mean of its r contributions).
    participant : np.ndarray
        int64 (N,) index of the prior that produced each row (with r > 1 the lowest of its
        contributors).
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
    anchor_rule, alignment, standardize, redundancy
        The options the round was replayed with.
    consensus : list of float or None
        Consensus score C of each prior on the projected shared-set targets (lower = better);
        None for one prior or fewer than 3 shared samples.
    cv_residuals : list of float
        Cross-fitted (out-of-sample) relative residual of each prior's alignment to the anchor
        (0 for the anchor and without alignment; NaN for fewer than 3 shared samples).
    contributors : np.ndarray or None
        int64 (N, r) the participants whose targets were averaged into each row, ascending.
    ridge : float
        The alignment's ridge strength (chosen on S when the replay was given ``"auto"``).
    gated : list of int
        Participants given no share of D (residual above ``shard_max_residual``).
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
    anchor_rule: str = "uniformity"
    alignment: str = "ridge"
    standardize: bool = False
    redundancy: int = 1
    consensus: list[float] | None = None
    cv_residuals: list[float] = field(default_factory=list)
    contributors: np.ndarray | None = field(default=None, repr=False)
    ridge: float = 1e-3
    gated: list[int] = field(default_factory=list)


def merge_targets(
    embedded: Sequence[Embedded],
    projected: Sequence[np.ndarray],
    num_samples: int,
    shared_ids: np.ndarray,
    mode: str = "best",
    *,
    seed: int = 0,
    ridge: float | str | None = 1e-3,
    g_max_samples: int = 512,
    eval_ids: np.ndarray | None = None,
    anchor_rule: str = "uniformity",
    alignment: str = "ridge",
    standardize: bool = False,
    redundancy: int = 1,
    shard_max_residual: float | None = None,
) -> Merged:
    """Replay one protocol round: shards, uniformity, anchor, alignment, merge, G.

    Parameters
    ----------
    embedded, projected
        Per prior (participant k = list index): its features and W_k ψ_k over the same ids,
        which must cover the shared set and the prior's shard.
    num_samples, shared_ids
        N = |D| (with r = 1 participant k gets shard k of
        :func:`coopt_flwr.protocol.shards.disjoint_shards`) and the int64 (|S|,) shared set.
    mode
        Anchor choice by ``anchor_rule``'s score, one of :data:`ANCHOR_MODES` (``best``: the protocol's).
    seed
        The run seed (W_k, shards, the redundant assignment, cross-fitting and the G estimate).
    ridge, g_max_samples
        As the run-config keys ``ridge`` (a strength, or ``"auto"``/None: chosen on S by
        :func:`coopt_flwr.protocol.alignment.resolve_ridge`) and ``g-max-samples``.
    eval_ids
        Optional int64 sample ids on which to measure ``g_eval`` (every prior's aligned targets
        of these same samples).
    anchor_rule, alignment
        ``"uniformity"`` (the platform's V) or ``"consensus"`` (the consensus score of the
        projected shared-set targets); ``"ridge"`` or ``"procrustes"`` (``fit_alignment``).
    standardize
        Z-score each prior's features per dimension on the shared set before W_k; then
        ``projected`` only gives n and is rebuilt by :func:`project_all` with ``seed``.
    redundancy
        r in [1, K]: every sample goes to r participants, of different priors where the loads
        allow (groups = equal specs), and its r aligned targets are averaged.
    shard_max_residual
        As the run-config's ``shard-max-residual``: participants whose cross-fitted residual
        to the anchor exceeds it get no share of D (r is clipped to those kept); None: no gate.
    """
    shared_ids = _checked_shared_ids(embedded, projected, shared_ids, anchor_rule, alignment, redundancy)
    if standardize:
        projected = project_all(embedded, projected[0].shape[1], seed, standardize_on=shared_ids)
    shared = [p[np.searchsorted(e.ids, shared_ids)] for e, p in zip(embedded, projected, strict=True)]
    values = [uniformity(s) for s in shared]
    fixed = None if ridge is None or ridge == RIDGE_AUTO else float(ridge)
    strength = resolve_ridge(fixed, shared, seed=seed)
    consensus = _consensus(shared, strength, seed)
    anchor = _anchor(values, consensus, anchor_rule, mode)
    fits = _fits(shared, anchor, alignment, strength)
    cv_residuals = _cv_residuals(shared, anchor, alignment, strength, seed)
    kept = list(range(len(embedded)))
    if shard_max_residual is not None:
        kept = quality_gate(dict(enumerate(cv_residuals)), shard_max_residual)
    assignment = _assignment(embedded, num_samples, seed, min(redundancy, len(kept)), kept)
    targets, contributors = _assemble(embedded, projected, fits, assignment, num_samples)
    uploaded = [fit.apply(s) for fit, s in zip(fits, shared, strict=True)]
    g_before, g_after = (_g(x, g_max_samples, seed) for x in (shared, uploaded))
    return Merged(
        targets=targets,
        participant=contributors[:, 0].copy(),
        uniformity=values,
        anchor=anchor,
        g_before=g_before,
        g_after=g_after,
        residuals=[float(f.residual) for f in fits],
        g_eval=_g_eval(embedded, projected, fits, eval_ids, g_max_samples, seed),
        shared_targets=uploaded,
        anchor_rule=anchor_rule,
        alignment=alignment,
        standardize=bool(standardize),
        redundancy=int(redundancy),
        consensus=consensus,
        cv_residuals=cv_residuals,
        contributors=contributors,
        ridge=strength,
        gated=[i for i in range(len(embedded)) if i not in kept],
    )


def _fits(shared: Sequence[np.ndarray], anchor: int | None, alignment: str, ridge: float) -> list[Alignment]:
    """T_k of every participant (the identity for the anchor and without alignment)."""
    return [
        Alignment.identity(s.shape[1])
        if anchor is None or i == anchor
        else fit_alignment(s, shared[anchor], ridge=ridge, method=alignment)
        for i, s in enumerate(shared)
    ]


def _checked_shared_ids(
    embedded: Sequence[Embedded],
    projected: Sequence[np.ndarray],
    shared_ids: np.ndarray,
    anchor_rule: str,
    alignment: str,
    redundancy: int,
) -> np.ndarray:
    """The shared ids as int64, once the inputs and options are known to be valid."""
    k = len(embedded)
    if k == 0 or len(projected) != k:
        raise ValueError("merge_targets needs one projected array per embedded prior")
    if anchor_rule not in ANCHOR_RULES:
        raise ValueError(f"anchor rule must be one of {ANCHOR_RULES}, got {anchor_rule!r}")
    if alignment not in METHODS:
        raise ValueError(f"alignment must be one of {METHODS}, got {alignment!r}")
    if int(redundancy) != redundancy or not 1 <= redundancy <= k:
        raise ValueError(f"redundancy must be an integer in [1, K={k}], got {redundancy!r}")
    ids = np.asarray(shared_ids, dtype=np.int64)
    for e in embedded:
        e.rows(ids)  # raises if the shared set was not embedded
    return ids


def _g(targets: Sequence[np.ndarray], g_max_samples: int, seed: int) -> float | None:
    """G of the participants' targets of the same samples (None for one participant)."""
    return inconsistency(targets, max_samples=g_max_samples, seed=seed) if len(targets) > 1 else None


def _consensus(shared: Sequence[np.ndarray], ridge: float, seed: int) -> list[float] | None:
    """Consensus score of every participant's projected shared-set targets (None if undefined)."""
    folds = cv_folds(len(shared[0]), CV_FOLDS)
    if len(shared) < 2 or folds is None:
        return None
    scores = consensus_scores(
        dict(enumerate(shared)), ridge=ridge, folds=folds, seed=seed, partners=CONSENSUS_PARTNERS
    )
    return [scores[i] for i in range(len(shared))]


def _anchor(values: list[float], consensus: list[float] | None, rule: str, mode: str) -> int | None:
    """The anchor index by ``rule``'s scores and ``mode`` (one prior: itself)."""
    if rule == "uniformity" or len(values) == 1:
        return anchor_for(values, mode)
    if consensus is None:
        raise ValueError("the consensus anchor rule needs at least 3 shared samples")
    return anchor_for(consensus, mode)


def _cv_residuals(
    shared: Sequence[np.ndarray], anchor: int | None, alignment: str, ridge: float, seed: int
) -> list[float]:
    """Out-of-sample residual of each participant's alignment to the anchor on S."""
    folds = cv_folds(len(shared[0]), CV_FOLDS)
    out = []
    for i, s in enumerate(shared):
        if anchor is None or i == anchor:
            out.append(0.0)
        elif folds is None:
            out.append(float("nan"))
        else:
            out.append(
                cross_fitted_residual(
                    s, shared[anchor], folds=folds, seed=seed, ridge=ridge, method=alignment
                )
            )
    return out


def _assignment(
    embedded: Sequence[Embedded], num_samples: int, seed: int, redundancy: int, kept: Sequence[int]
) -> list[np.ndarray]:
    """Sorted sample ids of each participant: the platform's shards (r = 1) or r copies of each
    id spread over participants of different priors (groups = equal specs); only the ``kept``
    participants get ids (the others an empty array), as the platform's shard plans do."""
    k = len(embedded)
    if redundancy == 1:
        by_part = disjoint_shards(num_samples, kept, k, seed)
    else:
        specs = [embedded[i].spec for i in kept]
        groups = [specs.index(s) for s in specs]
        ids = np.arange(num_samples, dtype=np.int64)
        by_part = assign_redundant(ids, kept, groups, redundancy, seed)
    return [by_part.get(i, np.empty(0, dtype=np.int64)) for i in range(k)]


def _assemble(
    embedded: Sequence[Embedded],
    projected: Sequence[np.ndarray],
    fits: Sequence[Alignment],
    assignment: Sequence[np.ndarray],
    num_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, n) mean aligned targets and int64 (N, r) contributors (-1 where none)."""
    ys = []
    for e, p, fit, ids in zip(embedded, projected, fits, assignment, strict=True):
        e.rows(ids)  # raises if the shard was not embedded
        ys.append(fit.apply(p[np.searchsorted(e.ids, ids)]))
    counts = np.bincount(np.concatenate(assignment), minlength=num_samples)
    contributors = np.full((num_samples, max(1, int(counts.max()))), -1, dtype=np.int64)
    filled = np.zeros(num_samples, dtype=np.int64)
    for i, ids in enumerate(assignment):
        contributors[ids, filled[ids]] = i
        filled[ids] += 1
    targets = np.full((num_samples, projected[0].shape[1]), np.nan, dtype=np.float32)
    out_ids, combined = combine_targets(list(assignment), ys)
    targets[out_ids] = combined
    return targets, contributors


def _g_eval(
    embedded: Sequence[Embedded],
    projected: Sequence[np.ndarray],
    fits: Sequence[Alignment],
    eval_ids: np.ndarray | None,
    g_max_samples: int,
    seed: int,
) -> float | None:
    """G after alignment on the fixed evaluation ids (None without them or for one prior)."""
    if eval_ids is None or len(embedded) < 2:
        return None
    eval_ids = np.asarray(eval_ids, dtype=np.int64)
    for e in embedded:
        e.rows(eval_ids)  # raises if the evaluation set was not embedded
    on_eval = [
        fit.apply(p[np.searchsorted(e.ids, eval_ids)])
        for e, p, fit in zip(embedded, projected, fits, strict=True)
    ]
    return inconsistency(on_eval, max_samples=g_max_samples, seed=seed)
