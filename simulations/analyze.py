"""The paper's analyses, one command each, writing ``<name>.json``, ``<name>.csv`` and ``<name>.png``:

    python -m simulations.analyze uniformity  output-dir=DIR [profile=tiny] [uniformity.zoo=ZOO_DIR]
    python -m simulations.analyze alignment   output-dir=DIR
    python -m simulations.analyze shared-size output-dir=DIR
    python -m simulations.analyze tsne        output-dir=DIR
    python -m simulations.analyze mixes       output-dir=DIR
    python -m simulations.analyze collaboration output-dir=DIR [collaboration.student.train.time_budget_s=S]

``uniformity``
    For a pool of priors of varied quality (random init, weak, ImageNet-pretrained, and with
    ``uniformity.zoo=DIR`` the home-trained and weak checkpoints of ``simulations.zoo``), the
    uniformity V of each prior's features on the shared set against the linear-probe accuracy
    of those features, and Spearman's ρ (the paper: −0.97).
``alignment``
    No alignment vs alignment to the worst / medium / best prior (by the platform's V): a
    student trained on each merged set, linear-probed after every epoch (the paper's Figure 4d).
``shared-size``
    The shared-set fraction |S|/|D| swept (the paper's Figure 5): target probe, G after
    alignment, and with ``shared_size.student=true`` the student's accuracy.
``tsne``
    t-SNE of the targets of two participants with different priors, before and after
    alignment, coloured by participant and by class (the paper's Figure 4a-c).
``mixes``
    The named prior mixes of the paper's Table 5 (diverse, diverse + weak, diverse + human,
    weak only): anchor, G before and after alignment (analysis 5), the target probe and, with
    ``mixes.student=true``, the student's linear-probe accuracy at the benchmark's budget.

``collaboration``
    Does a federation of different priors make better data than its best member alone? On
    labeled training images: D and a disjoint, class-balanced validation split (every probe
    fits on labeled D and scores on validation; the test set is never loaded). Rows: each
    prior alone (its own linear-probe ceiling, and a student on its raw features of all of D)
    and each configured federation (priors, redundancy r, anchor rule, alignment, standardize):
    target probe and student, with the data work (embedding seconds) and training seconds.
    Writes ``results.json``, ``table.md``, ``collaboration.csv`` and ``collaboration.png``;
    features are cached under ``output-dir/features`` and reused by a re-run there.

Every analysis embeds D once per prior and replays the protocol's steps in process with the
protocol's own functions (:mod:`coopt_flwr.protocol.replay`, checked against the Flower strategy in
the tests); participant k's prior is built with seed ``seed + k`` as the ClientApp does.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import atomic_write, write_json
from simulations.common import (
    balanced_splits,
    dataset_spec,
    make_probe,
    markdown_table,
    output_folder,
    probe_sets,
    pyplot,
    save_figure,
    student_accuracy,
    train_spec,
    write_csv,
)

CONF_PATH = str(CONF_DIR / "analyze")
ANALYSES = ("uniformity", "alignment", "shared-size", "tsne", "mixes", "collaboration")
#: The result JSON of an analysis, ``<name>.json`` unless named here.
RESULT_FILES = {"collaboration": "results.json"}
PAPER_SPEARMAN = -0.97

# Record keys shared by the analyses' JSON and CSV files.
SPEC = "spec"
KIND = "kind"
UNIFORMITY = "uniformity"  # V of the prior's own (raw, L2-normalized) features on S
UNIFORMITY_PROJECTED = "uniformity_projected"  # the platform's V, on W_k ψ_k(S)
PROBE_ACC = "probe_acc"  # linear probe on the prior's own features
TARGET_PROBE_ACC = "target_probe_acc"  # linear probe on the merged targets
STUDENT_ACC = "student_acc"
ANCHOR = "anchor"  # index of the anchor participant (None without alignment)
ANCHOR_PRIOR = "anchor_prior"
G_BEFORE = "g_before"
G_AFTER = "g_after"
G_EVAL = "g_after_eval"  # G after alignment on a fixed evaluation set (comparable across |S|)
MODE = "mode"
FRACTION = "fraction"
SHARED_SAMPLES = "shared_samples"
MIX = "mix"
PRIORS = "priors"


class Workbench:
    """What every analysis needs: the data set, cached features per prior, probes, students.

    Parameters
    ----------
    cfg
        The composed analysis config (``conf/analyze``).
    log
        Progress lines.
    """

    def __init__(self, cfg: DictConfig, log: Callable[[str], None] = print) -> None:
        from coopt_flwr.learn.quality import probe_split
        from coopt_flwr.registry.datasets import create_dataset, shared_subset

        self.cfg = cfg
        self.log = log
        self.seed = int(cfg.seed)
        self.device = str(cfg.device) or None
        self.out = output_folder(cfg)
        self.spec = train_spec(cfg)
        self.data = create_dataset(self.spec)
        if self.data.labels is None:
            raise ValueError(f"{self.spec}: the analyses measure quality with labels")
        self.n = len(self.data)
        self.shared_ids = shared_subset(self.n, float(cfg["shared-fraction"]), self.seed)
        # A fixed set of samples on which every participant's aligned targets are compared.
        eval_rng = np.random.default_rng([self.seed, 0xE5A])
        self.eval_ids = np.sort(
            eval_rng.choice(self.n, size=min(self.n, int(cfg["g-max-samples"])), replace=False)
        )
        p = cfg.probe
        self.split = probe_split(
            self.n, float(p.test_fraction), self.seed, max_train=p.max_train, max_test=p.max_test
        )
        self._features: dict[tuple[str, int], Any] = {}
        self._student_probe: Any = None
        log(f"[analyze] {self.spec}: {self.n} images, |S|={len(self.shared_ids)} -> {self.out}")

    # -- features ----------------------------------------------------------------
    def embedded(self, spec: str, participant: int) -> Any:
        """All of D embedded with participant ``participant``'s prior ``spec`` (cached)."""
        from coopt_flwr.protocol.replay import embed_prior

        key = (spec, self.seed + participant)
        if key not in self._features:
            last = [time.monotonic()]

            def progress(done: int, total: int) -> None:
                if time.monotonic() - last[0] >= 15.0 or done == total:
                    last[0] = time.monotonic()
                    self.log(f"[analyze] {spec}: embedded {done}/{total}")

            e = embed_prior(
                spec,
                self.data,
                seed=key[1],
                batch_size=int(self.cfg["batch-size"]),
                device=self.device,
                progress=progress,
            )
            self.log(f"[analyze] {spec} ({e.kind}, width {e.features.shape[1]}): {e.seconds:.1f} s")
            self._features[key] = e
        return self._features[key]

    def merge(self, specs: Sequence[str], mode: str = "best", shared_ids: np.ndarray | None = None) -> Any:
        """Replay a protocol round with participant k holding ``specs[k]``."""
        from coopt_flwr.protocol.replay import merge_targets, project_all

        embedded = [self.embedded(s, k) for k, s in enumerate(specs)]
        return merge_targets(
            embedded,
            project_all(embedded, int(self.cfg["target-dim"]), self.seed),
            self.n,
            self.shared_ids if shared_ids is None else shared_ids,
            mode,
            seed=self.seed,
            ridge=float(self.cfg.ridge),
            g_max_samples=int(self.cfg["g-max-samples"]),
            eval_ids=self.eval_ids,
        )

    # -- quality -----------------------------------------------------------------
    def target_probe(self, targets: np.ndarray) -> float:
        """Linear probe on the merged targets themselves (seeded split of D)."""
        from coopt_flwr.learn.quality import target_probe_accuracy

        return target_probe_accuracy(targets, self.data.labels, self.split, np.isfinite(targets).all(axis=1))

    def probe_sets(self, max_train: int | None, max_test: int | None) -> Any:
        """Labeled probe sets: a seeded part of D and the profile's test set (or the rest of D)."""
        return probe_sets(
            self.data,
            self.cfg.data.test,
            self.cfg.data_dir,
            self.seed,
            float(self.cfg.probe.test_fraction),
            max_train,
            max_test,
        )

    def student(
        self, targets: np.ndarray, per_epoch: bool = False, epochs: int | None = None
    ) -> dict[str, Any]:
        """Train a fresh student on the merged targets and probe it (see :func:`student_accuracy`)."""
        if self._student_probe is None:
            s = self.cfg.student
            self._student_probe = self.probe_sets(s.probe_train, s.probe_test).probe(self.device)
        block = OmegaConf.to_container(self.cfg.student, resolve=True)
        assert isinstance(block, dict)
        if epochs is not None:
            block["train"] = {**block["train"], "epochs": int(epochs), "time_budget_s": None}
        return student_accuracy(
            self.data.images, targets, self._student_probe, block, self.seed, self.device, self.log, per_epoch
        )


