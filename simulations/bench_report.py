"""One report over several seeds of the Table 2 benchmark: the table (mean ± std), the
collaboration question answered per CoOpt variant, and a plot.

    python -m simulations.bench_report outputs/bench-collab-0 outputs/bench-collab-1 \
        outputs/bench-collab-2 --output-dir outputs/bench-collab

Each argument is a benchmark output folder (or its ``results.json``), one per seed. Seeds may
hold different rows (the cpu profile drops the slowest baselines for the extra seeds): every
mean says over how many seeds it is taken.

The collaboration answer compares each CoOpt variant with the best single-prior student (the
single row with the best mean accuracy: "the best member alone") and with each seed's best SSL
baseline, as *paired* differences: seed by seed, on the same data subset, student
initialization and budget, then mean ± std over the seeds where both rows ran. The time ratios
are the time a variant needs to reach the seed's best SSL final accuracy divided by that
baseline's training time, on the training and the end-to-end clock (data optimization +
training); a seed where the bar is never reached counts as never (nan), not as skipped.

Writes ``table.md``, ``report.json`` and ``seeds.png`` into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flwr.store.storage import write_json
from simulations.benchmark import aggregate, is_coopt, is_single, markdown_table, ordered
from simulations.common import pyplot, save_figure

RESULTS_FILE = "results.json"


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read one ``results.json`` per seed, checked to share a profile and not repeat a seed.

    Raises
    ------
    FileNotFoundError
        A folder without ``results.json``.
    ValueError
        Unreadable JSON, no path, mixed profiles or a repeated seed.
    """
    if not paths:
        raise ValueError("bench_report: give at least one benchmark output folder")
    results = []
    for p in map(Path, paths):
        file = p / RESULTS_FILE if p.is_dir() else p
        if not file.is_file():
            raise FileNotFoundError(f"bench_report: no {RESULTS_FILE} at {file}")
        try:
            results.append(json.loads(file.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"bench_report: {file} is not valid JSON ({exc})") from exc
    profiles = sorted({str(r.get("profile")) for r in results})
    if len(profiles) > 1:
        raise ValueError(f"bench_report: results of different profiles {profiles} cannot be pooled")
    seeds = [r.get("seed") for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bench_report: seed repeated among the results: {seeds}")
    return results


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of finite-or-nan values (nan mean when empty)."""
    v = [float(x) for x in values]
    return {
        "mean": float(np.mean(v)) if v else math.nan,
        "std": float(np.std(v)) if v else math.nan,
        "n": len(v),
        "values": v,
    }


def paired_gap(
    results: Sequence[Mapping[str, Any]], name: str, reference: str | None = None
) -> dict[str, Any]:
    """Seed-paired accuracy difference ``name − reference`` (fractions).

    Parameters
    ----------
    results
        One ``results.json`` per seed.
    name
        The method compared.
    reference
        The method compared against; None means each seed's ``best_ssl``.
    """
    gaps = []
    for r in results:
        ref = r.get("best_ssl") if reference is None else reference
        methods = r["methods"]
        if name in methods and ref in methods:
            gaps.append(methods[name]["final_acc"] - methods[ref]["final_acc"])
    return _mean_std(gaps)


def time_ratio(results: Sequence[Mapping[str, Any]], name: str, end_to_end: bool) -> dict[str, Any]:
    """Time ``name`` needs to reach the seed's best SSL final accuracy / that SSL's training time.

    nan for a seed where ``name`` never reached the bar (so the mean is nan too: "never" in
    one seed is not hidden by the others).
    """
    key = "time_to_best_ssl_final_end_to_end" if end_to_end else "time_to_best_ssl_final"
    ratios = []
    for r in results:
        ref, times = r.get("best_ssl"), r.get(key) or {}
        if ref is None or name not in times or ref not in r["methods"]:
            continue
        t = times[name]
        ratios.append(math.nan if t is None else float(t) / float(r["methods"][ref]["train_seconds"]))
    return _mean_std(ratios)


def collaboration(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per CoOpt variant: accuracy, gap to the best member alone and to the best SSL, time ratios.

    Returns
    -------
    dict
        ``best_single`` (name or None), ``seeds``, and ``variants``: name → ``acc``,
        ``vs_best_single``, ``vs_best_ssl``, ``time_ratio_train``, ``time_ratio_end_to_end``
        (each ``{"mean", "std", "n", "values"}``, accuracies as fractions).
    """
    agg = aggregate(results)
    singles = [n for n in agg if is_single(n)]
    best_single = max(singles, key=lambda n: agg[n]["acc_mean"]) if singles else None
    variants: dict[str, Any] = {}
    for name in (n for n in agg if is_coopt(n) or is_single(n)):
        accs = [r["methods"][name]["final_acc"] for r in results if name in r["methods"]]
        variants[name] = {
            "acc": _mean_std(accs),
            "vs_best_single": paired_gap(results, name, best_single) if best_single else _mean_std([]),
            "vs_best_ssl": paired_gap(results, name),
            "time_ratio_train": time_ratio(results, name, end_to_end=False),
            "time_ratio_end_to_end": time_ratio(results, name, end_to_end=True),
        }
    return {"best_single": best_single, "seeds": sorted(r["seed"] for r in results), "variants": variants}


def _points(s: Mapping[str, Any]) -> str:
    """A fraction difference in points, ``mean ± std (n)``; "–" without seeds."""
    if s["n"] == 0 or math.isnan(s["mean"]):
        return "–" if s["n"] == 0 else "never"
    return f"{100 * s['mean']:+.1f}" + (f" ± {100 * s['std']:.1f}" if s["n"] > 1 else "") + f" ({s['n']})"


def _ratio(s: Mapping[str, Any]) -> str:
    """A time ratio, ``mean× (n)``; "never" when a seed never reached the bar."""
    if s["n"] == 0:
        return "–"
    return "never" if math.isnan(s["mean"]) else f"{s['mean']:.2f}× ({s['n']})"


def collaboration_table(report: Mapping[str, Any]) -> str:
    """Markdown: each CoOpt variant and single prior against the best member and the best SSL."""
    header = (
        "| row | acc (%) | − best member alone (points) | − best SSL (points) "
        "| to best SSL final / its time: training | end to end |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        acc = v["acc"]
        acc_cell = f"{100 * acc['mean']:.1f}" + (f" ± {100 * acc['std']:.1f}" if acc["n"] > 1 else "")
        lines.append(
            f"| {name} | {acc_cell} ({acc['n']}) | {_points(v['vs_best_single'])} | "
            f"{_points(v['vs_best_ssl'])} | {_ratio(v['time_ratio_train'])} | "
            f"{_ratio(v['time_ratio_end_to_end'])} |"
        )
    lines += [
        "",
        f"Best member alone: {report['best_single'] or 'none (no single-prior rows)'}. Differences are "
        "paired by seed (mean ± std over the seeds where both rows ran, count in brackets).",
    ]
    return "\n".join(lines)


def plot_seeds(path: Path, results: Sequence[Mapping[str, Any]]) -> Path:
    """Mean final accuracy per row (bar), each seed's value (dots)."""
    names = ordered(sorted({n for r in results for n in r["methods"]}))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.2), dpi=130)
    for i, name in enumerate(names):
        accs = [100 * r["methods"][name]["final_acc"] for r in results if name in r["methods"]]
        color = "tab:blue" if is_coopt(name) else "tab:orange" if is_single(name) else "tab:gray"
        ax.bar(i, float(np.mean(accs)), color=color, alpha=0.6, yerr=float(np.std(accs)), capsize=4)
        ax.scatter([i] * len(accs), accs, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    seeds = sorted(r["seed"] for r in results)
    ax.set_title(f"Final accuracy, profile {results[0]['profile']}, seeds {seeds} (bar: mean, dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def write_report(out: Path, results: Sequence[Mapping[str, Any]]) -> str:
    """``table.md`` (benchmark table + collaboration table), ``report.json``, ``seeds.png``."""
    out.mkdir(parents=True, exist_ok=True)
    report = collaboration(results)
    text = markdown_table(list(results)) + "\n\n" + collaboration_table(report) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    write_json(out / "report.json", {"aggregate": aggregate(list(results)), "collaboration": report})
    plot_seeds(out / "seeds.png", results)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="benchmark output folders (or results.json), one per seed")
    parser.add_argument(
        "--output-dir", required=True, type=Path, help="where table.md, report.json, seeds.png go"
    )
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(write_report(args.output_dir, results))
    print(f"[bench_report] wrote {args.output_dir / 'table.md'}, report.json, seeds.png")


if __name__ == "__main__":
    main()
