"""Validation of participants' replies and the merged optimized data set D'.

Nothing a participant sends is merged unchecked: wrong shapes or dtypes, NaN/inf, ids that
are not exactly the assigned shard are rejected with a reason that ends up in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ReplyError(ValueError):
    """A participant's reply failed validation; the message says why."""


def check_targets(array: np.ndarray, rows: int, width: int, what: str) -> np.ndarray:
    """Validate a (rows, width) floating array and return it as float32.

    Raises
    ------
    ReplyError
        Wrong rank, shape or dtype, or non-finite values.
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        raise ReplyError(f"{what}: dtype {a.dtype} is not floating point")
    if a.shape != (rows, width):
        raise ReplyError(f"{what}: shape {a.shape}, expected {(rows, width)}")
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ReplyError(f"{what}: {bad} non-finite values (NaN/inf)")
    return a.astype(np.float32, copy=False)


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
    """

    num_samples: int
    target_dim: int
    targets: np.ndarray = field(init=False)
    participant: np.ndarray = field(init=False)
    round: np.ndarray = field(init=False)
    stage: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.targets = np.full((self.num_samples, self.target_dim), np.nan, dtype=np.float32)
        self.participant = np.full(self.num_samples, -1, dtype=np.int64)
        self.round = np.full(self.num_samples, -1, dtype=np.int64)
        self.stage = np.full(self.num_samples, -1, dtype=np.int64)

    def add(
        self, ids: np.ndarray, targets: np.ndarray, participant: int, round_: int, stage: int = 0
    ) -> None:
        """Write validated rows (``ids`` int64 (m,), ``targets`` float32 (m, n)), in place.

        A later round overwrites a sample's row: D' keeps exactly one target per sample.
        """
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise ReplyError(f"ids outside [0, {self.num_samples})")
        self.targets[ids] = targets
        self.participant[ids] = participant
        self.round[ids] = round_
        self.stage[ids] = stage

    def clear(self, ids: np.ndarray) -> None:
        """Empty rows again (the contribution of a participant rejected later in the round)."""
        self.targets[ids] = np.nan
        self.participant[ids] = -1
        self.round[ids] = -1
        self.stage[ids] = -1

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
        for name in ("participant", "round", "stage"):
            column = np.full(int(num_samples), -1, dtype=np.int64)
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
        }
