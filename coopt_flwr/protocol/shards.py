"""Which participant embeds which samples: the platform's shard plans, as pure functions.

Disjoint shards (``redundancy`` 1, the paper's protocol) come from a seeded split of the whole
federation, stable across rounds so participants' cached features stay valid; the shards of
absent partitions are spread over the present ones. Redundant plans (r > 1) are
:func:`coopt_flwr.protocol.ensemble.assign_redundant`. When participants fail mid-round,
:func:`reassign_lost` gives each lost contribution to a healthy participant that does not
already contribute that sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from coopt_flwr.registry.datasets import shard_split

__all__ = ["disjoint_shards", "quality_gate", "reassign_lost"]


def disjoint_shards(
    num_samples: int, partitions: Sequence[int], num_partitions: int, seed: int
) -> dict[int, np.ndarray]:
    """Seeded random disjoint split of ids ``0..N-1``, one shard per partition of the federation.

    Parameters
    ----------
    num_samples
        N = |D|.
    partitions
        Distinct partition ids of the accepted participants.
    num_partitions
        Size of the federation (raised to ``max(partitions) + 1`` if smaller).
    seed
        The run seed: the same seed and federation size give the same split every round.

    Returns
    -------
    dict
        Partition id → int64 sorted ids (S_p,); together every id exactly once.

    Raises
    ------
    ValueError
        If ``partitions`` is empty.
    """
    if not partitions:
        raise ValueError("no partitions to assign shards to")
    num_partitions = max(num_partitions, max(partitions) + 1)
    parts = shard_split(num_samples, num_partitions, seed)
    present = sorted(partitions)
    absent = [p for p in range(num_partitions) if p not in set(present)]
    shards = {p: parts[p] for p in present}
    if absent:
        orphans = np.concatenate([parts[p] for p in absent])
        for p, extra in zip(present, np.array_split(orphans, len(present)), strict=True):
            shards[p] = np.concatenate([shards[p], extra])
    return {p: np.sort(ids) for p, ids in shards.items()}


def quality_gate(residuals: Mapping[int, float | None], max_residual: float) -> list[int]:
    """The partitions that get a share of D: out-of-sample alignment residual ≤ ``max_residual``.

    A participant whose shared-set targets predict the anchor's no better than their mean
    (cross-fitted relative residual near 1, e.g. a random network) would hand its share of D
    targets that carry almost nothing; measured on CIFAR-10, a random ResNet-18 holding a
    quarter of D cost the student 8.5 points. Such a participant still reports on S. A partition
    without a residual (None: not scored, e.g. the only one) is kept, as is the anchor (0).

    Parameters
    ----------
    residuals
        Partition id → its cross-fitted residual to the anchor (0 for the anchor), or None.
    max_residual
        The run-config's ``shard-max-residual`` (> 0).

    Returns
    -------
    list of int
        The kept partition ids, ascending; never empty if any residual is ≤ the bound or None.
    """
    if not max_residual > 0:
        raise ValueError(f"max_residual must be > 0, got {max_residual}")
    return sorted(p for p, r in residuals.items() if r is None or not r > max_residual)


def reassign_lost(lost: Sequence[np.ndarray], owner: np.ndarray, healthy: Sequence[int]) -> list[np.ndarray]:
    """Give each lost contribution to a healthy partition not yet contributing that sample.

    An id lost by two failed participants needs two new contributors: one pass per copy.
    Within a pass the candidates are tried round-robin from a per-id start (balanced loads);
    an id every healthy partition already holds keeps fewer contributions.

    Parameters
    ----------
    lost
        Per failed participant, the int64 ids whose contribution it did not deliver.
    owner
        int64 (r, N): the partition holding each of the r contribution slots of every sample
        now (-1 for a free slot).
    healthy
        The partition ids that may take work, in the order of the returned list.

    Returns
    -------
    list of np.ndarray
        Per healthy partition, the int64 sorted ids it is now asked for (possibly empty).
    """
    parts = np.asarray(healthy, dtype=np.int64)
    h = len(parts)
    if h == 0 or not lost:
        return [np.empty(0, dtype=np.int64) for _ in range(h)]
    ids, copies = np.unique(np.concatenate(lost).astype(np.int64), return_counts=True)
    taken = (owner[:, ids][None, :, :] == parts[:, None, None]).any(axis=1).T  # (L, H)
    picked: list[list[np.ndarray]] = [[] for _ in range(h)]
    for copy in range(int(copies.max(initial=0))):
        todo = np.flatnonzero(copies > copy)
        order = (todo[:, None] + copy + np.arange(h)[None, :]) % h  # candidates, per id
        free = ~taken[todo[:, None], order]
        ok = free.any(axis=1)
        col = order[np.arange(len(todo)), free.argmax(axis=1)]
        todo, col = todo[ok], col[ok]
        taken[todo, col] = True
        for j in range(h):
            picked[j].append(ids[todo[col == j]])
    return [np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in picked]
