"""The paper's analyses, one command each, writing ``<name>.json``, ``<name>.csv`` and ``<name>.png``:

    python -m simulations.analyze uniformity  output-dir=DIR [profile=tiny] [uniformity.zoo=ZOO_DIR]
    python -m simulations.analyze alignment   output-dir=DIR
    python -m simulations.analyze shared-size output-dir=DIR
    python -m simulations.analyze tsne        output-dir=DIR
    python -m simulations.analyze mixes       output-dir=DIR

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

Every analysis embeds D once per prior and replays the protocol's steps in process with the
protocol's own functions (:mod:`coopt_flwr.protocol.replay`, checked against the Flower strategy in
the tests); participant k's prior is built with seed ``seed + k`` as the ClientApp does.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import write_json
from simulations.common import (
    output_folder,
    probe_sets,
    pyplot,
    save_figure,
    student_accuracy,
    train_spec,
    write_csv,
)

CONF_PATH = str(CONF_DIR / "analyze")
ANALYSES = ("uniformity", "alignment", "shared-size", "tsne", "mixes")
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
    rows = []
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
        clear_prior_cache()
        wb.log(
            f"[analyze] uniformity {i + 1}/{len(pool)} {spec}: "
            f"V={row[UNIFORMITY]:.4f}, probe {row[PROBE_ACC]:.4f}"
        )
        rows.append(row)
    v = np.array([r[UNIFORMITY] for r in rows])
    vp = np.array([r[UNIFORMITY_PROJECTED] for r in rows])
    acc = np.array([r[PROBE_ACC] for r in rows])
    result = {
        PRIORS: rows,
        "spearman": spearman(v, acc),
        "spearman_projected": spearman(vp, acc),
        "paper_spearman": PAPER_SPEARMAN,
        "shared_samples": len(wb.shared_ids),
        "probe_train": len(sets.train_labels),
        "probe_test": len(sets.test_labels),
    }
    _plot_uniformity(wb.out / "uniformity.png", rows, result, wb.spec)
    write_csv(wb.out / "uniformity.csv", rows)
    return result


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


RUNNERS: dict[str, Callable[[Workbench], dict[str, Any]]] = {
    "uniformity": analyze_uniformity,
    "alignment": analyze_alignment,
    "shared-size": analyze_shared_size,
    "tsne": analyze_tsne,
    "mixes": analyze_mixes,
}


def run_analysis(name: str, cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run analysis ``name`` (one of :data:`ANALYSES`); writes ``<name>.json`` / ``.csv`` / ``.png``."""
    if name not in RUNNERS:
        raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    start = time.perf_counter()
    wb = Workbench(cfg, log)
    result = RUNNERS[name](wb)
    result = {
        "analysis": name,
        "profile": str(cfg.profile),
        "dataset": wb.spec,
        "seed": wb.seed,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - start,
        **result,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(wb.out / f"{name}.json", result)
    log(f"[analyze] {name}: wrote {wb.out / (name + '.json')} and .png/.csv in {result['seconds']:.0f} s")
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
