"""Train your own model on an optimized data set: a student regresses the merged targets.

    python -m simulations.train optimized=outputs/<run>                        # digits defaults
    python -m simulations.train optimized=DIR dataset=SPEC arch=resnet18 cifar-stem=true epochs=30
    python -m simulations.train optimized=DIR time-budget-s=600 device=cuda output-dir=DIR
    python -m simulations.train optimized=DIR output-dir=DIR resume=true       # continue a run
    python -m simulations.train optimized=DIR keep-ids=kept.json               # a pruned subset

``optimized`` is a run's output folder (``optimized.safetensors`` + ``summary.json``) or its
``.safetensors`` file. ``dataset`` defaults to the spec the run recorded in ``summary.json``
(with its ``data-root``); the command checks that the optimized set fits the data set (ids in
range, the data set's size against the one the run recorded) before any training.

The student is any timm architecture (``arch``, plus the project's ``cifar-stem``) with a
linear head to the target width, trained through :func:`coopt_flwr.learn.student.train_student`:
centered targets, loss ``1 - cos``, random crop (padding ``pad``) and flip, SGD or AdamW with
warm-up and cosine decay, a budget in ``epochs`` and/or ``time-budget-s``, a progress bar, a
checkpoint after every epoch, CUDA when present (``device``).

Linear probe (data sets with labels): a seeded, class-stratified fraction ``probe-holdout`` of
the optimized ids is held out; the student never trains on it. The probe fits on the labels of
the other optimized ids and scores on the held-out ones, before training and at the end (the
``curve``). Nothing is chosen on it: no early stopping, no checkpoint selection.
``probe-holdout=0`` disables it (and trains on every id). With ``keep-ids`` (a pruning output,
:func:`coopt_flwr.learn.pruning.load_kept_ids`) the student trains on the kept ids that are
not held out, while the probe's sets stay those of the whole optimized set, so probes of
different prunings of one set are comparable.

Writes into ``output-dir``: ``student.safetensors`` + ``student.json``
(:func:`coopt_flwr.learn.export.load_student` loads them as a ready timm model),
``train.json`` (settings, sample counts, loss per epoch, probe curve, seconds, epochs) and
``checkpoints/``.

Resume: ``resume=true`` continues from the newest checkpoint in ``output-dir`` for the budget
left (epochs or seconds). The loop's checkpoints hold weights only, so the resumed part starts
a fresh optimizer and a cosine schedule over the remaining budget (no warm-up): a resumed
run is close to, not identical with, an uninterrupted one. ``resume=false`` (the default)
starts over and deletes the folder's old checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import OPTIMIZED_FILE, SUMMARY_FILE, write_json
from simulations.common import output_folder, train_config

CONF_PATH = str(CONF_DIR)
TRAIN_FILE = "train.json"
CHECKPOINTS = "checkpoints"
RUN_RECORD = "run.json"
SEGMENT = "segment-{:02d}"
SEGMENT_RESULT = "result.json"
_HOLDOUT_SALT = 0x4E1D
# A budget left below this counts as spent (float round-off of epochs / seconds).
_EPS = 1e-9


# ---------------------------------------------------------------------------- inputs
def resolve_optimized(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The ``optimized.safetensors`` of ``path`` (a run's folder or the file) and its ``summary.json``.

    Returns
    -------
    file : Path
        The safetensors file, absolute.
    summary : dict or None
        The run's summary beside it, None when there is none.

    Raises
    ------
    FileNotFoundError
        Neither a folder holding ``optimized.safetensors`` nor such a file.
    ValueError
        A ``summary.json`` that does not parse.
    """
    p = Path(str(path)).expanduser().resolve()
    file = p / OPTIMIZED_FILE if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(
            f"no optimized set at {file}: give optimized= the run's output folder or its {OPTIMIZED_FILE}"
        )
    summary_path = file.parent / SUMMARY_FILE
    if not summary_path.is_file():
        return file, None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{summary_path} is not valid JSON: {err}") from err
    return file, summary if isinstance(summary, dict) else None