# ---------------------------------------------------------------------------------- analyses
def _short(spec: str) -> str:
    """A readable label for a prior spec in plots (checkpoint paths shortened to the file stem)."""
    if "checkpoint=" in spec:
        head, _, rest = spec.partition("checkpoint=")
        path, _, tail = rest.partition("&")
        spec = f"{head}ckpt={Path(path).stem}" + (f"&{tail}" if tail else "")
    return spec


def _data_label(data: str) -> str:
    """A short label for a data-set spec in plot titles: file name and subset size."""
    head, _, query = data.partition("?")
    name = Path(head.partition(":")[2] or head).name if ":" in head else head
    opts = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
    if opts.get("subset"):
        return f"{name}, {int(opts['subset']):,}-image subset"
    return name


def _zoo_specs(zoo: str | None) -> list[tuple[str, str]]:
    """(spec, label kind) of every checkpoint listed in a zoo folder's ``zoo.json``."""
    import json

    if not zoo:
        return []
    path = Path(str(zoo)).expanduser() / "zoo.json"
    if not path.is_file():
        raise FileNotFoundError(f"no zoo index at {path}; run python -m simulations.zoo output-dir=... first")
    return [(r["spec"], f"zoo-{r['kind']}") for r in json.loads(path.read_text())]


def _embed_images(prior: Any, images: np.ndarray, labels: np.ndarray, batch: int = 1024) -> np.ndarray:
    return np.concatenate(
        [prior.embed(images[s : s + batch], labels[s : s + batch]) for s in range(0, len(images), batch)]
    )


def analyze_uniformity(wb: Workbench) -> dict[str, Any]:
    """Uniformity against the linear-probe accuracy of each prior's own features."""
    from coopt_flwr.learn.probe import linear_probe
    from coopt_flwr.learn.quality import spearman
    from coopt_flwr.protocol.projection import project, projection_matrix
    from coopt_flwr.protocol.uniformity import uniformity
    from coopt_flwr.registry.priors import clear_prior_cache, create_prior

    cfg = wb.cfg.uniformity
    pool = [(str(s), None) for s in cfg.pool] + _zoo_specs(cfg.zoo)
    if len(pool) < 3:
        raise ValueError("the uniformity analysis needs at least 3 priors (the paper uses a pool of >= 8)")
    sets = wb.probe_sets(cfg.probe_train, cfg.probe_test)
    s_images, s_labels = wb.data.images[wb.shared_ids], wb.data.labels[wb.shared_ids]
    rows, shared_targets = [], []
    for i, (spec, label) in enumerate(pool):
        t = time.perf_counter()
        prior = create_prior(spec, seed=wb.seed + i, batch_size=int(wb.cfg["batch-size"]), device=wb.device)
        shared = _embed_images(prior, s_images, s_labels)
        train = _embed_images(prior, sets.train_images, sets.train_labels)
        test = _embed_images(prior, sets.test_images, sets.test_labels)
        projected = project(shared, projection_matrix(shared.shape[1], int(wb.cfg["target-dim"]), wb.seed))
        row = {
            SPEC: spec,
            KIND: label or prior.kind,
            "feature_dim": int(prior.feature_dim),
            UNIFORMITY: uniformity(shared),
            UNIFORMITY_PROJECTED: uniformity(projected),
            PROBE_ACC: linear_probe(train, sets.train_labels, test, sets.test_labels),
            "seconds": time.perf_counter() - t,
        }
        shared_targets.append(projected)
        clear_prior_cache()
        wb.log(
            f"[analyze] uniformity {i + 1}/{len(pool)} {spec}: "
            f"V={row[UNIFORMITY]:.4f}, probe {row[PROBE_ACC]:.4f}"
        )
        rows.append(row)
    ridge = _score_anchor_rules(rows, shared_targets, wb.seed)
    v = np.array([r[UNIFORMITY] for r in rows])
    vp = np.array([r[UNIFORMITY_PROJECTED] for r in rows])
    acc = np.array([r[PROBE_ACC] for r in rows])
    result = {
        PRIORS: rows,
        "spearman": spearman(v, acc),
        "spearman_projected": spearman(vp, acc),
        # the other anchor scores against the same probe accuracies (consensus: lower = better,
        # like V; effective rank: higher = more spread)
        "spearman_consensus": spearman(np.array([r["consensus"] for r in rows]), acc),
        "spearman_effective_rank": spearman(np.array([r["effective_rank"] for r in rows]), acc),
        "consensus_ridge": ridge,
        "paper_spearman": PAPER_SPEARMAN,
        "shared_samples": len(wb.shared_ids),
        "probe_train": len(sets.train_labels),
        "probe_test": len(sets.test_labels),
    }
    _plot_uniformity(wb.out / "uniformity.png", rows, result, wb.spec)
    write_csv(wb.out / "uniformity.csv", rows)
    return result


