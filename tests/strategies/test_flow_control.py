"""Flow control of the strategy's exchanges: at most ``max-in-flight`` messages out at once.

Flower 1.41's in-memory message store scans every stored message for every node it serves, so
a simulation of a thousand participants spent most of a core on that scan when the platform
sent a whole step at once. These tests pin the window itself, that it changes nothing of the
result, and that failures inside a window are still told apart node by node.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Message
from flwr.superlink.grid.inmemory_grid import InMemoryGrid
from harness import InProcessGrid, NoSettleStrategy, register_counting_prior

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.devices import available_cpus
from coopt_flwr.protocol import messages as P
from coopt_flwr.store.storage import load_optimized
from strategies import Status
from strategies.coopt import IN_FLIGHT_PER_CPU

PRIORS = "counting:a?dim=24,counting:b?dim=20,human"
N_DIGITS = 1797
NODES = 6

register_counting_prior()


class CountingGrid(InProcessGrid):
    """The in-process grid, recording how many messages were out (pushed, reply not pulled)."""

    def __init__(self, *args: object, drop: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.out: set[str] = set()
        self.most_out = 0
        self.drop = drop  # a partition whose messages the grid cannot store (a node gone)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        kept = []
        for msg in messages:
            partition = int(self.contexts[msg.metadata.dst_node_id].node_config["partition-id"])
            if partition == self.drop:
                continue  # as Flower's in-memory grid does: no id, and the message is not kept
            kept.append(msg)
        ids = super().push_messages(kept)
        self.out.update(ids)
        self.most_out = max(self.most_out, len(self.out))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies = super().pull_messages(message_ids)
        self.out.difference_update(r.metadata.reply_to_message_id for r in replies)
        return replies


def _run(tmp_path, name: str, fault=None, drop: int | None = None, **kw):
    cfg = {
        "priors": PRIORS,
        "output-dir": str(tmp_path / name),
        "target-dim": 16,
        "node-wait-timeout": 5.0,
        "g-max-samples": 64,
        **kw,
    }
    settings = Settings.from_config({}, cfg)
    grid = CountingGrid(make_client_app({"priors": PRIORS}), NODES, fault=fault, drop=drop)
    result = NoSettleStrategy(settings, N_DIGITS, log=lambda s: None, poll_interval=0.001).run(grid)
    return result, grid, settings


def test_a_window_bounds_the_messages_out_and_changes_nothing_of_the_result(tmp_path):
    wide, wide_grid, wide_settings = _run(tmp_path, "wide")
    narrow, narrow_grid, narrow_settings = _run(tmp_path, "narrow", **{"max-in-flight": 2})
    assert wide_grid.most_out == NODES  # the in-process grid is no simulation: no window
    assert narrow_grid.most_out == 2
    assert narrow.summary["complete"] and wide.summary["complete"]
    a, b = load_optimized(wide_settings.output_dir), load_optimized(narrow_settings.output_dir)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_a_silent_node_inside_a_window_times_out_alone(tmp_path):
    def silent(p: int, kind: str, request: Message, reply: Message) -> Message | None:
        return None if (p == 1 and kind == P.MSG_ALIGN) else reply

    result, _, _ = _run(tmp_path, "silent", fault=silent, **{"max-in-flight": 1, "step-timeout": 0.3})
    nodes = {n.partition_id: n for n in result.rounds[-1].nodes}
    assert nodes[1].status == Status.FAILED and "no reply within" in nodes[1].reason
    assert all(n.status == Status.OK for p, n in nodes.items() if p != 1)
    assert result.summary["complete"]  # its shard went to the others


def test_a_message_the_grid_cannot_store_fails_that_node_only(tmp_path):
    result, _, _ = _run(tmp_path, "dropped", drop=2, **{"max-in-flight": 3})
    nodes = {n.partition_id: n for n in result.rounds[-1].nodes}
    failed = [n for n in nodes.values() if n.status != Status.OK]
    assert len(failed) == 1 and "could not be pushed" in failed[0].reason
    assert result.summary["complete"]


@pytest.mark.parametrize("configured", [0, 5])
def test_the_auto_window_is_per_core_in_a_simulation_and_unbounded_elsewhere(tmp_path, configured):
    settings = Settings.from_config({}, {"output-dir": str(tmp_path), "max-in-flight": configured})
    strategy = NoSettleStrategy(settings, N_DIGITS, log=lambda s: None)
    simulation = object.__new__(InMemoryGrid)  # only its type matters here
    deployment = InProcessGrid(make_client_app({}), 1)
    if configured:
        assert strategy.in_flight_window(simulation) == strategy.in_flight_window(deployment) == configured
    else:
        assert strategy.in_flight_window(simulation) == IN_FLIGHT_PER_CPU * available_cpus()
        assert strategy.in_flight_window(deployment) == 0


def test_max_in_flight_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="max-in-flight"):
        Settings.from_config({}, {"output-dir": str(tmp_path), "max-in-flight": -1})
