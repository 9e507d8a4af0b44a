"""The optimized data set ``D'`` as training material: images of a data-set spec paired with
the merged targets of an ``optimized.safetensors``.

:class:`OptimizedDataset` is a ``torch.utils.data.Dataset`` for a user's own training loop;
:func:`paired_arrays` gives the same pairs as whole arrays, the form
:func:`coopt_flwr.learn.student.train_student` (and ``python -m simulations.train``) takes. Both
go through :func:`optimized_rows`, the one place that checks an optimized set against a data set.
:func:`fingerprint` names an optimized set's content in 16 hex digits (it is recorded with the
weights trained on it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from coopt_flwr.learn.student import center_targets
from coopt_flwr.registry.datasets import ImageData, create_dataset
from coopt_flwr.store.storage import load_optimized

__all__ = ["LOCAL_INDEX", "OptimizedDataset", "fingerprint", "optimized_rows", "paired_arrays"]

LOCAL_INDEX = "local-index"
"""Key of an optimized set written in local data mode (ids are then no rows of a public data set)."""

Optimized = Mapping[str, np.ndarray]
"""The arrays of :func:`coopt_flwr.store.storage.load_optimized`: ``ids`` (N,), ``targets`` (N, n), ..."""


def fingerprint(optimized: Optimized) -> str:
    """A short content hash of an optimized set: sha256 of its ``ids`` and ``targets`` bytes.

    Parameters
    ----------
    optimized : mapping
        ``ids`` int (N,) and ``targets`` float (N, n); the other arrays do not enter the hash.

    Returns
    -------
    str
        The first 16 hex digits. ids are hashed as little-endian int64 and targets as
        little-endian float32, so the value does not depend on the dtype they were read with.
    """
    ids, targets = _id_and_target_arrays(optimized)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype="<i8").data)
    h.update(np.ascontiguousarray(targets, dtype="<f4").data)
    return h.hexdigest()[:16]


def _id_and_target_arrays(optimized: Optimized) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and ``targets`` of an optimized set, their presence, kinds and shapes checked."""
    missing = [k for k in ("ids", "targets") if k not in optimized]
    if missing:
        raise ValueError(f"not an optimized set: no {' and '.join(repr(k) for k in missing)} array")
    ids = np.asarray(optimized["ids"])
    targets = np.asarray(optimized["targets"])
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"optimized set: 'ids' must be 1-D integers, got {ids.dtype} {ids.shape}")
    if targets.ndim != 2 or not np.issubdtype(targets.dtype, np.floating):
        raise ValueError(f"optimized set: 'targets' must be 2-D floats, got {targets.dtype} {targets.shape}")
    if targets.shape[0] != ids.shape[0]:
        raise ValueError(
            f"optimized set: {targets.shape[0]} target rows for {ids.shape[0]} ids (one row per id is needed)"
        )
    return ids, targets


def optimized_rows(
    optimized: Optimized, num_samples: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The checked (ids, targets) of an optimized set paired with a data set of ``num_samples``.

    Parameters
    ----------
    optimized : mapping
        As :func:`coopt_flwr.store.storage.load_optimized` returns it.
    num_samples : int
        N of the data set the ids index (ids are its row indices ``0..N-1``).
    ids : np.ndarray or None
        Integer (M,): a subset of the optimized ids (e.g. the kept ids of a pruning), in the
        order wanted; None takes every optimized id in the file's order.

    Returns
    -------
    ids : np.ndarray
        int64 (M,).
    targets : np.ndarray
        float32 (M, n), row i the target of ``ids[i]`` (a fresh array).

    Raises
    ------
    ValueError
        A local-data-mode set (``local-index`` present), missing or malformed arrays, target
        rows not matching the ids, duplicate ids, ids outside ``[0, num_samples)``, a subset
        holding ids the optimized set lacks, or non-finite targets among the rows returned.
    """
    if LOCAL_INDEX in optimized:
        raise ValueError(
            "this optimized set was written in local data mode: its ids name samples on the "
            "participants' own machines ('local-index'), not rows of a public data set, so it "
            "cannot be paired with a data-set spec"
        )
    all_ids, all_targets = _id_and_target_arrays(optimized)
    all_ids = all_ids.astype(np.int64, copy=False)
    if all_ids.size == 0:
        raise ValueError("the optimized set is empty")
    _check_unique(all_ids, "the optimized set")
    lo, hi = int(all_ids.min()), int(all_ids.max())
    if lo < 0 or hi >= num_samples:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"the optimized set holds id {bad}, outside the data set's range [0, {num_samples}): "
            "it was made from another data set (pass the run's dataset spec)"
        )
    if ids is None:
        rows = np.arange(all_ids.size)
    else:
        rows = _rows_of(all_ids, ids)
    targets = np.asarray(all_targets[rows], dtype=np.float32)
    if not np.isfinite(targets).all():
        bad_rows = np.flatnonzero(~np.isfinite(targets).all(axis=1))
        raise ValueError(
            f"{bad_rows.size} targets hold NaN or infinity (first at id {int(all_ids[rows[bad_rows[0]]])})"
        )
    return all_ids[rows].copy(), targets


def _check_unique(ids: np.ndarray, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        dup = uniq[counts > 1]
        raise ValueError(f"{what} holds {dup.size} duplicate ids (first: {int(dup[0])})")


def _rows_of(all_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each of ``ids`` in ``all_ids`` (unique), checking that every id is there."""
    sub = np.asarray(ids)
    if sub.ndim != 1 or (sub.size and not np.issubdtype(sub.dtype, np.integer)):
        raise ValueError(f"ids must be 1-D integers, got {sub.dtype} {sub.shape}")
    sub = sub.astype(np.int64, copy=False)
    if sub.size == 0:
        raise ValueError("ids is empty: no sample to use")
    _check_unique(sub, "ids")
    order = np.argsort(all_ids, kind="stable")
    sorted_ids = all_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, sub), sorted_ids.size - 1)
    absent = sorted_ids[pos] != sub
    if absent.any():
        raise ValueError(
            f"{int(absent.sum())} of the {sub.size} ids are not in the optimized set "
            f"(first: {int(sub[absent][0])}); ids must be a subset of the optimized ids"
        )
    return order[pos]


