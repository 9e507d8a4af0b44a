"""Table 2 benchmark: does CoOpt beat SSL, and does a federation of different priors beat its
best member alone? CoOpt students, single-prior students and six SSL baselines, each trained
on the same student backbone for the same wall-clock budget.

    python -m simulations.benchmark profile=cpu seed=0 output-dir=outputs/bench-0
    python -m simulations.benchmark profile=cpu seed=0 'ssl.methods=[simclr,byol]'   # quicker
    python -m simulations.benchmark --multirun profile=cpu seed=0,1,2
    python -m simulations.benchmark profile=cpu '~singles' '~coopt.variants.coopt-hetero-r3' \
        '+coopt.variants.coopt-hetero-ridge1={mix: lite012-weak-160, ridge: 1.0}'

Rows (each timed on two clocks, see below):

1. **CoOpt variants** (``coopt.variants``: name → a mix name, or a mapping
   ``{mix: NAME, <run-config key>: value, ...}`` whose other keys are run-config overrides of
   that variant's protocol run only, e.g. ``{mix: lite012-weak-160, redundancy: 3}``). The
   protocol runs through Flower's simulation engine (K virtual participants) over the seeded
   unlabeled subset D and writes the merged targets; a student regresses them. The variant's
   data-optimization record holds its priors, overrides, ``redundancy`` and each participant's
   ``residual-oos`` where the summary has them. For ``coopt`` one party also embeds everything
   alone with the anchor prior (``sequential_seconds``).
2. **Single priors** (profile key ``singles``: name → prior spec; empty or absent, e.g.
   ``'~singles'`` on the command line, skips them):
   one party embeds all of D with the prior alone (``data_seconds``) and the probe's test
   images; ``target_probe_acc`` is the linear probe of its frozen features (fit on the labeled
   probe ids of D, scored on the test set), the ceiling of what its targets can teach; method
   ``single-<name>`` is a student distilled from its raw features (no projection, same
   student, budget, centering and :func:`train_on_targets` path as the CoOpt students).
   Human priors are refused, as in :func:`benchmark_priors`. CoOpt variants have no
   ``target_probe_acc`` (None): the test images have no merged targets.
3. **SSL baselines** (BYOL, SimCLR, MoCo v2, SimSiam, DINO, SwAV from lightly).

Clocks: ``train_seconds`` is student / SSL training only (probing excluded);
``data_seconds`` the data optimization (CoOpt: the protocol's ``collaborative_seconds``;
singles: the one-party embedding of D; SSL: 0); ``end_to_end_seconds`` their sum. A linear
probe at fixed training times gives accuracy curves; ``time_to_byol_final`` and
``time_to_best_ssl_final`` are the first probed training times at which a method reaches
BYOL's / the best SSL baseline's final accuracy (probe points only, no interpolation), and the
``..._end_to_end`` twins add the method's ``data_seconds``.

Probe normalization: each method is probed with the input normalization it was trained with.
Students (CoOpt and single) are trained with the CIFAR channel statistics of D
(:func:`coopt_flwr.learn.student.channel_stats`, passed explicitly to ``train_student``) and
probed with the same; SSL methods train on lightly views normalized with their ``normalize``
hyper-parameter (ImageNet statistics by default, identity when None) and are probed with that
(:func:`ssl_normalization`). Each normalization gets its own memoized probe (:class:`Probes`)
and is recorded in the method's ``normalization``. Earlier versions probed every method with
the CIFAR statistics of the probe-train images, the SSL baselines included (trained with
ImageNet's); their SSL numbers are not directly comparable with these.

Writes ``results.json`` (the stable interface: keys are only ever added), ``results.csv``,
``curves.png`` and ``table.md`` into the output folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import write_json
from simulations.common import (
    dataset_spec,
    output_folder,
    pyplot,
    run_config_overrides,
    save_figure,
    train_config,
    train_record,
    write_csv,
)

CONF_PATH = str(CONF_DIR)
METHOD_ORDER = ("coopt", "byol", "simclr", "moco", "simsiam", "dino", "swav")
SINGLE_PREFIX = "single-"
"""Method names of the single-prior students: ``single-<name>`` for each entry of ``singles``."""
BENCHMARK_KEYS = ("dataset", "data-root", "priors", "prior-mix", "output-dir")
"""Run-config keys the benchmark sets itself; a variant may not override them."""
PROGRESS_EVERY_S = 15.0
TIME_KEYS = (
    "time_to_byol_final",
    "time_to_byol_final_end_to_end",
    "time_to_best_ssl_final",
    "time_to_best_ssl_final_end_to_end",
)

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


# ---------------------------------------------------------------------------- reporting
def time_to_reach(curve: Sequence[Sequence[float]], target: float) -> float | None:
    """First probed training time at which accuracy ≥ ``target`` (None if never).

    Parameters
    ----------
    curve
        [(seconds, accuracy), ...] in increasing time.
    target
        Accuracy to reach, a fraction.
    """
    for seconds, acc in curve:
        if acc >= target - 1e-12:
            return float(seconds)
    return None


def is_coopt(name: str) -> bool:
    """Whether a method name is a CoOpt variant (``coopt``, ``coopt-weak``, ...), not a baseline."""
    return name.startswith("coopt")


def is_single(name: str) -> bool:
    """Whether a method name is a single-prior student (``single-<name>``)."""
    return name.startswith(SINGLE_PREFIX)


def is_baseline(name: str) -> bool:
    """Whether a method name is an SSL baseline (neither CoOpt nor a single prior)."""
    return not (is_coopt(name) or is_single(name))


def times_to_final(
    methods: dict[str, dict[str, Any]], reference: str, end_to_end: bool = False
) -> dict[str, float | None]:
    """Time each method needs to reach ``reference``'s final accuracy (empty without it).

    Parameters
    ----------
    methods
        Method records (``final_acc``, ``curve`` and, for the end-to-end clock, ``data_seconds``).
    reference
        The method whose final accuracy is the bar.
    end_to_end
        Add each method's ``data_seconds`` (0 where absent, as for SSL) to its training time.
    """
    if reference not in methods:
        return {}
    target = methods[reference]["final_acc"]
    out: dict[str, float | None] = {}
    for name, m in methods.items():
        t = time_to_reach(m["curve"], target)
        if end_to_end and t is not None:
            t += float(m.get("data_seconds") or 0.0)
        out[name] = t
    return out


def times_to_byol_final(
    methods: dict[str, dict[str, Any]], end_to_end: bool = False
) -> dict[str, float | None]:
    """Time each method needs to reach BYOL's final accuracy (empty without BYOL)."""
    return times_to_final(methods, "byol", end_to_end)