def _score_anchor_rules(rows: list[dict[str, Any]], shared: list[np.ndarray], seed: int) -> float:
    """Add each prior's consensus score and effective rank (of its projected shared-set
    targets) to its row, as the consensus anchor rule would score the pool as one federation;
    returns the ridge ``auto`` chose for it."""
    from coopt_flwr.protocol.alignment import cv_folds, resolve_ridge
    from coopt_flwr.protocol.consensus import CONSENSUS_PARTNERS, consensus_scores, effective_rank

    ridge = resolve_ridge(None, shared, seed=seed)
    folds = cv_folds(len(shared[0]))
    if folds is None:
        raise ValueError("the consensus score needs a shared set of at least 3 samples")
    scores = consensus_scores(
        dict(enumerate(shared)), ridge=ridge, folds=folds, seed=seed, partners=CONSENSUS_PARTNERS
    )
    for i, row in enumerate(rows):
        row["consensus"] = scores[i]
        row["effective_rank"] = effective_rank(shared[i])
    return ridge


def _annotate_without_overlap(ax: Any, points: list[tuple[float, float, str]], fontsize: int = 6) -> None:
    """Label scatter points, pushing a label down below any earlier one it would overprint."""
    ax.figure.canvas.draw()  # fixes the limits, so data -> pixel positions are final
    to_px = ax.transData.transform
    line_px = fontsize * ax.figure.dpi / 72 * 1.25
    placed: list[tuple[float, float, float]] = []  # x0, x1, y of labels placed so far (pixels)
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        px, py = to_px((x, y))
        lx0, lx1 = px + 3, px + 3 + 0.6 * fontsize * ax.figure.dpi / 72 * len(text)
        ly = py + 3
        for x0, x1, yy in sorted(placed, key=lambda p: -p[2]):
            if x0 < lx1 and lx0 < x1 and abs(ly - yy) < line_px:
                ly = yy - line_px
        placed.append((lx0, lx1, ly))
        ax.annotate(text, (x, y), fontsize=fontsize, xytext=(3, ly - py), textcoords="offset pixels")


