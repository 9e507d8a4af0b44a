"""A faster delivery sweep for Flower 1.41's simulation engine (applied by ``simulations.run``).

The simulation engine hands messages to its workers by sweeping every virtual node every 0.1 s
and asking the in-memory link state for that node's next message
(``InMemoryLinkState.get_message_ins``). Flower 1.41 answers by validating *every* stored
message (TTL, federation membership: a lock, a clock read and a set per message) before it
looks at the destination, so one sweep costs K × (messages stored) validations. At 1,000
participants that kept the simulation driver busy most of the time, and at 10,000 it capped the
whole simulation at ~14 messages a second (docs/BENCHMARKS.md, "Load").

:func:`install` replaces that method with one that first picks this node's undelivered messages
(plain attribute reads) and validates only those, with Flower's own check. It returns the same
messages and marks them delivered the same way; another node's expired message is deleted on
its own node's turn of the same sweep instead of on every node's turn, and an expired message
that was already delivered is left to the reply path, which checks the TTL itself
(``store_message_res``). Installed only on the
Flower line it was written against; any other version keeps Flower's method.
"""

from __future__ import annotations

import flwr
from flwr.app import Message

SUPPORTED = "1.41."

try:  # Flower's own method, kept before anything can replace it (the tests compare against it)
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    FLOWER_GET_MESSAGE_INS = InMemoryLinkState.get_message_ins
except (ImportError, AttributeError):  # another Flower layout: install() leaves it alone
    InMemoryLinkState = None  # type: ignore[assignment,misc]
    FLOWER_GET_MESSAGE_INS = None


def _get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Message]:
    """Undelivered messages for ``node_id`` (at most ``limit``): Flower's own result, faster."""
    # Imported here: the module must import (and report itself not installed) on any Flower.
    from flwr.supercore.date import now

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Message] = []
    with self.lock:
        for msg_id, msg in list(self.message_ins_store.items()):
            meta = msg.metadata
            if meta.dst_node_id != node_id or meta.delivered_at != "":
                continue
            if run_id is not None and meta.run_id != run_id:
                continue
            self._check_stored_messages({msg_id})  # Flower's TTL and federation checks
            if self.message_ins_store.get(msg_id) is msg:
                found.append(msg)
            if limit and len(found) == limit:
                break
    delivered_at = now().isoformat()
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def install() -> bool:
    """Use the faster sweep in this process's in-memory link state; whether it was installed."""
    if InMemoryLinkState is None or not flwr.__version__.startswith(SUPPORTED):
        return False
    if not all(hasattr(InMemoryLinkState, a) for a in ("get_message_ins", "_check_stored_messages")):
        return False
    InMemoryLinkState.get_message_ins = _get_message_ins  # type: ignore[method-assign]
    return True
