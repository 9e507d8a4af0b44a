"""The multi-seed benchmark report: paired gaps, time ratios, the files and the CLI's errors."""

from __future__ import annotations

import json
import math

import pytest

from simulations.bench_report import collaboration, load_results, main, paired_gap, time_ratio
from simulations.benchmark import add_times_to_accuracy


def _seed(seed: int, hetero: float, single: float, simclr: float, byol: float | None = None) -> dict:
    """One seed's results.json: a CoOpt variant, a single prior and SSL rows."""

    def row(acc: float, data: float, curve: list[list[float]]) -> dict:
        return {"final_acc": acc, "train_seconds": 400.0, "data_seconds": data, "curve": curve}

    methods = {
        "coopt-hetero": row(hetero, 200.0, [[0, 0.1], [50, 0.55], [400, hetero]]),
        "single-lite2": row(single, 150.0, [[0, 0.1], [100, 0.55], [400, single]]),
        "single-lite0": row(single - 0.05, 100.0, [[0, 0.1], [400, single - 0.05]]),
        "simclr": row(simclr, 0.0, [[0, 0.1], [400, simclr]]),
    }
    if byol is not None:
        methods["byol"] = row(byol, 0.0, [[0, 0.1], [400, byol]])
    r = {"profile": "cpu", "seed": seed, "methods": methods, "data_optimization": {}}
    add_times_to_accuracy(r)
    return r


def test_paired_gap_is_per_seed_and_skips_seeds_without_both_rows():
    results = [_seed(0, 0.70, 0.69, 0.50), _seed(1, 0.66, 0.69, 0.52)]
    del results[1]["methods"]["single-lite2"]
    gap = paired_gap(results, "coopt-hetero", "single-lite2")
    assert gap["n"] == 1 and gap["mean"] == pytest.approx(0.01)
    # None: each seed's own best SSL baseline
    ssl = paired_gap(results, "coopt-hetero")
    assert ssl["n"] == 2 and ssl["values"] == pytest.approx([0.20, 0.14])
    assert ssl["mean"] == pytest.approx(0.17) and ssl["std"] == pytest.approx(0.03)


def test_time_ratio_divides_by_the_baselines_training_time_and_keeps_never():
    results = [_seed(0, 0.70, 0.69, 0.50), _seed(1, 0.70, 0.69, 0.50)]
    train = time_ratio(results, "coopt-hetero", end_to_end=False)
    assert train["values"] == [50 / 400, 50 / 400]
    e2e = time_ratio(results, "coopt-hetero", end_to_end=True)
    assert e2e["mean"] == pytest.approx(250 / 400)
    # a seed where the bar is never reached makes the mean nan, it is not dropped
    results[1]["methods"]["coopt-hetero"]["curve"] = [[0, 0.1], [400, 0.45]]
    results[1]["methods"]["coopt-hetero"]["final_acc"] = 0.45
    add_times_to_accuracy(results[1])
    never = time_ratio(results, "coopt-hetero", end_to_end=False)
    assert never["n"] == 2 and math.isnan(never["mean"])


def test_collaboration_names_the_best_member_by_mean_accuracy():
    results = [_seed(0, 0.70, 0.69, 0.50, byol=0.43), _seed(1, 0.68, 0.71, 0.51)]
    report = collaboration(results)
    assert report["best_single"] == "single-lite2" and report["seeds"] == [0, 1]
    hetero = report["variants"]["coopt-hetero"]
    assert hetero["vs_best_single"]["values"] == pytest.approx([0.01, -0.03])
    assert hetero["acc"]["n"] == 2 and hetero["acc"]["mean"] == pytest.approx(0.69)
    assert report["variants"]["single-lite2"]["vs_best_single"]["mean"] == 0.0
    assert "simclr" not in report["variants"]  # SSL rows are the reference, not compared rows


def test_cli_writes_the_table_json_and_plot(tmp_path, capsys):
    dirs = []
    for seed, (h, s) in enumerate([(0.70, 0.69), (0.68, 0.71), (0.69, 0.70)]):
        d = tmp_path / f"seed-{seed}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_seed(seed, h, s, 0.50, byol=0.43 if seed == 0 else None)))
        dirs.append(str(d))
    out = tmp_path / "report"
    main([*dirs, "--output-dir", str(out)])
    table = (out / "table.md").read_text()
    assert (
        "| coopt-hetero | 69.0 ± 0.8 (3) | -1.0 ± 1.6 (3) | +19.0 ± 0.8 (3) | 0.12× (3) | 0.62× (3) |"
        in table
    )
    assert "Best member alone: single-lite2." in table
    assert "| byol | 43.0 |" in table  # one seed only: no ± for it
    report = json.loads((out / "report.json").read_text())
    assert report["collaboration"]["best_single"] == "single-lite2"
    assert (out / "seeds.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out


def test_bad_inputs_get_one_line_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"no results\.json"):
        load_results([tmp_path])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results([bad])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_seed(0, 0.7, 0.7, 0.5)))
    b.write_text(json.dumps({**_seed(0, 0.7, 0.7, 0.5), "profile": "gpu"}))
    with pytest.raises(ValueError, match="different profiles"):
        load_results([a, b])
    with pytest.raises(ValueError, match="seed repeated"):
        load_results([a, a])
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")])
    assert exc.value.code == 2 and "error: bench_report: no results.json" in capsys.readouterr().err
