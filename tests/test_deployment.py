"""A real deployment on loopback: SuperLink + SuperNodes with TLS and node authentication.

One federation for the module: three registered institutions, each with its own local data
(a slice of digits) and a different prior, plus one SuperNode whose key was never
registered. Tests run in file order on it; the last one kills a SuperNode. Every process is
stopped by PID (its process group) at the end, and the test checks none is left.

    python -m pytest -m deployment
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from coopt_flwr.store.storage import load_optimized
from simulations.federation import Federation, Node, alive, split_npz

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

PRIORS = ("efficientnet_lite0?size=32", "timm:resnet10t?size=16", "human")
N_DIGITS = 1797
RUN = {"target-dim": 32, "min-nodes": 3, "step-timeout": 120.0, "node-wait-timeout": 60.0}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    work = tmp_path_factory.mktemp("federation")
    paths = split_npz("digits", 3, work / "data")
    nodes = [Node(f"institution-{i}", i, PRIORS[i], data=f"npz:{p}") for i, p in enumerate(paths)]
    nodes.append(Node("intruder", 3, "timm:resnet10t?size=16", data=f"npz:{paths[0]}", registered=False))
    federation = Federation(work, nodes)
    try:
        federation.up()
        yield federation
    finally:
        pids = federation.down()
        assert not [p for p in pids if alive(p)], "a federation process outlived the test"


def _sizes(fed):
    return {
        n.name: int(np.load(n.data.removeprefix("npz:"))["x"].shape[0]) for n in fed.nodes if n.registered
    }


def test_round_completes_with_tls_auth_and_local_data(fed):
    out = fed.workdir / "run-local"
    fed.submit(RUN | {"data-mode": "local", "output-dir": str(out)})
    summary = fed.wait_for_summary(out)
    sizes = _sizes(fed)
    assert summary["complete"] and summary["num-samples"] == sum(sizes.values()) == N_DIGITS
    parts = summary["participants"]
    assert sorted(p["name"] for p in parts) == sorted(sizes)  # the intruder is not among them
    assert all(p["status"] == "ok" for p in parts)
    assert sorted(p["prior"] for p in parts) == sorted(PRIORS)
    space = summary["id-namespace"]
    assert {name: e["count"] for name, e in space.items()} == sizes
    out_arrays = load_optimized(out)
    np.testing.assert_array_equal(out_arrays["ids"], np.arange(N_DIGITS))
    assert np.all(np.isfinite(out_arrays["targets"])) and out_arrays["targets"].shape == (N_DIGITS, 32)
    for name, e in space.items():
        rows = out_arrays["participant"] == e["partition"]
        np.testing.assert_array_equal(out_arrays["local-index"][rows], np.arange(sizes[name]))
    # the platform's log shows the nodes' node ids are the registered ones
    registered = {str(fed.node_ids[n]) for n in sizes}
    assert {p["node-id"] for p in parts} == registered


def test_unregistered_node_is_refused(fed):
    intruder = fed.procs["intruder"]
    deadline = time.monotonic() + 120
    while intruder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert intruder.returncode not in (None, 0)
    assert "Failed to activate SuperNode" in fed.log("intruder")
    listed = fed.flwr("supernode", "list", "coopt", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    ids = {str(n["node-id"]) for n in json.loads(listed.stdout[listed.stdout.index("{") :])["nodes"]}
    assert ids == {str(i) for i in fed.node_ids.values()}  # only the three registered keys


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
