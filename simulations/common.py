"""Helpers shared by the commands (run, evolve, benchmark, analyze, zoo): the run-config of a
Hydra config, data specs, students, files."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from coopt_flwr.config import DEFAULTS, Settings

ROOT = Path(__file__).resolve().parent.parent


def run_config_overrides(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """The flat Flower run-config overrides of Hydra config nodes (or plain dicts).

    The Hydra configs spell run-config keys as the run-config does (:data:`DEFAULTS`), so each
    such key of a source is passed on as it is, later sources winning; the other keys
    (``num-supernodes``, profile blocks ...) stay behind. ``priors`` stays a list. The result
    is validated by :class:`Settings`: a bad value fails here, before Ray starts.
    """
    run_config: dict[str, Any] = {}
    for source in sources:
        for key in source:
            if key in DEFAULTS:
                value = source[key]
                run_config[key] = (
                    OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                )
    Settings.from_config({}, run_config)
    return run_config


def output_folder(cfg: Mapping[str, Any]) -> Path:
    """A command's ``output-dir``, absolute and created."""
    out = Path(str(cfg["output-dir"])).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_dir(path: str | Path) -> Path:
    """An absolute folder: ``~`` expanded, relative paths taken from the project root."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def dataset_spec(
    spec: str, data_dir: str | Path | None, subset: int | None = None, subset_seed: int = 0
) -> str:
    """A data-set spec with a relative ``npz:`` / ``folder:`` path resolved against ``data_dir``
    and, with ``subset``, the seeded class-balanced subset options appended.

    Examples
    --------
    ``dataset_spec("npz:train.npz", "/d", 1000, 3)`` → ``"npz:/d/train.npz?subset=1000&subset-seed=3"``
    """
    name, sep, rest = spec.partition(":")
    if sep and name in ("npz", "folder") and data_dir is not None:
        arg, q, query = rest.partition("?")
        path = Path(arg).expanduser()
        if not path.is_absolute():
            path = resolve_dir(data_dir) / path
        spec = f"{name}:{path}{q}{query}"
    if subset is not None:
        spec += ("&" if "?" in spec else "?") + f"subset={int(subset)}&subset-seed={int(subset_seed)}"
    return spec


def train_spec(cfg: Any) -> str:
    """A profile's data set ``data.train`` with its paths resolved against ``data_dir`` and its
    seeded class-balanced ``data.subset`` (null: all of it)."""
    subset = cfg.data.subset
    return dataset_spec(
        str(cfg.data.train), cfg.data_dir, None if subset is None else int(subset), int(cfg.seed)
    )


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` and close it."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows of one flat dict each, columns in first-seen key order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(v) for k, v in row.items()})
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def train_config(train: Mapping[str, Any], seed: int, device: str | None, **extra: Any) -> Any:
    """A :class:`coopt_flwr.learn.training.TrainConfig` from a profile's ``train`` block."""
    from coopt_flwr.learn.training import TrainConfig

    keys = ("epochs", "time_budget_s", "batch_size", "optimizer", "lr", "weight_decay", "warmup_frac")
    return TrainConfig(
        **{k: train[k] for k in keys if k in train}, seed=int(seed), device=device or None, **extra
    )


def make_probe(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    device: str | None,
) -> Any:
    """A :class:`coopt_flwr.learn.probe.LinearProbe` (normalization from the probe-train images)."""
    from coopt_flwr.learn.probe import LinearProbe

    return LinearProbe(train_images, train_labels, test_images, test_labels, device=device or None)


def student_accuracy(
    images: np.ndarray,
    targets: np.ndarray,
    probe: Callable[[Any], float],
    student: Mapping[str, Any],
    seed: int,
    device: str | None,
    log: Callable[[str], None] = print,
    per_epoch: bool = False,
) -> dict[str, Any]:
    """Train a fresh seeded student on (images, targets) and linear-probe its backbone.

    Parameters
    ----------
    images
        uint8 (N, H, W, 3), row i the image of ``targets[i]``.
    targets
        float (N, n).
    probe
        ``probe(backbone) -> accuracy``, e.g. :func:`make_probe`'s.
    student
        Profile block: ``arch``, ``cifar_stem``, ``train`` (a :func:`train_config` block) and
        optionally ``eval_times_s`` (probe points on the training clock).
    per_epoch
        Also probe the checkpoint of every completed epoch (``curve_epochs``: [[epoch, acc]]).

    Returns
    -------
    dict
        ``final_acc``, ``train_seconds``, ``epochs``, ``curve`` ([[seconds, acc]]) and, with
        ``per_epoch``, ``curve_epochs``.
    """
    import tempfile

    from coopt_flwr.learn.student import Student, train_student

    model = Student.create(
        str(student["arch"]), targets.shape[1], cifar_stem=bool(student["cifar_stem"]), seed=seed
    )
    eval_at = tuple(float(t) for t in student.get("eval_times_s") or ()) or None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coopt-student-") as ckpt:
        cfg = train_config(
            student["train"], seed, device, eval_at_s=eval_at, checkpoint_dir=ckpt if per_epoch else None
        )
        res = train_student(
            model,
            images,
            np.asarray(targets, dtype=np.float32),
            cfg,
            evaluate=lambda: probe(model.backbone),
            center=bool(student.get("center_targets", True)),
        )
        record = train_record(res)
        if per_epoch:
            record["curve_epochs"] = _epoch_curve(Path(ckpt), model, probe, float(res.curve[0][1]))
    log(
        f"[student] final linear-probe accuracy {record['final_acc']:.4f} after "
        f"{record['epochs']:.1f} epochs ({time.perf_counter() - start:.0f} s)"
    )
    return record


