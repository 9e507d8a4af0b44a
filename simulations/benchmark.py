"""Table 2 benchmark: CoOpt students versus six SSL baselines at an equal training budget.

    python -m simulations.benchmark profile=cpu seed=0 output-dir=outputs/bench-0
    python -m simulations.benchmark --multirun profile=cpu seed=0,1,2

Steps (each timed and reported separately):

1. **Data optimization**, the one-off cost: the CoOpt protocol runs through Flower's
   simulation engine (K virtual participants, a named prior mix) over the seeded unlabeled
   subset, and writes the merged targets. For comparison, one party embeds everything alone
   with the anchor prior (``sequential_seconds``).
2. **Student training** on the merged targets (cosine regression), one per CoOpt variant.
3. **SSL baselines** (BYOL, SimCLR, MoCo v2, SimSiam, DINO, SwAV from lightly) on the same
   student backbone and the same wall-clock budget.
4. A linear probe on the frozen backbone at fixed training times gives accuracy against
   training wall-clock curves; ``time_to_byol_final`` is the first probed time at which a
   method reaches BYOL's final accuracy (probe points only, no interpolation).

Writes ``results.json`` (the stable interface), ``results.csv``, ``curves.png`` and
``table.md`` into the output folder.
"""

from __future__ import annotations

import json
import os
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


def times_to_final(methods: dict[str, dict[str, Any]], reference: str) -> dict[str, float | None]:
    """Time each method needs to reach ``reference``'s final accuracy (empty without it)."""
    if reference not in methods:
        return {}
    target = methods[reference]["final_acc"]
    return {name: time_to_reach(m["curve"], target) for name, m in methods.items()}


