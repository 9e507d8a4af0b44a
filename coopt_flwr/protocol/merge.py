"""Validation of participants' replies and the merged optimized data set D'.

Nothing a participant sends is merged unchecked: wrong shapes or dtypes, NaN/inf, ids that
are not exactly the assigned shard are rejected with a reason that ends up in the summary
(the typed reads of the reply's records, which need Flower's types, are in
:mod:`strategies.replies`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coopt_flwr.protocol.ensemble import combine_targets


class ReplyError(ValueError):
    """A participant's reply failed validation; the message says why."""


#: The largest target value, in magnitude, the platform accepts. Honest targets are projected
#: features of the size of a few units (the largest in this project's CIFAR-10 benchmark runs:
#: 7.5); the bound keeps every sum of squares over a row far inside float32 and stops an anchor
#: whose S targets are scaled enormously (× 10^37: uniformity does not see scale) from setting
#: the space every aligned target is merged in.
MAX_TARGET_MAGNITUDE = 1e6


def check_targets(array: np.ndarray, rows: int, width: int, what: str) -> np.ndarray:
    """Validate a (rows, width) floating array and return it as float32.

    Raises
    ------
    ReplyError
        Wrong rank, shape or dtype, values that are not finite as float32, or beyond
        :data:`MAX_TARGET_MAGNITUDE`.
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        raise ReplyError(f"{what}: dtype {a.dtype} is not floating point")
    if a.shape != (rows, width):
        raise ReplyError(f"{what}: shape {a.shape}, expected {(rows, width)}")
    # Cast first: a float64 value beyond float32's range is finite as sent, infinite as merged.
    with np.errstate(over="ignore"):
        out = a.astype(np.float32, copy=False)
    bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise ReplyError(f"{what}: {bad} non-finite values (NaN/inf, or beyond float32's range)")
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > MAX_TARGET_MAGNITUDE:
        raise ReplyError(
            f"{what}: values up to {peak:.3g} in magnitude, beyond {MAX_TARGET_MAGNITUDE:g} "
            "(honest targets are of the order of 1)"
        )
    return out


def check_ids(ids: np.ndarray, expected: np.ndarray, what: str) -> np.ndarray:
    """Validate that ``ids`` is exactly the assigned id set (any order, no duplicates).

    Returns
    -------
    np.ndarray
        The ids as int64, in the order they were sent (the rows of the targets).
    """
    a = np.asarray(ids)
    if not np.issubdtype(a.dtype, np.integer):
        raise ReplyError(f"{what}: ids dtype {a.dtype} is not integer")
    if a.ndim != 1:
        raise ReplyError(f"{what}: ids have shape {a.shape}, expected 1-D")
    a = a.astype(np.int64)
    uniq = np.unique(a)
    if len(uniq) != len(a):
        raise ReplyError(f"{what}: {len(a) - len(uniq)} duplicated ids")
    exp = np.unique(np.asarray(expected, dtype=np.int64))
    if len(uniq) != len(exp) or not np.array_equal(uniq, exp):
        outside = np.setdiff1d(uniq, exp)
        absent = np.setdiff1d(exp, uniq)
        raise ReplyError(
            f"{what}: ids differ from the assigned shard ({len(outside)} not assigned, "
            f"{len(absent)} assigned but missing)"
        )
    return a


@dataclass
class MergedTargets:
    """The optimized data set under construction: one target row per sample of D.

    Attributes
    ----------
    targets
        float32 (N, n); rows of samples nobody has delivered yet are NaN.
    participant
        int64 (N,) partition id of the participant that produced each row, -1 if none.
    round
        int64 (N,) round that produced each row, -1 if none.
    stage
        int64 (N,) evolution stage of the producing participant's prior, -1 if none.
    contributions
        int64 (N,) how many participants' aligned targets the row is the mean of (the
        run-config's ``redundancy``, fewer where contributors failed), 0 if none. With more
        than one, ``participant`` and ``stage`` name the primary contributor: the one with the
        lowest partition id.
    """

    num_samples: int
    target_dim: int
    targets: np.ndarray = field(init=False)
    participant: np.ndarray = field(init=False)
    round: np.ndarray = field(init=False)
    stage: np.ndarray = field(init=False)
    contributions: np.ndarray = field(init=False)

    #: The per-sample int64 columns besides the targets (-1 or 0 where empty).
    COLUMNS = ("participant", "round", "stage", "contributions")

    def __post_init__(self) -> None:
        self.targets = np.full((self.num_samples, self.target_dim), np.nan, dtype=np.float32)
        self.participant = np.full(self.num_samples, -1, dtype=np.int64)
        self.round = np.full(self.num_samples, -1, dtype=np.int64)
        self.stage = np.full(self.num_samples, -1, dtype=np.int64)
        self.contributions = np.zeros(self.num_samples, dtype=np.int64)

    def add(
        self,
        ids: np.ndarray,
        targets: np.ndarray,
        participant: int | np.ndarray,
        round_: int,
        stage: int | np.ndarray = 0,
        contributions: int | np.ndarray = 1,
    ) -> None:
        """Write validated rows (``ids`` int64 (m,), ``targets`` float32 (m, n)), in place.

        A later round overwrites a sample's row: D' keeps exactly one target per sample.
        ``participant``, ``stage`` and ``contributions`` are one value for all rows or (m,).
        """
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise ReplyError(f"ids outside [0, {self.num_samples})")
        self.targets[ids] = targets
        self.participant[ids] = participant
        self.round[ids] = round_
        self.stage[ids] = stage
        self.contributions[ids] = contributions

    def clear(self, ids: np.ndarray) -> None:
        """Empty rows again (the contribution of a participant rejected later in the round)."""
        self.targets[ids] = np.nan
        self.participant[ids] = -1
        self.round[ids] = -1
        self.stage[ids] = -1
        self.contributions[ids] = 0

    def grow(self, num_samples: int) -> None:
        """Extend to ``num_samples`` rows (new rows empty); local data mode registers samples late.

        Each array is allocated once at its new size and the old rows copied in, so growing
        costs the old arrays plus the new ones, never a third temporary; callers that know
        several participants' sizes grow once for all of them.
        """
        extra = int(num_samples) - self.num_samples
        if extra < 0:
            raise ValueError(f"cannot shrink the merged set from {self.num_samples} to {num_samples}")
        if extra == 0:
            return
        old = self.num_samples
        targets = np.empty((int(num_samples), self.target_dim), dtype=np.float32)
        targets[:old] = self.targets
        targets[old:] = np.nan
        self.targets = targets
        for name in self.COLUMNS:
            column = np.full(int(num_samples), 0 if name == "contributions" else -1, dtype=np.int64)
            column[:old] = getattr(self, name)
            setattr(self, name, column)
        self.num_samples = int(num_samples)

    @property
    def filled(self) -> np.ndarray:
        """bool (N,) samples that have a target."""
        return self.participant >= 0

    def missing_ids(self) -> np.ndarray:
        """int64 ids of samples without a target."""
        return np.flatnonzero(~self.filled).astype(np.int64)

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays written to ``optimized.safetensors`` (filled samples, ascending ids)."""
        filled = self.filled
        ids = np.flatnonzero(filled).astype(np.int64)
        # A complete set is written from the buffer itself: no second copy of the largest array.
        targets = self.targets if filled.all() else np.ascontiguousarray(self.targets[ids])
        return {
            "ids": ids,
            "targets": targets,
            "participant": self.participant[ids],
            "round": self.round[ids],
            "stage": self.stage[ids],
            "contributions": self.contributions[ids],
        }


