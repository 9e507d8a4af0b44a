"""Continuous optimization: R rounds of CoOpt with evolving priors (the paper's Figure 3b analogue).

    python -m simulations.evolve num-rounds=10 output-dir=outputs/evolve-cifar10     # CIFAR-10 profile
    python -m simulations.evolve profile=tiny num-rounds=3 output-dir=/tmp/evolve    # digits, ~1 min

The protocol runs through Flower's simulation engine (the same ServerApp and ClientApp as
``flwr run .``) with ``num-rounds = R``. Each participant holds an evolution path of priors
(profile key ``priors``); from round 2 on about ``upgrade-fraction`` of them upgrade (seeded),
re-embed their shard with the new prior, and everyone re-aligns to the (possibly new) anchor;
the others re-use their cached features. After every round, on the platform:

* ``target_probe_acc``: a linear probe on the merged targets themselves (fit on the targets of
  a seeded train part of D, scored on the rest), cheap enough for every round;
* ``g_before`` / ``g_after``: the target inconsistency G before and after alignment;
* optionally (``student.enabled=true``) ``student_acc``: a fresh student trained on the merged
  targets and linear-probed.

Writes into the output folder, updated after every round: ``evolution.json`` (a list, one
entry per round with keys :data:`ENTRY_KEYS` and more), ``evolution.png`` (quality per round),
``evolution.csv``, and the protocol's own ``optimized.safetensors`` and ``summary.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import write_json
from simulations.common import (
    dataset_spec,
    make_probe,
    output_folder,
    pyplot,
    run_config_overrides,
    save_figure,
    student_accuracy,
    train_spec,
    write_csv,
)

CONF_PATH = str(CONF_DIR / "evolve")
EVOLUTION_FILE = "evolution.json"
EVOLUTION_PLOT = "evolution.png"
EVOLUTION_CSV = "evolution.csv"

# Keys of an evolution.json entry (the stable interface; more keys may follow them).
ROUND = "round"
ANCHOR = "anchor"  # partition id of the anchor participant
UPGRADED = "upgraded"  # partition ids that upgraded at the start of the round
TARGET_PROBE_ACC = "target_probe_acc"
G_BEFORE = "g_before"
G_AFTER = "g_after"
ENTRY_KEYS = (ROUND, ANCHOR, UPGRADED, TARGET_PROBE_ACC, G_BEFORE, G_AFTER)
ANCHOR_PRIOR = "anchor_prior"
STUDENT_ACC = "student_acc"  # None unless student.enabled
STAGES = "stages"  # {partition: stage}
PRIORS = "priors"  # {partition: prior spec used this round}
UNIFORMITY = "uniformity"  # {partition: platform-computed V}
COMPLETE = "complete"
SECONDS = "seconds"  # {"round": protocol seconds, "probe": target-probe seconds, "student": ...}


def run_config(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The Flower run-config of an evolution run: the config's run-config keys (``priors``: the
    profile's evolution paths), its data set and ``out`` (validated by
    :class:`coopt_flwr.config.Settings`)."""
    return run_config_overrides(cfg, {"dataset": train_spec(cfg), "output-dir": str(out)})


def round_entry(
    result: Any, probe_acc: float, student_acc: float | None, seconds: dict[str, float]
) -> dict[str, Any]:
    """One evolution.json entry from a :class:`strategies.coopt.RoundResult`."""
    ok = [n for n in result.nodes if n.status == "ok"]
    return {
        ROUND: int(result.round),
        ANCHOR: result.anchor_partition,
        UPGRADED: [int(p) for p in result.upgraded],
        TARGET_PROBE_ACC: float(probe_acc),
        G_BEFORE: result.g_before,
        G_AFTER: result.g_after,
        ANCHOR_PRIOR: result.anchor_prior,
        STUDENT_ACC: student_acc,
        STAGES: {str(n.partition_id): int(n.stage) for n in ok},
        PRIORS: {str(n.partition_id): n.prior for n in ok},
        UNIFORMITY: {str(n.partition_id): n.uniformity for n in ok},
        COMPLETE: result.missing == 0,
        SECONDS: seconds,
    }


