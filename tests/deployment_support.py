"""Shared by the deployment test modules (``test_deployment.py``, ``test_deployment_proxy.py``).

A federation on loopback for one module (started, handed out, stopped by PID with a check that
no process outlived it) and the checks every deployed round must pass.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flwr.store.storage import load_optimized
from simulations.federation import FEDERATION, Federation, Node, alive, split_npz

PRIORS = ("efficientnet_lite0?size=32", "timm:resnet10t?size=16", "human")
N_DIGITS = 1797
TARGET_DIM = 32
RUN: dict[str, Any] = {
    "target-dim": TARGET_DIM,
    "min-nodes": 3,
    "step-timeout": 120.0,
    "node-wait-timeout": 60.0,
}


def institutions(workdir: Path, priors: Sequence[str]) -> list[Node]:
    """One registered institution per prior, each with its own slice of digits (local data)."""
    paths = split_npz("digits", len(priors), workdir / "data")
    return [
        Node(f"institution-{i}", i, prior, data=f"npz:{p}")
        for i, (prior, p) in enumerate(zip(priors, paths, strict=True))
    ]


@contextmanager
def running_federation(workdir: Path, nodes: list[Node], **kwargs: Any) -> Iterator[Federation]:
    """Start a :class:`Federation` (``kwargs`` go to it), hand it out, stop every process by PID."""
    federation = Federation(workdir, nodes, **kwargs)
    try:
        federation.up()
        yield federation
    finally:
        pids = federation.down()
        assert not [p for p in pids if alive(p)], "a federation process outlived the test"


def local_sizes(fed: Federation) -> dict[str, int]:
    """Sample count of every registered institution's own data."""
    return {
        n.name: int(np.load(n.data.removeprefix("npz:"))["x"].shape[0]) for n in fed.nodes if n.registered
    }


def check_local_round(fed: Federation, out: Path, summary: dict[str, Any]) -> None:
    """A complete local-data round: every registered institution (and only they) merged in full."""
    sizes = local_sizes(fed)
    assert summary["complete"] and summary["num-samples"] == sum(sizes.values()) == N_DIGITS
    parts = summary["participants"]
    assert sorted(p["name"] for p in parts) == sorted(sizes)  # no unregistered node among them
    assert all(p["status"] == "ok" for p in parts)
    assert sorted(p["prior"] for p in parts) == sorted(n.prior for n in fed.nodes if n.registered)
    space = summary["id-namespace"]
    assert {name: e["count"] for name, e in space.items()} == sizes
    out_arrays = load_optimized(out)
    np.testing.assert_array_equal(out_arrays["ids"], np.arange(N_DIGITS))
    targets = out_arrays["targets"]
    assert np.all(np.isfinite(targets)) and targets.shape == (N_DIGITS, TARGET_DIM)
    for name, e in space.items():
        rows = out_arrays["participant"] == e["partition"]
        np.testing.assert_array_equal(out_arrays["local-index"][rows], np.arange(sizes[name]))
    # the platform's log shows the nodes' node ids are the registered ones
    assert {p["node-id"] for p in parts} == {str(fed.node_ids[n]) for n in sizes}


def listed_node_ids(fed: Federation) -> set[str]:
    """The node ids the SuperLink knows (``flwr supernode list`` from the platform, on loopback)."""
    listed = fed.flwr("supernode", "list", FEDERATION, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return {str(n["node-id"]) for n in json.loads(listed.stdout[listed.stdout.index("{") :])["nodes"]}


def wait_for_exit(proc: subprocess.Popen, timeout: float = 120.0) -> int | None:
    """Wait up to ``timeout`` seconds for ``proc`` to end; its return code (None: still running)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return proc.returncode
