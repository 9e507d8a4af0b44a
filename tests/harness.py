"""An in-process stand-in for Flower's Grid: runs the real ClientApp handlers synchronously.

It exercises the strategy and the ClientApp with real Flower ``Message`` objects, without a
SuperLink or Ray, and lets tests inject faults (error replies, silence, tampered content).
"""

from __future__ import annotations

import hashlib
import traceback
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from coopt_flwr.protocol import messages as P
from coopt_flwr.registry.priors import Prior, list_priors, register_prior
from coopt_flwr.registry.spec import Spec, check_options, require_arg
from strategies.coopt import CoOptStrategy, GridLike

SERVER_NODE_ID = 1

# fault(partition_id, message_type, request, reply) -> reply to deliver, or None for silence
Fault = Callable[[int, str, Message, Message], Message | None]
# change(node, arrays) -> None (edited in place) or the whole reply content instead
Change = Callable[[dict, dict], RecordDict | None]


class InProcessGrid:
    def __init__(
        self,
        app: ClientApp,
        num_nodes: int,
        run_config: dict | None = None,
        fault: Fault | None = None,
        first_node_id: int = 2**63 + 11,  # uint64 ids above int64 range, as Flower issues them
        node_configs: dict[int, dict] | None = None,  # extra node config by partition (deployment keys)
    ) -> None:
        TaskIdentity.run_id = 7
        TaskIdentity.node_id = SERVER_NODE_ID
        TaskIdentity.task_id = 1
        self.app = app
        self.fault = fault
        self.contexts = {
            first_node_id + 97 * p: Context(
                run_id=7,
                node_id=first_node_id + 97 * p,
                node_config={
                    "partition-id": p,
                    "num-partitions": num_nodes,
                    **(node_configs or {}).get(p, {}),
                },
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for p in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        self.sent: list[tuple[int, str]] = []  # (partition, message type) log

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            ctx = self.contexts[msg.metadata.dst_node_id]
            partition = int(ctx.node_config["partition-id"])
            self.sent.append((partition, msg.metadata.message_type))
            try:
                reply = self.app(msg, ctx)
            except Exception as exc:  # what the SuperNode does: an error reply, code 2
                reason = f"{traceback.format_exc()}\n{type(exc).__name__}: {exc}"
                reply = Message(Error(code=2, reason=reason), reply_to=msg)
            if self.fault is not None:
                reply = self.fault(partition, msg.metadata.message_type, msg, reply)
            if reply is not None:
                self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


class NoSettleStrategy(CoOptStrategy):
    """The strategy without the 1 s settle of the membership wait: the in-process grid's
    nodes are all there from the start."""

    def wait_for_nodes(self, grid: GridLike, settle: float = 0.0) -> list[int]:
        return super().wait_for_nodes(grid, settle)


# ----------------------------------------------------------------------------- hostile replies
def over_the_wire(content: RecordDict) -> RecordDict:
    """``content`` as the ServerApp gets it from a SuperNode: deflated to Flower's object
    store's bytes and inflated again (what cannot be sent raises here, not on the platform)."""
    objects = get_all_nested_objects(content)
    return inflate_object_from_contents(content.object_id, {i: o.deflate() for i, o in objects.items()})


def replace_reply(partition: int, kind: str, change: Change, round_: int | None = None) -> Fault:
    """A fault that rewrites ``partition``'s ``kind`` replies (of round ``round_``, or every round).

    ``change(node, arrays)`` gets the reply's node ConfigRecord as a dict and its arrays as
    numpy arrays and edits them in place; a value of ``arrays`` may also be set to a
    ``flwr.app.Array`` (sent as is: bytes no numpy array serializes to). If it returns a
    ``RecordDict``, that is the whole content instead. The content is sent over the wire
    (:func:`over_the_wire`), so the platform sees the types a real transport delivers.
    """

    def fault(p: int, message_type: str, request: Message, reply: Message) -> Message | None:
        if p != partition or message_type != kind or reply.has_error():
            return reply
        if round_ is not None and request.metadata.group_id != str(round_):
            return reply
        node = dict(reply.content[P.NODE])
        arrays = {k: v.numpy() for k, v in reply.content[P.ARRAYS].items()}
        content = change(node, arrays)
        if content is None:
            wrapped = {
                k: v if isinstance(v, Array) else Array(np.ascontiguousarray(v)) for k, v in arrays.items()
            }
            content = RecordDict({P.NODE: ConfigRecord(node), P.ARRAYS: ArrayRecord(wrapped)})
        return Message(content=over_the_wire(content), reply_to=request)

    return fault


# ----------------------------------------------------------------------------- counting prior
EMBEDDED: Counter[str] = Counter()  # images embedded, by prior spec, across all instances


class CountingPrior(Prior):
    """ψ(x) = flatten(x) @ M, with M seeded by the spec's tag and the seed; counts embeddings.

    Registered as ``counting:<tag>`` (option ``dim=N``, default 16): as cheap as a prior can be,
    so tests can follow exactly which participant embedded how many images in which round.
    """

    def __init__(self, spec: str, dim: int, seed: int) -> None:
        super().__init__(spec, "random", dim)
        digest = hashlib.sha256(f"{spec}|{seed}".encode()).digest()
        self._rng_seed = int.from_bytes(digest[:8], "little")
        self._m: np.ndarray | None = None

    def embed(self, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        if self._m is None:
            rng = np.random.default_rng(self._rng_seed)
            self._m = rng.standard_normal((flat.shape[1], self.feature_dim)).astype(np.float32)
        EMBEDDED[self.spec] += len(images)
        return flat @ self._m


def register_counting_prior() -> Counter[str]:
    """Register ``counting:<tag>`` once per process and return the shared counter."""
    if "counting" not in list_priors():

        @register_prior("counting")
        def _counting(spec: Spec, *, seed: int, batch_size: int, device: object) -> Prior:
            require_arg(spec, "a tag")
            check_options(spec, {"dim"})
            return CountingPrior(spec.text, int(spec.get_int("dim", 16) or 16), seed)

    return EMBEDDED
