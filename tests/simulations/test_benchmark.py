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
    # old results: no data seconds for coopt (– without a data-optimization record), 0 for SSL;
    # no end-to-end time maps (–: no bar on that clock in these results)
    assert "| coopt | 61.0 ± 1.0 | – | – | 400 | – | 100 | – | 100 | – | +20.0 |" in table
    assert "| simclr | 38.0 ± 0.0 | – | 0 | 400 | 400 | never | – | never | – |" in table
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
    assert d["priors"] == benchmark_priors("tiny") and d["overrides"] == {} and d["redundancy"] == 1
    coopt = on_disk["methods"]["coopt"]
    assert coopt["data_seconds"] == d["collaborative_seconds"] and coopt["target_probe_acc"] is None
    assert coopt["end_to_end_seconds"] == pytest.approx(coopt["data_seconds"] + coopt["train_seconds"])
    assert set(on_disk["time_to_byol_final"]) == {"coopt", "byol"}
    assert on_disk["best_ssl"] == "byol" and set(on_disk["time_to_best_ssl_final"]) == {"coopt", "byol"}
    assert results["methods"].keys() == on_disk["methods"].keys()
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "curves.png", "table.md"}


# ---------------------------------------------------------------------------- variants, singles, clocks
def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from simulations.benchmark import CONF_PATH

    if not any(o.startswith("output-dir=") for o in overrides):
        overrides = (*overrides, "output-dir=outputs/unused")  # no Hydra run here to resolve it
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(config_name="benchmark", overrides=list(overrides))


def _digits_npz(folder):
    """CIFAR-shaped train.npz / test.npz (16 px) made from the bundled digits."""
    import numpy as np

    from coopt_flwr.registry.datasets import create_dataset

    digits = create_dataset("digits")
    x = np.repeat(np.repeat(digits.images, 2, axis=1), 2, axis=2)  # 8x8 -> 16x16
    folder.mkdir()
    np.savez(folder / "train.npz", x=x[:1400], y=digits.labels[:1400])
    np.savez(folder / "test.npz", x=x[1400:], y=digits.labels[1400:])
    return folder


def test_cpu_profile_variants_and_singles():
    from simulations.benchmark import coopt_variants, single_priors

    cfg = _compose("profile=cpu")
    assert coopt_variants(cfg) == {
        "coopt": ("bench-lite0-160", {}),
        "coopt-hetero": ("lite012-weak-160", {}),
        "coopt-hetero-r3": ("lite012-weak-160", {"redundancy": 3}),
    }
    assert single_priors(cfg) == {
        "lite0": "efficientnet_lite0?size=160",
        "lite1": "efficientnet_lite1?size=160",
        "lite2": "efficientnet_lite2?size=160",
        "resnet18": "timm:resnet18?size=32",
    }
    assert benchmark_priors("lite012-weak-160") == list(single_priors(cfg).values())
    assert single_priors(_compose("profile=tiny")) == {}


def test_a_variant_given_as_a_mapping_passes_its_overrides(tmp_path, monkeypatch):
    import simulations.run
    from simulations.benchmark import coopt_variants, run_protocol

    seen = []

    def fake_launch(run_config, num_supernodes, *args, **kwargs):
        seen.append((run_config, num_supernodes))
        return {"complete": True, "missing-ids": []}

    monkeypatch.setattr(simulations.run, "launch", fake_launch)
    cfg = _compose(
        "profile=tiny", "+coopt.variants.coopt-r2={mix: tiny, redundancy: 2, anchor-rule: consensus}"
    )
    variants = coopt_variants(cfg)
    assert variants["coopt"] == ("tiny", {})
    assert variants["coopt-r2"] == ("tiny", {"redundancy": 2, "anchor-rule": "consensus"})
    for name, (mix, overrides) in variants.items():
        summary = run_protocol(cfg, name, mix, tmp_path, overrides)
        assert summary["wall_seconds"] >= 0
    (plain, k), (r2, _) = seen
    assert k == 2 and "redundancy" not in plain and "anchor-rule" not in plain  # run-config defaults
    assert r2["redundancy"] == 2 and r2["anchor-rule"] == "consensus"
    assert r2["priors"] == plain["priors"] == benchmark_priors("tiny")
    assert r2["output-dir"].endswith("protocol-coopt-r2") and plain["target-dim"] == r2["target-dim"] == 16


