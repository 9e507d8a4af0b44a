"""The faster delivery sweep returns what Flower 1.41's own ``get_message_ins`` returns.

Both are run on the same stand-in state (what the method touches: a re-entrant lock, the store
of messages by id, and the validity check, here one that expires messages as Flower's does), so
the comparison is against Flower's real method, not a copy of it.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import flwr
import numpy as np
import pytest
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

from simulations import linkstate

FLOWER_GET = linkstate.FLOWER_GET_MESSAGE_INS  # Flower's, captured before anything installs the patch


class _State:
    """The parts of ``InMemoryLinkState`` that ``get_message_ins`` uses."""

    def __init__(self, rng: np.random.Generator, nodes: int, messages: int) -> None:
        self.lock = threading.RLock()
        self.message_ins_store: dict[str, SimpleNamespace] = {}
        self.expired: set[str] = set()
        self.checked: list[str] = []
        for i in range(messages):
            meta = SimpleNamespace(
                dst_node_id=int(rng.integers(nodes)),
                run_id=int(rng.integers(2)),
                delivered_at="" if rng.random() < 0.7 else "earlier",
            )
            self.message_ins_store[f"m{i}"] = SimpleNamespace(metadata=meta, name=f"m{i}")
            if rng.random() < 0.2:
                self.expired.add(f"m{i}")

    def _check_stored_messages(self, message_ids: set[str]) -> None:
        with self.lock:  # re-entrant, as Flower's
            self.checked.extend(message_ids)
            for mid in message_ids & self.expired:
                self.message_ins_store.pop(mid, None)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("limit", [1, 3, None])
@pytest.mark.parametrize("run_id", [None, 1])
def test_the_faster_sweep_returns_what_flower_returns(seed, limit, run_id):
    picks = {}
    for name, method in (("flower", FLOWER_GET), ("faster", linkstate._get_message_ins)):
        state = _State(np.random.default_rng(seed), nodes=6, messages=60)
        picks[name] = [
            [m.name for m in method(state, node, limit, run_id=run_id)] for node in range(6) for _ in range(2)
        ]  # twice per node: the second call must not hand out the same messages again
        picks[name + "-store"] = sorted(state.message_ins_store)
        picks[name + "-delivered"] = sorted(
            k for k, m in state.message_ins_store.items() if m.metadata.delivered_at not in ("", "earlier")
        )
    assert FLOWER_GET is not linkstate._get_message_ins
    assert picks["faster"] == picks["flower"]
    assert picks["faster-delivered"] == picks["flower-delivered"]
    # Flower also deletes expired messages it passes on other nodes' turns (or already
    # delivered); the faster sweep deletes them on their own node's turn, or leaves delivered
    # ones to the reply path, which checks the TTL itself. What it keeps longer is expired only.
    state = _State(np.random.default_rng(seed), nodes=6, messages=60)
    assert set(picks["faster-store"]) - set(picks["flower-store"]) <= state.expired
    assert set(picks["flower-store"]) <= set(picks["faster-store"])


def test_the_faster_sweep_validates_only_the_nodes_own_messages():
    state = _State(np.random.default_rng(0), nodes=50, messages=500)
    linkstate._get_message_ins(state, 7, None)
    own = {k for k, m in state.message_ins_store.items() if m.metadata.dst_node_id == 7}
    assert set(state.checked) <= own | state.expired


def test_a_bad_limit_is_refused_as_flower_refuses_it():
    with pytest.raises(AssertionError, match="limit"):
        linkstate._get_message_ins(_State(np.random.default_rng(0), 1, 1), 0, 0)


def test_installed_only_on_the_flower_line_it_was_written_for(monkeypatch):
    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", FLOWER_GET)
    assert linkstate.install() is flwr.__version__.startswith(linkstate.SUPPORTED)
    monkeypatch.setattr(flwr, "__version__", "9.9.9")
    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", FLOWER_GET)
    assert linkstate.install() is False
    assert InMemoryLinkState.get_message_ins is FLOWER_GET