def dataset_of(cfg: Mapping[str, Any], summary: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """The data-set spec and data root: ``dataset`` / ``data-root`` when given, else the run's.

    Raises
    ------
    ValueError
        No ``dataset`` given and no ``summary.json`` recording one.
    """
    run = (summary or {}).get("config") or {}
    spec = cfg.get("dataset") or run.get("dataset")
    if not spec:
        raise ValueError(
            "no dataset given and the optimized set has no summary.json recording one: pass dataset=SPEC"
        )
    root = cfg.get("data-root")
    if root is None:
        root = run.get("data-root") if not cfg.get("dataset") or spec == run.get("dataset") else None
    return str(spec), (str(root) if root else None)


def check_pairing(data_size: int, spec: str, summary: Mapping[str, Any] | None) -> None:
    """Refuse a data set the run's ``summary.json`` says the optimized set was not made from.

    Raises
    ------
    ValueError
        A local-data-mode run, or a data set whose size differs from the run's ``num-samples``.
    """
    if summary is None:
        return
    if summary.get("data-mode") == "local":
        raise ValueError(
            "the optimized set comes from a local-data-mode run: its ids name the participants' own "
            "samples, which no data-set spec holds"
        )
    n = summary.get("num-samples")
    if n is not None and int(n) != data_size:
        run_spec = (summary.get("config") or {}).get("dataset", "?")
        raise ValueError(
            f"the optimized set was made from a data set of {int(n)} samples ({run_spec}), "
            f"but {spec} holds {data_size}: pass the run's data set (dataset=...)"
        )


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, class-stratified held-out mask: about ``fraction`` of every class.

    Each class of ``n_c`` samples gives ``round(fraction * n_c)`` of them, at most ``n_c - 1``
    (a class keeps a sample to train the probe on), none of a class of one sample.

    Parameters
    ----------
    labels : np.ndarray
        int (M,) class of each sample.
    fraction : float
        In [0, 1).
    seed : int
        Seed of the draw.

    Returns
    -------
    np.ndarray
        bool (M,), True for held-out samples.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"probe-holdout must lie in [0, 1), got {fraction}")
    y = np.asarray(labels)
    mask = np.zeros(y.shape[0], dtype=bool)
    rng = np.random.default_rng([int(seed), _HOLDOUT_SALT])
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = min(round(fraction * members.size), members.size - 1)
        if k > 0:
            mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").data).hexdigest()[:16]


# ---------------------------------------------------------------------------- checkpoints
@dataclass
class Progress:
    """What earlier parts of a resumed run did (:func:`prior_progress`)."""

    epochs: float = 0.0
    train_seconds: float = 0.0
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)


def _segments(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("segment-*") if p.is_dir())


def _newest_checkpoint(segment: Path) -> Path | None:
    from coopt_flwr.learn.training import CHECKPOINT_LAST

    if (segment / CHECKPOINT_LAST).is_file():
        return segment / CHECKPOINT_LAST
    epochs = sorted(segment.glob("epoch_*.pt"))
    return epochs[-1] if epochs else None


def prior_progress(root: Path, modules: list[Any]) -> Progress:
    """Load the newest weights of a checkpoint folder into ``modules``; sum what was done.

    Each part of a run (``segment-NN``) holds the loop's checkpoints; a finished part also its
    ``result.json`` (losses, curve). The newest checkpoint of every part counts, and the last
    part's is the one loaded last (so the weights are the newest).
    """
    from coopt_flwr.learn.training import load_checkpoint

    done = Progress()
    for segment in _segments(root):
        newest = _newest_checkpoint(segment)
        if newest is None:
            continue
        meta = load_checkpoint(newest, modules)
        result_path = segment / SEGMENT_RESULT
        if result_path.is_file():
            result = json.loads(result_path.read_text(encoding="utf-8"))
            done.losses += [float(v) for v in result["losses"]]
            done.curve += [[float(t), float(a)] for t, a in result["curve"]]
        done.segments.append(
            {"segment": segment.name, "epochs": float(meta["epoch"]), "train_seconds": meta["train_seconds"]}
        )
        done.epochs += float(meta["epoch"])
        done.train_seconds += float(meta["train_seconds"])
        done.steps += int(meta["step"])
    return done


