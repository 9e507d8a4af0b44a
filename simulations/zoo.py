"""Prior zoo: train priors of different paradigms and keep early checkpoints as weak priors.

    python -m simulations.zoo output-dir=outputs/zoo                      # CIFAR-10, ResNet-18
    python -m simulations.zoo profile=tiny output-dir=/tmp/zoo            # digits, ~1 min
    python -m simulations.zoo arch=resnet10t size=64 paradigms=[byol]     # any timm architecture

For each paradigm (``supervised``: cross-entropy on the labels of the prior data set;
``byol``: BYOL from :mod:`coopt_flwr.learn.ssl`, labels unused) a timm backbone ``arch`` is trained
from a seeded random init with the shared loop :func:`coopt_flwr.learn.training.fit`, at the input
size ``size`` and with the normalization the prior registry applies to that architecture, so
that the saved weights mean the same thing when loaded as a prior. The checkpoints of the
epochs in ``weak_epochs`` are kept as weak priors, the last epoch as the trained prior.

Writes into the output folder, per checkpoint, ``<name>.safetensors`` (the backbone's
state_dict) and ``<name>.json`` (:data:`META_KEYS`: among them ``spec``, the prior spec that
loads it, ``weak:<arch>?checkpoint=...&size=N`` for early and ``timm:<arch>?checkpoint=...``
for final checkpoints, and ``probe_acc``, the linear-probe accuracy of its own features,
measured through that very spec); and for the whole zoo ``zoo.json`` (the list),
``zoo.csv`` and ``zoo.png`` (probe accuracy of every checkpoint by epoch and paradigm).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import write_json
from simulations.common import (
    output_folder,
    probe_sets,
    pyplot,
    save_figure,
    train_config,
    train_spec,
    write_csv,
)

CONF_PATH = str(CONF_DIR / "zoo")
PARADIGMS = ("supervised", "byol")
ZOO_FILE = "zoo.json"
ZOO_CSV = "zoo.csv"
ZOO_PLOT = "zoo.png"

# Keys of a checkpoint's metadata (<name>.json and the entries of zoo.json).
NAME = "name"
SPEC = "spec"  # the prior spec that loads the checkpoint
KIND = "kind"  # "weak" (an early epoch) or "trained" (the last epoch)
PARADIGM = "paradigm"
ARCH = "arch"
SIZE = "size"
EPOCH = "epoch"
EPOCHS = "epochs"  # epochs of the whole training run
FILE = "file"
DATASET = "dataset"
SEED = "seed"
PROBE_ACC = "probe_acc"
TRAIN_SECONDS = "train_seconds"  # training wall time up to this epoch
CREATED = "created"
META_KEYS = (
    NAME,
    SPEC,
    KIND,
    PARADIGM,
    ARCH,
    SIZE,
    EPOCH,
    EPOCHS,
    FILE,
    DATASET,
    SEED,
    PROBE_ACC,
    TRAIN_SECONDS,
)

_SPEC_UNSAFE = "?&,>"  # would break the spec string or the prior lists it goes into


def checkpoint_spec(arch: str, path: Path, size: int, weak: bool) -> str:
    """The prior spec of a zoo checkpoint (``weak:`` for early epochs, ``timm:`` otherwise).

    Raises
    ------
    ValueError
        If the path holds a character that spec strings or prior lists use as a separator.
    """
    text = str(path)
    bad = sorted({c for c in text if c in _SPEC_UNSAFE})
    if bad:
        raise ValueError(
            f"checkpoint path {text!r} contains {bad}; choose an output folder without {_SPEC_UNSAFE!r}"
        )
    return f"{'weak' if weak else 'timm'}:{arch}?checkpoint={text}&size={int(size)}"


def _normalization(backbone: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the prior registry uses for this model (timm's data config)."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=backbone)
    return tuple(config["mean"]), tuple(config["std"])


def _supervised(
    backbone: Any, dim: int, labels: np.ndarray, num_classes: int, size: int, seed: int
) -> tuple[Callable, list, Callable | None]:
    """Step, trainable modules and after-step of cross-entropy training at ``size`` px."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from coopt_flwr.learn.training import augment_crop_flip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        head = nn.Linear(dim, num_classes)
    mean, std = _normalization(backbone)
    y = torch.as_tensor(labels, dtype=torch.int64)
    state: dict[str, Any] = {}

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        dev = x.device
        if "gen" not in state:
            state["gen"] = torch.Generator(device=dev).manual_seed(seed + 1_000_003)
            state["m"] = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
            state["s"] = torch.tensor(std, device=dev).view(1, 3, 1, 1)
            state["y"] = y.to(dev)
        xf = augment_crop_flip(x, pad=max(1, x.shape[1] // 8), generator=state["gen"])
        if tuple(xf.shape[-2:]) != (size, size):
            xf = F.interpolate(xf, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        logits = head(backbone((xf - state["m"]) / state["s"]))
        return F.cross_entropy(logits.float(), state["y"][idx])

    return step, [backbone, head], None


def _byol(backbone: Any, dim: int, size: int, seed: int) -> tuple[Callable, list, Callable]:
    from coopt_flwr.learn.ssl import create_ssl

    mean, std = _normalization(backbone)
    method = create_ssl(
        "byol", backbone, dim, size, seed=seed, normalize={"mean": list(mean), "std": list(std)}
    )
    return method.step, method.trainable_modules(), method.after_step


def _train_checkpoints(
    paradigm: str,
    arch: str,
    size: int,
    data: Any,
    train: Any,
    epochs: int,
    seed: int,
    device: str | None,
    tmp: str,
) -> tuple[Any, list]:
    """Train a seeded ``arch`` backbone with ``paradigm``, a checkpoint per epoch in ``tmp``;
    returns the backbone and the trained modules (the order the checkpoints hold them in)."""
    from coopt_flwr.learn.student import create_backbone
    from coopt_flwr.learn.training import fit

    backbone, dim = create_backbone(arch, cifar_stem=False, seed=seed)
    if paradigm == "supervised":
        if data.labels is None:
            raise ValueError(f"{data.name}: supervised training needs labels")
        step, modules, after = _supervised(backbone, dim, data.labels, int(data.num_classes), size, seed)
    else:
        step, modules, after = _byol(backbone, dim, size, seed)
    cfg = train_config(
        {**dict(train), "epochs": epochs, "time_budget_s": None}, seed, device, checkpoint_dir=tmp
    )
    fit(step, modules, data.images, cfg, after_step=after)
    return backbone, modules


def train_prior(
    paradigm: str,
    arch: str,
    size: int,
    data: Any,
    train: Any,
    epochs: int,
    weak_epochs: Sequence[int],
    seed: int,
    device: str | None,
    out: Path,
    dataset: str,
    evaluate: Callable[[str], float],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train one prior and save its kept checkpoints; returns their metadata (weak first).

    Parameters
    ----------
    paradigm
        One of :data:`PARADIGMS`.
    arch, size
        timm architecture and the input size (px) it is trained and used at.
    data
        The labeled prior data set (:class:`coopt_flwr.registry.datasets.ImageData`).
    train
        A profile ``train`` block (optimizer, lr, batch size ...; the epochs come from ``epochs``).
    epochs, weak_epochs
        Length of training, and the earlier epochs whose checkpoints are kept as weak priors.
    evaluate
        ``evaluate(spec) -> accuracy``: the probe of a saved checkpoint, through its spec.
    """
    from safetensors.torch import save_file

    from coopt_flwr.learn.training import CHECKPOINT_EPOCH, load_checkpoint

    if paradigm not in PARADIGMS:
        raise ValueError(f"unknown paradigm {paradigm!r}; choose from {PARADIGMS}")
    keep = sorted({int(e) for e in weak_epochs} | {epochs})
    results = []
    with tempfile.TemporaryDirectory(prefix="coopt-zoo-", dir=out) as tmp:
        log(f"[zoo] {paradigm} {arch} @ {size}px: {epochs} epochs on {len(data)} images")
        backbone, modules = _train_checkpoints(paradigm, arch, size, data, train, epochs, seed, device, tmp)
        for epoch in keep:
            meta = load_checkpoint(Path(tmp) / CHECKPOINT_EPOCH.format(epoch), modules)
            name = f"{paradigm}-{arch}-s{size}-e{epoch:03d}"
            file = out / f"{name}.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, str(file))
            spec = checkpoint_spec(arch, file, size, weak=epoch < epochs)
            record = {
                NAME: name,
                SPEC: spec,
                KIND: "weak" if epoch < epochs else "trained",
                PARADIGM: paradigm,
                ARCH: arch,
                SIZE: int(size),
                EPOCH: int(epoch),
                EPOCHS: int(epochs),
                FILE: str(file),
                DATASET: dataset,
                SEED: int(seed),
                PROBE_ACC: float(evaluate(spec)),
                TRAIN_SECONDS: float(meta["train_seconds"]),
                CREATED: time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            write_json(out / f"{name}.json", record)
            log(f"[zoo] {name}: linear-probe accuracy {record[PROBE_ACC]:.4f} ({record[KIND]}) -> {file}")
            results.append(record)
    return results


def prior_probe(sets: Any, seed: int, device: str | None, batch_size: int = 256) -> Callable[[str], float]:
    """``evaluate(spec)``: build the prior from its spec, embed the probe sets, fit the probe."""
    from coopt_flwr.learn.probe import linear_probe
    from coopt_flwr.registry.priors import clear_prior_cache, create_prior

    def evaluate(spec: str) -> float:
        prior = create_prior(spec, seed=seed, batch_size=batch_size, device=device or None)
        train = prior.embed(sets.train_images, sets.train_labels)
        test = prior.embed(sets.test_images, sets.test_labels)
        clear_prior_cache()  # each checkpoint is looked at once
        return linear_probe(train, sets.train_labels, test, sets.test_labels)

    return evaluate


def plot_zoo(path: Path, records: Sequence[dict[str, Any]], title: str) -> Path:
    """Probe accuracy of every checkpoint against its epoch, one line per paradigm."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=130)
    for i, paradigm in enumerate(sorted({r[PARADIGM] for r in records})):
        rows = sorted((r for r in records if r[PARADIGM] == paradigm), key=lambda r: r[EPOCH])
        ax.plot(
            [r[EPOCH] for r in rows], [100 * r[PROBE_ACC] for r in rows], "-", color=f"C{i}", label=paradigm
        )
        for r in rows:
            ax.plot(
                r[EPOCH],
                100 * r[PROBE_ACC],
                "o" if r[KIND] == "trained" else "s",
                color=f"C{i}",
                mfc="none" if r[KIND] == "weak" else f"C{i}",
            )
    ax.plot([], [], "ks", mfc="none", label="weak (early) checkpoint")
    ax.plot([], [], "ko", label="trained (last epoch)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training epoch of the checkpoint")
    ax.set_ylabel("linear-probe top-1 accuracy of its features (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def run_zoo(cfg: DictConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every paradigm of the profile; writes the checkpoints and the zoo files."""
    from coopt_flwr.registry.datasets import create_dataset

    out = output_folder(cfg)
    seed = int(cfg.seed)
    epochs = int(cfg.epochs)
    if epochs != cfg.epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {cfg.epochs}")
    weak = [int(e) for e in cfg.weak_epochs]
    if any(not 1 <= e < epochs for e in weak):
        raise ValueError(f"weak_epochs must lie in [1, {epochs - 1}], got {weak}")
    spec = train_spec(cfg)
    data = create_dataset(spec)
    sets = probe_sets(
        data,
        cfg.data.test,
        cfg.data_dir,
        seed,
        float(cfg.probe.test_fraction),
        cfg.probe.max_train,
        cfg.probe.max_test,
    )
    evaluate = prior_probe(sets, seed, str(cfg.device))
    checkpoint_spec(str(cfg.arch), out / "x.safetensors", int(cfg.size), weak=False)  # a bad folder fails now
    records: list[dict[str, Any]] = []
    for paradigm in cfg.paradigms:
        records += train_prior(
            str(paradigm),
            str(cfg.arch),
            int(cfg.size),
            data,
            cfg.train,
            epochs,
            weak,
            seed,
            str(cfg.device),
            out,
            spec,
            evaluate,
            log,
        )
        write_json(out / ZOO_FILE, records)
    write_csv(out / ZOO_CSV, [{k: r[k] for k in META_KEYS} for r in records])
    plot_zoo(
        out / ZOO_PLOT,
        records,
        f"Prior zoo: {cfg.arch} at {cfg.size} px, trained on {cfg.data.train} ({len(data)} images)",
    )
    return records


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    records = run_zoo(cfg)
    for r in records:
        print(f"{r[NAME]:40s} {r[KIND]:8s} probe {r[PROBE_ACC]:.4f}  {r[SPEC]}")


if __name__ == "__main__":
    main()