def best_ssl(methods: dict[str, dict[str, Any]]) -> str | None:
    """The SSL baseline with the highest final accuracy (None when no baseline ran).

    BYOL's final accuracy can sit below the untrained network's at a small budget (then every
    method "reaches" it at 0 s); the best baseline's final accuracy is the bar that still
    separates methods, so the report gives the time to reach it as well. CoOpt variants and
    single-prior students are not baselines.
    """
    ssl = [n for n in methods if is_baseline(n)]
    return max(ssl, key=lambda n: methods[n]["final_acc"]) if ssl else None


def add_times_to_accuracy(results: dict[str, Any]) -> None:
    """Fill ``results``' time-to-accuracy maps on both clocks (training and end-to-end)."""
    methods = results["methods"]
    results["time_to_byol_final"] = times_to_byol_final(methods)
    results["time_to_byol_final_end_to_end"] = times_to_byol_final(methods, end_to_end=True)
    reference = best_ssl(methods)
    if reference is not None:
        results["best_ssl"] = reference
        results["time_to_best_ssl_final"] = times_to_final(methods, reference)
        results["time_to_best_ssl_final_end_to_end"] = times_to_final(methods, reference, True)


def ordered(names: Sequence[str]) -> list[str]:
    """CoOpt variants first, then single-prior students, then the SSL methods in the paper's order."""
    rank = {n: float(i) for i, n in enumerate(METHOD_ORDER)}

    def key(n: str) -> tuple[float, str]:
        if n in rank:
            return rank[n], n
        return (0.5 if is_coopt(n) else 0.7 if is_single(n) else 99.0), n

    return sorted(names, key=key)


