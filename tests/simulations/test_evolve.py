"""The continuous-optimization command: its config, its per-round entry and plot, and a real run."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coopt_flwr.config import Settings
from coopt_flwr.protocol.evolution import parse_path
from simulations.evolve import (
    CONF_PATH,
    ENTRY_KEYS,
    EVOLUTION_FILE,
    EVOLUTION_PLOT,
    plot_evolution,
    round_entry,
    run_config,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("profile", ["tiny", "cifar10"])
def test_profiles_make_valid_run_configs(tmp_path, profile):
    cfg = _cfg(f"profile={profile}", "num-rounds=4", f"output-dir={tmp_path}", f"data_dir={tmp_path}")
    rc = run_config(cfg, tmp_path)
    s = Settings.from_config({}, rc)
    assert s.num_rounds == 4 and s.upgrade_fraction == 0.2 and rc["output-dir"] == str(tmp_path)
    assert len(s.paths) == cfg["num-supernodes"] == rc["min-nodes"] and all(len(p) >= 2 for p in s.paths)
    assert rc["priors"] == list(cfg.priors)  # the profile's paths, passed on as a list
    if profile == "cifar10":
        assert rc["dataset"] == f"npz:{tmp_path}/train.npz?subset=10000&subset-seed=0"
        # every one of the 9 upgrade rounds has 2 participants left to upgrade
        assert sum(len(p) - 1 for p in s.paths) >= 2 * 9
    else:
        assert rc["dataset"] == "digits"


def test_default_profile_is_cifar10_with_ten_rounds():
    cfg = _cfg()
    assert cfg.profile == "cifar10" and cfg["num-rounds"] == 10 and cfg["num-supernodes"] == 10


def _result(round_, upgraded, anchor=1):
    nodes = [
        SimpleNamespace(partition_id=p, status="ok", stage=s, prior=f"p{p}s{s}", uniformity=-float(p))
        for p, s in enumerate([0, 1, 0])
    ] + [SimpleNamespace(partition_id=3, status="failed", stage=0, prior="x", uniformity=None)]
    return SimpleNamespace(
        round=round_,
        nodes=nodes,
        upgraded=upgraded,
        anchor_partition=anchor,
        anchor_prior="p1s1",
        g_before=0.9,
        g_after=None if round_ == 1 else 0.3,
        missing=0,
    )


def test_round_entry_and_plot(tmp_path):
    entries = [
        round_entry(_result(1, []), 0.5, None, {"round": 1.0}),
        round_entry(_result(2, [1]), 0.6, 0.4, {"round": 1.0}),
    ]
    e = entries[1]
    assert list(e)[: len(ENTRY_KEYS)] == list(ENTRY_KEYS)
    assert e["upgraded"] == [1] and e["anchor"] == 1 and e["target_probe_acc"] == 0.6
    assert e["stages"] == {"0": 0, "1": 1, "2": 0}  # only participants that delivered
    json.dumps(entries)  # JSON-ready as it is
    path = plot_evolution(tmp_path / "e.png", entries, "test")
    assert path.read_bytes()[:8] == PNG


@pytest.mark.slow
def test_evolve_tiny_runs_through_flower(tmp_path, monkeypatch):
    """profile=tiny through Flower's simulation engine: 3 rounds, upgrades, the outputs."""
    from coopt_flwr.store.storage import load_optimized
    from simulations.evolve import run_evolution

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    out = tmp_path / "evolve"
    cfg = _cfg("profile=tiny", "num-rounds=3", f"output-dir={out}")
    entries = run_evolution(cfg, log=lambda s: None)
    on_disk = json.loads((out / EVOLUTION_FILE).read_text())
    assert on_disk == json.loads(json.dumps(entries)) and len(on_disk) == 3
    assert [e["round"] for e in on_disk] == [1, 2, 3]
    assert on_disk[0]["upgraded"] == [] and all(len(e["upgraded"]) == 1 for e in on_disk[1:])
    for e in on_disk:
        assert set(ENTRY_KEYS) <= set(e) and 0.0 <= e["target_probe_acc"] <= 1.0
        assert 0.0 <= e["g_after"] <= 1.0 and e["complete"]
        paths = [parse_path(p) for p in cfg.priors]
        assert all(e["priors"][p] == paths[int(p)][s] for p, s in e["stages"].items())
    for prev, cur in itertools.pairwise(on_disk):
        moved = [int(p) for p in cur["stages"] if cur["stages"][p] != prev["stages"][p]]
        assert moved == cur["upgraded"]
    data = load_optimized(out)
    np.testing.assert_array_equal(data["ids"], np.arange(1797))
    assert np.all(data["round"] == 3)
    assert (out / EVOLUTION_PLOT).read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert [r["upgraded"] for r in summary["rounds"]] == [e["upgraded"] for e in on_disk]