def test_variant_overrides_are_checked_before_the_protocol_starts(tmp_path, monkeypatch):
    import simulations.run
    from simulations.benchmark import coopt_variants, run_protocol, variant_spec

    monkeypatch.setattr(simulations.run, "launch", lambda *a, **k: pytest.fail("launched"))
    cfg = _compose("profile=tiny")
    with pytest.raises(ValueError, match="unknown run-config keys"):
        run_protocol(cfg, "x", "tiny", tmp_path, {"no-such-key": 1})
    with pytest.raises(ValueError, match="redundancy"):
        run_protocol(cfg, "x", "tiny", tmp_path, {"redundancy": 0})
    with pytest.raises(ValueError, match=r"coopt.variants.bad: unknown run-config keys \['no-such-key'\]"):
        coopt_variants(_compose("profile=tiny", "+coopt.variants.bad={mix: tiny, no-such-key: 1}"))
    with pytest.raises(ValueError, match="set by the benchmark"):
        variant_spec("x", {"mix": "tiny", "priors": ["human"]})
    with pytest.raises(ValueError, match="expected a mix name or a mapping"):
        variant_spec("x", {"redundancy": 2})


def test_protocol_record_holds_priors_overrides_redundancy_and_residual_oos():
    from simulations.benchmark import protocol_record

    nodes = [
        {"partition-id": 0, "prior": "a", "residual-oos": 0.0},
        {"partition-id": 1, "prior": "b", "residual-oos": 0.85},
    ]
    summary = {
        "rounds": [{"phase-seconds": {"wait-nodes": 9.0, "embed": 5.0, "align": 1.0}, "redundancy": 2}],
        "participants": nodes,
        "wall_seconds": 20.0,
        "anchor": {"partition": 0, "prior": "a", "rule": "uniformity"},
        "g-before": 0.9,
        "g-after": 0.1,
    }
    rec = protocol_record(summary, "mix", ["a", "b"], {"redundancy": 2}, 2)
    assert rec["collaborative_seconds"] == 6.0 and rec["participants"] == 2
    assert rec["priors"] == ["a", "b"] and rec["overrides"] == {"redundancy": 2} and rec["redundancy"] == 2
    assert [r["residual-oos"] for r in rec["residual-oos"]] == [0.0, 0.85]
    summary["participants"] = [{"partition-id": 0, "prior": "a", "residual-oos": None}]
    del summary["rounds"][0]["redundancy"]
    assert "residual-oos" not in protocol_record(summary, "mix", ["a"], {}, 1)


def test_run_coopt_records_both_clocks(tmp_path, monkeypatch):
    import numpy as np

    import coopt_flwr.store.storage
    import simulations.benchmark as bench

    summary = {
        "complete": True,
        "rounds": [{"phase-seconds": {"wait-nodes": 3.0, "embed": 40.0, "align": 2.0}, "redundancy": 3}],
        "participants": [],
        "wall_seconds": 50.0,
        "anchor": {"partition": 0, "prior": "p"},
        "g-before": 1.0,
        "g-after": 0.0,
    }
    monkeypatch.setattr(bench, "run_protocol", lambda cfg, name, mix, out, overrides: summary)
    merged = {"ids": np.array([1, 0]), "targets": np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)}
    monkeypatch.setattr(coopt_flwr.store.storage, "load_optimized", lambda path: merged)
    got = {}

    def fake_train(cfg, label, targets, data, log):
        got["targets"] = targets
        return {"final_acc": 0.5, "train_seconds": 100.0, "epochs": 1.0, "curve": [[0.0, 0.1], [100.0, 0.5]]}

    monkeypatch.setattr(bench, "train_on_targets", fake_train)
    cfg = _compose("profile=tiny")
    record, method = bench.run_coopt(
        cfg, "coopt-r3", "tiny", {"redundancy": 3}, tmp_path, None, lambda s: None
    )
    assert np.array_equal(got["targets"], [[0.0, 1.0], [1.0, 0.0]])  # rows in id order
    assert record["collaborative_seconds"] == 42.0 and record["overrides"] == {"redundancy": 3}
    assert record["redundancy"] == 3 and record["mix"] == "tiny" and "sequential_seconds" not in record
    assert method["data_seconds"] == 42.0 and method["end_to_end_seconds"] == 142.0
    assert method["train_seconds"] == 100.0 and method["target_probe_acc"] is None


