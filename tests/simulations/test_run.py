"""The Hydra launcher's config: run-config keys spelled as the run-config, passed on 1:1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from coopt_flwr.config import CONF_DIR, DEFAULTS, ConfigError, Settings, load_mix
from coopt_flwr.store.storage import OutputDirBusyError, lock_output_dir
from simulations.common import run_config_overrides
from simulations.federation import config_args
from simulations.run import CONF_PATH, is_user_error, preflight

ROOT = Path(__file__).resolve().parents[2]

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


# ------------------------------------------------------------------ bad input before Ray
def _run_command(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m simulations.run`` in ``tmp_path`` (Hydra's own folders go there)."""
    return subprocess.run(
        [sys.executable, "-m", "simulations.run", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("shared-fraction=1.5", "error: shared-fraction must lie in (0, 1) (|S| / |D|, e.g. 0.1), got 1.5"),
        ("dataset=nosuch", "error: dataset: unknown data set 'nosuch' in 'nosuch'; "),
        # A prior's options, checked from its schema before Ray (Hydra needs a spec with '='
        # inside a list quoted).
        (
            'priors=["human?fraction=2"]',
            "error: priors: option 'fraction' of spec 'human?fraction=2' must lie in (0, 1], got 2",
        ),
    ],
)
def test_the_command_prints_one_line_and_fails_on_a_bad_value(tmp_path, override, message):
    done = _run_command(tmp_path, override, f"output-dir={tmp_path / 'out'}")
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _preflight(tmp_path, *overrides: str, nodes=None):
    cfg = _cfg(f"output-dir={tmp_path / 'out'}", *overrides)
    return preflight(run_config_overrides(cfg), cfg["num-supernodes"] if nodes is None else nodes)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["seed=-1"], "seed must be an integer between 0 and"),
        (["target-dim=1000000000"], "target-dim must be an integer between 1 and 65,536"),
        (["priors=[human,efficientnet_lit0]"], "did you mean efficientnet_lite0"),
        (
            ["priors=[human,'timm:resnet18?sizee=64']"],
            "unknown option 'sizee' in spec 'timm:resnet18?sizee=64'; did you mean size?",
        ),
        (["dataset=nosuch"], "unknown data set 'nosuch'"),
        (["num-supernodes=2", "min-nodes=3"], "min-nodes 3 exceeds num-supernodes 2"),
        (["dataset='digits?subset=30'", "shared-fraction=0.1"], "gives a shared set S of 3"),
    ],
)
def test_preflight_refuses_before_ray_starts(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        _preflight(tmp_path, *overrides)


def test_preflight_refuses_an_output_dir_that_is_a_file_or_busy(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is an existing file"):
        preflight(run_config_overrides(_cfg(f"output-dir={afile}")), 4)
    with pytest.raises(ConfigError, match="num-supernodes must be an integer >= 1"):
        _preflight(tmp_path, nodes="four")
    with lock_output_dir(tmp_path / "out"), pytest.raises(OutputDirBusyError, match="in use by another run"):
        _preflight(tmp_path)
    assert _preflight(tmp_path).output_dir == (tmp_path / "out").resolve()  # free again: passes


def test_user_errors_are_told_apart_from_bugs():
    from strategies.checkpoint import CheckpointError

    for err in (ConfigError("x"), OutputDirBusyError("x"), CheckpointError("x")):
        assert is_user_error(err)
    assert not is_user_error(ValueError("x")) and not is_user_error(KeyError("x"))


def _hydra_list(key: str, items: str) -> str:
    """``key=["a","b?x=1"]``: Hydra needs specs with '=' quoted inside a list."""
    return f"{key}=[" + ",".join(f'"{item}"' for item in items.split(",")) + "]"


def _start_run(tmp_path: Path, out: Path, priors: str) -> subprocess.Popen:
    """``python -m simulations.run`` on 4 virtual nodes, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "simulations.run", f"output-dir={out}", _hydra_list("priors", priors)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_killed_simulation_resumes_with_new_node_ids_and_equals_a_clean_run(tmp_path):
    """SIGKILL the whole simulation right after its uniformity checkpoint; the same command
    again (a new simulation: every node id is new) must redo the round and write the clean
    run's merged set (before the fix it sent align messages to the dead ids and crashed)."""
    import json
    import signal
    import time

    import numpy as np

    from coopt_flwr.store.storage import load_optimized

    priors = "efficientnet_lite0?size=16,human,timm:resnet10t?size=16,human"
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert _start_run(tmp_path, clean, priors).wait(timeout=300) == 0
    proc = _start_run(tmp_path, killed, priors)
    deadline = time.monotonic() + 300
    checkpoint = killed / "checkpoint.json"
    while time.monotonic() < deadline:
        try:
            if json.loads(checkpoint.read_text())["phase"] == "uniformity":
                break
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, "the run ended before its uniformity checkpoint"
        time.sleep(0.05)
    else:
        pytest.fail("no uniformity checkpoint within 300 s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "summary.json").exists()
    assert _start_run(tmp_path, killed, priors).wait(timeout=300) == 0
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["complete"] and summary["resumes"] == [{"round": 1, "after-phase": "uniformity"}]
    a, b = load_optimized(clean), load_optimized(killed)
    np.testing.assert_array_equal(b["ids"], np.arange(1797))
    for key in ("ids", "targets", "participant"):
        np.testing.assert_array_equal(a[key], b[key])