def method_data_seconds(result: Mapping[str, Any], name: str) -> float | None:
    """A method's data-optimization seconds in one ``results.json`` (0 for SSL baselines).

    Older results have no ``data_seconds`` in the method record; a CoOpt variant's then comes
    from its data-optimization record (``collaborative_seconds``).
    """
    m = result["methods"][name]
    if m.get("data_seconds") is not None:
        return float(m["data_seconds"])
    if is_baseline(name):
        return 0.0
    if is_coopt(name):
        rec = (
            result.get("data_optimization", {})
            if name == "coopt"
            else result.get("variants_data_optimization", {}).get(name, {})
        )
        if rec.get("collaborative_seconds") is not None:
            return float(rec["collaborative_seconds"])
    return None


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean, std and count of the non-None values (nan, nan, 0 without any)."""
    v = [float(x) for x in values if x is not None]
    return (float(np.mean(v)), float(np.std(v)), len(v)) if v else (math.nan, math.nan, 0)


def _time_mean(results: Sequence[Mapping[str, Any]], key: str, name: str) -> float | None:
    """Mean over the seeds where ``name`` reached the bar of ``key`` (a time-to-accuracy map):
    nan if it never did, None if no seed has that bar for it (e.g. BYOL did not run, or older
    results without the end-to-end maps)."""
    hits = [r[key][name] for r in results if name in (r.get(key) or {})]
    if not hits:
        return None
    reached = [t for t in hits if t is not None]
    return float(np.mean(reached)) if reached else math.nan


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of each method's accuracies and clocks.

    Per method: ``acc_mean``/``acc_std``, ``seeds``, ``seconds_mean`` (training clock),
    ``data_seconds_mean``, ``end_to_end_seconds_mean`` (nan where unknown),
    ``target_probe_acc_mean``/``_std``/``_seeds`` (nan/0 for methods without one) and
    ``<key>_mean`` for each of :data:`TIME_KEYS` (see :func:`_time_mean`).
    """
    out: dict[str, dict[str, Any]] = {}
    names = ordered(sorted({n for r in results for n in r["methods"]}))
    for name in names:
        runs = [r for r in results if name in r["methods"]]
        acc_mean, acc_std, seeds = _mean_std([r["methods"][name]["final_acc"] for r in runs])
        train = [float(r["methods"][name]["train_seconds"]) for r in runs]
        data = [method_data_seconds(r, name) for r in runs]
        ends = [None if d is None else d + t for d, t in zip(data, train, strict=True)]
        tp_mean, tp_std, tp_seeds = _mean_std([r["methods"][name].get("target_probe_acc") for r in runs])
        out[name] = {
            "acc_mean": acc_mean,
            "acc_std": acc_std,
            "seconds_mean": float(np.mean(train)),
            "seeds": seeds,
            "data_seconds_mean": _mean_std(data)[0],
            "end_to_end_seconds_mean": _mean_std(ends)[0],
            "target_probe_acc_mean": tp_mean,
            "target_probe_acc_std": tp_std,
            "target_probe_acc_seeds": tp_seeds,
        }
        for key in TIME_KEYS:
            out[name][f"{key}_mean"] = _time_mean(results, key, name)
    return out


def _pct(mean: float, std: float, seeds: int) -> str:
    """A percentage, ``± std`` only over several seeds, "–" without a value."""
    if seeds == 0 or math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if seeds > 1 else "")


def _secs(t: float | None) -> str:
    """Seconds; nan = the bar was never reached, None = there was no bar."""
    if t is None:
        return "–"
    return "never" if math.isnan(t) else f"{t:.0f}"