def plot_evolution(path: Path, entries: Sequence[dict[str, Any]], title: str) -> Path:
    """Target quality per round: probe accuracy (left axis, %) and G (right axis), upgrades marked."""
    plt = pyplot()
    rounds = [e[ROUND] for e in entries]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=130)
    ax.plot(
        rounds,
        [100 * e[TARGET_PROBE_ACC] for e in entries],
        "o-",
        lw=2.2,
        color="C0",
        label="linear probe on merged targets",
    )
    students = [(e[ROUND], e[STUDENT_ACC]) for e in entries if e.get(STUDENT_ACC) is not None]
    if students:
        ax.plot(
            *zip(*[(r, 100 * a) for r, a in students], strict=True),
            "s-",
            lw=2.2,
            color="C2",
            label="student linear probe",
        )
    ax.set_xlabel("protocol round")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    g_ax = ax.twinx()
    for key, style, label in ((G_BEFORE, "--", "G before alignment"), (G_AFTER, ":", "G after alignment")):
        pts = [(e[ROUND], e[key]) for e in entries if e.get(key) is not None]
        if pts:
            g_ax.plot(*zip(*pts, strict=True), style, marker=".", color="C3", label=label)
    g_ax.set_ylabel("target inconsistency G (TV distance, 0-1)")
    g_ax.set_ylim(0.0, 1.05)
    for e in entries:
        if e[UPGRADED]:  # just above the plotting area, at the round's x position
            ax.annotate(
                "↑" + ",".join(str(p) for p in e[UPGRADED]),
                xy=(e[ROUND], 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                ha="center",
                va="bottom",
                color="0.35",
            )
    lines = ax.get_legend_handles_labels()
    g_lines = g_ax.get_legend_handles_labels()
    ax.legend(lines[0] + g_lines[0], lines[1] + g_lines[1], fontsize=8, loc="center left", framealpha=0.9)
    ax.set_title(title + "\n(↑p: participants that upgraded their prior that round)", fontsize=10, pad=14)
    return save_figure(fig, path)


def run_evolution(cfg: DictConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the rounds and write the outputs; returns the evolution.json entries."""
    from coopt_flwr.learn.quality import probe_split, target_probe_accuracy
    from coopt_flwr.registry.datasets import create_dataset
    from simulations.run import launch_hydra

    out = output_folder(cfg)
    seed = int(cfg.seed)
    rc = run_config(cfg, out)
    data = create_dataset(rc["dataset"])
    if data.labels is None:
        raise ValueError(f"{rc['dataset']}: measuring target quality needs labels")
    labels = data.labels
    split = probe_split(
        len(data),
        float(cfg.probe.test_fraction),
        seed,
        max_train=cfg.probe.max_train,
        max_test=cfg.probe.max_test,
    )
    student_probe = _student_probe(cfg, data, split) if cfg.student.enabled else None
    title = (
        f"Continuous optimization on {cfg.data.train} ({len(data)} images): {cfg['num-supernodes']} "
        f"participants, {float(cfg['upgrade-fraction']):.0%} upgrade per round"
    )
    entries: list[dict[str, Any]] = []
    clock = {"t": time.perf_counter()}

    def on_round(result: Any, merged: Any) -> dict[str, Any]:
        protocol_s = time.perf_counter() - clock["t"]
        t = time.perf_counter()
        acc = target_probe_accuracy(merged.targets, labels, split, merged.filled)
        seconds = {"round": protocol_s, "probe": time.perf_counter() - t}
        student_acc = None
        if student_probe is not None:
            t = time.perf_counter()
            if merged.filled.all():
                rec = student_accuracy(
                    data.images, merged.targets, student_probe, cfg.student, seed, str(cfg.device), log
                )
                student_acc = rec["final_acc"]
            seconds["student"] = time.perf_counter() - t
        entry = round_entry(result, acc, student_acc, seconds)
        entries.append(entry)
        write_json(out / EVOLUTION_FILE, entries)
        write_csv(out / EVOLUTION_CSV, [_csv_row(e) for e in entries])
        plot_evolution(out / EVOLUTION_PLOT, entries, title)
        g = "-" if result.g_after is None else f"{result.g_after:.3f}"
        log(
            f"[evolve] round {result.round}/{cfg['num-rounds']}: upgraded {entry[UPGRADED]}, anchor "
            f"{entry[ANCHOR]} ({entry[ANCHOR_PRIOR]}), target probe {acc:.4f}, G after {g}"
            + ("" if student_acc is None else f", student {student_acc:.4f}")
        )
        clock["t"] = time.perf_counter()
        return {TARGET_PROBE_ACC: acc, STUDENT_ACC: student_acc}

    rounds = int(cfg["num-rounds"])
    log(f"[evolve] {rounds} rounds, {cfg['num-supernodes']} participants on {rc['dataset']} -> {out}")
    launch_hydra(cfg, rc, on_round=on_round)
    if len(entries) != rounds:
        raise RuntimeError(f"the run stopped after {len(entries)} of {rounds} rounds; see the log above")
    return entries


def _csv_row(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in (*ENTRY_KEYS, ANCHOR_PRIOR, STUDENT_ACC)}


def _student_probe(cfg: DictConfig, data: Any, split: Any) -> Any:
    """The student's linear probe: labeled probe-train images of D, and the test set (or the
    held-out part of D when the profile has no test set)."""
    from coopt_flwr.registry.datasets import create_dataset

    n = min(int(cfg.student.probe_train), len(split.train))
    train_ids = split.train[:n]
    if cfg.data.test is not None:
        test = create_dataset(dataset_spec(str(cfg.data.test), cfg.data_dir))
        test_images, test_labels = test.images, test.labels
    else:
        test_images, test_labels = data.images[split.test], data.labels[split.test]
    return make_probe(
        data.images[train_ids], data.labels[train_ids], test_images, test_labels, str(cfg.device)
    )


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    entries = run_evolution(cfg)
    first, last = entries[0], entries[-1]
    print(
        f"[evolve] target probe {first[TARGET_PROBE_ACC]:.4f} (round 1) -> {last[TARGET_PROBE_ACC]:.4f} "
        f"(round {last[ROUND]}); wrote {Path(str(cfg['output-dir'])) / EVOLUTION_FILE}"
    )


if __name__ == "__main__":
    main()
