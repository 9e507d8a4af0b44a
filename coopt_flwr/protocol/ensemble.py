"""Redundant shard assignment and the merge of redundant targets (redundancy r ≥ 1).

With r = 1 every sample is embedded by one participant (the protocol's disjoint shards).
With r > 1 every sample is embedded by r distinct participants, preferably running different
priors, and the platform merges the r aligned targets of a sample by a (weighted) mean: an
ensemble of priors per sample, at r times the embedding cost, spread evenly over the K
participants so the wall time still falls about as K / r.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["assign_redundant", "combine_targets"]


def _unique_ids(ids: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: ids must be a 1-D integer array, got {a.dtype} {a.shape}")
    a = a.astype(np.int64)
    if len(np.unique(a)) != len(a):
        raise ValueError(f"{what}: ids are not unique")
    return a


def _pick(caps: np.ndarray, group: np.ndarray, r: int, left: int, noise: np.ndarray) -> np.ndarray:
    """r distinct partitions (indices) for one id, given remaining capacities ``caps`` (K,).

    Partitions whose capacity equals the ids left (this one included) must be taken, which
    keeps the rest feasible; then a group not yet used by this id; then the group with the
    most capacity left (so scarce groups are not spent pairing with each other); then the
    partition with the most capacity left; then ``noise``, a (K,) random tie-break.
    """
    chosen = np.zeros(len(caps), dtype=bool)
    used = np.zeros(group.max() + 1, dtype=bool)
    for _ in range(r):
        open_ = (caps > 0) & ~chosen
        forced = open_ & (caps == left)
        group_caps = np.bincount(group, weights=caps * open_)[group]
        # np.lexsort sorts by the last key first; the best candidate ends up last.
        order = np.lexsort((noise, caps, group_caps, ~used[group], forced, open_))
        best = order[-1]
        chosen[best] = True
        used[group[best]] = True
    return np.flatnonzero(chosen)


def assign_redundant(
    ids: np.ndarray,
    partitions: Sequence[int],
    groups: Sequence[int] | None = None,
    r: int = 1,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Give every sample id to exactly ``r`` distinct partitions, balanced and group-diverse.

    Every partition gets ⌊r·N/K⌋ or ⌈r·N/K⌉ ids (which ones get one more is seeded). The r
    partitions of an id are in r different groups wherever the balanced loads allow it (a
    group holding more than its share of partitions must sometimes take two copies).

    Parameters
    ----------
    ids
        (N,) unique integer sample ids.
    partitions
        The K distinct partition ids.
    groups
        (K,) group label of each partition, e.g. the index of its prior spec, so that the r
        copies of an id go to different priors; None: every partition its own group.
    r
        Redundancy, 1 ≤ r ≤ K.
    seed
        Seed of the assignment; the same arguments give the same result.

    Returns
    -------
    dict
        Partition id → sorted int64 array of its ids. With r = 1, a disjoint split of ``ids``.
    """
    a = _unique_ids(ids, "assign_redundant")
    parts = [int(p) for p in partitions]
    if len(set(parts)) != len(parts) or not parts:
        raise ValueError(f"partitions must be non-empty and distinct, got {parts}")
    labels = list(range(len(parts))) if groups is None else list(groups)
    if len(labels) != len(parts):
        raise ValueError(f"{len(labels)} groups for {len(parts)} partitions")
    if not 1 <= r <= len(parts):
        raise ValueError(f"redundancy r must be in [1, K={len(parts)}], got {r}")
    group = np.unique(np.asarray(labels), return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed)
    total, k = len(a) * r, len(parts)
    caps = np.full(k, total // k, dtype=np.int64)
    caps[rng.permutation(k)[: total % k]] += 1
    chosen = np.zeros((len(a), k), dtype=bool)
    for left, i in enumerate(rng.permutation(len(a))[::-1], start=1):
        picked = _pick(caps, group, r, left, rng.random(k))
        chosen[i, picked] = True
        caps[picked] -= 1
    return {p: np.sort(a[chosen[:, j]]) for j, p in enumerate(parts)}


def combine_targets(
    ids_list: Sequence[np.ndarray],
    targets_list: Sequence[np.ndarray],
    weights: Sequence[float | np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-id target contributions by their (weighted) mean.

    Parameters
    ----------
    ids_list
        One (N_i,) array of unique integer ids per contribution (e.g. per participant).
    targets_list
        The matching (N_i, n) targets, the same width n for all.
    weights
        Per contribution a scalar or an (N_i,) array of weights ≥ 0; None: all 1. Every id
        needs a positive total weight.

    Returns
    -------
    ids
        (M,) sorted int64 union of all ids, each once.
    targets
        (M, n) Σ_i w_i y_i / Σ_i w_i per id, in the inputs' common floating dtype (at least
        float32), computed in float64.
    """
    if len(ids_list) != len(targets_list) or not ids_list:
        raise ValueError("combine_targets needs as many id arrays as target arrays, at least one")
    if weights is not None and len(weights) != len(ids_list):
        raise ValueError(f"{len(weights)} weights for {len(ids_list)} contributions")
    ids = [_unique_ids(i, f"contribution {c}") for c, i in enumerate(ids_list)]
    ys = [np.asarray(y) for y in targets_list]
    widths = {y.shape[1] if y.ndim == 2 else -1 for y in ys}
    if len(widths) != 1 or -1 in widths or any(len(i) != len(y) for i, y in zip(ids, ys, strict=True)):
        raise ValueError("every contribution needs (N_i,) ids and (N_i, n) targets of one width")
    if not all(np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y)) for y in ys):
        raise ValueError("targets must be finite numbers")
    w = [
        np.broadcast_to(np.asarray(1.0 if weights is None else weights[c], float), (len(i),))
        for c, i in enumerate(ids)
    ]
    if any(np.any(~np.isfinite(x) | (x < 0)) for x in w):
        raise ValueError("weights must be finite and >= 0")
    out_ids, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    inverse = inverse.ravel()
    all_w = np.concatenate(w)
    total = np.bincount(inverse, weights=all_w, minlength=len(out_ids))
    if np.any(total <= 0):
        raise ValueError(f"{int(np.sum(total <= 0))} ids have zero total weight")
    acc = np.zeros((len(out_ids), widths.pop()))
    np.add.at(acc, inverse, np.concatenate(ys).astype(np.float64) * all_w[:, None])
    dtype = np.result_type(*[y.dtype for y in ys], np.float32)
    return out_ids, (acc / total[:, None]).astype(dtype)