@dataclass
class RoundContributions:
    """One round's aligned targets with redundancy r: up to r rows per sample, kept apart.

    The rows of a sample stay apart until the round ends, so a participant rejected after some
    of its parts were merged is taken out exactly (its rows dropped, no one else's touched),
    and the mean does not depend on the order replies arrived in: :meth:`merge_into` averages
    each sample's rows in increasing partition order. Costs r times the merged targets'
    memory, for the duration of the round's alignment phase.

    Attributes
    ----------
    targets
        float32 (r, N, n) the rows; a slot is empty where ``owner`` is -1.
    owner
        int64 (r, N) partition id of the participant that sent each slot, -1 if empty.
    stage
        int64 (r, N) evolution stage of that participant's prior.
    weight
        float64 (r, N) its weight in the sample's mean.
    """

    num_samples: int
    target_dim: int
    redundancy: int
    targets: np.ndarray = field(init=False, repr=False)
    owner: np.ndarray = field(init=False)
    stage: np.ndarray = field(init=False)
    weight: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.redundancy < 1:
            raise ValueError(f"redundancy must be >= 1, got {self.redundancy}")
        r, n = self.redundancy, self.num_samples
        self.targets = np.zeros((r, n, self.target_dim), dtype=np.float32)
        self.owner = np.full((r, n), -1, dtype=np.int64)
        self.stage = np.zeros((r, n), dtype=np.int64)
        self.weight = np.zeros((r, n), dtype=np.float64)

    def add(
        self, ids: np.ndarray, targets: np.ndarray, participant: int, stage: int = 0, weight: float = 1.0
    ) -> None:
        """Store one participant's validated rows in a free slot of each of its samples.

        Raises
        ------
        ReplyError
            Ids outside [0, N), a sample this participant already sent, or a sample whose r
            slots are taken (the platform assigned it too often: a bug, never silently lost).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise ReplyError(f"ids outside [0, {self.num_samples})")
        if not weight > 0:
            raise ValueError(f"a contribution's weight must be > 0, got {weight}")
        owners = self.owner[:, ids]
        if (owners == participant).any():
            raise ReplyError(f"{int((owners == participant).any(axis=0).sum())} samples sent twice")
        free = owners < 0
        full = ~free.any(axis=0)
        if full.any():
            raise ReplyError(f"{int(full.sum())} samples already have {self.redundancy} contributions")
        slot = free.argmax(axis=0)  # the first free slot of each sample
        self.targets[slot, ids] = targets
        self.owner[slot, ids] = participant
        self.stage[slot, ids] = stage
        self.weight[slot, ids] = weight

    def remove(self, ids: np.ndarray, participant: int) -> None:
        """Drop the rows ``participant`` sent for ``ids`` (it was rejected later in the round)."""
        ids = np.asarray(ids, dtype=np.int64)
        slot, col = np.nonzero(self.owner[:, ids] == participant)
        self.owner[slot, ids[col]] = -1
        self.weight[slot, ids[col]] = 0.0

    def counts(self) -> np.ndarray:
        """int64 (N,) how many rows each sample holds."""
        return np.count_nonzero(self.owner >= 0, axis=0).astype(np.int64)

    def merge_into(self, merged: MergedTargets, round_: int, chunk: int = 65536) -> np.ndarray:
        """Write every sample with at least one row into ``merged``: their weighted mean.

        Samples without a row this round keep what ``merged`` holds. The mean is
        :func:`coopt_flwr.protocol.ensemble.combine_targets` over the rows in increasing
        partition order, in chunks of ``chunk`` samples (bounded temporary memory).

        Returns
        -------
        np.ndarray
            int64 (N,) the rows each sample had (its ``contributions``).
        """
        counts = self.counts()
        for start in range(0, self.num_samples, chunk):
            ids = np.arange(start, min(start + chunk, self.num_samples), dtype=np.int64)
            ids = ids[counts[ids] > 0]
            if len(ids):
                self._merge_chunk(merged, ids, counts[ids], round_)
        return counts

    def _merge_chunk(self, merged: MergedTargets, ids: np.ndarray, counts: np.ndarray, round_: int) -> None:
        owner = self.owner[:, ids]
        # Empty slots sort last; each sample's k-th contribution is its k-th lowest partition.
        order = np.argsort(np.where(owner < 0, np.iinfo(np.int64).max, owner), axis=0, kind="stable")
        cols = np.arange(len(ids))
        id_lists, rows, weights = [], [], []
        for k in range(self.redundancy):
            slot = order[k]
            has = owner[slot, cols] >= 0
            id_lists.append(ids[has])
            rows.append(self.targets[slot[has], ids[has]])
            weights.append(self.weight[slot[has], ids[has]])
        out_ids, mean = combine_targets(id_lists, rows, weights)  # out_ids == ids (sorted)
        first = order[0]
        merged.add(
            out_ids, mean, self.owner[first, ids], round_, stage=self.stage[first, ids], contributions=counts
        )