def times_to_byol_final(methods: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Time each method needs to reach BYOL's final accuracy (empty without BYOL)."""
    return times_to_final(methods, "byol")


def best_ssl(methods: dict[str, dict[str, Any]]) -> str | None:
    """The SSL baseline with the highest final accuracy (None when no baseline ran).

    BYOL's final accuracy can sit below the untrained network's at a small budget (then every
    method "reaches" it at 0 s); the best baseline's final accuracy is the bar that still
    separates methods, so the report gives the time to reach it as well.
    """
    ssl = [n for n in methods if not is_coopt(n)]
    return max(ssl, key=lambda n: methods[n]["final_acc"]) if ssl else None


def ordered(names: Sequence[str]) -> list[str]:
    """CoOpt variants first, then the SSL methods in the paper's order."""
    rank = {n: i for i, n in enumerate(METHOD_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, 0.5 if is_coopt(n) else 99), n))


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of each method's final accuracy and training time."""
    out: dict[str, dict[str, float]] = {}
    names = ordered(sorted({n for r in results for n in r["methods"]}))
    for name in names:
        accs = [r["methods"][name]["final_acc"] for r in results if name in r["methods"]]
        secs = [r["methods"][name]["train_seconds"] for r in results if name in r["methods"]]
        out[name] = {
            "acc_mean": float(np.mean(accs)),
            "acc_std": float(np.std(accs)),
            "seconds_mean": float(np.mean(secs)),
            "seeds": len(accs),
        }
        # Mean over the seeds where the bar was reached ("never" = reached in none).
        for key in ("time_to_byol_final", "time_to_best_ssl_final"):
            times = [r.get(key, {}).get(name) for r in results]
            times = [t for t in times if t is not None]
            out[name][f"{key}_mean"] = float(np.mean(times)) if times else float("nan")
    return out


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """A Table 2-like Markdown table over one or more seeds' ``results.json``."""
    agg = aggregate(results)
    by_acc = sorted(agg, key=lambda n: agg[n]["acc_mean"], reverse=True)
    best = sorted({r["best_ssl"] for r in results if r.get("best_ssl")})
    lines = [
        "| method | linear-probe acc (%) | training time (s) | time to BYOL's final acc (s) "
        "| time to best SSL's final acc (s) | acc − second best (points) |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(t: float) -> str:
        return "never" if np.isnan(t) else f"{t:.0f}"

    for name in agg:
        a = agg[name]
        others = [agg[n]["acc_mean"] for n in by_acc if n != name]
        gap = (a["acc_mean"] - max(others)) * 100 if others else float("nan")
        lines.append(
            f"| {name} | {100 * a['acc_mean']:.1f} ± {100 * a['acc_std']:.1f} | {a['seconds_mean']:.0f} "
            f"| {fmt(a['time_to_byol_final_mean'])} | {fmt(a['time_to_best_ssl_final_mean'])} | {gap:+.1f} |"
        )
    seeds = sorted({r["seed"] for r in results})
    lines.append("")
    lines.append(
        f"Seeds: {seeds}; profile: {results[0]['profile']}; best SSL baseline: {', '.join(best) or 'none'}."
    )
    return "\n".join(lines)


def write_results_csv(path: Path, result: dict[str, Any]) -> None:
    """One row per (method, probe point)."""
    rows = []
    for name in ordered(list(result["methods"])):
        m = result["methods"][name]
        rows += [
            {
                "profile": result["profile"],
                "seed": result["seed"],
                "method": name,
                "train_seconds_at_probe": f"{seconds:.2f}",
                "accuracy": f"{acc:.4f}",
                "final_acc": f"{m['final_acc']:.4f}",
            }
            for seconds, acc in m["curve"]
        ]
    write_csv(path, rows)


def plot_curves(path: Path, result: dict[str, Any]) -> None:
    """Linear-probe accuracy against training wall-clock time, one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=130)
    for name in ordered(list(result["methods"])):
        curve = np.asarray(result["methods"][name]["curve"], dtype=float)
        style = {"lw": 2.6} if is_coopt(name) else {"lw": 1.4, "ls": "--"}
        ax.plot(curve[:, 0], 100 * curve[:, 1], marker="o", ms=3, label=name, **style)
    if "byol" in result["methods"]:
        ax.axhline(
            100 * result["methods"]["byol"]["final_acc"], color="gray", lw=0.8, ls=":", label="BYOL final"
        )
    best = best_ssl(result["methods"])
    if best not in (None, "byol"):
        ax.axhline(
            100 * result["methods"][best]["final_acc"], color="black", lw=0.8, ls=":", label=f"{best} final"
        )
    ax.set_xlabel("student training wall-clock time (s)")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    ax.set_title(f"CoOpt vs SSL, profile {result['profile']}, seed {result['seed']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, path)


# ---------------------------------------------------------------------------- running
def _spec(cfg: DictConfig, file: str, subset: int | None) -> str:
    """``npz:<data_dir>/<file>``, with a seeded class-balanced subset of ``subset`` images."""
    return dataset_spec(f"npz:{file}", cfg.data_dir, None if subset is None else int(subset), int(cfg.seed))


def _train_config(cfg: DictConfig) -> Any:
    """The profile's training budget, the same for every method, probed at ``eval_times_s``."""
    return train_config(
        cfg.train, int(cfg.seed), str(cfg.device), eval_at_s=tuple(map(float, cfg.eval_times_s))
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
    from coopt_flwr.protocol.evolution import parse_path
    from coopt_flwr.registry.spec import parse_spec

    entries = load_mix(mix)
    human = [e for e in entries if any(parse_spec(s).name == "human" for s in parse_path(e))]
    if human:
        raise ValueError(
            f"benchmark mix {mix!r} holds human priors {human}: their targets are labels, which "
            "must not reach the benchmark's students; use a mix of model priors"
        )
    return entries


def run_protocol(cfg: DictConfig, name: str, mix: str, out: Path) -> dict[str, Any]:
    """Run the CoOpt protocol through Flower for one variant; return its summary."""
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
    start = time.perf_counter()
    summary = launch(run_config, int(cfg.coopt["num-supernodes"]))
    summary["wall_seconds"] = time.perf_counter() - start
    if not summary["complete"]:
        raise RuntimeError(f"{name}: the protocol left {len(summary['missing-ids'])} samples without targets")
    return summary


def sequential_embedding_seconds(cfg: DictConfig, data: Any, prior_spec: str) -> float:
    """Wall time for one party to embed the whole unlabeled set ``data`` with one prior, alone."""
    from coopt_flwr.registry.priors import create_prior

    prior = create_prior(prior_spec, seed=int(cfg.seed), device=str(cfg.device) or None)
    start = time.perf_counter()
    for s in range(0, len(data), 1024):
        prior.embed(data.images[s : s + 1024], None if data.labels is None else data.labels[s : s + 1024])
    return time.perf_counter() - start


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


def _data_and_probe(cfg: DictConfig) -> tuple[Any, Any, Callable[[Any], float], int]:
    """The unlabeled set, the test set, the memoized linear probe on a seeded labeled part of
    the unlabeled set, and that part's size."""
    from coopt_flwr.learn.probe import LinearProbe
    from coopt_flwr.registry.datasets import create_dataset

    seed = int(cfg.seed)
    train = create_dataset(_spec(cfg, "train.npz", cfg.data.subset))
    test = create_dataset(_spec(cfg, "test.npz", cfg.data.get("test_subset")))
    if train.labels is None or test.labels is None:
        raise ValueError("the benchmark needs labels for the linear probe (train and test)")
    rng = np.random.default_rng([seed, 0x9B])
    n_probe = min(int(cfg.data.probe_train), len(train))
    probe_ids = np.sort(rng.choice(len(train), size=n_probe, replace=False))
    probe = memoized_probe(
        LinearProbe(
            train.images[probe_ids],
            train.labels[probe_ids],
            test.images,
            test.labels,
            device=str(cfg.device) or None,
        )
    )
    return train, test, probe, n_probe


def _new_backbone(cfg: DictConfig) -> tuple[Any, int]:
    """The seeded student backbone every method starts from, and its feature width."""
    from coopt_flwr.learn.student import create_backbone

    return create_backbone(str(cfg.student.arch), cifar_stem=bool(cfg.student.cifar_stem), seed=int(cfg.seed))


def run_coopt(
    cfg: DictConfig, variant: str, mix: str, out: Path, train: Any, probe: Callable, log: Callable
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One CoOpt variant: the protocol over ``mix``, then a student on its merged targets.

    Returns the data-optimization record and the student's method record.
    """
    from coopt_flwr.learn.student import Student, train_student
    from coopt_flwr.store.storage import load_optimized

    participants = int(cfg.coopt["num-supernodes"])
    log(f"[bench] {variant}: CoOpt protocol with mix {mix!r} over {participants} participants")
    summary = run_protocol(cfg, variant, mix, out)
    phases = summary["rounds"][-1]["phase-seconds"]
    record = {
        "collaborative_seconds": sum(v for k, v in phases.items() if k != "wait-nodes"),
        "protocol_wall_seconds": summary["wall_seconds"],
        "participants": participants,
        "anchor": summary["anchor"],
        "g_before": summary["g-before"],
        "g_after": summary["g-after"],
        "mix": mix,
    }
    if variant == "coopt":
        record["sequential_seconds"] = sequential_embedding_seconds(cfg, train, summary["anchor"]["prior"])
    merged = load_optimized(out / f"protocol-{variant}")
    targets = np.empty_like(merged["targets"])
    targets[merged["ids"]] = merged["targets"]
    backbone, dim = _new_backbone(cfg)
    student = Student(backbone, dim, targets.shape[1])
    log(f"[bench] {variant}: training the student on {targets.shape} targets")
    res = train_student(
        student,
        train.images,
        targets,
        _train_config(cfg),
        evaluate=lambda: probe(backbone),
        center=bool(cfg.student.get("center_targets", True)),
    )
    log(f"[bench] {variant}: final linear-probe accuracy {res.final_acc:.4f}")
    return record, train_record(res)


def run_ssl(cfg: DictConfig, name: str, train: Any, probe: Callable, log: Callable) -> dict[str, Any]:
    """One SSL baseline on the student backbone and budget; its method record."""
    from coopt_flwr.learn.ssl import create_ssl
    from coopt_flwr.learn.training import fit

    backbone, dim = _new_backbone(cfg)
    overrides = dict(cfg.ssl.overrides.get(name, {})) if cfg.ssl.overrides else {}
    image_size = int(train.images.shape[1])
    method = create_ssl(name, backbone, dim, image_size, seed=int(cfg.seed), **overrides)
    log(f"[bench] {name}: SSL training")
    res = fit(
        method.step,
        method.trainable_modules(),
        train.images,
        _train_config(cfg),
        evaluate=lambda: probe(backbone),
        after_step=method.after_step,
    )
    log(f"[bench] {name}: final linear-probe accuracy {res.final_acc:.4f}")
    return train_record(res)


def run_benchmark(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every method of the profile and write the results; returns ``results.json``."""
    for mix in cfg.coopt.variants.values():
        benchmark_priors(str(mix))  # refuse a human mix before any work is done
    out = output_folder(cfg)
    train, test, probe, n_probe = _data_and_probe(cfg)
    log(
        f"[bench] profile {cfg.profile}, seed {cfg.seed}: {len(train)} unlabeled, {n_probe} probe-train, "
        f"{len(test)} test images -> {out}"
    )
    results: dict[str, Any] = {
        "profile": str(cfg.profile),
        "seed": int(cfg.seed),
        "methods": {},
        "data_optimization": {},
        "time_to_byol_final": {},
    }
    for variant, mix in cfg.coopt.variants.items():
        record, results["methods"][str(variant)] = run_coopt(
            cfg, str(variant), str(mix), out, train, probe, log
        )
        if variant == "coopt":
            results["data_optimization"] = record
        else:
            results.setdefault("variants_data_optimization", {})[str(variant)] = record
    for name in cfg.ssl.methods:
        results["methods"][str(name)] = run_ssl(cfg, str(name), train, probe, log)
    results["time_to_byol_final"] = times_to_byol_final(results["methods"])
    reference = best_ssl(results["methods"])
    if reference is not None:
        results["best_ssl"] = reference
        results["time_to_best_ssl_final"] = times_to_final(results["methods"], reference)
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


if __name__ == "__main__":
    main()
