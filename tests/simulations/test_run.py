"""The Hydra launcher's config: run-config keys spelled as the run-config, passed on 1:1."""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir

from coopt_flwr.config import CONF_DIR, DEFAULTS, Settings, load_mix
from simulations.common import run_config_overrides
from simulations.federation import config_args
from simulations.run import CONF_PATH

# Keys of the launcher's config that are Flower's simulation settings, not run-config keys.
SIMULATION_KEYS = {"num-supernodes", "client-resources-num-cpus", "client-resources-num-gpus"}


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_launcher_keys_are_run_config_keys_passed_on_as_they_are(tmp_path):
    cfg = _cfg(f"output-dir={tmp_path}")
    assert set(cfg) - set(DEFAULTS) == SIMULATION_KEYS
    rc = run_config_overrides(cfg)
    assert set(rc) == set(cfg) - SIMULATION_KEYS
    assert rc["priors"] == load_mix("default")  # a list, never joined into a string
    assert rc["min-nodes"] == cfg["num-supernodes"] == 4 and rc["output-dir"] == str(tmp_path)
    assert all(rc[k] == cfg[k] for k in rc if k != "priors")
    s = Settings.from_config({}, rc)
    assert s.priors == tuple(load_mix("default")) and s.output_dir == tmp_path.resolve()


def test_overrides_use_the_same_spelling(tmp_path):
    cfg = _cfg("mix=diverse", "num-supernodes=8", "target-dim=128", f"output-dir={tmp_path}")
    rc = run_config_overrides(cfg)
    assert rc["priors"] == load_mix("diverse") and rc["target-dim"] == 128 and rc["min-nodes"] == 8
    later = run_config_overrides(cfg, {"seed": 7, "not-a-run-config-key": 1})
    assert later["seed"] == 7 and "not-a-run-config-key" not in later
    with pytest.raises(ValueError, match="shared-fraction"):
        run_config_overrides(cfg, {"shared-fraction": 2.0})


def test_no_config_spells_a_run_config_key_in_snake_case():
    snake = {k.replace("-", "_"): k for k in DEFAULTS if "-" in k}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        keys = set(data) | set(data.get("coopt") or {})  # the benchmark's run-config block
        wrong = {k: snake[k] for k in keys if k in snake}
        assert not wrong, f"{path}: spell {wrong} as the run-config does"


def test_prior_lists_go_to_flwr_run_as_one_string():
    assert config_args({"priors": ["a > b", "c"], "num-rounds": 2}) == 'priors="a > b,c" num-rounds=2'