def train_record(res: Any) -> dict[str, Any]:
    """The JSON record of a training run (a :class:`coopt_flwr.learn.training.TrainResult`):
    ``final_acc``, ``train_seconds``, ``epochs`` and ``curve`` ([[seconds, acc]])."""
    return {
        "final_acc": float(res.final_acc),
        "train_seconds": float(res.train_seconds),
        "epochs": float(res.epochs),
        "curve": [[float(t), float(a)] for t, a in res.curve],
    }


def _epoch_curve(ckpt: Path, model: Any, probe: Callable[[Any], float], first: float) -> list[list[float]]:
    """[[epoch, acc]] from the untrained accuracy ``first`` over every epoch checkpoint in ``ckpt``."""
    from coopt_flwr.learn.training import CHECKPOINT_EPOCH, load_checkpoint

    curve = [[0.0, first]]
    epoch = 1
    while (ckpt / CHECKPOINT_EPOCH.format(epoch)).is_file():
        load_checkpoint(ckpt / CHECKPOINT_EPOCH.format(epoch), [model])
        curve.append([float(epoch), float(probe(model.backbone))])
        epoch += 1
    return curve


@dataclass(frozen=True)
class ProbeSets:
    """Labeled images of a linear probe: uint8 (N, H, W, 3) / int64 (N,) train and test parts."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def probe(self, device: str | None) -> Any:
        """``probe(backbone) -> accuracy`` on these sets (:func:`make_probe`)."""
        return make_probe(self.train_images, self.train_labels, self.test_images, self.test_labels, device)


def probe_sets(
    data: Any,
    test_spec: str | None,
    data_dir: str | Path | None,
    seed: int,
    test_fraction: float,
    max_train: int | None,
    max_test: int | None,
) -> ProbeSets:
    """Probe sets for a labeled data set: a seeded part of it to train the probe, and the
    test set ``test_spec`` (capped, seeded) or, without one, the held-out rest of ``data``."""
    from coopt_flwr.learn.quality import probe_split
    from coopt_flwr.registry.datasets import create_dataset

    if data.labels is None:
        raise ValueError(f"{data.name}: a linear probe needs labels")
    split = probe_split(len(data), test_fraction, seed, max_train=max_train, max_test=max_test)
    if test_spec is None:
        return ProbeSets(
            data.images[split.train],
            data.labels[split.train],
            data.images[split.test],
            data.labels[split.test],
        )
    test = create_dataset(dataset_spec(test_spec, data_dir))
    if test.labels is None:
        raise ValueError(f"{test_spec}: the probe's test set needs labels")
    ids = np.arange(len(test))
    if max_test is not None and max_test < len(test):
        ids = np.sort(
            np.random.default_rng([int(seed), 0x7E5]).choice(len(test), size=int(max_test), replace=False)
        )
    train = np.union1d(split.train, split.test)  # all of data is probe-train material here
    if max_train is not None and max_train < len(train):
        train = np.sort(
            np.random.default_rng([int(seed), 0x7A1]).choice(train, size=int(max_train), replace=False)
        )
    return ProbeSets(data.images[train], data.labels[train], test.images[ids], test.labels[ids])


def balanced_splits(labels: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint, seeded, class-balanced splits of the ids ``0..N-1`` of a labeled set.

    Split j takes ``sizes[j] // C`` ids of every class (the remainder to classes in a seeded
    order), drawn without replacement from what the earlier splits left.

    Parameters
    ----------
    labels
        int (N,) class ids.
    sizes
        The size of each split.
    seed
        Seed of the draw; the same arguments give the same splits.

    Returns
    -------
    list of np.ndarray
        Sorted int64 ids of each split.

    Raises
    ------
    ValueError
        If a class has fewer samples than the splits together need of it.
    """
    y = np.asarray(labels)
    classes = np.unique(y)
    rng = np.random.default_rng([int(seed), 0xC011])
    pools = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    taken = dict.fromkeys(classes, 0)
    out = []
    for size in sizes:
        quota = np.full(len(classes), int(size) // len(classes))
        quota[rng.permutation(len(classes))[: int(size) % len(classes)]] += 1
        picks = []
        for c, q in zip(classes, quota, strict=True):
            if taken[c] + q > len(pools[c]):
                raise ValueError(f"class {c} has {len(pools[c])} samples; the splits {list(sizes)} need more")
            picks.append(pools[c][taken[c] : taken[c] + q])
            taken[c] += q
        out.append(np.sort(np.concatenate(picks)).astype(np.int64))
    return out


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A GitHub markdown table; floats as given (format them first), None as an en dash."""

    def cell(v: Any) -> str:
        return "–" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