def _check_run_record(path: Path, record: Mapping[str, Any]) -> None:
    saved = json.loads(path.read_text(encoding="utf-8"))
    differ = sorted(k for k in record if saved.get(k) != record[k])
    if differ:
        what = ", ".join(f"{k}: {saved.get(k)!r} then, {record[k]!r} now" for k in differ)
        raise ValueError(
            f"cannot resume from {path.parent}: its checkpoints were trained with other settings "
            f"({what}); use another output-dir or resume=false"
        )


# ---------------------------------------------------------------------------- the command
@dataclass
class TrainInputs:
    """The data of one training run: aligned arrays and who is trained / probed."""

    file: Path  # the optimized.safetensors
    spec: str
    images: np.ndarray  # uint8 (M, H, W, 3), the whole optimized set (or what keep-ids allows)
    targets: np.ndarray  # float32 (M, n)
    ids: np.ndarray  # int64 (M,)
    labels: np.ndarray | None  # int64 (M,)
    train: np.ndarray  # bool (M,): the student trains on these
    held_out: np.ndarray  # bool (M,): the probe scores on these
    fingerprint: str
    kept: int | None


def load_inputs(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> TrainInputs:
    """Read and check the optimized set against the data set; split train / held-out.

    Raises
    ------
    ValueError, FileNotFoundError
        A missing optimized set, a data set it does not fit, bad ``keep-ids``, nothing to train on.
    """
    from coopt_flwr.learn.optimized import fingerprint, optimized_rows, paired_arrays
    from coopt_flwr.registry.datasets import create_dataset
    from coopt_flwr.store.storage import load_optimized

    file, summary = resolve_optimized(cfg["optimized"])
    spec, root = dataset_of(cfg, summary)
    run_spec = ((summary or {}).get("config") or {}).get("dataset")
    if run_spec and spec != run_spec:
        log(f"[train] note: the run used {run_spec}; training on {spec}")
    data = create_dataset(spec, data_root=root)
    check_pairing(len(data), spec, summary)
    optimized = load_optimized(file)
    images, targets, ids = paired_arrays(data, optimized)
    if summary is not None and not summary.get("complete", True):
        log(
            f"[train] note: the run left {len(data) - len(ids)} samples without targets; using the {len(ids)}"
        )
    train = np.ones(len(ids), dtype=bool)
    kept = None
    if cfg.get("keep-ids"):
        from coopt_flwr.learn.pruning import load_kept_ids

        keep, _ = optimized_rows(optimized, len(data), load_kept_ids(cfg["keep-ids"]))
        train &= np.isin(ids, keep)
        kept = int(keep.size)
    labels = data.batch_labels(ids)
    holdout = float(cfg.get("probe-holdout") or 0.0)
    if labels is not None and holdout > 0:
        held_out = stratified_holdout(labels, holdout, int(cfg["seed"]))
    else:
        if labels is None and holdout > 0:
            log(f"[train] note: {spec} has no labels: no linear probe")
        held_out = np.zeros(len(ids), dtype=bool)
    train &= ~held_out
    if not train.any():
        raise ValueError("no sample left to train on (keep-ids and the probe's held-out ids cover them all)")
    return TrainInputs(
        file, spec, images, targets, ids, labels, train, held_out, fingerprint(optimized), kept
    )


def _budget(cfg: Mapping[str, Any]) -> tuple[float | None, float | None]:
    epochs = cfg.get("epochs")
    seconds = cfg.get("time-budget-s")
    if epochs is None and seconds is None:
        raise ValueError("give a budget: epochs=N and/or time-budget-s=S")
    return (None if epochs is None else float(epochs)), (None if seconds is None else float(seconds))


def _pad(cfg: Mapping[str, Any], image_size: int) -> int:
    pad = cfg.get("pad")
    # An eighth of the side: the CIFAR convention (4 px of 32) that still fits 8x8 digits (1 px).
    return max(1, image_size // 8) if pad is None else int(pad)


def run_train(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, probe and export a student as ``cfg`` says; returns (and writes) ``train.json``."""
    from coopt_flwr.devices import resolve_device
    from coopt_flwr.learn.export import save_student
    from coopt_flwr.learn.probe import LinearProbe
    from coopt_flwr.learn.student import Student, channel_stats, train_student

    start = time.perf_counter()
    if OmegaConf.is_missing(cfg, "optimized"):
        raise ValueError("give the optimized set: optimized=DIR (a run's output folder) or its .safetensors")
    epochs, seconds = _budget(cfg)
    inputs = load_inputs(cfg, log)
    out = output_folder(cfg)
    seed = int(cfg["seed"])
    arch, cifar_stem = str(cfg["arch"]), bool(cfg["cifar-stem"])
    device = resolve_device(str(cfg["device"]) or None)

    x_train, y_train = inputs.images[inputs.train], inputs.targets[inputs.train]
    mean, std = channel_stats(x_train)
    student = Student.create(arch, inputs.targets.shape[1], cifar_stem=cifar_stem, seed=seed)
    probe = None
    if inputs.held_out.any():
        pool = ~inputs.held_out  # every optimized id not held out (pruned ones too)
        probe = LinearProbe(
            inputs.images[pool],
            inputs.labels[pool],  # type: ignore[index]
            inputs.images[inputs.held_out],
            inputs.labels[inputs.held_out],  # type: ignore[index]
            mean=mean,
            std=std,
            device=device,
        )

    # Checkpoints: one folder per part of the run, and what the parts must agree on.
    root = out / CHECKPOINTS
    run_record = {
        "optimized_fingerprint": inputs.fingerprint,
        "dataset": inputs.spec,
        "arch": arch,
        "cifar_stem": cifar_stem,
        "seed": seed,
        "trained_ids": _ids_digest(inputs.ids[inputs.train]),
    }
    done = Progress()
    if bool(cfg["resume"]) and (root / RUN_RECORD).is_file():
        _check_run_record(root / RUN_RECORD, run_record)
        done = prior_progress(root, [student])
        if done.segments:
            log(f"[train] resuming after {done.epochs:.2f} epochs / {done.train_seconds:.0f} s of training")
    elif root.exists():
        shutil.rmtree(root)  # a fresh run: stale parts would confuse a later resume
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / RUN_RECORD, run_record)
    segment = root / SEGMENT.format(len(_segments(root)))

    left_epochs = None if epochs is None else epochs - done.epochs
    left_seconds = None if seconds is None else seconds - done.train_seconds
    spent = (left_epochs is not None and left_epochs <= _EPS) or (
        left_seconds is not None and left_seconds <= _EPS
    )
    n_train = int(inputs.train.sum())
    log(
        f"[train] {arch} on {n_train} of {len(inputs.ids)} optimized samples of {inputs.spec} "
        f"(targets {inputs.targets.shape[1]}-d, {int(inputs.held_out.sum())} held out for the probe) "
        f"on {device} -> {out}"
    )
    curve = list(done.curve)
    losses = list(done.losses)
    steps = done.steps
    if spent:
        log("[train] the budget is already spent: probing and exporting the checkpoint")
        if probe is not None:
            curve.append([done.train_seconds, float(probe(student.backbone))])
        total_epochs, total_seconds = done.epochs, done.train_seconds
    else:
        block = {
            "epochs": left_epochs,
            "time_budget_s": left_seconds,
            "batch_size": int(cfg["batch-size"]),
            "optimizer": str(cfg["optimizer"]),
            "lr": float(cfg["lr"]),
            "weight_decay": float(cfg["weight-decay"]),
            # A resumed part starts from trained weights: no second warm-up.
            "warmup_frac": 0.0 if done.segments else float(cfg["warmup-frac"]),
        }
        eval_every = cfg.get("eval-every-s")
        tcfg = train_config(
            block,
            seed + len(done.segments),  # a resumed part draws new permutations
            str(device),
            checkpoint_dir=str(segment),
            progress=bool(cfg["progress"]),
            eval_every_s=None if eval_every is None else float(eval_every),
        )
        res = train_student(
            student,
            x_train,
            y_train,
            tcfg,
            evaluate=None if probe is None else (lambda: probe(student.backbone)),
            mean=mean,
            std=std,
            augment=bool(cfg["augment"]),
            pad=_pad(cfg, int(x_train.shape[1])),
            center=bool(cfg["center-targets"]),
        )
        part_curve = [[done.train_seconds + float(t), float(a)] for t, a in res.curve]
        write_json(
            segment / SEGMENT_RESULT,
            {"losses": res.losses, "curve": part_curve, "epochs": res.epochs, "steps": res.steps},
        )
        curve += part_curve
        losses += [float(v) for v in res.losses]
        steps += int(res.steps)
        total_epochs = done.epochs + float(res.epochs)
        total_seconds = done.train_seconds + float(res.train_seconds)

    image_size = (int(x_train.shape[1]), int(x_train.shape[2]))
    probe_acc = curve[-1][1] if probe is not None and curve else None
    save_student(
        out,
        student,
        arch=arch,
        cifar_stem=cifar_stem,
        image_size=image_size,
        mean=mean,
        std=std,
        optimized_fingerprint=inputs.fingerprint,
        extra={"dataset": inputs.spec, "epochs": total_epochs, "probe_acc": probe_acc},
    )
    record = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "optimized": str(inputs.file),
        "optimized_fingerprint": inputs.fingerprint,
        "dataset": inputs.spec,
        "arch": arch,
        "cifar_stem": cifar_stem,
        "image_size": list(image_size),
        "feature_dim": student.feature_dim,
        "target_dim": student.target_dim,
        "normalization": {"mean": list(mean), "std": list(std)},
        "device": str(device),
        "samples": {
            "optimized": len(inputs.ids),
            "kept": inputs.kept,
            "trained": n_train,
            "held_out": int(inputs.held_out.sum()),
            "probe_train": 0 if probe is None else int((~inputs.held_out).sum()),
        },
        "epochs": total_epochs,
        "steps": steps,
        "train_seconds": total_seconds,
        "wall_seconds": time.perf_counter() - start,
        "losses": losses,
        "curve": curve,
        "probe_acc": probe_acc,
        # The first probe is of the untrained student unless the run's first part was interrupted.
        "probe_acc_untrained": curve[0][1] if probe is not None and curve and curve[0][0] == 0.0 else None,
        "resumed_from": done.segments,
        "student": "student.safetensors",
    }
    write_json(out / TRAIN_FILE, record)
    log(summary_line(record, out))
    return record


def summary_line(record: Mapping[str, Any], out: Path) -> str:
    """The command's last line: what was trained, how long, the loss and the probe."""
    losses = record["losses"]
    loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss recorded"
    probe = "no probe"
    if record["probe_acc"] is not None:
        held = record["samples"]["held_out"]
        probe = f"probe accuracy {100 * record['probe_acc']:.1f} % on {held} held-out ids"
        if record["probe_acc_untrained"] is not None:
            probe += f" (untrained {100 * record['probe_acc_untrained']:.1f} %)"
    return (
        f"[train] {record['arch']} on {record['samples']['trained']} samples of {record['dataset']}: "
        f"{record['epochs']:.1f} epochs in {record['train_seconds']:.0f} s "
        f"({record['wall_seconds']:.0f} s wall), {loss}, {probe} -> {out}"
    )


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="train")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    run_train(cfg)


if __name__ == "__main__":
    main()