def _plot_uniformity(path: Path, rows: list[dict[str, Any]], result: dict[str, Any], data: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 5.0), dpi=130)
    kinds = sorted({r[KIND] for r in rows})
    for i, kind in enumerate(kinds):
        pts = [r for r in rows if r[KIND] == kind]
        ax.scatter(
            [r[UNIFORMITY] for r in pts],
            [100 * r[PROBE_ACC] for r in pts],
            s=36,
            color=f"C{i}",
            label=kind,
            zorder=3,
        )
    _annotate_without_overlap(ax, [(r[UNIFORMITY], 100 * r[PROBE_ACC], _short(r[SPEC])) for r in rows])
    ax.set_xlabel("uniformity V of the prior's features on S (dimensionless; lower = more uniform)")
    ax.set_ylabel("linear-probe top-1 accuracy of the prior's features (%)")
    ax.set_title(
        f"Uniformity vs prior quality on {_data_label(data)}: Spearman ρ = {result['spearman']:.2f} "
        f"(paper {PAPER_SPEARMAN})",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(title="prior kind", fontsize=7, title_fontsize=8)
    save_figure(fig, path)


def _anchor_and_g(merged: Any, specs: Sequence[str]) -> dict[str, Any]:
    """Record keys of a replayed round: its anchor and the target inconsistency G."""
    return {
        ANCHOR: merged.anchor,
        ANCHOR_PRIOR: None if merged.anchor is None else specs[merged.anchor],
        G_BEFORE: merged.g_before,
        G_AFTER: merged.g_after,
        G_EVAL: merged.g_eval,
    }


def analyze_alignment(wb: Workbench) -> dict[str, Any]:
    """Student probe curves per epoch: no alignment vs anchor = worst / medium / best prior."""
    from coopt_flwr.protocol.replay import ANCHOR_MODES

    cfg = wb.cfg.alignment
    specs = [str(s) for s in cfg.priors]
    if len(specs) < 3:
        raise ValueError("the alignment analysis needs at least 3 priors (worst, medium and best differ)")
    modes: dict[str, Any] = {}
    rows = []
    for mode in ANCHOR_MODES:
        merged = wb.merge(specs, mode)
        wb.log(
            f"[analyze] alignment {mode}: anchor {merged.anchor}, "
            f"training the student for {cfg.epochs} epochs"
        )
        rec = wb.student(merged.targets, per_epoch=True, epochs=int(cfg.epochs))
        modes[mode] = {
            **_anchor_and_g(merged, specs),
            TARGET_PROBE_ACC: wb.target_probe(merged.targets),
            STUDENT_ACC: rec["final_acc"],
            "curve_epochs": rec["curve_epochs"],
            "train_seconds": rec["train_seconds"],
            "residuals": merged.residuals,
        }
        rows += [{MODE: mode, "epoch": e, STUDENT_ACC: a} for e, a in rec["curve_epochs"]]
    v = wb.merge(specs, "none").uniformity
    result = {
        PRIORS: [{SPEC: s, UNIFORMITY_PROJECTED: u} for s, u in zip(specs, v, strict=True)],
        "modes": modes,
        "none_minus_best_points": 100 * (modes["none"][STUDENT_ACC] - modes["best"][STUDENT_ACC]),
        "paper": "no alignment ends 16.9 points below aligned training; best > medium > worst",
    }
    _plot_alignment(wb.out / "alignment.png", modes, wb.spec)
    write_csv(wb.out / "alignment.csv", rows)
    return result


def _plot_alignment(path: Path, modes: dict[str, Any], data: str) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=130, gridspec_kw={"width_ratios": [3, 2]})
    for i, (mode, m) in enumerate(modes.items()):
        curve = np.array(m["curve_epochs"], dtype=float)
        label = "no alignment" if mode == "none" else f"anchor = {mode} prior"
        ax.plot(curve[:, 0], 100 * curve[:, 1], "o-", ms=3, lw=2, color=f"C{i}", label=label)
    ax.set_xlabel("student training epoch")
    ax.set_ylabel("student linear-probe top-1 accuracy (%)")
    ax.set_title(f"Alignment ablation on {_data_label(data)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    names = list(modes)
    x = np.arange(len(names))
    bx.bar(
        x - 0.2, [100 * modes[n][TARGET_PROBE_ACC] for n in names], 0.4, color="C0", label="target probe (%)"
    )
    g_ax = bx.twinx()
    g_ax.bar(x + 0.2, [modes[n][G_AFTER] or 0.0 for n in names], 0.4, color="C3", label="G after alignment")
    g_ax.set_ylim(0, 1.05)
    g_ax.set_ylabel("target inconsistency G (TV distance, 0-1)")
    bx.set_xticks(x, names)
    bx.set_xlabel("anchor choice")
    bx.set_ylabel("linear probe on merged targets (%)")
    bx.set_title("Merged targets per anchor choice", fontsize=10)
    h1, l1 = bx.get_legend_handles_labels()
    h2, l2 = g_ax.get_legend_handles_labels()
    bx.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    save_figure(fig, path)


def analyze_shared_size(wb: Workbench) -> dict[str, Any]:
    """Sweep of the shared-set fraction |S|/|D| with the protocol's anchor (best V)."""
    from coopt_flwr.registry.datasets import shared_subset

    cfg = wb.cfg.shared_size
    specs = [str(s) for s in cfg.priors]
    rows = []
    for fraction in cfg.fractions:
        shared = shared_subset(wb.n, float(fraction), wb.seed)
        merged = wb.merge(specs, "best", shared)
        others = [r for k, r in enumerate(merged.residuals) if k != merged.anchor]
        row = {
            FRACTION: float(fraction),
            SHARED_SAMPLES: len(shared),
            **_anchor_and_g(merged, specs),
            "mean_residual": float(np.mean(others)) if others else 0.0,
            TARGET_PROBE_ACC: wb.target_probe(merged.targets),
            STUDENT_ACC: wb.student(merged.targets)["final_acc"] if cfg.student else None,
        }
        wb.log(
            f"[analyze] shared-size {fraction}: |S|={len(shared)}, target probe {row[TARGET_PROBE_ACC]:.4f}"
        )
        rows.append(row)
    result = {PRIORS: specs, "rows": rows, "paper": "gains flatten after a few percent of D"}
    _plot_shared_size(wb.out / "shared-size.png", rows, wb.spec)
    write_csv(wb.out / "shared-size.csv", rows)
    return result


def _plot_shared_size(path: Path, rows: list[dict[str, Any]], data: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=130)
    x = [100 * r[FRACTION] for r in rows]
    ax.plot(
        x,
        [100 * r[TARGET_PROBE_ACC] for r in rows],
        "o-",
        lw=2,
        color="C0",
        label="linear probe on merged targets",
    )
    if any(r[STUDENT_ACC] is not None for r in rows):
        ax.plot(x, [100 * r[STUDENT_ACC] for r in rows], "s-", lw=2, color="C2", label="student linear probe")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel("shared set |S| / |D| (%, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    g_ax = ax.twinx()
    g_ax.plot(x, [r[G_EVAL] for r in rows], "^:", color="C3", label="G after alignment (fixed eval. set)")
    g_ax.plot(x, [r[G_AFTER] for r in rows], "v:", color="C1", alpha=0.6, label="G after alignment (on S)")
    g_ax.set_ylim(0, 1.05)
    g_ax.set_ylabel("target inconsistency G (TV distance, 0-1)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = g_ax.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    ax.set_title(f"Shared-set size sweep on {_data_label(data)}", fontsize=10)
    save_figure(fig, path)


def analyze_tsne(wb: Workbench) -> dict[str, Any]:
    """t-SNE of two participants' targets before and after alignment."""
    from sklearn.manifold import TSNE

    from coopt_flwr.protocol.replay import project_all
    from coopt_flwr.protocol.uniformity import normalize_rows
    from coopt_flwr.registry.datasets import shard_split

    cfg = wb.cfg.tsne
    specs = [str(s) for s in cfg.priors]
    if len(specs) != 2:
        raise ValueError(f"the t-SNE analysis compares exactly 2 priors, got {len(specs)}")
    merged = wb.merge(specs, "best")
    embedded = [wb.embedded(s, k) for k, s in enumerate(specs)]
    projected = project_all(embedded, int(wb.cfg["target-dim"]), wb.seed)
    rng = np.random.default_rng([wb.seed, 0x75E])
    shards = shard_split(wb.n, 2, wb.seed)
    picks = [np.sort(rng.choice(s, size=min(int(cfg.points), len(s)), replace=False)) for s in shards]
    ids = np.concatenate(picks)
    who = np.concatenate([np.full(len(p), k) for k, p in enumerate(picks)])
    before = np.concatenate([projected[k][p] for k, p in enumerate(picks)])  # embedded ids are 0..N-1
    after = merged.targets[ids]
    perplexity = float(min(float(cfg.perplexity), (len(ids) - 1) / 3))
    coords, kl = {}, {}
    for phase, x in (("before", before), ("after", after)):
        wb.log(f"[analyze] t-SNE of {len(ids)} targets {phase} alignment")
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=wb.seed)
        coords[phase] = tsne.fit_transform(normalize_rows(x))
        kl[phase] = float(tsne.kl_divergence_)
    labels = wb.data.labels[ids]
    rows = [
        {
            "phase": phase,
            "id": int(i),
            "participant": int(p),
            "class": int(c),
            "x": float(xy[0]),
            "y": float(xy[1]),
        }
        for phase in coords
        for i, p, c, xy in zip(ids, who, labels, coords[phase], strict=True)
    ]
    result = {
        PRIORS: specs,
        ANCHOR: merged.anchor,
        ANCHOR_PRIOR: specs[merged.anchor],
        G_BEFORE: merged.g_before,
        G_AFTER: merged.g_after,
        "points_per_participant": [len(p) for p in picks],
        "perplexity": perplexity,
        "kl_divergence": kl,
        "targets": "L2-normalized (the student's loss is a cosine), shards of two participants",
    }
    _plot_tsne(wb.out / "tsne.png", coords, who, labels, specs, merged.anchor, result)
    write_csv(wb.out / "tsne.csv", rows)
    return result


def _plot_tsne(
    path: Path,
    coords: dict[str, np.ndarray],
    who: np.ndarray,
    labels: np.ndarray,
    specs: list[str],
    anchor: int,
    result: dict[str, Any],
) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 9), dpi=130)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for r, phase in enumerate(("before", "after")):
        xy = coords[phase]
        g = result[G_BEFORE] if phase == "before" else result[G_AFTER]
        ax = axes[r, 0]
        for k, spec in enumerate(specs):
            m = who == k
            tag = " (anchor)" if k == anchor else ""
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=5,
                alpha=0.7,
                color=f"C{k}",
                label=f"participant {k}: {_short(spec)}{tag}",
            )
        ax.set_title(f"{phase} alignment, by participant (G = {g:.2f})", fontsize=10)
        ax.legend(fontsize=7, markerscale=3)
        bx = axes[r, 1]
        for j, c in enumerate(classes):
            m = labels == c
            bx.scatter(xy[m, 0], xy[m, 1], s=5, alpha=0.7, color=cmap(j % cmap.N), label=str(c))
        bx.set_title(f"{phase} alignment, by class", fontsize=10)
        bx.legend(title="class", fontsize=6, title_fontsize=7, markerscale=3, ncol=2)
        for a in (ax, bx):
            a.set_xlabel("t-SNE 1 (a.u.)")
            a.set_ylabel("t-SNE 2 (a.u.)")
    fig.suptitle("t-SNE of two participants' targets before and after alignment", fontsize=11)
    save_figure(fig, path)


