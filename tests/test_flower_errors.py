"""A bad run-config through ``flwr run .``: the ServerApp's first line is the reason, and Flower
marks the run failed.

Flower 1.41's ``flwr run --stream`` exits 0 whatever the run's outcome (it streams the log and
returns); the outcome is the run's status, ``finished:failed`` here, which ``flwr ls`` shows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
    """Its own FLWR_HOME and ports; the local SuperLink it starts is stopped by PID."""
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
    yield env
    stop_local_superlink(home)
    assert local_superlink_pids(home) == []


def test_a_bad_value_fails_the_run_with_the_reason_first(flower_env):
    env = flower_env
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