TABLE_HEADER = (
    "| method | linear-probe acc (%) | target probe acc (%) | data s | train s | end-to-end s "
    "| to BYOL final: train s | to BYOL final: end-to-end s "
    "| to best SSL final: train s | to best SSL final: end-to-end s | acc − second best (points) |"
)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """A Table 2-like Markdown table over one or more seeds' ``results.json``.

    Accuracies are mean ± std over seeds (the value alone for one seed); "data s" is the data
    optimization (0 for SSL), "end-to-end s" data + training; time-to-accuracy columns are
    the first probe point reaching the bar on each clock ("never": not reached; "–": no bar).
    """
    agg = aggregate(results)
    best = sorted({r["best_ssl"] for r in results if r.get("best_ssl")})
    lines = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER[1:-1].count("|") + "---|"]
    for name, a in agg.items():
        others = [agg[n]["acc_mean"] for n in agg if n != name]
        gap = (a["acc_mean"] - max(others)) * 100 if others else math.nan
        cells = [
            name,
            _pct(a["acc_mean"], a["acc_std"], a["seeds"]),
            _pct(a["target_probe_acc_mean"], a["target_probe_acc_std"], a["target_probe_acc_seeds"]),
            "–" if math.isnan(a["data_seconds_mean"]) else f"{a['data_seconds_mean']:.0f}",
            f"{a['seconds_mean']:.0f}",
            "–" if math.isnan(a["end_to_end_seconds_mean"]) else f"{a['end_to_end_seconds_mean']:.0f}",
            *(_secs(a[f"{key}_mean"]) for key in TIME_KEYS),
            "–" if math.isnan(gap) else f"{gap:+.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in results})
    lines += [
        "",
        f"Seeds: {seeds}; profile: {results[0]['profile']}; best SSL baseline: {', '.join(best) or 'none'}.",
        "Target probe: linear probe of a single prior's frozen features (– for CoOpt variants: the "
        "test images have no merged targets). Times to a final accuracy: first probe point, no "
        "interpolation.",
    ]
    return "\n".join(lines)


def write_results_csv(path: Path, result: dict[str, Any]) -> None:
    """One row per (method, probe point), on the training and the end-to-end clock."""
    rows = []
    for name in ordered(list(result["methods"])):
        m = result["methods"][name]
        data = method_data_seconds(result, name)
        rows += [
            {
                "profile": result["profile"],
                "seed": result["seed"],
                "method": name,
                "train_seconds_at_probe": f"{seconds:.2f}",
                "end_to_end_seconds_at_probe": "" if data is None else f"{seconds + data:.2f}",
                "data_seconds": "" if data is None else f"{data:.2f}",
                "accuracy": f"{acc:.4f}",
                "final_acc": f"{m['final_acc']:.4f}",
            }
            for seconds, acc in m["curve"]
        ]
    write_csv(path, rows)


def _plot_panel(ax: Any, result: dict[str, Any], end_to_end: bool) -> None:
    """One clock's accuracy curves, with BYOL's and the best baseline's final accuracy."""
    for name in ordered(list(result["methods"])):
        curve = np.asarray(result["methods"][name]["curve"], dtype=float)
        shift = (method_data_seconds(result, name) or 0.0) if end_to_end else 0.0
        style = (
            {"lw": 2.6}
            if is_coopt(name)
            else {"lw": 1.8, "ls": "-."}
            if is_single(name)
            else {"lw": 1.4, "ls": "--"}
        )
        ax.plot(curve[:, 0] + shift, 100 * curve[:, 1], marker="o", ms=3, label=name, **style)
    best = best_ssl(result["methods"])
    refs = ["byol"] if "byol" in result["methods"] else []
    refs += [best] if best not in (None, "byol") else []
    for ref in refs:
        final = 100 * result["methods"][ref]["final_acc"]
        color = "gray" if ref == "byol" else "black"
        ax.axhline(final, color=color, lw=0.8, ls=":", label=f"{ref} final")
    clock = "end-to-end (data optimization + training)" if end_to_end else "student training"
    ax.set_xlabel(f"{clock} wall-clock time (s)")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    ax.grid(alpha=0.3)


def plot_curves(path: Path, result: dict[str, Any]) -> None:
    """Linear-probe accuracy against training (left) and end-to-end (right) wall-clock time."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), dpi=130, sharey=True)
    _plot_panel(axes[0], result, end_to_end=False)
    _plot_panel(axes[1], result, end_to_end=True)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"CoOpt vs single priors vs SSL, profile {result['profile']}, seed {result['seed']}")
    save_figure(fig, path)


# ---------------------------------------------------------------------------- configuration
def _spec(cfg: DictConfig, file: str, subset: int | None) -> str:
    """``npz:<data_dir>/<file>``, with a seeded class-balanced subset of ``subset`` images."""
    return dataset_spec(f"npz:{file}", cfg.data_dir, None if subset is None else int(subset), int(cfg.seed))


def _train_config(cfg: DictConfig) -> Any:
    """The profile's training budget, the same for every method, probed at ``eval_times_s``."""
    return train_config(
        cfg.train, int(cfg.seed), str(cfg.device), eval_at_s=tuple(map(float, cfg.eval_times_s))
    )


def _refuse_human(entries: Sequence[str], what: str) -> None:
    """ValueError if any stage of any prior entry is a ``human`` prior (labels as targets)."""
    from coopt_flwr.protocol.evolution import parse_path
    from coopt_flwr.registry.spec import parse_spec

    human = [e for e in entries if any(parse_spec(s).name == "human" for s in parse_path(e))]
    if human:
        raise ValueError(
            f"{what} holds human priors {human}: their targets are labels, which "
            "must not reach the benchmark's students; use a mix of model priors"
        )


def benchmark_priors(mix: str) -> list[str]:
    """The prior entries of a named mix, refusing human priors.

    A ``human`` prior's targets are the data set's labels: a student regressing them would be
    supervised, and its linear probe could not be compared with self-supervised baselines.

    Raises
    ------
    ValueError
        If any stage of any entry of the mix is a ``human`` prior, naming the mix.
    """
    from coopt_flwr.config import load_mix

    entries = load_mix(mix)
    _refuse_human(entries, f"benchmark mix {mix!r}")
    return entries


def single_priors(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The profile's ``singles`` (name → prior spec; empty when absent), refusing human priors.

    Raises
    ------
    ValueError
        If an entry is not a single spec string, or is (or evolves into) a ``human`` prior.
    """
    raw = cfg.get("singles") or {}
    singles = {str(k): v for k, v in raw.items()}
    for name, spec in singles.items():
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"singles.{name}: expected a prior spec string, got {spec!r}")
        _refuse_human([spec], f"benchmark single prior {name!r}")
    return {k: str(v).strip() for k, v in singles.items()}


def variant_spec(name: str, value: Any) -> tuple[str, dict[str, Any]]:
    """A ``coopt.variants`` entry: (mix name, run-config overrides of this variant's run).

    ``value`` is a mix name, or a mapping ``{mix: NAME, <run-config key>: value, ...}``. The
    override keys are not checked here (the run-config loader rejects unknown keys and bad
    values), except those the benchmark sets itself (:data:`BENCHMARK_KEYS`).

    Raises
    ------
    ValueError
        For a mapping without ``mix``, another type, or an override of a benchmark key.
    """
    if isinstance(value, str):
        return value, {}
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping) or not isinstance(value.get("mix"), str):
        raise ValueError(
            f"coopt.variants.{name}: expected a mix name or a mapping {{mix: NAME, <run-config key>: "
            f"value, ...}}, got {value!r}"
        )
    overrides = {str(k): v for k, v in value.items() if k != "mix"}
    fixed = sorted(set(overrides) & set(BENCHMARK_KEYS))
    if fixed:
        raise ValueError(f"coopt.variants.{name}: {fixed} are set by the benchmark, not per variant")
    return str(value["mix"]), overrides


def coopt_variants(cfg: DictConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every ``coopt.variants`` entry as (mix, overrides), checked up front: human mixes are
    refused and the overrides go through the run-config loader (unknown keys, bad values)
    before any variant runs."""
    from coopt_flwr.config import Settings

    variants = {str(k): variant_spec(str(k), v) for k, v in (cfg.coopt.get("variants") or {}).items()}
    for name, (mix, overrides) in variants.items():
        benchmark_priors(mix)
        try:
            Settings.from_config({}, overrides)
        except ValueError as err:
            raise ValueError(f"coopt.variants.{name}: {err}") from err
    return variants


# ---------------------------------------------------------------------------- data and probes
def memoized_probe(probe: Callable[[Any], float]) -> Callable[[Any], float]:
    """Wrap a probe so a backbone with bit-identical weights is probed only once.

    Every method starts from the same seeded backbone, so the t = 0 point of each curve is the
    same measurement; the key is a hash of all parameters and buffers, so any training step
    (which changes the weights) misses the cache.
    """
    import hashlib

    import torch

    cache: dict[str, float] = {}

    def run(backbone: torch.nn.Module) -> float:
        h = hashlib.sha256()
        for t in list(backbone.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        key = h.hexdigest()
        if key not in cache:
            cache[key] = probe(backbone)
        return cache[key]

    return run


class Probes:
    """Memoized linear probes on one labeled split, one per input normalization.

    ``probes(mean, std)`` is ``probe(backbone) -> accuracy`` whose feature extraction normalizes
    images with ``mean``/``std`` (the statistics the backbone was trained with).
    """

    def __init__(
        self,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        device: str | None,
    ) -> None:
        self.sets = (train_images, train_labels, test_images, test_labels)
        self.device = device
        self._cache: dict[Normalization, Callable[[Any], float]] = {}

    def __call__(self, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], float]:
        from coopt_flwr.learn.probe import LinearProbe

        key = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        if key not in self._cache:
            probe = LinearProbe(*self.sets, mean=key[0], std=key[1], device=self.device)
            self._cache[key] = memoized_probe(probe)
        return self._cache[key]


@dataclass
class BenchData:
    """D (the unlabeled training subset, labels kept for the probe), the test set, the labeled
    probe ids of D, the students' input normalization and the probes."""

    train: Any
    test: Any
    probe_ids: np.ndarray
    student_norm: Normalization
    probes: Probes = field(repr=False)

    def student_probe(self) -> Callable[[Any], float]:
        """The probe of students: normalized as they are trained (:attr:`student_norm`)."""
        return self.probes(*self.student_norm)


def load_data(cfg: DictConfig) -> BenchData:
    """The unlabeled set, the test set, a seeded labeled part of the unlabeled set for the probe."""
    from coopt_flwr.learn.student import channel_stats
    from coopt_flwr.registry.datasets import create_dataset

    seed = int(cfg.seed)
    train = create_dataset(_spec(cfg, "train.npz", cfg.data.subset))
    test = create_dataset(_spec(cfg, "test.npz", cfg.data.get("test_subset")))
    if train.labels is None or test.labels is None:
        raise ValueError("the benchmark needs labels for the linear probe (train and test)")
    rng = np.random.default_rng([seed, 0x9B])
    n_probe = min(int(cfg.data.probe_train), len(train))
    ids = np.sort(rng.choice(len(train), size=n_probe, replace=False))
    probes = Probes(train.images[ids], train.labels[ids], test.images, test.labels, str(cfg.device) or None)
    return BenchData(train, test, ids, channel_stats(train.images), probes)


def ssl_normalization(method: Any) -> Normalization:
    """The input normalization an SSL method trains with: its ``normalize`` hyper-parameter
    (lightly's views end in ``Normalize(mean, std)``), the identity when it is None."""
    norm = method.hparams.get("normalize")
    if not norm:
        channels = 3
        return (0.0,) * channels, (1.0,) * channels
    return tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])


def _normalization_record(norm: Normalization) -> dict[str, list[float]]:
    return {"mean": list(norm[0]), "std": list(norm[1])}


# ---------------------------------------------------------------------------- running
def run_protocol(
    cfg: DictConfig, name: str, mix: str, out: Path, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run the CoOpt protocol through Flower for one variant; return its summary.

    ``overrides`` are run-config keys of this variant only; they win over the profile's
    ``coopt`` block and are checked by the run-config loader before Ray starts.
    """
    from coopt_flwr.config import Settings
    from simulations.run import launch

    run_config = run_config_overrides(
        cfg,
        cfg.coopt,
        {
            "dataset": _spec(cfg, "train.npz", cfg.data.subset),
            "priors": benchmark_priors(mix),
            "output-dir": str(out / f"protocol-{name}"),
        },
    )
    if overrides:
        run_config.update(overrides)
        Settings.from_config({}, run_config)  # unknown keys and bad values fail here, naming the key
    start = time.perf_counter()
    summary = launch(run_config, int(cfg.coopt["num-supernodes"]))
    summary["wall_seconds"] = time.perf_counter() - start
    if not summary["complete"]:
        raise RuntimeError(f"{name}: the protocol left {len(summary['missing-ids'])} samples without targets")
    return summary


def embed_images(
    cfg: DictConfig, spec: str, images: np.ndarray, log: Callable[[str], None] = print, label: str = ""
) -> tuple[np.ndarray, float]:
    """One party embeds ``images`` with prior ``spec`` alone; (features, seconds).

    :func:`coopt_flwr.protocol.replay.embed_prior` (the prior is built before the clock
    starts), with progress logged about every 15 s. No labels are passed: the benchmark refuses
    label-based priors. A random-init prior is seeded with the benchmark's seed (protocol
    participant k uses seed + k).
    """
    from coopt_flwr.protocol.replay import embed_prior
    from coopt_flwr.registry.datasets import ImageData

    if len(images) == 0:
        raise ValueError(f"{label or spec}: no images to embed")
    start, last = time.perf_counter(), [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S and done < total:
            last[0] = now
            eta = (now - start) / done * (total - done)
            log(f"[bench] {label or spec}: embedded {done}/{total} ({now - start:.0f} s, ~{eta:.0f} s left)")

    data = ImageData(name=label or spec, images=images, labels=None, num_classes=None)
    e = embed_prior(spec, data, seed=int(cfg.seed), device=str(cfg.device) or None, progress=progress)
    return e.features, e.seconds


def sequential_embedding_seconds(
    cfg: DictConfig, data: Any, prior_spec: str, log: Callable[[str], None] = print
) -> float:
    """Wall time for one party to embed the whole unlabeled set ``data`` with one prior, alone."""
    return embed_images(cfg, prior_spec, data.images, log, f"sequential {prior_spec}")[1]


def train_on_targets(
    cfg: DictConfig, label: str, targets: np.ndarray, data: BenchData, log: Callable[[str], None]
) -> dict[str, Any]:
    """A fresh seeded student regressing ``targets`` (row i: image i of D); its method record.

    The one student path of CoOpt variants and single priors: the profile's student, budget
    and centering, inputs normalized with the channel statistics of D, probed likewise.
    """
    from coopt_flwr.learn.student import Student, train_student

    targets = np.asarray(targets, dtype=np.float32)
    student = Student.create(
        str(cfg.student.arch), targets.shape[1], cifar_stem=bool(cfg.student.cifar_stem), seed=int(cfg.seed)
    )
    probe = data.student_probe()
    mean, std = data.student_norm
    log(f"[bench] {label}: training the student on {targets.shape} targets")
    res = train_student(
        student,
        data.train.images,
        targets,
        _train_config(cfg),
        evaluate=lambda: probe(student.backbone),
        mean=mean,
        std=std,
        center=bool(cfg.student.get("center_targets", True)),
    )
    log(f"[bench] {label}: final linear-probe accuracy {res.final_acc:.4f}")
    return {**train_record(res), "normalization": _normalization_record(data.student_norm)}


def _with_clocks(
    record: dict[str, Any], data_seconds: float, target_probe_acc: float | None
) -> dict[str, Any]:
    """A method record with ``data_seconds``, ``end_to_end_seconds`` and ``target_probe_acc``."""
    return {
        **record,
        "data_seconds": float(data_seconds),
        "end_to_end_seconds": float(data_seconds) + float(record["train_seconds"]),
        "target_probe_acc": None if target_probe_acc is None else float(target_probe_acc),
    }


def protocol_record(
    summary: Mapping[str, Any],
    mix: str,
    priors: Sequence[str],
    overrides: Mapping[str, Any],
    participants: int,
) -> dict[str, Any]:
    """A variant's data-optimization record from its protocol summary.

    Holds the collaborative seconds (every phase but waiting for nodes), anchor, G, the mix,
    its prior entries, the variant's run-config overrides, and ``redundancy`` and each
    participant's ``residual-oos`` where the summary has them.
    """
    last = summary["rounds"][-1]
    phases = last["phase-seconds"]
    record: dict[str, Any] = {
        "collaborative_seconds": sum(v for k, v in phases.items() if k != "wait-nodes"),
        "protocol_wall_seconds": summary["wall_seconds"],
        "participants": int(participants),
        "anchor": summary["anchor"],
        "g_before": summary["g-before"],
        "g_after": summary["g-after"],
        "mix": mix,
        "priors": list(priors),
        "overrides": dict(overrides),
    }
    redundancy = last.get("redundancy", (summary.get("config") or {}).get("redundancy"))
    if redundancy is not None:
        record["redundancy"] = int(redundancy)
    nodes = summary.get("participants") or last.get("participants") or []
    if any(p.get("residual-oos") is not None for p in nodes):
        record["residual-oos"] = [
            {
                "partition": p.get("partition-id"),
                "prior": p.get("prior"),
                "residual-oos": p.get("residual-oos"),
            }
            for p in nodes
        ]
    return record


def run_coopt(
    cfg: DictConfig,
    variant: str,
    mix: str,
    overrides: Mapping[str, Any],
    out: Path,
    data: BenchData,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One CoOpt variant: the protocol over ``mix`` (with its run-config ``overrides``), then a
    student on its merged targets. Returns the data-optimization record and the method record.

    The method's ``target_probe_acc`` is None: the probe's test images have no merged targets.
    """
    from coopt_flwr.store.storage import load_optimized

    participants = int(cfg.coopt["num-supernodes"])
    log(
        f"[bench] {variant}: CoOpt protocol with mix {mix!r} over {participants} participants, "
        f"overrides {dict(overrides)}"
    )
    summary = run_protocol(cfg, variant, mix, out, overrides)
    record = protocol_record(summary, mix, benchmark_priors(mix), overrides, participants)
    if variant == "coopt":
        record["sequential_seconds"] = sequential_embedding_seconds(
            cfg, data.train, summary["anchor"]["prior"], log
        )
    merged = load_optimized(out / f"protocol-{variant}")
    targets = np.empty_like(merged["targets"])
    targets[merged["ids"]] = merged["targets"]
    method = train_on_targets(cfg, variant, targets, data, log)
    return record, _with_clocks(method, record["collaborative_seconds"], None)


def run_single(
    cfg: DictConfig, name: str, spec: str, data: BenchData, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One prior alone: embed all of D (timed) and the test images, probe its frozen features
    (the ceiling of its targets), then a student on its raw features of D.

    Returns the prior's record (spec, width, seconds, ``target_probe_acc``) and the method record.
    """
    from coopt_flwr.learn.probe import linear_probe

    label = f"{SINGLE_PREFIX}{name}"
    log(f"[bench] {label}: {spec} embeds all {len(data.train)} unlabeled images alone")
    feats, seconds = embed_images(cfg, spec, data.train.images, log, label)
    test_feats, test_seconds = embed_images(cfg, spec, data.test.images, log, f"{label} (test images)")
    ids = data.probe_ids
    ceiling = linear_probe(
        feats[ids], data.train.labels[ids], test_feats, data.test.labels, seed=int(cfg.seed)
    )
    log(f"[bench] {label}: embedded D in {seconds:.1f} s; its features probe at {ceiling:.4f}")
    method = train_on_targets(cfg, label, feats, data, log)
    record = {
        "spec": spec,
        "feature_dim": int(feats.shape[1]),
        "data_seconds": float(seconds),
        "test_embed_seconds": float(test_seconds),
        "target_probe_acc": float(ceiling),
    }
    return record, _with_clocks(method, seconds, ceiling)


def run_ssl(cfg: DictConfig, name: str, data: BenchData, log: Callable[[str], None]) -> dict[str, Any]:
    """One SSL baseline on the student backbone and budget, probed with its own normalization;
    its method record (no data optimization: ``data_seconds`` 0)."""
    from coopt_flwr.learn.ssl import create_ssl
    from coopt_flwr.learn.student import create_backbone
    from coopt_flwr.learn.training import fit

    backbone, dim = create_backbone(
        str(cfg.student.arch), cifar_stem=bool(cfg.student.cifar_stem), seed=int(cfg.seed)
    )
    overrides = dict(cfg.ssl.overrides.get(name, {})) if cfg.ssl.get("overrides") else {}
    image_size = int(data.train.images.shape[1])
    method = create_ssl(name, backbone, dim, image_size, seed=int(cfg.seed), **overrides)
    norm = ssl_normalization(method)
    probe = data.probes(*norm)
    log(f"[bench] {name}: SSL training")
    res = fit(
        method.step,
        method.trainable_modules(),
        data.train.images,
        _train_config(cfg),
        evaluate=lambda: probe(backbone),
        after_step=method.after_step,
    )
    log(f"[bench] {name}: final linear-probe accuracy {res.final_acc:.4f}")
    return _with_clocks({**train_record(res), "normalization": _normalization_record(norm)}, 0.0, None)


def run_benchmark(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every method of the profile and write the results; returns ``results.json``."""
    variants = coopt_variants(cfg)  # refuse human mixes and bad entries before any work is done
    singles = single_priors(cfg)
    out = output_folder(cfg)
    data = load_data(cfg)
    log(
        f"[bench] profile {cfg.profile}, seed {cfg.seed}: {len(data.train)} unlabeled, "
        f"{len(data.probe_ids)} probe-train, {len(data.test)} test images -> {out}"
    )
    results: dict[str, Any] = {
        "profile": str(cfg.profile),
        "seed": int(cfg.seed),
        "methods": {},
        "data_optimization": {},
        "time_to_byol_final": {},
    }
    for variant, (mix, overrides) in variants.items():
        record, results["methods"][variant] = run_coopt(cfg, variant, mix, overrides, out, data, log)
        if variant == "coopt":
            results["data_optimization"] = record
        else:
            results.setdefault("variants_data_optimization", {})[variant] = record
    for name, spec in singles.items():
        record, results["methods"][f"{SINGLE_PREFIX}{name}"] = run_single(cfg, name, spec, data, log)
        results.setdefault("singles", {})[name] = record
    for name in cfg.ssl.methods:
        results["methods"][str(name)] = run_ssl(cfg, str(name), data, log)
    add_times_to_accuracy(results)
    write_report(out, results)
    return results


def write_report(out: Path, results: dict[str, Any]) -> None:
    """``results.json`` + ``results.csv`` + ``curves.png`` + ``table.md``."""
    write_json(out / "results.json", results)
    write_results_csv(out / "results.csv", results)
    plot_curves(out / "curves.png", results)
    (out / "table.md").write_text(markdown_table([results]) + "\n", encoding="utf-8")


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    results = run_benchmark(cfg)
    print(markdown_table([results]))
    print(json.dumps(results["data_optimization"], indent=2))
    if results.get("singles"):
        print(json.dumps(results["singles"], indent=2))


if __name__ == "__main__":
    main()
