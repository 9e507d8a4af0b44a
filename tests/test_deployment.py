"""A real deployment on loopback: SuperLink + SuperNodes with TLS and node authentication.

One federation for the module: three registered institutions, each with its own local data
(a slice of digits) and a different prior, plus one SuperNode whose key was never
registered. Tests run in file order on it; the last one kills a SuperNode. Every process is
stopped by PID (its process group) at the end, and the test checks none is left. A federation
behind the Caddy proxy, with outsiders trying the public port, is in ``test_deployment_proxy.py``.

    python -m pytest -m deployment
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from deployment_support import (
    N_DIGITS,
    PRIORS,
    RUN,
    check_local_round,
    institutions,
    listed_node_ids,
    running_federation,
    wait_for_exit,
)

from coopt_flwr.store.storage import load_optimized
from simulations.federation import Node

pytestmark = [pytest.mark.deployment, pytest.mark.slow]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    work = tmp_path_factory.mktemp("federation")
    nodes = institutions(work, PRIORS)
    nodes.append(Node("intruder", 3, "timm:resnet10t?size=16", data=nodes[0].data, registered=False))
    with running_federation(work, nodes) as federation:
        yield federation


def test_round_completes_with_tls_auth_and_local_data(fed):
    out = fed.workdir / "run-local"
    fed.submit(RUN | {"data-mode": "local", "output-dir": str(out)})
    check_local_round(fed, out, fed.wait_for_summary(out))  # the intruder is not among them


def test_unregistered_node_is_refused(fed):
    intruder = fed.procs["intruder"]
    assert wait_for_exit(intruder) not in (None, 0)
    assert "Failed to activate SuperNode" in fed.log("intruder")
    assert listed_node_ids(fed) == {str(i) for i in fed.node_ids.values()}  # only the three registered keys


def test_serverapp_killed_mid_round_resumes_with_the_same_merged_set(fed):
    out = fed.workdir / "run-resume"
    config = RUN | {"data-mode": "local", "output-dir": str(out)}
    fed.submit(config)
    fed.wait_for_phase(out, "uniformity")
    pids = fed.serverapp_pids()
    assert pids, "no ServerApp process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert json.loads((out / "checkpoint.json").read_text())["phase"] == "uniformity"  # killed mid-round
    fed.submit(config)
    summary = fed.wait_for_summary(out)
    assert summary["complete"]
    assert summary["resumes"] == [{"round": 1, "after-phase": "uniformity"}]
    resumed, reference = load_optimized(out), load_optimized(fed.workdir / "run-local")
    for key in ("ids", "targets", "participant", "round", "local-index"):
        np.testing.assert_array_equal(resumed[key], reference[key])


def test_supernode_killed_mid_round_is_reported_and_its_shard_reassigned(fed):
    out = fed.workdir / "run-kill"
    # Platform data mode: every node holds the public digits set, so the platform can hand a
    # dead node's shard to the others in the same round.
    fed.submit(
        RUN | {"data-mode": "platform", "dataset": "digits", "output-dir": str(out), "step-timeout": 60.0}
    )
    fed.wait_for_phase(out, "uniformity")
    fed.kill("institution-1")
    summary = fed.wait_for_summary(out)
    dead = next(p for p in summary["participants"] if p["name"] == "institution-1")
    assert dead["status"] == "failed" and dead["reason"].startswith("align:")
    assert summary["complete"] and summary["rounds"][0]["reassigned"] > 0
    out_arrays = load_optimized(out)
    np.testing.assert_array_equal(out_arrays["ids"], np.arange(N_DIGITS))  # no sample lost
    assert dead["partition-id"] not in set(out_arrays["participant"].tolist())