def analyze_mixes(wb: Workbench) -> dict[str, Any]:
    """Table 5: each named mix, K = len(mix) participants, the protocol's anchor."""
    from coopt_flwr.config import load_mix

    cfg = wb.cfg.mixes
    rows = []
    for name in cfg.names:
        specs = load_mix(str(name))
        if any(">" in s for s in specs):
            raise ValueError(f"mix {name!r} holds evolution paths; the mixes analysis takes single priors")
        merged = wb.merge(specs, "best")
        row = {
            MIX: str(name),
            "participants": len(specs),
            **_anchor_and_g(merged, specs),
            TARGET_PROBE_ACC: wb.target_probe(merged.targets),
            STUDENT_ACC: None,
            PRIORS: specs,
        }
        if cfg.student:
            wb.log(f"[analyze] mix {name}: training the student")
            row[STUDENT_ACC] = wb.student(merged.targets)["final_acc"]
        wb.log(
            f"[analyze] mix {name}: anchor {row[ANCHOR_PRIOR]}, G {row[G_BEFORE]:.3f} -> {row[G_AFTER]:.3f}, "
            f"target probe {row[TARGET_PROBE_ACC]:.4f}"
        )
        rows.append(row)
    result = {
        "rows": rows,
        "paper_cifar10_student_acc": {"diverse": 0.835, "diverse-weak": 0.833, "diverse-human": 0.867},
    }
    _plot_mixes(wb.out / "mixes.png", rows, wb.spec)
    write_csv(wb.out / "mixes.csv", rows)
    return result


def _plot_mixes(path: Path, rows: list[dict[str, Any]], data: str) -> None:
    plt = pyplot()
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=130)
    names = [r[MIX] for r in rows]
    x = np.arange(len(names))
    targets = [100 * r[TARGET_PROBE_ACC] for r in rows]
    if any(r[STUDENT_ACC] is not None for r in rows):
        ax.bar(x - 0.2, targets, 0.4, color="C0", label="linear probe on merged targets")
        ax.bar(
            x + 0.2,
            [100 * (r[STUDENT_ACC] or 0.0) for r in rows],
            0.4,
            color="C2",
            label="student linear probe",
        )
    else:
        ax.bar(x, targets, 0.6, color="C0", label="linear probe on merged targets")
    ax.set_xticks(x, names)
    ax.set_xlabel("prior mix")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Prior mixes on {_data_label(data)}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    gx.bar(x - 0.2, [r[G_BEFORE] or 0.0 for r in rows], 0.4, color="0.6", label="before alignment")
    gx.bar(x + 0.2, [r[G_AFTER] or 0.0 for r in rows], 0.4, color="C3", label="after alignment")
    gx.set_xticks(x, names)
    gx.set_xlabel("prior mix")
    gx.set_ylabel("target inconsistency G (TV distance, 0-1)")
    gx.set_ylim(0, 1.05)
    gx.set_title("G before and after alignment per mix", fontsize=10)
    gx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    save_figure(fig, path)


# --------------------------------------------------------------------------- collaboration
FEDERATION_DEFAULTS: dict[str, Any] = {
    "redundancy": 1,
    "anchor-rule": "uniformity",
    "alignment": "ridge",
    "standardize": False,
    "ridge": None,
    "shard-max-residual": None,
}
"""A federation entry's keys besides ``priors``, spelled and defaulted as the protocol's run-config
(``ridge`` None: the analysis's ``collaboration.ridge``; ``shard-max-residual`` None: no gate)."""

FEATURES_VERSION = 1  # bump when the cached feature files change meaning


@dataclass(frozen=True)
class Federation:
    """One federation of the collaboration analysis: participant k holds prior ``priors[k]``."""

    priors: tuple[str, ...]
    redundancy: int = 1
    anchor_rule: str = "uniformity"
    alignment: str = "ridge"
    standardize: bool = False
    ridge: float | str | None = None
    shard_max_residual: float | None = None

    @classmethod
    def from_config(cls, entry: Any) -> Federation:
        """From a config entry ``{priors: [names], redundancy, anchor-rule, alignment, standardize}``;
        a name is a key of ``collaboration.priors`` or else a prior spec itself."""
        e = OmegaConf.to_container(entry, resolve=True) if OmegaConf.is_config(entry) else dict(entry)
        assert isinstance(e, dict)
        unknown = set(e) - {"priors", *FEDERATION_DEFAULTS}
        if unknown or not e.get("priors"):
            raise ValueError(
                f"federation {e}: needs 'priors' and takes only {sorted(FEDERATION_DEFAULTS)} besides"
            )
        o = {**FEDERATION_DEFAULTS, **e}
        fed = cls(
            priors=tuple(str(p) for p in e["priors"]),
            redundancy=int(o["redundancy"]),
            anchor_rule=str(o["anchor-rule"]),
            alignment=str(o["alignment"]),
            standardize=bool(o["standardize"]),
            ridge=None if o["ridge"] is None else _ridge_value(o["ridge"]),
            shard_max_residual=None if o["shard-max-residual"] is None else float(o["shard-max-residual"]),
        )
        fed.check()
        return fed

    def check(self) -> None:
        """Fail before any embedding on an option the replay would reject."""
        from coopt_flwr.protocol.alignment import METHODS
        from coopt_flwr.protocol.replay import ANCHOR_RULES

        if self.anchor_rule not in ANCHOR_RULES or self.alignment not in METHODS:
            raise ValueError(
                f"federation {self.label}: anchor-rule must be one of {ANCHOR_RULES}, "
                f"alignment one of {METHODS}"
            )
        if not 1 <= self.redundancy <= len(self.priors):
            raise ValueError(f"federation {self.label}: redundancy must lie in [1, {len(self.priors)}]")

    @property
    def label(self) -> str:
        """E.g. ``lite0+lite1+lite2+resnet18 r=2 consensus procrustes std``."""
        tail = f" r={self.redundancy} {self.anchor_rule} {self.alignment}"
        if self.ridge is not None:
            tail += f" ridge={self.ridge}"
        if self.shard_max_residual is not None:
            tail += f" gate={self.shard_max_residual:g}"
        return "+".join(self.priors) + tail + (" std" if self.standardize else "")