def paired_arrays(
    data: ImageData, optimized: Optimized, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images and targets of an optimized set as aligned arrays (what ``train_student`` takes).

    Parameters
    ----------
    data : ImageData
        The data set the optimized ids index.
    optimized : mapping
        As :func:`coopt_flwr.store.storage.load_optimized` returns it.
    ids : np.ndarray or None
        A subset of the optimized ids; None: all of them.

    Returns
    -------
    images : np.ndarray
        uint8 (M, H, W, 3), in memory.
    targets : np.ndarray
        float32 (M, n), not centered (``train_student`` centers them).
    ids : np.ndarray
        int64 (M,): row i of both arrays is sample ``ids[i]``.

    Raises
    ------
    ValueError
        See :func:`optimized_rows`.
    """
    rows, targets = optimized_rows(optimized, len(data), ids)
    return data.batch(rows), targets, rows


class OptimizedDataset(Dataset):
    """``(image, target, id)`` items of an optimized data set over the images of a data set.

    Parameters
    ----------
    data : ImageData or str
        The data set the optimized set was made from, or its spec (``create_dataset(data)``).
        A spec of the same images at another size works too (e.g. ``digits?size=32``): the ids
        are row indices.
    optimized : mapping, str or Path
        The arrays of :func:`coopt_flwr.store.storage.load_optimized`, or the path given to it
        (the run's output folder or its ``optimized.safetensors``).
    ids : np.ndarray or None
        Serve only these optimized ids, in this order (e.g. the kept ids of a pruning); None
        serves every optimized id.
    center : bool
        Subtract the mean target over the served samples (the project's convention, see
        :func:`coopt_flwr.learn.student.center_targets`; ``train_student`` does the same).
    transform : callable or None
        Called on the image as a uint8 numpy array of shape (H, W, 3) (RGB); its result is the
        item's image. None gives a float32 tensor of shape (3, H, W) in [0, 1].

    Attributes
    ----------
    ids : np.ndarray
        int64 (M,), the id of each item.
    targets : np.ndarray
        float32 (M, n), the target of each item (centered when ``center``).
    data : ImageData
        The images.

    Raises
    ------
    ValueError
        If the optimized set does not fit the data set: see :func:`optimized_rows`.

    Examples
    --------
    A user's own loop (cosine loss on centered targets, as CoOpt's students)::

        import timm, torch, torch.nn.functional as F
        from torch.utils.data import DataLoader
        from coopt_flwr.learn.optimized import OptimizedDataset

        ds = OptimizedDataset("digits", "outputs/my-run", center=True)  # (image, target, id)
        model = timm.create_model("resnet18", num_classes=ds.target_dim)  # head -> target width
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for epoch in range(10):
            for x, y, _ in DataLoader(ds, batch_size=128, shuffle=True):
                loss = (1 - F.cosine_similarity(model(x), y, dim=1)).mean()
                opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(
        self,
        data: ImageData | str,
        optimized: Optimized | str | Path,
        *,
        ids: np.ndarray | None = None,
        center: bool = False,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        self.data = create_dataset(data) if isinstance(data, str) else data
        opt = load_optimized(optimized) if isinstance(optimized, (str, Path)) else optimized
        self.ids, targets = optimized_rows(opt, len(self.data), ids)
        self.targets = center_targets(targets) if center else targets
        self.transform = transform

    @property
    def target_dim(self) -> int:
        """Width ``n`` of the targets."""
        return int(self.targets.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor, int]:
        """Item ``index``: (image, target float32 (n,), id)."""
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {n} items")
        sample = int(self.ids[i])
        image = np.array(self.data.images[sample])  # a writable copy (images may be a memory map)
        if self.transform is not None:
            x = self.transform(image)
        else:
            x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        return x, torch.tensor(self.targets[i]), sample