@pytest.mark.parametrize("spec", ["human", "human?fraction=0.5", "weak:resnet18?size=32 > human"])
def test_a_human_single_prior_is_refused(spec):
    from simulations.benchmark import single_priors

    with pytest.raises(ValueError, match="single prior 'h' holds human priors"):
        single_priors({"singles": {"ok": "timm:resnet18?size=32", "h": spec}})


def test_the_benchmark_refuses_a_human_single_before_any_work(tmp_path):
    from simulations.benchmark import run_benchmark

    cfg = _compose(
        "profile=tiny",
        f"data_dir={tmp_path / 'missing'}",
        f"output-dir={tmp_path / 'out'}",
        "+singles.h=human",
    )
    with pytest.raises(ValueError, match="holds human priors"):
        run_benchmark(cfg, log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_end_to_end_times_add_each_methods_data_seconds():
    from simulations.benchmark import add_times_to_accuracy

    methods = {
        "coopt": {"final_acc": 0.6, "data_seconds": 30.0, "curve": [[0, 0.1], [50, 0.45], [100, 0.6]]},
        "single-a": {"final_acc": 0.5, "data_seconds": 120.0, "curve": [[0, 0.1], [50, 0.5]]},
        "byol": {"final_acc": 0.4, "data_seconds": 0.0, "curve": [[0, 0.1], [400, 0.4]]},
        "simclr": {"final_acc": 0.45, "curve": [[0, 0.1], [200, 0.42], [400, 0.45]]},  # no data: 0
    }
    assert times_to_final(methods, "byol", end_to_end=True) == {
        "coopt": 80.0,
        "single-a": 170.0,
        "byol": 400.0,
        "simclr": 200.0,
    }
    results = {"methods": methods}
    add_times_to_accuracy(results)
    assert results["best_ssl"] == "simclr"  # single-a (0.5) is no baseline
    assert results["time_to_best_ssl_final"] == {
        "coopt": 50.0,
        "single-a": 50.0,
        "byol": None,
        "simclr": 400.0,
    }
    assert results["time_to_best_ssl_final_end_to_end"] == {
        "coopt": 80.0,
        "single-a": 170.0,
        "byol": None,
        "simclr": 400.0,
    }
    assert results["time_to_byol_final"]["single-a"] == 50.0
    assert results["time_to_byol_final_end_to_end"]["single-a"] == 170.0


def _one_seed_with_singles() -> dict:
    from simulations.benchmark import add_times_to_accuracy

    r = _result(0, 0.6, 0.4)
    r["methods"]["coopt"].update(data_seconds=30.0, end_to_end_seconds=430.0, target_probe_acc=None)
    r["methods"]["coopt-hetero-r3"] = {
        "final_acc": 0.55,
        "train_seconds": 400.0,
        "data_seconds": 60.0,
        "end_to_end_seconds": 460.0,
        "target_probe_acc": None,
        "curve": [[0, 0.1], [200, 0.4], [400, 0.55]],
    }
    r["methods"]["single-lite2"] = {
        "final_acc": 0.58,
        "train_seconds": 400.0,
        "data_seconds": 150.0,
        "end_to_end_seconds": 550.0,
        "target_probe_acc": 0.775,
        "curve": [[0, 0.1], [100, 0.4], [400, 0.58]],
    }
    add_times_to_accuracy(r)
    return r


def test_markdown_table_with_single_rows_and_one_seed():
    r = _one_seed_with_singles()
    assert ordered(list(r["methods"])) == ["coopt", "coopt-hetero-r3", "single-lite2", "byol", "simclr"]
    table = markdown_table([r])
    assert "±" not in table
    assert "| coopt | 60.0 | – | 30 | 400 | 430 | 100 | 130 | 100 | 130 | +2.0 |" in table
    assert "| coopt-hetero-r3 | 55.0 | – | 60 | 400 | 460 | 200 | 260 | 200 | 260 | -5.0 |" in table
    assert "| single-lite2 | 58.0 | 77.5 | 150 | 400 | 550 | 100 | 250 | 100 | 250 | -2.0 |" in table
    assert "| byol | 40.0 | – | 0 | 400 | 400 | 400 | 400 | 400 | 400 | -20.0 |" in table
    lines = table.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    agg = aggregate([r, {**_one_seed_with_singles(), "seed": 1}])
    assert agg["single-lite2"]["target_probe_acc_mean"] == pytest.approx(0.775)
    assert agg["single-lite2"]["end_to_end_seconds_mean"] == 550.0
    assert "77.5 ± 0.0" in markdown_table([r, {**_one_seed_with_singles(), "seed": 1}])


def test_write_report_with_singles(tmp_path):
    import json

    r = _one_seed_with_singles()
    write_report(tmp_path, r)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    single = [row for row in rows if row["method"] == "single-lite2"]
    assert [row["end_to_end_seconds_at_probe"] for row in single] == ["150.00", "250.00", "550.00"]
    assert (
        json.loads((tmp_path / "results.json").read_text())["time_to_byol_final_end_to_end"]["coopt"] == 130.0
    )


# ---------------------------------------------------------------------------- probe normalization
def test_probes_are_memoized_per_normalization():
    import numpy as np

    from simulations.benchmark import Probes

    x = np.zeros((4, 8, 8, 3), np.uint8)
    y = np.arange(4) % 2
    probes = Probes(x, y, x, y, None)
    a = probes((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert probes([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]) is a
    assert probes((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) is not a


class _RecordingProbes:
    def __init__(self):
        self.asked = []

    def __call__(self, mean, std):
        self.asked.append((tuple(mean), tuple(std)))
        return lambda backbone: 0.5


def _fake_data(images, probes):
    import numpy as np

    from coopt_flwr.learn.student import channel_stats
    from coopt_flwr.registry.datasets import ImageData
    from simulations.benchmark import BenchData

    train = ImageData(name="fake", images=images, labels=np.arange(len(images)) % 2, num_classes=2)
    return BenchData(train, train, np.arange(len(images)), channel_stats(images), probes)


@pytest.mark.parametrize("normalize", ["default", None, {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}])
def test_ssl_baselines_are_probed_with_their_training_normalization(monkeypatch, normalize):
    import numpy as np
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    import coopt_flwr.learn.training
    from coopt_flwr.learn.training import TrainResult
    from simulations.benchmark import run_ssl

    def fake_fit(step, modules, images, cfg, evaluate=None, after_step=None):
        acc = evaluate()
        return TrainResult(curve=[(0.0, acc)], train_seconds=1.0, final_acc=acc)

    monkeypatch.setattr(coopt_flwr.learn.training, "fit", fake_fit)
    images = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    probes = _RecordingProbes()
    value = "null" if normalize is None else str(normalize).replace("'", "")
    over = [] if normalize == "default" else [f"+ssl.overrides.byol.normalize={value}"]
    cfg = _compose("profile=tiny", *over)
    rec = run_ssl(cfg, "byol", _fake_data(images, probes), lambda s: None)
    if normalize == "default":
        expected = (tuple(IMAGENET_NORMALIZE["mean"]), tuple(IMAGENET_NORMALIZE["std"]))
    elif normalize is None:
        expected = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    else:
        expected = (tuple(normalize["mean"]), tuple(normalize["std"]))
    assert probes.asked == [expected]
    assert (tuple(rec["normalization"]["mean"]), tuple(rec["normalization"]["std"])) == expected
    assert rec["data_seconds"] == 0.0 and rec["end_to_end_seconds"] == rec["train_seconds"] == 1.0


def test_ssl_normalization_is_what_the_views_use():
    import torch

    from coopt_flwr.learn.ssl import create_ssl
    from simulations.benchmark import ssl_normalization

    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    method = create_ssl("simclr", backbone, 4, 16, seed=0)
    mean, std = ssl_normalization(method)
    pipeline = method.views.pipelines[0]
    assert torch.allclose(pipeline.mean.flatten(), torch.tensor(mean)) and torch.allclose(
        pipeline.std.flatten(), torch.tensor(std)
    )


def test_students_are_trained_and_probed_with_the_same_normalization(monkeypatch):
    import numpy as np

    import coopt_flwr.learn.student
    from coopt_flwr.learn.training import TrainResult
    from simulations.benchmark import train_on_targets

    seen = {}

    def fake_train_student(student, images, targets, cfg, evaluate=None, *, mean=None, std=None, center=True):
        seen.update(mean=tuple(mean), std=tuple(std), center=center)
        acc = evaluate()
        return TrainResult(curve=[(0.0, acc)], train_seconds=2.0, final_acc=acc)

    monkeypatch.setattr(coopt_flwr.learn.student, "train_student", fake_train_student)
    images = np.random.default_rng(1).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    probes = _RecordingProbes()
    data = _fake_data(images, probes)
    rec = train_on_targets(_compose("profile=tiny"), "s", np.ones((8, 5)), data, lambda s: None)
    assert probes.asked == [(seen["mean"], seen["std"])] == [data.student_norm]
    assert seen["center"] is True and rec["final_acc"] == 0.5


# ---------------------------------------------------------------------------- singles, for real
def test_single_priors_run_through_the_benchmark(tmp_path):
    """The whole command without Flower: a random ResNet-18 alone on digits (embedding, probe
    ceiling, student), one SSL baseline, both clocks and every output file."""
    import json

    from simulations.benchmark import run_benchmark

    data = _digits_npz(tmp_path / "data")
    cfg = _compose(
        "profile=tiny",
        "seed=1",
        f"data_dir={data}",
        f"output-dir={tmp_path / 'out'}",
        "data.subset=200",
        "data.test_subset=100",
        "data.probe_train=100",
        "train.time_budget_s=0.6",
        "eval_times_s=[0.3]",
        "ssl.methods=[byol]",
        "~coopt.variants.coopt",
        "+singles.r18='timm:resnet18?size=16'",
    )
    results = run_benchmark(cfg, log=lambda s: None)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(on_disk["methods"]) == {"single-r18", "byol"}
    single = on_disk["methods"]["single-r18"]
    assert (
        0.0 <= single["target_probe_acc"] <= 1.0
        and single["target_probe_acc"] == on_disk["singles"]["r18"]["target_probe_acc"]
    )
    assert single["data_seconds"] > 0 and single["train_seconds"] > 0
    assert single["end_to_end_seconds"] == pytest.approx(single["data_seconds"] + single["train_seconds"])
    assert on_disk["singles"]["r18"]["feature_dim"] == 512 and on_disk["singles"]["r18"]["spec"].startswith(
        "timm:"
    )
    assert on_disk["methods"]["byol"]["data_seconds"] == 0.0
    assert set(on_disk["time_to_byol_final_end_to_end"]) == {"single-r18", "byol"}
    assert on_disk["best_ssl"] == "byol"
    assert single["normalization"] != on_disk["methods"]["byol"]["normalization"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| single-r18 | " in table and "±" not in table
    assert results["methods"].keys() == on_disk["methods"].keys()