def _ridge_value(value: Any) -> float | str:
    """A ridge strength ≥ 0 or ``"auto"``, validated as the run-config's ``ridge``."""
    from coopt_flwr.config import parse_ridge
    from coopt_flwr.protocol.alignment import RIDGE_AUTO

    ridge = parse_ridge(value)
    return RIDGE_AUTO if ridge is None else ridge


class _SkippingProbe:
    """A student probe that can skip its next call (the t=0 evaluation of an untrained student,
    the same for every student of one seed: measured once, then skipped)."""

    def __init__(self, probe: Callable[[Any], float]) -> None:
        self.probe = probe
        self.skip_next = False

    def __call__(self, backbone: Any) -> float:
        if self.skip_next:
            self.skip_next = False
            return float("nan")
        return float(self.probe(backbone))


def _savez(path: str, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(fh, **arrays)


class Collaboration:
    """D and a disjoint validation split carved from labeled training images, each prior's
    features of both cached on disk, probes scored on the validation split only.

    Rows 0..|D|-1 of ``data`` are D, the rest the validation split; the profile's test set is
    never loaded.
    """

    def __init__(self, cfg: DictConfig, log: Callable[[str], None] = print) -> None:
        from coopt_flwr.registry.datasets import ImageData, create_dataset, shared_subset

        c = cfg.collaboration
        self.cfg, self.c, self.log = cfg, c, log
        self.seed = int(cfg.seed)
        self.device = str(cfg.device) or None
        self.out = output_folder(cfg)
        self.spec = dataset_spec(str(cfg.data.train), cfg.data_dir)
        full = create_dataset(self.spec)
        if full.labels is None:
            raise ValueError(f"{self.spec}: the collaboration analysis measures quality with labels")
        d_ids, v_ids = balanced_splits(full.labels, [int(c.d_size), int(c.val_size)], self.seed)
        self.source_ids = np.concatenate([d_ids, v_ids])
        self.data = ImageData(
            name=f"{self.spec}[D {len(d_ids)} + validation {len(v_ids)}, seed {self.seed}]",
            images=np.ascontiguousarray(full.images[self.source_ids]),
            labels=full.labels[self.source_ids],
            num_classes=full.num_classes,
        )
        self.d = len(d_ids)
        self.val = np.arange(self.d, len(self.source_ids))
        rng = np.random.default_rng([self.seed, 0x1AB])
        self.labeled = np.sort(rng.permutation(self.d)[: min(self.d, int(c.probe_train))])
        self.shared_ids = shared_subset(self.d, float(c["shared-fraction"]), self.seed)
        self.catalog = {str(k): str(v) for k, v in (c.priors or {}).items()}
        self.names: list[str] = []  # the priors of the federations, in order of appearance
        self._embedded: dict[str, Any] = {}
        self._probe: _SkippingProbe | None = None
        self.untrained_acc: float | None = None
        log(
            f"[collaboration] {self.spec}: |D|={self.d}, validation {len(self.val)} (class-balanced, "
            f"disjoint, training images), |S|={len(self.shared_ids)} -> {self.out}"
        )

    def _cache_path(self, name: str) -> Path:
        key = hashlib.sha256(
            f"{FEATURES_VERSION}|{self.spec_of(name)}|{self.seed}|{self.spec}|".encode()
            + self.source_ids.astype(np.int64).tobytes()
        ).hexdigest()[:16]
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        return self.out / "features" / f"{slug}-{key}.npz"

    def spec_of(self, name: str) -> str:
        """The spec of a prior named in ``collaboration.priors``, or ``name`` itself (a spec)."""
        return self.catalog.get(name, name)

    def embedded(self, name: str) -> Any:
        """Prior ``name``'s features of D and the validation split, embedded once (disk cache)."""
        from coopt_flwr.protocol.replay import Embedded

        if name in self._embedded:
            return self._embedded[name]
        path = self._cache_path(name)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                e = Embedded(meta["spec"], meta["kind"], z["ids"], z["features"], float(meta["seconds"]))
            self.log(f"[collaboration] {name}: features from {path.name} (embedded in {e.seconds:.0f} s)")
        else:
            e = self._embed(name)
            meta = json.dumps({"spec": e.spec, "kind": e.kind, "seconds": e.seconds})
            atomic_write(path, lambda tmp: _savez(tmp, ids=e.ids, features=e.features, meta=np.array(meta)))
        if e.kind == "human":
            raise ValueError(f"{name}: a human prior embeds labels, also of the validation split")
        self._embedded[name] = e
        return e

    def _embed(self, name: str) -> Any:
        from coopt_flwr.protocol.replay import embed_prior

        spec = self.spec_of(name)
        start, last = time.monotonic(), [time.monotonic()]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 15.0 or done == total:
                last[0] = now
                eta = (now - start) / max(done, 1) * (total - done)
                self.log(
                    f"[collaboration] {name}: embedded {done}/{total} "
                    f"({now - start:.0f} s, ~{eta:.0f} s left)"
                )

        self.log(f"[collaboration] embedding {len(self.data)} images with {name} = {spec}")
        e = embed_prior(
            spec,
            self.data,
            seed=self.seed,
            batch_size=int(self.cfg["batch-size"]),
            device=self.device,
            progress=progress,
        )
        self.log(f"[collaboration] {name} ({e.kind}, width {e.features.shape[1]}): {e.seconds:.1f} s")
        return e

    def seconds_per_image(self, name: str) -> float:
        """Embedding wall time of prior ``name`` per image (measured over D and validation)."""
        return self.embedded(name).seconds / len(self.data)

    def probe_targets(self, targets: np.ndarray) -> float:
        """Linear probe on (|D|+|V|, n) targets: fit on the labeled part of D, score on validation."""
        from coopt_flwr.learn.probe import linear_probe

        y = self.data.labels
        assert y is not None
        return linear_probe(targets[self.labeled], y[self.labeled], targets[self.val], y[self.val])

    def student(self, targets: np.ndarray) -> dict[str, Any]:
        """A fresh student trained on the targets of D, probed (labeled D -> validation)."""
        y = self.data.labels
        assert y is not None
        if self._probe is None:
            imgs = self.data.images
            self._probe = _SkippingProbe(
                make_probe(imgs[self.labeled], y[self.labeled], imgs[self.val], y[self.val], self.device)
            )
        self._probe.skip_next = self.untrained_acc is not None
        block = OmegaConf.to_container(self.c.student, resolve=True)
        assert isinstance(block, dict)
        rec = student_accuracy(
            self.data.images[: self.d],
            targets[: self.d],
            self._probe,
            block,
            self.seed,
            self.device,
            self.log,
        )
        if self.untrained_acc is None:
            self.untrained_acc = float(rec["curve"][0][1])
        return rec


def _single_row(cb: Collaboration, name: str) -> dict[str, Any]:
    """Rows (a) and (b): the prior's own probe ceiling and a student on its raw features of all of D."""
    e = cb.embedded(name)
    cb.log(f"[collaboration] single party {name}: probe ceiling and student on its raw features")
    rec = cb.student(e.features)
    return {
        "row": f"{name} alone",
        "kind": "single",
        PRIORS: [name],
        "specs": [e.spec],
        "participants": 1,
        "redundancy": 1,
        "anchor-rule": None,
        "alignment": None,
        "standardize": False,
        ANCHOR_PRIOR: None,
        "target_dim": int(e.features.shape[1]),
        TARGET_PROBE_ACC: cb.probe_targets(e.features),
        STUDENT_ACC: rec["final_acc"],
        "student_epochs": rec["epochs"],
        "data_seconds": cb.seconds_per_image(name) * cb.d,
        "data_cpu_seconds": cb.seconds_per_image(name) * cb.d,
        "train_seconds": rec["train_seconds"],
    }


def _federation_row(cb: Collaboration, fed: Federation) -> dict[str, Any]:
    """Row (c): replay the federation, probe its merged targets and train a student on them."""
    from coopt_flwr.protocol.replay import merge_targets, project_all

    embedded = [cb.embedded(p) for p in fed.priors]
    t = time.perf_counter()
    merged = merge_targets(
        embedded,
        project_all(embedded, int(cb.c["target-dim"]), cb.seed),
        len(cb.data),
        cb.shared_ids,
        "best",
        seed=cb.seed,
        ridge=_ridge_value(cb.c.ridge if fed.ridge is None else fed.ridge),
        g_max_samples=int(cb.c["g-max-samples"]),
        anchor_rule=fed.anchor_rule,
        alignment=fed.alignment,
        standardize=fed.standardize,
        redundancy=fed.redundancy,
        shard_max_residual=fed.shard_max_residual,
    )
    merge_seconds = time.perf_counter() - t
    cb.log(f"[collaboration] {fed.label}: anchor {fed.priors[merged.anchor]}, training the student")
    rec = cb.student(merged.targets)
    wall, cpu = _federation_data_seconds(cb, fed, merged.contributors)
    return {
        "row": fed.label,
        "kind": "federation",
        PRIORS: list(fed.priors),
        "specs": [e.spec for e in embedded],
        "participants": len(fed.priors),
        "redundancy": fed.redundancy,
        "anchor-rule": fed.anchor_rule,
        "alignment": fed.alignment,
        "standardize": fed.standardize,
        ANCHOR_PRIOR: fed.priors[merged.anchor],
        "target_dim": int(merged.targets.shape[1]),
        TARGET_PROBE_ACC: cb.probe_targets(merged.targets),
        STUDENT_ACC: rec["final_acc"],
        "student_epochs": rec["epochs"],
        "data_seconds": wall,
        "data_cpu_seconds": cpu,
        "train_seconds": rec["train_seconds"],
        "merge_seconds": merge_seconds,
        ANCHOR: merged.anchor,
        UNIFORMITY_PROJECTED: merged.uniformity,
        "consensus": merged.consensus,
        "cv_residuals": merged.cv_residuals,
        "residuals": merged.residuals,
        "ridge": merged.ridge,
        "gated": [fed.priors[i] for i in merged.gated],
        G_BEFORE: merged.g_before,
        G_AFTER: merged.g_after,
    }


def _federation_data_seconds(
    cb: Collaboration, fed: Federation, contributors: np.ndarray
) -> tuple[float, float]:
    """Embedding time of the federation's data work on D: the slowest participant (wall, the
    participants run in parallel) and the sum over participants (CPU). Participant k embeds
    its ids of D (r·|D|/K of them) and the shared set, at its prior's measured rate."""
    on_d = contributors[: cb.d]
    work = []
    for k, name in enumerate(fed.priors):
        mine = np.flatnonzero((on_d == k).any(axis=1))
        count = len(np.union1d(mine, cb.shared_ids))
        work.append(cb.seconds_per_image(name) * count)
    return float(max(work)), float(sum(work))


def analyze_collaboration(
    cfg: DictConfig, log: Callable[[str], None] = print
) -> tuple[Path, str, dict[str, Any]]:
    """Does a federation of different priors make better data than its best member alone?"""
    cb = Collaboration(cfg, log)
    feds = [Federation.from_config(f) for f in cfg.collaboration.federations]
    if not feds:
        raise ValueError("collaboration.federations is empty")
    names = list(dict.fromkeys(p for f in feds for p in f.priors))  # every prior of a federation
    cb.names = names
    for name in names:  # embed each prior once, up front (the slow part, with progress)
        cb.embedded(name)
    rows: list[dict[str, Any]] = []
    for name in names if cfg.collaboration.get("singles", True) else []:  # false: federations only
        rows.append(_single_row(cb, name))
        _write_collaboration(cb, rows)
    for fed in feds:
        rows.append(_federation_row(cb, fed))
        _write_collaboration(cb, rows)
    result = _write_collaboration(cb, rows, final=True)
    return cb.out, cb.data.name, result


def _collaboration_result(cb: Collaboration, rows: list[dict[str, Any]]) -> dict[str, Any]:
    singles = [r for r in rows if r["kind"] == "single"]
    best = max(singles, key=lambda r: r[STUDENT_ACC]) if singles else None
    for r in rows:
        r["vs_best_single_points"] = None if best is None else 100 * (r[STUDENT_ACC] - best[STUDENT_ACC])
    c = cb.c
    return {
        "question": "does a federation of different priors make better data than its best member alone?",
        "d_size": cb.d,
        "validation_size": len(cb.val),
        "validation": "class-balanced training images disjoint from D; the test set is not used",
        "probe_train": len(cb.labeled),
        "shared_samples": len(cb.shared_ids),
        "train_source_ids_sha256": hashlib.sha256(cb.source_ids.tobytes()).hexdigest(),
        "student_budget_s": OmegaConf.select(c, "student.train.time_budget_s"),
        "target_dim": int(c["target-dim"]),
        "untrained_student_acc": cb.untrained_acc,
        "best_single": None if best is None else best["row"],
        "best_single_student_acc": None if best is None else best[STUDENT_ACC],
        "prior_specs": {n: cb.spec_of(n) for n in cb.names},
        "embedding_seconds": {n: cb.embedded(n).seconds for n in cb.names},
        "rows": rows,
    }


def _write_collaboration(
    cb: Collaboration, rows: list[dict[str, Any]], final: bool = False
) -> dict[str, Any]:
    """table.md and collaboration.csv (after every row), and at the end the bar plot."""
    result = _collaboration_result(cb, rows)
    (cb.out / "table.md").write_text(_collaboration_markdown(cb, result), encoding="utf-8")
    write_csv(cb.out / "collaboration.csv", rows)
    if final:
        _plot_collaboration(cb.out / "collaboration.png", result)
    return result


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.1f}"


