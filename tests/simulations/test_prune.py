"""The pruning command on a tiny written optimized set, and the pruning benchmark on digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coopt_flwr.learn.pruning import load_kept_ids
from coopt_flwr.store.storage import OPTIMIZED_FILE, SUMMARY_FILE, write_json, write_tensors
from simulations.prune import CONF_PATH, default_output, prune, run_prune


def _optimized(folder: Path, ids: np.ndarray, dim: int = 8, seed: int = 0) -> Path:
    """An optimized set (the keys of ``load_optimized``) with seeded targets for ``ids``."""
    n = len(ids)
    rng = np.random.default_rng(seed)
    zeros = np.zeros(n, dtype=np.int64)
    return write_tensors(
        folder / OPTIMIZED_FILE,
        {
            "ids": np.asarray(ids, dtype=np.int64),
            "targets": rng.standard_normal((n, dim)).astype(np.float32),
            "participant": rng.integers(0, 3, n).astype(np.int64),
            "round": zeros + 1,
            "stage": zeros,
            "contributions": zeros + 1,
        },
    )


def _compose(config: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(config_name=config, overrides=list(overrides))


# ---------------------------------------------------------------------------- simulations.prune
def test_prune_writes_the_kept_data_set_ids(tmp_path) -> None:
    ids = np.random.default_rng(1).permutation(np.arange(7, 307, 3))  # 100 ids, not rows
    _optimized(tmp_path / "run", ids)
    lines: list[str] = []
    res = prune(tmp_path / "run", "kcenter", 0.3, seed=2, log=lines.append)
    out = tmp_path / "run" / "kept-kcenter-p30-s2.json"
    assert res["output"] == out == default_output(tmp_path / "run" / OPTIMIZED_FILE, "kcenter", 0.3, 2)
    kept = load_kept_ids(out)
    assert len(kept) == 30 and set(kept) <= set(ids.tolist()) and np.array_equal(kept, res["ids"])
    data = json.loads(out.read_text())
    assert data["method"] == "kcenter" and data["fraction"] == 0.3 and data["seed"] == 2
    assert data["num_total"] == 100 and data["source"] == str((tmp_path / "run" / OPTIMIZED_FILE).resolve())
    assert data["options"] == {"dim": 64}
    assert len(lines) == 1 and "kept 30 of 100" in lines[0] and " s -> " in lines[0]
    # The same seed gives the same file; the file path works as well as the folder.
    again = prune(
        tmp_path / "run" / OPTIMIZED_FILE, "kcenter", 0.3, 2, tmp_path / "b.json", log=lambda s: None
    )
    assert np.array_equal(load_kept_ids(tmp_path / "b.json"), kept) and again["kept"] == 30


def test_prune_through_hydra_with_method_options(tmp_path, monkeypatch, capsys) -> None:
    _optimized(tmp_path / "run", np.arange(50))
    cfg = _compose(
        "prune",
        f"optimized={tmp_path / 'run'}",
        "method=prototype",
        "fraction=0.2",
        "seed=1",
        f"output={tmp_path / 'kept.json'}",
        "+options.keep=easy",
        "+options.clusters=5",
        "progress=false",
    )
    res = run_prune(cfg, log=lambda s: None)
    data = json.loads((tmp_path / "kept.json").read_text())
    assert len(data["ids"]) == 10 == res["kept"]
    assert data["options"]["keep"] == "easy" and data["options"]["clusters"] == 5

    from simulations.prune import main

    monkeypatch.setattr(
        sys,
        "argv",
        ["prune", f"optimized={tmp_path / 'run'}", "method=random", "fraction=0.5", "progress=false"],
    )
    main()
    assert "kept 25 of 50" in capsys.readouterr().out
    assert load_kept_ids(tmp_path / "run" / "kept-random-p50-s0.json").size == 25


def test_prune_errors_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no optimized data set at"):
        prune(tmp_path / "nowhere", "random", 0.5, log=lambda s: None)
    _optimized(tmp_path / "run", np.arange(10))
    with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
        prune(tmp_path / "run", "nope", 0.5, log=lambda s: None)
    with pytest.raises(ValueError, match="fraction"):
        prune(tmp_path / "run", "random", 1.5, log=lambda s: None)
    assert not list((tmp_path / "run").glob("kept-*.json"))


# ---------------------------------------------------------------------------- simulations.bench_prune
def _digits_npz(folder: Path) -> Path:
    """train.npz (1400 digits) and test.npz (the other 397), 8 x 8 RGB."""
    from coopt_flwr.registry.datasets import create_dataset

    digits = create_dataset("digits")
    folder.mkdir()
    np.savez(folder / "train.npz", x=digits.images[:1400], y=digits.labels[:1400])
    np.savez(folder / "test.npz", x=digits.images[1400:], y=digits.labels[1400:])
    return folder


def test_subset_rows_are_the_data_set_s_own_subset(tmp_path) -> None:
    from coopt_flwr.registry.datasets import create_dataset
    from simulations.bench_prune import subset_rows
    from simulations.common import dataset_spec

    data = _digits_npz(tmp_path / "data")
    pool = create_dataset(dataset_spec("npz:train.npz", data))
    for size, seed in [(200, 0), (333, 5)]:
        rows = subset_rows(pool.labels, 10, size, seed)
        sub = create_dataset(dataset_spec("npz:train.npz", data, size, seed))
        assert np.array_equal(pool.images[rows], sub.images) and np.array_equal(pool.labels[rows], sub.labels)


def test_bench_prune_refuses_an_optimized_set_of_another_subset(tmp_path) -> None:
    from simulations.bench_prune import load_prune_data

    data = _digits_npz(tmp_path / "data")
    _optimized(tmp_path / "run", np.arange(200))
    spec = f"npz:{data / 'train.npz'}?subset=200&subset-seed=3"
    write_json(tmp_path / "run" / SUMMARY_FILE, {"config": {"dataset": spec}})
    base = ["profile=tiny", f"data_dir={data}", f"optimized={tmp_path / 'run'}", "output-dir=unused"]
    with pytest.raises(ValueError, match="was made on"):
        load_prune_data(_compose("bench_prune", *base, "data.subset=200", "subset_seed=0"))
    with pytest.raises(ValueError, match="was made on"):
        load_prune_data(_compose("bench_prune", *base, "data.subset=300"))
    # null subset_seed takes the summary's, and the ids then index D
    d = load_prune_data(_compose("bench_prune", *base, "data.subset=200"), log=lambda s: None)
    assert d.info["subset_seed"] == 3 and len(d.d) == 200 and d.targets.shape == (200, 8)
    assert d.info["split"] == "val" and d.info["probe_test"] > 0


def test_bench_prune_on_digits_with_synthetic_targets_loads_without_files(tmp_path) -> None:
    from simulations.bench_prune import load_prune_data

    cfg = _compose(
        "bench_prune", "profile=tiny", "dataset=digits", "optimized=synthetic", "split=test", "output-dir=x"
    )
    d = load_prune_data(cfg, log=lambda s: None)
    assert len(d.d) == 200 and d.targets.shape == (200, 32) and d.info["probe_test"] == 397


def test_bench_prune_smoke_on_digits(tmp_path) -> None:
    """The whole benchmark on 200 digits: selections, students at equal epochs and equal time,
    the probe on the validation split, and every output file."""
    from simulations.bench_prune import run_bench_prune

    data = _digits_npz(tmp_path / "data")
    ids = np.random.default_rng(0).permutation(200)
    _optimized(tmp_path / "run", ids, dim=16)
    spec = f"npz:{data / 'train.npz'}?subset=200&subset-seed=0"
    write_json(tmp_path / "run" / SUMMARY_FILE, {"config": {"dataset": spec}})
    out = tmp_path / "out"
    cfg = _compose(
        "bench_prune",
        "profile=tiny",
        f"data_dir={data}",
        f"optimized={tmp_path / 'run'}",
        "data.subset=200",
        "data.probe_train=200",
        "val_size=300",
        "budget.epochs=1",
        "budget.time_s=0.5",
        "fractions=[0.5,1.0]",
        "methods=[random,kcenter]",
        "progress=false",
        f"output-dir={out}",
    )
    results = run_bench_prune(cfg, log=lambda s: None)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["runs"].keys() == {"epochs", "time"} and on_disk["num_total"] == 200
    assert on_disk["split"] == "val" and on_disk["probe_test"] == 300 and on_disk["subset_seed"] == 0
    for mode in ("epochs", "time"):
        for method in ("random", "kcenter"):
            half, full = on_disk["runs"][mode][method]["0.5"], on_disk["runs"][mode][method]["1"]
            assert half["kept"] == 100 and full["kept"] == 200 and 0.0 <= half["final_acc"] <= 1.0
            assert full == on_disk["runs"][mode]["random"]["1"]  # p = 1 is trained once per mode
    epochs = on_disk["runs"]["epochs"]
    assert epochs["random"]["0.5"]["epochs"] == pytest.approx(1.0) and epochs["random"]["1"]["epochs"] == 1.0
    kept = load_kept_ids(out / "kept" / "kcenter-p0.5.json")
    assert len(kept) == 100 and set(kept) <= set(range(200))
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "results.csv",
        "table.md",
        "accuracy.png",
        "kept",
    }
    table = (out / "table.md").read_text()
    assert "### Equal epochs" in table and "### Equal wall time" in table and "| kcenter | " in table
    assert "p = 50 %" in table and ("(+" in table or "(-" in table)  # kcenter's gap to random at 50 %
    assert results["selection"]["kcenter"]["0.5"]["kept"] == 100
    # A re-run into the same folder with the same settings reuses every student.
    lines: list[str] = []
    again = run_bench_prune(cfg, log=lines.append)
    assert again["runs"] == results["runs"] and sum("reusing" in line for line in lines) == 8
