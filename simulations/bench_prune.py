"""Pruning benchmark (issue 12, item 5): how much of D can target-guided pruning drop?

For each pruning method (``random``, ``kcenter``, ``zcore``, ``prototype``;
:mod:`coopt_flwr.learn.pruning`) and each kept fraction p, a fresh student regresses the merged
targets of the kept part of D only, and the linear probe of its backbone is reported::

    # decisions (method options) on the validation split, then the report on the test set:
    python -m simulations.bench_prune \
        optimized=outputs/bench-collab-0/protocol-coopt-hetero-r3 split=val output-dir=outputs/bench-prune-val
    python -m simulations.bench_prune \
        optimized=outputs/bench-collab-0/protocol-coopt-hetero-r3 split=test output-dir=outputs/bench-prune
    python -m simulations.bench_prune optimized=... split=val +options.prototype.keep=easy   # a candidate
    # smoke test, ~45 s on 2 cores (digits, seeded random targets; the numbers mean nothing):
    python -m simulations.bench_prune profile=tiny dataset=digits optimized=synthetic \
        budget.epochs=1 budget.time_s=1 'fractions=[0.5,1.0]' output-dir=/tmp/bench-prune

Data (the cpu profile's, as :func:`simulations.benchmark.load_data`): D is the seeded
class-balanced ``data.subset`` (10,000) of ``<data_dir>/train.npz`` — the spec
``npz:<data_dir>/train.npz?subset=10000&subset-seed=S`` — and the targets come from an existing
optimized set (``optimized=``), e.g. a benchmark run's ``protocol-coopt-hetero-r3``. Its ids are
row indices of exactly that D: :func:`simulations.benchmark.run_protocol` runs the protocol on
that spec (with ``S`` the benchmark's seed) and :func:`simulations.benchmark.run_coopt` places
``targets[ids]`` on the rows of ``create_dataset`` of the same spec; the run's ``summary.json``
(config ``dataset``) records it, and this command checks it (``subset`` and ``subset-seed``
must match ``data.subset`` and ``subset_seed``; null takes the summary's) before any training.

Students: the benchmark's own path, :func:`simulations.benchmark.train_on_targets` (the
profile's student, optimizer and centering, inputs normalized with D's channel statistics, for
every run the same), on the images and targets of the kept rows. Two budgets (``modes``):

``epochs``
    equal epochs: every run makes ``budget.epochs`` passes over *its kept part*, so a run at p
    costs p of the full run's compute (16 epochs ≈ the 400 s the cpu profile's full D gets on
    this 2-core machine).
``time``
    equal wall time: every run trains ``budget.time_s`` seconds (the profile's budget), so
    pruned runs make more passes over fewer images.

p = 1 keeps all of D whatever the method: it is trained once per mode (``full``) and shared.

Probe and the decision rule: the linear probe is fitted on the labeled probe ids of D (as in the
benchmark) and scored on ``split``: ``val`` is a class-balanced split of ``val_size`` training
images *outside* D (the complement of the subset in train.npz, rows recovered with the subset's
own :func:`coopt_flwr.registry.datasets.balanced_subset`), ``test`` the test set. Method options
(``options.<method>``) are to be chosen on ``val`` only; ``test`` is for reporting the chosen
ones. Labels never reach a selection.

Writes ``results.json``, ``results.csv``, ``table.md``, ``accuracy.png`` (accuracy against p,
one line per method, one panel per mode) and the kept ids of every (method, p) under
``kept/`` (:func:`coopt_flwr.learn.pruning.save_kept_ids`) into ``output-dir``. ``results.json``
is rewritten after every student, and with ``resume=true`` (the default) a re-run into the same
``output-dir`` with the same settings reuses the students already there.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import SUMMARY_FILE, write_json
from simulations.common import (
    balanced_splits,
    dataset_spec,
    markdown_table,
    output_folder,
    pyplot,
    save_figure,
    write_csv,
)

__all__ = [
    "MODES",
    "PruneData",
    "configured_options",
    "load_prune_data",
    "main",
    "markdown_report",
    "mode_config",
    "plot_accuracy",
    "run_bench_prune",
    "student_run",
    "subset_rows",
    "write_report",
]

CONF_PATH = str(CONF_DIR)
MODES = ("epochs", "time")
FULL = "full"
SYNTHETIC = "synthetic"
"""``optimized=synthetic``: seeded Gaussian targets (smoke tests only; no result means anything)."""
SYNTHETIC_DIM = 32
DIGITS_TRAIN = 1400
"""``dataset=digits``: rows [0, 1400) of the bundled digits are the training pool, the rest the test set."""


@dataclass
class PruneData:
    """D with its targets, and the probe.

    Attributes
    ----------
    d : ImageData
        D (rows with targets), labels kept for the probe only.
    ids : np.ndarray
        int64 (|D|,): the data-set id of each row of ``d`` (the optimized set's ids).
    targets : np.ndarray
        float32 (|D|, n): row i the target of image i of ``d``.
    probe_test : ImageData
        The probe's scoring images: the validation split or the test set.
    bench : Any
        A :class:`simulations.benchmark.BenchData` (``train`` = D) holding the memoized probes.
    info : dict
        What the data are (recorded in ``results.json``).
    """

    d: Any
    ids: np.ndarray
    targets: np.ndarray
    probe_test: Any
    bench: Any
    info: dict[str, Any]


# ---------------------------------------------------------------------------- data
def subset_rows(labels: np.ndarray, num_classes: int, size: int, seed: int) -> np.ndarray:
    """The rows of a labeled pool that ``balanced_subset(pool, size, seed)`` keeps, sorted.

    The subset function returns images, not rows; it is run here on a stand-in pool whose
    "images" encode each row number in three bytes, so the rows come from the very same code.
    """
    from coopt_flwr.registry.datasets import ImageData, balanced_subset

    n = len(labels)
    if n >= 1 << 24:
        raise ValueError(f"subset_rows: {n} rows do not fit the 3-byte row code")
    code = np.arange(n, dtype="<u4").view(np.uint8).reshape(n, 4)[:, :3].reshape(n, 1, 1, 3)
    stand_in = ImageData("rows", np.ascontiguousarray(code), np.asarray(labels), int(num_classes))
    sub = balanced_subset(stand_in, int(size), int(seed)).images.reshape(-1, 3).astype(np.int64)
    return sub[:, 0] | (sub[:, 1] << 8) | (sub[:, 2] << 16)


def _summary_subset(source: Path) -> tuple[str, int | None, int | None] | None:
    """(dataset spec, subset, subset-seed) from the ``summary.json`` beside an optimized set."""
    import json

    from coopt_flwr.registry.spec import parse_spec

    path = source.parent / SUMMARY_FILE
    if not path.is_file():
        return None
    spec = str((json.loads(path.read_text(encoding="utf-8")).get("config") or {}).get("dataset") or "")
    if not spec:
        return None
    parsed = parse_spec(spec)
    return spec, parsed.get_int("subset", None), parsed.get_int("subset-seed", 0)


def _pools(cfg: DictConfig) -> tuple[Any, Any, str]:
    """(training pool, test set, pool spec) of ``cfg.dataset`` (``npz`` or ``digits``)."""
    from coopt_flwr.registry.datasets import ImageData, create_dataset

    kind = str(cfg.dataset)
    if kind == "digits":
        digits = create_dataset("digits")
        part = (slice(0, DIGITS_TRAIN), slice(DIGITS_TRAIN, None))
        pool, test = (
            ImageData(f"digits[{s.start}:{s.stop}]", digits.images[s], digits.labels[s], 10) for s in part
        )
        return pool, test, "digits"
    if kind != "npz":
        raise ValueError(f"dataset must be npz (data_dir/train.npz, test.npz) or digits, got {kind!r}")
    spec = dataset_spec("npz:train.npz", cfg.data_dir)
    test = create_dataset(dataset_spec("npz:test.npz", cfg.data_dir))
    test_subset = cfg.data.get("test_subset")
    if test_subset is not None and int(test_subset) < len(test):  # the benchmark's seeded test subset
        test = create_dataset(dataset_spec("npz:test.npz", cfg.data_dir, int(test_subset), int(cfg.seed)))
    return create_dataset(spec), test, spec


def _check_recorded(
    recorded: tuple[str, int | None, int | None], source: Any, pool_spec: str, size: int | None, seed: int
) -> None:
    """ValueError unless the optimized set's own data spec is this D (same file name, subset, seed)."""
    from coopt_flwr.registry.spec import parse_spec

    spec, rec_size, rec_seed = recorded
    ours, theirs = parse_spec(pool_spec), parse_spec(spec)
    same_file = ours.name == theirs.name and Path(ours.arg or "").name == Path(theirs.arg or "").name
    same_subset = rec_size == size and (size is None or rec_seed == seed)
    if not (same_file and same_subset):
        raise ValueError(
            f"{source} was made on {spec!r}, but D here is subset {size} (subset-seed {seed}) of "
            f"{pool_spec}: set dataset / data_dir / data.subset / subset_seed to match"
        )


def load_prune_data(cfg: DictConfig, log: Callable[[str], None] = print) -> PruneData:
    """D, its targets (checked against the optimized set's data spec), the probe's sets.

    Raises
    ------
    ValueError
        When the optimized set was made on another subset than D, or its ids do not index D.
    """
    from coopt_flwr.learn.student import channel_stats
    from coopt_flwr.registry.datasets import ImageData
    from coopt_flwr.store.storage import load_optimized
    from simulations.benchmark import BenchData, Probes
    from simulations.prune import optimized_file

    seed = int(cfg.seed)
    pool, test, pool_spec = _pools(cfg)
    if pool.labels is None or test.labels is None:
        raise ValueError("the pruning benchmark needs labels for the linear probe (train and test)")
    size = min(int(cfg.data.subset or len(pool)), len(pool))
    synthetic = str(cfg.optimized) == SYNTHETIC
    source = None if synthetic else optimized_file(str(cfg.optimized))
    recorded = None if source is None else _summary_subset(source)
    subset_seed = cfg.get("subset_seed")
    if subset_seed is None:
        subset_seed = recorded[2] if recorded and recorded[2] is not None else seed
    subset_seed = int(subset_seed)
    if recorded is not None:
        _check_recorded(recorded, source, pool_spec, None if size == len(pool) else size, subset_seed)
    rows = subset_rows(pool.labels, int(pool.num_classes), size, subset_seed)
    if pool_spec != "digits":
        # The benchmark's D is create_dataset of the subset spec: check the rows give the same images.
        from coopt_flwr.registry.datasets import create_dataset

        bench_d = create_dataset(dataset_spec("npz:train.npz", cfg.data_dir, size, subset_seed))
        if not np.array_equal(bench_d.images, pool.images[rows]):
            raise RuntimeError(
                "subset_rows disagrees with the data set's own subset (a changed subset rule?)"
            )

    if synthetic:
        ids = np.arange(size, dtype=np.int64)
        targets = (
            np.random.default_rng([seed, 0x5E7]).standard_normal((size, SYNTHETIC_DIM)).astype(np.float32)
        )
    else:
        opt = load_optimized(source)  # type: ignore[arg-type]
        ids = np.asarray(opt["ids"], dtype=np.int64)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= size or len(np.unique(ids)) != len(ids):
            raise ValueError(
                f"{source}: its ids must be distinct rows of D (0..{size - 1}); got {len(ids)} ids spanning "
                f"{ids.min() if ids.size else '-'}..{ids.max() if ids.size else '-'}"
            )
        order = np.argsort(ids)
        ids, targets = ids[order], np.asarray(opt["targets"], dtype=np.float32)[order]
        if len(ids) < size:
            log(f"[bench-prune] {size - len(ids)} samples of D have no target and are left out of D")
    d_rows = rows[ids]
    d = ImageData(f"{pool_spec}[D {len(ids)}]", pool.images[d_rows], pool.labels[d_rows], pool.num_classes)

    split = str(cfg.split)
    if split == "val":
        rest = np.setdiff1d(np.arange(len(pool)), rows)
        if rest.size == 0:
            raise ValueError(f"split=val needs training images outside D, but D is all of {pool_spec}")
        classes, counts = np.unique(pool.labels[rest], return_counts=True)
        val_size = min(int(cfg.val_size), int(counts.min()) * len(classes))
        picked = balanced_splits(pool.labels[rest], [val_size], subset_seed)[0]
        v = rest[picked]
        probe_test = ImageData(
            f"{pool_spec}[validation {len(v)}]", pool.images[v], pool.labels[v], pool.num_classes
        )
    elif split == "test":
        probe_test = test
    else:
        raise ValueError(f"split must be val (training images outside D) or test, got {split!r}")

    rng = np.random.default_rng([seed, 0x9B])  # the benchmark's draw of the labeled probe ids
    probe_ids = np.sort(rng.choice(len(d), size=min(int(cfg.data.probe_train), len(d)), replace=False))
    device = str(cfg.device) or None
    probes = Probes(d.images[probe_ids], d.labels[probe_ids], probe_test.images, probe_test.labels, device)
    bench = BenchData(d, probe_test, probe_ids, channel_stats(d.images), probes)
    info = {
        "dataset": pool_spec,
        "optimized": SYNTHETIC if source is None else str(source),
        "optimized_dataset": None if recorded is None else recorded[0],
        "subset": size,
        "subset_seed": subset_seed,
        "num_total": len(ids),
        "target_dim": int(targets.shape[1]),
        "split": split,
        "probe_train": len(probe_ids),
        "probe_test": len(probe_test),
    }
    return PruneData(d, ids, targets, probe_test, bench, info)


# ---------------------------------------------------------------------------- runs
def configured_options(cfg: DictConfig, method: str) -> dict[str, Any]:
    """``options.<method>`` of the config (``{}`` when absent)."""
    raw = (cfg.get("options") or {}).get(method)
    if raw is None:
        return {}
    return dict(OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw)  # type: ignore[arg-type]


def mode_config(cfg: DictConfig, mode: str) -> DictConfig:
    """A copy of ``cfg`` whose ``train`` block has the mode's budget and no intermediate probes."""
    if mode not in MODES:
        raise ValueError(f"modes: each must be one of {MODES}, got {mode!r}")
    value = cfg.budget.epochs if mode == "epochs" else cfg.budget.time_s
    if value is None or not float(value) > 0:
        raise ValueError(
            f"mode {mode!r} needs a positive budget.{'epochs' if mode == 'epochs' else 'time_s'}"
        )
    epochs = float(value) if mode == "epochs" else None
    seconds = float(value) if mode == "time" else None
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.train.epochs = epochs
        out.train.time_budget_s = seconds
        out.eval_times_s = []  # the final accuracy is the measurement; probes cost ~20 s each here
    return out


def student_run(
    cfg: DictConfig, mode: str, label: str, rows: np.ndarray, data: PruneData, log: Callable[[str], None]
) -> dict[str, Any]:
    """A fresh student on the kept rows of D under one mode's budget; the benchmark's method record
    plus ``kept``."""
    from coopt_flwr.registry.datasets import ImageData
    from simulations.benchmark import BenchData, train_on_targets

    d = data.d
    kept = ImageData(f"{d.name}[kept {len(rows)}]", d.images[rows], d.labels[rows], d.num_classes)
    bench = BenchData(kept, data.bench.test, data.bench.probe_ids, data.bench.student_norm, data.bench.probes)
    record = train_on_targets(mode_config(cfg, mode), f"{label} [{mode}]", data.targets[rows], bench, log)
    return {**record, "kept": len(rows)}


def _p_key(p: float) -> str:
    return f"{float(p):g}"


def run_bench_prune(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Select with every method at every fraction, train the students, write the report."""
    from coopt_flwr.learn.pruning import kept_count, list_methods, method_options, save_kept_ids, select

    methods = [str(m) for m in cfg.methods]
    fractions = sorted({float(p) for p in cfg.fractions})
    modes = [str(m) for m in cfg.modes]
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; available: {list_methods()}")
    for m in modes:
        mode_config(cfg, m)  # bad modes fail before any work
    out = output_folder(cfg)
    data = load_prune_data(cfg, log)
    n = len(data.ids)
    for p in fractions:
        kept_count(n, p)  # bad fractions fail before any training
    options = {m: {**method_options(m), **configured_options(cfg, m)} for m in methods}
    log(
        f"[bench-prune] {data.info['dataset']}: |D| = {n}, targets {data.targets.shape[1]}-d from "
        f"{data.info['optimized']}; probe {data.info['probe_train']} -> {data.info['split']} "
        f"{data.info['probe_test']}; methods {methods}, p {fractions}, modes {modes} -> {out}"
    )
    selection: dict[str, dict[str, dict[str, Any]]] = {}
    kept_rows: dict[tuple[str, float], np.ndarray] = {}
    for method in methods:
        for p in fractions:
            if p >= 1.0:
                continue
            start = time.perf_counter()
            rows = select(
                data.targets,
                p,
                method,
                int(cfg.seed),
                progress=bool(cfg.progress),
                **configured_options(cfg, method),
            )
            seconds = time.perf_counter() - start
            kept_rows[(method, p)] = rows
            save_kept_ids(
                out / "kept" / f"{method}-p{_p_key(p)}.json",
                data.ids[rows],
                method=method,
                fraction=p,
                seed=int(cfg.seed),
                num_total=n,
                source=data.info["optimized"],
                options=options[method],
            )
            selection.setdefault(method, {})[_p_key(p)] = {"kept": len(rows), "seconds": seconds}
            log(f"[bench-prune] {method} p={p:g}: kept {len(rows)} of {n} in {seconds:.1f} s")
    results: dict[str, Any] = {
        "profile": str(cfg.profile),
        "seed": int(cfg.seed),
        **data.info,
        "methods": methods,
        "fractions": fractions,
        "modes": modes,
        "budget": {k: None if cfg.budget[k] is None else float(cfg.budget[k]) for k in ("epochs", "time_s")},
        "student": OmegaConf.to_container(cfg.student, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "options": options,
        "selection": selection,
        "runs": {},
    }
    done = _resumable_runs(out, results) if cfg.get("resume", True) else {}
    for mode in modes:
        for method in methods:
            for p in fractions:
                record = done.get(mode, {}).get(method, {}).get(_p_key(p))
                if record is None and p >= 1.0:
                    # p = 1 keeps all of D whatever the method: one run per mode, shared.
                    record = next(
                        (r[_p_key(p)] for r in results["runs"].get(mode, {}).values() if _p_key(p) in r), None
                    )
                if record is None:
                    rows = np.arange(n) if p >= 1.0 else kept_rows[(method, p)]
                    record = student_run(
                        cfg, mode, FULL if p >= 1.0 else f"{method} p={p:g}", rows, data, log
                    )
                    record["fraction"] = p
                    if p < 1.0:
                        record["select_seconds"] = selection[method][_p_key(p)]["seconds"]
                else:
                    log(f"[bench-prune] {method} p={p:g} [{mode}]: reusing {record['final_acc']:.4f}")
                results["runs"].setdefault(mode, {}).setdefault(method, {})[_p_key(p)] = record
                write_json(out / "results.json", results)  # partial results survive an interrupted run
    write_report(out, results)
    return results


_SETTINGS = (
    "profile", "seed", "dataset", "optimized", "subset", "subset_seed", "num_total", "split",
    "probe_train", "probe_test", "budget", "student", "train", "options",
)  # fmt: skip
"""The keys of ``results.json`` that must match for its runs to be reused (``resume``)."""


def _resumable_runs(out: Path, results: Mapping[str, Any]) -> dict[str, Any]:
    """The runs of an earlier ``results.json`` in ``out`` made with the same settings ({} if none)."""
    import json

    path = out / "results.json"
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    fresh = json.loads(json.dumps({k: results.get(k) for k in _SETTINGS}, default=str))
    if {k: earlier.get(k) for k in _SETTINGS} != fresh:
        return {}
    return earlier.get("runs") or {}


# ---------------------------------------------------------------------------- report
def _acc(results: Mapping[str, Any], mode: str, method: str, p: float) -> float | None:
    rec = results["runs"].get(mode, {}).get(method, {}).get(_p_key(p))
    return None if rec is None else float(rec["final_acc"])


def _mean_seconds(results: Mapping[str, Any], mode: str, p: float) -> str:
    """Mean training seconds of the runs at p (all methods), for the table."""
    recs = [by_p.get(_p_key(p)) for by_p in results["runs"].get(mode, {}).values()]
    secs = [float(r["train_seconds"]) for r in recs if r is not None]
    return f"{np.mean(secs):.0f}" if secs else "–"


def markdown_report(results: Mapping[str, Any]) -> str:
    """One table per mode (rows: methods; columns: p) of linear-probe accuracy, with the gap to
    ``random`` at the same p, and the selection times."""
    fractions = [float(p) for p in results["fractions"]]
    header = ["method", *(f"p = {100 * p:g} %" for p in fractions)]
    text = [
        f"Pruning benchmark, profile {results['profile']}, seed {results['seed']}: "
        f"|D| = {results['num_total']}, "
        f"targets {results['target_dim']}-d from `{results['optimized']}`; linear probe fitted on "
        f"{results['probe_train']} labeled images of D, scored on the **{results['split']}** split "
        f"({results['probe_test']} images). Cells: accuracy (%) and, in brackets, points against "
        "`random` at the same p.",
        "",
    ]
    titles = {
        "epochs": (
            f"Equal epochs ({results['budget']['epochs']} passes over the kept part: a run at p costs p)"
        ),
        "time": f"Equal wall time ({results['budget']['time_s']} s of training per run)",
    }
    for mode in results["modes"]:
        rows = []
        for method in results["methods"]:
            cells: list[Any] = [method]
            for p in fractions:
                acc, base = _acc(results, mode, method, p), _acc(results, mode, "random", p)
                if acc is None:
                    cells.append(None)
                elif base is None or method == "random" or p >= 1.0:
                    cells.append(f"{100 * acc:.1f}")
                else:
                    cells.append(f"{100 * acc:.1f} ({100 * (acc - base):+.1f})")
            rows.append(cells)
        rows.append(["train s (mean)", *(_mean_seconds(results, mode, p) for p in fractions)])
        text += [f"### {titles[mode]}", "", markdown_table(rows, header)]
    sel_rows = [
        [
            m,
            *(
                f"{results['selection'].get(m, {}).get(_p_key(p), {}).get('seconds', math.nan):.1f}"
                for p in fractions
                if p < 1.0
            ),
        ]
        for m in results["methods"]
    ]
    sel_header = ["selection s", *(f"p = {100 * p:g} %" for p in fractions if p < 1.0)]
    text += ["### Selection time (s)", "", markdown_table(sel_rows, sel_header)]
    text.append("Options: " + "; ".join(f"{m} {o}" for m, o in results["options"].items()))
    return "\n".join(text) + "\n"


def plot_accuracy(path: Path, results: Mapping[str, Any]) -> Path:
    """Accuracy against the kept fraction p, one line per method, one panel per mode."""
    plt = pyplot()
    modes = list(results["modes"])
    fig, axes = plt.subplots(
        1, len(modes), figsize=(6 * len(modes), 4.5), dpi=130, sharey=True, squeeze=False
    )
    for ax, mode in zip(axes[0], modes, strict=True):
        for method in results["methods"]:
            pts = [(100 * p, _acc(results, mode, method, p)) for p in results["fractions"]]
            xs = [x for x, a in pts if a is not None]
            ys = [100 * a for _, a in pts if a is not None]
            style = {"ls": "--", "color": "gray"} if method == "random" else {}
            ax.plot(xs, ys, marker="o", label=method, **style)
        ax.set_title("equal epochs" if mode == "epochs" else "equal wall time")
        ax.set_xlabel("kept fraction of D (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"linear-probe accuracy on {results['split']} (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Target-guided pruning, profile {results['profile']}, seed {results['seed']}")
    return save_figure(fig, path)


def write_report(out: Path, results: dict[str, Any]) -> None:
    """``results.json``, ``results.csv`` (one row per mode, method and p), ``table.md``, ``accuracy.png``."""
    write_json(out / "results.json", results)
    rows = []
    for mode, by_method in results["runs"].items():
        for method, by_p in by_method.items():
            for p, rec in by_p.items():
                rows.append(
                    {
                        "mode": mode,
                        "method": method,
                        "fraction": float(p),
                        "kept": rec["kept"],
                        "final_acc": rec["final_acc"],
                        "train_seconds": rec["train_seconds"],
                        "epochs": rec["epochs"],
                        "select_seconds": rec.get("select_seconds", 0.0),
                        "split": results["split"],
                        "seed": results["seed"],
                    }
                )
    write_csv(out / "results.csv", rows)
    (out / "table.md").write_text(markdown_report(results), encoding="utf-8")
    plot_accuracy(out / "accuracy.png", results)


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="bench_prune")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    results = run_bench_prune(cfg)
    print(markdown_report(results))


if __name__ == "__main__":
    main()