def _collaboration_markdown(cb: Collaboration, result: dict[str, Any]) -> str:
    """The results table, with its data, validation split and budget stated above it."""
    head = (
        f"# Collaboration: federations of different priors vs their best member alone\n\n"
        f"Data: {result['d_size']:,} class-balanced training images of `{cb.spec}` as D; "
        f"accuracies are linear probes fitted on {result['probe_train']:,} labeled images of D and "
        f"scored on a **validation split of {result['validation_size']:,}** class-balanced training "
        f"images disjoint from D (seed {cb.seed}). The test set is not used. Shared set "
        f"|S| = {result['shared_samples']}; federation targets n = {result['target_dim']}; student "
        f"{cb.c.student.arch} for {result['student_budget_s']} s each "
        f"(untrained: {_pct(result['untrained_student_acc'])} %).\n\n"
        "Single rows: target probe = the prior's own linear-probe ceiling on its frozen features; "
        "student on its raw features of all of D (one party). Data s = embedding of D: the slowest "
        "participant (wall) / all participants (CPU).\n\n"
    )
    header = [
        "row",
        "anchor",
        "target probe %",
        "student %",
        "Δ best single",
        "epochs",
        "data s wall / CPU",
        "train s",
    ]
    table = [
        [
            r["row"],
            r[ANCHOR_PRIOR],
            _pct(r[TARGET_PROBE_ACC]),
            _pct(r[STUDENT_ACC]),
            None if r["vs_best_single_points"] is None else f"{r['vs_best_single_points']:+.1f}",
            f"{r['student_epochs']:.1f}",
            f"{_secs(r['data_seconds'])} / {_secs(r['data_cpu_seconds'])}",
            _secs(r["train_seconds"]),
        ]
        for r in result["rows"]
    ]
    detail = [
        [
            r["row"],
            k,
            p,
            _fmt(r[UNIFORMITY_PROJECTED][k]),
            _fmt(_at(r["consensus"], k)),
            _fmt(r["cv_residuals"][k]),
        ]
        for r in result["rows"]
        if r["kind"] == "federation"
        for k, p in enumerate(r[PRIORS])
    ]
    out = head + markdown_table(table, header)
    if detail:
        out += (
            "\nPer participant (lower = better for all three; cv residual = out-of-sample "
            "relative residual of its alignment to the anchor):\n\n"
        )
        out += markdown_table(
            detail, ["federation", "k", "prior", "uniformity V", "consensus C", "cv residual"]
        )
    return out


