"""End to end through Flower: `flwr run .` against a local simulation SuperLink.

Each test gets its own FLWR_HOME and ports, and stops the SuperLink it started by PID.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coopt_flwr.store.storage import load_optimized
from simulations.superlink import local_superlink_pids, stop_local_superlink

ROOT = Path(__file__).resolve().parent.parent
FLWR = Path(sys.executable).parent / "flwr"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def flower_env(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
        RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
    )
    yield env, home
    stop_local_superlink(home)
    assert local_superlink_pids(home) == []


def test_flwr_run_with_four_heterogeneous_priors(flower_env, tmp_path):
    env, _ = flower_env
    out = tmp_path / "run"
    priors = "efficientnet_lite0?size=32,timm:resnet10t?size=16,weak:resnet10t?size=16,human"
    proc = subprocess.run(
        [
            str(FLWR),
            "run",
            ".",
            "--stream",
            "--federation-config",
            "num-supernodes=4 client-resources-num-cpus=1",
            "--run-config",
            f"output-dir='{out}' priors='{priors}' target-dim=32 min-nodes=4",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "CoOpt round 1" in log and "G before alignment" in log

    data = load_optimized(out)
    ids = data["ids"]
    np.testing.assert_array_equal(ids, np.arange(1797))  # every id exactly once
    assert data["targets"].shape == (1797, 32) and np.all(np.isfinite(data["targets"]))

    summary = json.loads((out / "summary.json").read_text())
    parts = summary["participants"]
    assert len(parts) == 4 and all(p["status"] == "ok" for p in parts)
    assert len({p["prior-kind"] for p in parts}) >= 3
    anchor = min(parts, key=lambda p: p["uniformity"])
    assert summary["anchor"]["partition"] == anchor["partition-id"]
    assert summary["g-after"] < summary["g-before"]
    assert set(summary["rounds"][0]["phase-seconds"]) >= {"uniformity", "align", "merge", "write"}


def test_a_bad_value_fails_the_run_with_the_reason_first(flower_env):
    """The ServerApp's first line is the reason, and Flower marks the run failed. Flower 1.41's
    ``flwr run --stream`` exits 0 whatever the outcome; the outcome is the run's status
    (``finished:failed``), which ``flwr ls`` shows."""
    env, _home = flower_env
    proc = subprocess.run(
        [
            str(FLWR),
            "run",
            ".",
            "--stream",
            "--federation-config",
            "num-supernodes=2 client-resources-num-cpus=1",
            "--run-config",
            "shared-fraction=1.5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    reason = "[coopt] error: shared-fraction must lie in (0, 1) (|S| / |D|, e.g. 0.1), got 1.5"
    assert reason in log, log[-4000:]
    assert "Traceback" not in log.split(reason)[0]  # the reason comes before any frames
    run_id = re.search(r"Successfully started run (\d+)", log).group(1)
    listed = subprocess.run(
        [str(FLWR), "ls", "--run-id", run_id, "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    runs = json.loads(listed.stdout)["runs"]
    assert [r["status"] for r in runs] == ["finished:failed"]
