"""The benchmark's reporting (pure functions); the full run is measured, not unit-tested."""

from __future__ import annotations

import csv
import math

import pytest

from simulations.benchmark import (
    aggregate,
    benchmark_priors,
    best_ssl,
    markdown_table,
    ordered,
    time_to_reach,
    times_to_byol_final,
    times_to_final,
    write_report,
)


def _result(seed: int, coopt: float, byol: float) -> dict:
    return {
        "profile": "cpu",
        "seed": seed,
        "methods": {
            "byol": {"final_acc": byol, "train_seconds": 400.0, "curve": [[0, 0.1], [200, 0.3], [400, byol]]},
            "coopt": {
                "final_acc": coopt,
                "train_seconds": 400.0,
                "curve": [[0, 0.1], [50, 0.35], [100, byol + 0.01], [400, coopt]],
            },
            "simclr": {"final_acc": 0.38, "train_seconds": 400.0, "curve": [[0, 0.1], [400, 0.38]]},
        },
        "data_optimization": {},
        "time_to_byol_final": {},
    }


@pytest.mark.parametrize("mix", ["human", "diverse-human", "default"])
def test_a_mix_with_human_priors_is_refused(mix: str) -> None:
    # Labels must not reach the benchmark's students: every mix holding a human prior is refused.
    with pytest.raises(ValueError, match=rf"benchmark mix '{mix}' holds human priors"):
        benchmark_priors(mix)


def test_a_mix_of_model_priors_is_accepted() -> None:
    assert benchmark_priors("diverse") == [
        "efficientnet_lite0?size=64",
        "efficientnet_lite1?size=64",
        "efficientnet_lite2?size=64",
        "timm:resnet18?size=64",
    ]


def test_time_to_reach_uses_probe_points_only():
    curve = [[0, 0.1], [50, 0.3], [100, 0.5]]
    assert time_to_reach(curve, 0.3) == 50
    assert time_to_reach(curve, 0.31) == 100
    assert time_to_reach(curve, 0.9) is None


def test_times_to_byol_final():
    t = times_to_byol_final(_result(0, 0.6, 0.4)["methods"])
    assert t == {"byol": 400.0, "coopt": 100.0, "simclr": None}
    assert times_to_byol_final({"coopt": {"final_acc": 1, "curve": []}}) == {}


def test_best_ssl_and_time_to_its_final():
    methods = _result(0, 0.6, 0.4)["methods"]
    assert best_ssl(methods) == "byol"  # 0.40 > simclr's 0.38; coopt variants are not baselines
    assert times_to_final(methods, "simclr") == {"byol": 400.0, "coopt": 100.0, "simclr": 400.0}
    assert times_to_final(methods, "dino") == {}
    assert best_ssl({"coopt": methods["coopt"]}) is None


def test_ordered_puts_coopt_variants_first():
    assert ordered(["swav", "byol", "coopt-weak", "coopt", "simclr"]) == [
        "coopt",
        "coopt-weak",
        "byol",
        "simclr",
        "swav",
    ]


def test_aggregate_and_table_over_seeds():
    results = [_result(0, 0.60, 0.40), _result(1, 0.62, 0.42)]
    for r in results:
        r["time_to_byol_final"] = times_to_byol_final(r["methods"])
        r["best_ssl"] = best_ssl(r["methods"])
        r["time_to_best_ssl_final"] = times_to_final(r["methods"], r["best_ssl"])
    agg = aggregate(results)
    assert agg["coopt"]["acc_mean"] == pytest.approx(0.61)
    assert agg["coopt"]["acc_std"] == pytest.approx(0.01)
    assert agg["coopt"]["seeds"] == 2 and agg["coopt"]["time_to_byol_final_mean"] == 100.0
    assert math.isnan(agg["simclr"]["time_to_byol_final_mean"])
    table = markdown_table(results)
    assert "| coopt | 61.0 ± 1.0 | 400 | 100 | 100 | +20.0 |" in table
    assert "| simclr | 38.0 ± 0.0 | 400 | never | never |" in table
    assert "Seeds: [0, 1]; profile: cpu; best SSL baseline: byol." in table


def test_write_report_files(tmp_path):
    r = _result(3, 0.6, 0.4)
    r["time_to_byol_final"] = times_to_byol_final(r["methods"])
    write_report(tmp_path, r)
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.csv", "curves.png", "table.md"}
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 3 + 4 + 2 and rows[0]["method"] == "coopt"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memoized_probe_reuses_identical_weights_only():
    import torch

    from simulations.benchmark import memoized_probe

    calls = []
    probe = memoized_probe(lambda b: calls.append(1) or float(len(calls)))
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    b = torch.nn.Linear(3, 2)
    assert probe(a) == probe(b) == 1.0 and len(calls) == 1
    with torch.no_grad():
        b.weight.add_(1e-3)
    assert probe(b) == 2.0


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_tiny_data(tmp_path, monkeypatch):
    """The whole command on a tiny CIFAR-shaped set made from digits: protocol through Flower,
    a student, one SSL baseline, the probe, and every output file of the stable interface."""
    import json

    import numpy as np
    from hydra import compose, initialize_config_dir

    from coopt_flwr.registry.datasets import create_dataset
    from simulations.benchmark import CONF_PATH, run_benchmark

    digits = create_dataset("digits")
    x = np.repeat(np.repeat(digits.images, 4, axis=1), 4, axis=2)  # 8x8 -> 32x32
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=x[:1400], y=digits.labels[:1400])
    np.savez(data / "test.npz", x=x[1400:], y=digits.labels[1400:])
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=[
                "profile=tiny",
                "seed=1",
                f"data_dir={data}",
                f"output-dir={tmp_path / 'out'}",
                "data.subset=300",
                "data.test_subset=200",
                "train.time_budget_s=2",
                "eval_times_s=[1.0]",
                "ssl.methods=[byol]",
            ],
        )
        results = run_benchmark(cfg, log=lambda s: None)
    out = tmp_path / "out"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["profile"] == "tiny" and on_disk["seed"] == 1
    assert set(on_disk["methods"]) == {"coopt", "byol"}
    for m in on_disk["methods"].values():
        assert 0.0 <= m["final_acc"] <= 1.0 and m["train_seconds"] > 0
        assert m["curve"][0][0] == 0.0 and all(0 <= a <= 1 for _, a in m["curve"])
    d = on_disk["data_optimization"]
    assert d["participants"] == 2 and d["collaborative_seconds"] > 0 and d["sequential_seconds"] > 0
    assert set(on_disk["time_to_byol_final"]) == {"coopt", "byol"}
    assert on_disk["best_ssl"] == "byol" and set(on_disk["time_to_best_ssl_final"]) == {"coopt", "byol"}
    assert results["methods"].keys() == on_disk["methods"].keys()
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "curves.png", "table.md"}