def _at(values: Sequence[float] | None, k: int) -> float | None:
    return None if values is None else values[k]


def _secs(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _fmt(v: float | None) -> str | None:
    return None if v is None else f"{v:.3f}"


def _plot_collaboration(path: Path, result: dict[str, Any]) -> None:
    plt = pyplot()
    from matplotlib.patches import Patch

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(rows) + 3), 5.2), dpi=130)
    x = np.arange(len(rows))
    colors = ["C0" if r["kind"] == "single" else "C2" for r in rows]
    ax.bar(x, [100 * r[STUDENT_ACC] for r in rows], 0.65, color=colors)
    ax.scatter(
        x,
        [100 * r[TARGET_PROBE_ACC] for r in rows],
        marker="_",
        s=250,
        color="k",
        zorder=3,
        label="linear probe on the targets (single party: the prior's own ceiling)",
    )
    if result["best_single_student_acc"] is not None:
        ax.axhline(
            100 * result["best_single_student_acc"],
            color="C3",
            ls="--",
            lw=1.5,
            label=f"best single-party student ({result['best_single']})",
        )
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(color="C0", label="student, one party on its raw features"),
        Patch(color="C2", label="student, federation (replayed protocol)"),
    ]
    ax.set_xticks(x, [r["row"] for r in rows], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("linear-probe top-1 accuracy on the validation split (%)")
    fig.suptitle(
        f"Student accuracy per row ({result['d_size']:,} images of D, {result['validation_size']:,} "
        f"validation, {result['student_budget_s']} s per student)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, axis="y")
    ax.legend(handles=handles, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    save_figure(fig, path)


RUNNERS: dict[str, Callable[[Workbench], dict[str, Any]]] = {
    "uniformity": analyze_uniformity,
    "alignment": analyze_alignment,
    "shared-size": analyze_shared_size,
    "tsne": analyze_tsne,
    "mixes": analyze_mixes,
}


def run_analysis(name: str, cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run analysis ``name`` (one of :data:`ANALYSES`); writes ``<name>.json`` / ``.csv`` / ``.png``
    (``collaboration``: ``results.json``, ``table.md``, ``collaboration.csv`` / ``.png``)."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    start = time.perf_counter()
    if name == "collaboration":
        out, dataset, result = analyze_collaboration(cfg, log)
    else:
        wb = Workbench(cfg, log)
        out, dataset, result = wb.out, wb.spec, RUNNERS[name](wb)
    result = {
        "analysis": name,
        "profile": str(cfg.profile),
        "dataset": dataset,
        "seed": int(cfg.seed),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - start,
        **result,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    path = out / RESULT_FILES.get(name, f"{name}.json")
    write_json(path, result)
    log(f"[analyze] {name}: wrote {path} and .png/.csv in {result['seconds']:.0f} s")
    return result


def main() -> None:
    """``python -m simulations.analyze <name> [hydra overrides]``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ANALYSES:
        print(
            "usage: python -m simulations.analyze {"
            + ",".join(ANALYSES)
            + "} output-dir=DIR [profile=tiny] [key=value ...]",
            file=sys.stderr,
        )
        raise SystemExit(2)
    name = sys.argv.pop(1)
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

    def task(cfg: DictConfig) -> None:
        run_analysis(name, cfg)

    hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")(task)()


if __name__ == "__main__":
    main()
