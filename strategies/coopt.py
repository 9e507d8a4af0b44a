"""The CoOpt strategy: drives protocol rounds over the Flower Message API.

Flower's built-in ``Strategy.start()`` is hard-wired to train → evaluate; CoOpt has its own
steps, so this class is driven from the ServerApp's ``@app.main()`` and talks to the nodes
through a :class:`flwr.serverapp.Grid` directly:

    (upgrades) → uniformity report → screening + anchor choice + shard assignment → anchor
    broadcast / aligned upload → merge (→ reassignment of shards whose owner failed) → write D'
    and the summary.

Continuous optimization: from round 2 on, a seeded draw
(:func:`coopt_flwr.protocol.evolution.choose_upgrades`)
moves about ``upgrade-fraction`` of the participants one stage along their evolution path of
priors; every message carries the stage of every partition, so an upgraded participant embeds
with its new prior while the others reuse their cached features. Uniformity is re-reported,
the anchor re-chosen and every participant re-aligned each round; the merged set keeps one
target per sample, overwritten in place, with the round and stage that produced it.

Two data modes (run-config ``data-mode``):

* ``platform``: the platform indexes D and assigns each participant a shard of ids; a
  failed participant's shard is reassigned to the healthy ones in the same round.
* ``local``: every node brings its own images (node config ``data``), which never leave it.
  The platform draws S from its own small data set and sends the S images; each participant
  uploads targets for all of its own samples, and the platform gives each participant name a
  contiguous block of global ids (``id-namespace`` in the summary: name → offset, count), in
  the order participants first appear, so ids stay stable across rounds. A failed
  participant's samples cannot be reassigned (only it holds them): they are reported and
  picked up when it answers in a later round.

The platform checkpoints its state after every phase (``checkpoint.json`` plus a tensor
file, both written atomically): a ServerApp restarted with the same ``output-dir`` resumes
after the last finished phase and produces the same merged data set.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from coopt_flwr.config import Settings
from coopt_flwr.devices import current_rss_mb, trim_heap
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol import screening
from coopt_flwr.protocol.evolution import choose_upgrades
from coopt_flwr.protocol.inconsistency import inconsistency
from coopt_flwr.protocol.merge import MergedTargets, ReplyError, check_ids, check_targets
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData, shard_split, shared_subset
from coopt_flwr.store.report import format_summary
from coopt_flwr.store.storage import (
    CHECKPOINT_FILE,
    OPTIMIZED_FILE,
    SUMMARY_FILE,
    load_tensors,
    write_json,
    write_tensors,
)

CHECKPOINT_FORMAT = 1
# Settings that must match for a checkpoint to be resumed (num-rounds may grow: more rounds).
_FINGERPRINT_KEYS = (
    "dataset",
    "data_mode",
    "priors",
    "shared_fraction",
    "target_dim",
    "ridge",
    "seed",
    "screen_max_residual",
    "screen_max_tv",
)


class GridLike(Protocol):
    """The part of :class:`flwr.serverapp.Grid` the strategy uses."""

    def get_node_ids(self) -> Iterable[int]: ...
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str | None]: ...
    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]: ...


@dataclass
class NodeRecord:
    """What the platform knows about one participant in one round."""

    node_id: int
    partition_id: int = -1
    name: str = ""
    prior: str = ""
    prior_kind: str = ""
    feature_dim: int = 0
    uniformity: float | None = None  # computed by the platform from the shared targets
    reported_uniformity: float | None = None  # the node's own claim, on raw features
    residual: float | None = None
    data_samples: int = 0  # how many samples the node holds (its own data in local mode)
    samples: int = 0  # how many targets of it were merged this round
    status: str = "pending"  # ok | rejected | failed
    reason: str = ""
    embed_seconds: float = 0.0
    align_seconds: float = 0.0
    cached: int = 0
    stage: int = 0  # evolution stage of the prior used this round
    num_stages: int = 1  # length of the participant's evolution path
    shared_targets: np.ndarray | None = field(default=None, repr=False)
    shared_aligned: np.ndarray | None = field(default=None, repr=False)

    def fail(self, status: str, reason: str) -> None:
        # Keep the first reason: later failures are consequences.
        if self.status not in ("rejected", "failed"):
            self.status, self.reason = status, reason

    def public(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in _ARRAY_FIELDS}
        d["node_id"] = str(self.node_id)  # uint64: keep exact in JSON for any reader
        return d

    @classmethod
    def from_public(cls, d: dict[str, Any], arrays: dict[str, np.ndarray]) -> NodeRecord:
        """Rebuild a record from :meth:`public` and its arrays (a checkpoint)."""
        known = {f.name for f in fields(cls)} - set(_ARRAY_FIELDS)
        rec = cls(**{k: v for k, v in d.items() if k in known} | {"node_id": int(d["node_id"])})
        for name in _ARRAY_FIELDS:
            key = f"{name}.{rec.node_id}"
            if key in arrays:
                setattr(rec, name, np.asarray(arrays[key]))
        return rec


_ARRAY_FIELDS = ("shared_targets", "shared_aligned")


@dataclass
class RoundResult:
    """Outcome of one protocol round."""

    round: int
    nodes: list[NodeRecord]
    anchor_partition: int | None
    anchor_prior: str | None
    g_before: float | None
    g_after: float | None
    phase_seconds: dict[str, float]
    missing: int
    reassigned: int
    upgraded: list[int] = field(default_factory=list)  # partitions that upgraded this round
    metrics: dict[str, Any] = field(default_factory=dict)  # what the round hook reported


@dataclass
class RunResult:
    """Outcome of a whole run (the last round's merged data set is on disk)."""

    rounds: list[RoundResult]
    output_dir: str
    summary: dict[str, Any]


RoundHook = Callable[[RoundResult, MergedTargets], Mapping[str, Any] | None]
"""Called after each round with its result and the merged set (already written to disk);
what it returns is recorded as the round's ``metrics`` in the summary."""


def _error_reason(reply: Message) -> str:
    err = reply.error
    lines = [ln for ln in str(err.reason).strip().splitlines() if ln.strip()]
    return f"error code {err.code}: {lines[-1] if lines else 'no reason given'}"


class CoOptStrategy:
    """Runs CoOpt rounds for a data set of ``num_samples`` samples.

    Parameters
    ----------
    settings
        Validated run settings.
    num_samples
        |D|, the size of the data set the platform indexes; in local data mode, the size of
        the platform's own data set that S is drawn from.
    log
        Where progress lines go (``print`` in the ServerApp).
    poll_interval
        Seconds between pulls of replies (the platform side; Flower's own
        ``send_and_receive`` sleeps 3 s, which would dominate small rounds).
    shared_data
        The platform's data set; required in local data mode, where the S images are sent
        to the participants.
    on_round
        Optional :data:`RoundHook`, e.g. to measure the quality of the merged targets.
    """

    def __init__(
        self,
        settings: Settings,
        num_samples: int,
        log: Callable[[str], None] = print,
        poll_interval: float = 0.1,
        shared_data: ImageData | None = None,
        on_round: RoundHook | None = None,
    ) -> None:
        self.s = settings
        self.local = settings.data_mode == "local"
        self.num_samples = num_samples
        self.log = log
        self.poll_interval = poll_interval
        self.on_round = on_round
        self.shared_ids = shared_subset(num_samples, settings.shared_fraction, settings.seed)
        if len(self.shared_ids) < 2:
            raise ValueError("the shared set needs at least 2 samples")
        self.shared_arrays: dict[str, np.ndarray] = {}
        if self.local:
            if shared_data is None or len(shared_data) != num_samples:
                raise ValueError("local data mode: the platform needs its own data set to send S from")
            self.shared_arrays[P.SHARED_IMAGES] = np.ascontiguousarray(shared_data.images[self.shared_ids])
            if shared_data.labels is not None:
                self.shared_arrays[P.SHARED_LABELS] = shared_data.labels[self.shared_ids]
        # Local mode: the merged set grows as participants register their samples.
        self.merged = MergedTargets(0 if self.local else num_samples, settings.target_dim)
        self.namespace: dict[str, dict[str, int]] = {}  # local mode: name -> offset, count, partition
        self.num_partitions = 0  # the federation's size, as the nodes report it
        self.stages: dict[int, int] = {}  # partition -> evolution stage it uses this round
        self.path_lengths: dict[int, int] = {}  # partition -> stages of its path (as reported)
        self.node_partitions: dict[int, int] = {}  # node id -> partition it last reported
        self.round_summaries: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []  # where each restart picked up the run
        self._baseline_rss_mb = current_rss_mb()

    # ------------------------------------------------------------------ transport
    def _exchange(
        self,
        grid: GridLike,
        messages: dict[int, Message],
        timeout: float,
        on_reply: Callable[[int, Message], None],
    ) -> dict[int, str]:
        """Push one message per node and hand each reply to ``on_reply`` as it arrives.

        Replies are processed (validated and merged) one at a time and then dropped, so the
        platform never holds every participant's upload at once.

        Returns
        -------
        dict
            A failure reason by node id for every node that sent an error or nothing within
            ``timeout`` (never silently dropped).
        """
        nodes = list(messages)
        msg_ids = list(grid.push_messages([messages[n] for n in nodes]))
        pending = {mid: n for mid, n in zip(msg_ids, nodes, strict=True) if mid}
        failures = {
            n: "message could not be pushed" for mid, n in zip(msg_ids, nodes, strict=True) if not mid
        }
        deadline = time.monotonic() + timeout
        wait = self.poll_interval
        step = next(iter(messages.values())).metadata.message_type if messages else "?"
        last_log = time.monotonic()
        while pending and time.monotonic() < deadline:
            if time.monotonic() - last_log >= 15.0:  # long steps show they are alive
                last_log = time.monotonic()
                self.log(
                    f"[coopt] {step}: {len(nodes) - len(pending)}/{len(nodes)} replies, "
                    f"{deadline - last_log:.0f} s left"
                )
            replies = list(grid.pull_messages(list(pending)))
            while replies:
                reply = replies.pop(0)  # dropped as soon as it is merged
                node = pending.pop(reply.metadata.reply_to_message_id, None)
                if node is None:
                    continue
                if reply.has_error():
                    failures[node] = _error_reason(reply)
                else:
                    on_reply(node, reply)
                    wait = self.poll_interval
                del reply
                trim_heap()
            if pending:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                wait = min(wait * 1.5, 1.0)
        for node in pending.values():
            failures[node] = f"no reply within {timeout:.0f} s"
        return failures

    def _message(
        self, node: int, kind: str, round_: int, config: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> Message:
        content = RecordDict(
            {
                P.CONFIG: ConfigRecord(config),
                P.ARRAYS: ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            }
        )
        return Message(content=content, dst_node_id=node, message_type=kind, group_id=str(round_))

    def _base_config(self, round_: int) -> dict[str, Any]:
        return {
            P.ROUND: round_,
            P.SEED: self.s.seed,
            P.TARGET_DIM: self.s.target_dim,
            P.DATASET: self.s.dataset,
            P.DATA_ROOT: self.s.data_root,
            P.RIDGE: self.s.ridge,
            P.DATA_MODE: self.s.data_mode,
            P.STAGES: self.stage_table(),
        }

    def stage_table(self) -> list[int]:
        """Evolution stage of every partition, indexed by partition id (0 where unknown)."""
        size = max([self.num_partitions, *(p + 1 for p in self.stages)])
        return [int(self.stages.get(p, 0)) for p in range(size)]

    def upgrade(self, round_: int) -> list[int]:
        """Draw this round's upgrades and move those partitions one stage along their path.

        Returns
        -------
        list of int
            The partitions that upgraded (sorted; empty in round 1).
        """
        upgraded = choose_upgrades(
            self.stages, self.path_lengths, self.s.upgrade_fraction, self.s.seed, round_
        )
        for p in upgraded:
            self.stages[p] += 1
        return upgraded

    # ------------------------------------------------------------------ nodes
    def wait_for_nodes(self, grid: GridLike, settle: float = 1.0) -> list[int]:
        """Wait until at least ``min-nodes`` nodes are connected and the count settles.

        Raises
        ------
        TimeoutError
            Fewer than ``min-nodes`` connected within ``node-wait-timeout``.
        """
        deadline = time.monotonic() + self.s.node_wait_timeout
        last, stable_since = -1, time.monotonic()
        while True:
            ids = sorted(int(n) for n in grid.get_node_ids())
            now = time.monotonic()
            if len(ids) != last:
                last, stable_since = len(ids), now
            if len(ids) >= self.s.min_nodes and now - stable_since >= settle:
                return ids
            if now > deadline:
                if len(ids) >= self.s.min_nodes:
                    return ids
                raise TimeoutError(
                    f"only {len(ids)} node(s) connected within {self.s.node_wait_timeout:.0f} s; "
                    f"min-nodes is {self.s.min_nodes}"
                )
            time.sleep(0.2)

    # ------------------------------------------------------------------ phases
    def _uniformity_phase(self, grid: GridLike, round_: int, node_ids: list[int]) -> dict[int, NodeRecord]:
        records: dict[int, NodeRecord] = {}
        config = self._base_config(round_)
        arrays = {P.SHARED_IDS: self.shared_ids, **self.shared_arrays}
        todo, expected = list(node_ids), 0

        def on_reply(node: int, reply: Message) -> None:
            nonlocal expected
            rec = records[node]
            try:
                expected = max(expected, self._read_uniformity(rec, reply))
                rec.status = "ok"
            except (ReplyError, KeyError, TypeError, ValueError) as exc:
                rec.fail("rejected", f"uniformity: {exc}")

        while todo:
            for node in todo:
                # A node that fails keeps the partition it reported before (for the summary).
                records.setdefault(
                    node, NodeRecord(node_id=node, partition_id=self.node_partitions.get(node, -1))
                )
            msgs = {n: self._message(n, P.MSG_UNIFORMITY, round_, config, arrays) for n in todo}
            failures = self._exchange(grid, msgs, self.s.step_timeout, on_reply)
            for node, reason in failures.items():
                records[node].fail("failed", f"uniformity: {reason}")
            # Nodes report how many partitions the federation has: wait for late joiners
            # (the wait starts after the exchange, which may take long on big shared sets).
            todo = []
            deadline = time.monotonic() + self.s.node_wait_timeout
            while len(records) < expected and time.monotonic() < deadline:
                todo = [int(n) for n in grid.get_node_ids() if int(n) not in records]
                if todo:
                    break
                time.sleep(0.5)
        self.num_partitions = max(expected, len(records))
        self._check_identities(records)
        self._screen_information(records)
        if self.local:
            self._register_samples(records)
        if len(records) < expected:
            self.log(
                f"[coopt] warning: {len(records)} of {expected} participants answered; "
                "going on without the others"
            )
        return records

    def _check_identities(self, records: dict[int, NodeRecord]) -> None:
        """Partition ids (and names, in local mode) must be unique among accepted nodes."""
        partitions: dict[int, int] = {}
        names: dict[str, int] = {}
        for rec in sorted(records.values(), key=lambda r: r.node_id):
            if rec.status != "ok":
                continue
            if rec.partition_id < 0 or rec.partition_id in partitions:
                rec.fail(
                    "rejected",
                    f"uniformity: partition id {rec.partition_id} is invalid or "
                    f"already taken by node {partitions.get(rec.partition_id)}",
                )
            elif self.local and rec.name in names:
                rec.fail(
                    "rejected",
                    f"uniformity: participant name {rec.name!r} already taken by node {names[rec.name]}",
                )
            else:
                partitions[rec.partition_id] = rec.node_id
                names[rec.name] = rec.node_id
                self.node_partitions[rec.node_id] = rec.partition_id
                # What the platform knows of each path decides who may upgrade next round.
                self.stages[rec.partition_id] = rec.stage
                self.path_lengths[rec.partition_id] = rec.num_stages

    def _screen_information(self, records: dict[int, NodeRecord]) -> None:
        """Reject participants whose shared targets predict no other participant's (check 2)."""
        ok = sorted((r for r in records.values() if r.status == "ok"), key=lambda r: r.partition_id)
        reasons = {}
        for rec in ok:
            peers = [r.shared_targets for r in ok if r is not rec and r.shared_targets is not None]
            reason = screening.check_information(
                rec.shared_targets, peers, max_residual=self.s.screen_max_residual, seed=self.s.seed
            )
            if reason:
                reasons[rec.node_id] = reason
        # Decide on all before rejecting any: one noise participant must not change the peers
        # the others were judged against.
        for node, reason in reasons.items():
            records[node].fail("rejected", f"uniformity: {reason}")

    def _register_samples(self, records: dict[int, NodeRecord]) -> None:
        """Local mode: give each new participant name a block of global ids (stable across rounds)."""
        total = self.merged.num_samples
        for rec in sorted(records.values(), key=lambda r: r.partition_id):
            if rec.status != "ok":
                continue
            entry = self.namespace.get(rec.name)
            if entry is None:
                self.namespace[rec.name] = {
                    "offset": total,
                    "count": rec.data_samples,
                    "partition": rec.partition_id,
                }
                total += rec.data_samples
            elif entry["count"] != rec.data_samples:
                rec.fail(
                    "rejected",
                    f"uniformity: participant {rec.name!r} now holds {rec.data_samples} samples, "
                    f"{entry['count']} when it registered (its data changed; give it a new name)",
                )
        self.merged.grow(total)  # once for all newcomers: no chain of reallocations

    def _read_uniformity(self, rec: NodeRecord, reply: Message) -> int:
        node = reply.content[P.NODE]
        arrays = reply.content[P.ARRAYS]
        rec.partition_id = int(node[P.PARTITION_ID])
        rec.name = str(node.get(P.NAME, "")) or f"partition-{rec.partition_id}"
        # A node without evolution support reports neither: one prior, stage 0.
        rec.stage = int(node[P.STAGE]) if P.STAGE in node else 0
        rec.num_stages = int(node[P.NUM_STAGES]) if P.NUM_STAGES in node else 1
        asked = self.stages.get(rec.partition_id, 0)
        if rec.stage != asked or not 0 <= rec.stage < rec.num_stages:
            raise ReplyError(
                f"used evolution stage {rec.stage} of a {rec.num_stages}-stage path, "
                f"the platform asked for stage {asked}"
            )
        rec.prior = str(node[P.PRIOR])
        rec.prior_kind = str(node[P.PRIOR_KIND])
        rec.feature_dim = int(node[P.FEATURE_DIM])
        rec.data_samples = int(node[P.NUM_SAMPLES])
        rec.embed_seconds = float(node[P.EMBED_SECONDS])
        rec.cached = int(node[P.CACHED])
        rec.reported_uniformity = float(node[P.REPORTED_UNIFORMITY])
        if self.local and rec.data_samples < 1:
            raise ReplyError(f"the participant holds {rec.data_samples} samples")
        targets = check_targets(
            arrays[P.SHARED_TARGETS].numpy(), len(self.shared_ids), self.s.target_dim, "shared targets"
        )
        rec.shared_targets = targets
        rec.uniformity = uniformity(targets)  # the platform's own value, not the node's claim
        reason = screening.check_claimed_uniformity(targets, float(node[P.REPORTED_TARGET_UNIFORMITY]))
        if reason:
            raise ReplyError(reason)
        return int(node[P.NUM_PARTITIONS])

    def assign_shards(self, partitions: list[int], num_partitions: int) -> dict[int, np.ndarray]:
        """Seeded random disjoint split of all ids, one shard per partition of the federation.

        Shards are stable across rounds (a participant keeps its shard, so its cached
        features stay valid); the shards of partitions that are absent this round are split
        among the present ones.

        Parameters
        ----------
        partitions
            Distinct partition ids of the accepted participants.
        num_partitions
            Size of the federation (at least ``max(partitions) + 1``).

        Returns
        -------
        dict
            Partition id → int64 sorted ids; together every id of D exactly once.
        """
        if not partitions:
            raise ValueError("no partitions to assign shards to")
        num_partitions = max(num_partitions, max(partitions) + 1)
        parts = shard_split(self.num_samples, num_partitions, self.s.seed)
        present = sorted(partitions)
        absent = [p for p in range(num_partitions) if p not in set(present)]
        shards = {p: parts[p] for p in present}
        if absent:
            orphans = np.concatenate([parts[p] for p in absent])
            for p, extra in zip(present, np.array_split(orphans, len(present)), strict=True):
                shards[p] = np.concatenate([shards[p], extra])
        return {p: np.sort(ids) for p, ids in shards.items()}

    def _align_phase(
        self, grid: GridLike, round_: int, records: dict[int, NodeRecord], anchor: NodeRecord
    ) -> int:
        ok = sorted((r for r in records.values() if r.status == "ok"), key=lambda r: r.partition_id)
        if self.local:  # a participant's shard is all of its own data, in its own index space
            assignment = {r.node_id: np.arange(r.data_samples, dtype=np.int64) for r in ok}
        else:
            shards = self.assign_shards([r.partition_id for r in ok], self.num_partitions)
            assignment = {r.node_id: shards[r.partition_id] for r in ok}
        reassigned = 0
        for attempt in range(self.s.max_reassign + 1):
            lost = self._align_exchanges(grid, round_, records, anchor, assignment)
            if not lost:
                break
            lost_ids = np.sort(np.concatenate(lost))
            if self.local:
                self.log(
                    f"[coopt] {len(lost_ids)} samples of failed or rejected participants stay with "
                    "them (local data cannot be reassigned); they are picked up in a later round"
                )
                break
            healthy = sorted((r for r in records.values() if r.status == "ok"), key=lambda r: r.partition_id)
            if attempt == self.s.max_reassign or not healthy:
                self.log(
                    f"[coopt] {len(lost_ids)} samples have no target: no healthy participant left "
                    "or reassignment attempts used up"
                )
                break
            # The platform owns D here, so a failed participant's shard goes to the others.
            self.log(
                f"[coopt] reassigning {len(lost_ids)} samples of failed participants "
                f"to {len(healthy)} healthy ones (attempt {attempt + 1})"
            )
            reassigned += len(lost_ids)
            parts = np.array_split(lost_ids, len(healthy))
            assignment = {r.node_id: p for r, p in zip(healthy, parts, strict=True) if len(p)}
        return reassigned

    def _align_exchanges(
        self,
        grid: GridLike,
        round_: int,
        records: dict[int, NodeRecord],
        anchor: NodeRecord,
        assignment: dict[int, np.ndarray],
    ) -> list[np.ndarray]:
        """Send each node its assigned ids in parts of at most ``upload-max-samples``.

        Parts go out one exchange at a time (every node's next part together), so the
        platform holds at most one part per node in flight, whatever the shard size, and
        merges each as it arrives. A node that fails or is rejected on any part loses the
        whole assignment: the rows it already contributed this round are cleared again.

        Returns
        -------
        list of np.ndarray
            The ids left without a target by failed or rejected nodes.
        """
        size = self.s.upload_max_samples
        queue = {
            n: [ids[i : i + size] for i in range(0, len(ids), size)] or [ids] for n, ids in assignment.items()
        }
        done: dict[int, list[np.ndarray]] = {n: [] for n in assignment}
        lost: list[np.ndarray] = []

        def drop(node: int) -> None:  # the node's whole assignment is redone elsewhere
            merged = np.concatenate(done[node]) if done[node] else np.zeros(0, np.int64)
            if len(merged):
                self.merged.clear(self._global_ids(records[node], merged))
                records[node].samples -= len(merged)
            lost.append(assignment[node])
            queue[node], done[node] = [], []

        while any(queue.values()):
            batch = {n: parts.pop(0) for n, parts in queue.items() if parts}
            msgs = {}
            for node, ids in batch.items():
                config = self._base_config(round_) | {P.IS_ANCHOR: node == anchor.node_id}
                arrays = {
                    P.SHARD_IDS: ids,
                    P.SHARED_IDS: self.shared_ids,
                    P.ANCHOR_TARGETS: anchor.shared_targets,
                    **self.shared_arrays,
                }
                msgs[node] = self._message(node, P.MSG_ALIGN, round_, config, arrays)

            def on_reply(node: int, reply: Message, batch=batch) -> None:
                try:
                    self._merge_reply(records[node], reply, batch[node], round_, anchor)
                    done[node].append(batch[node])
                except (ReplyError, KeyError, TypeError, ValueError) as exc:
                    records[node].fail("rejected", f"align: {exc}")
                    drop(node)

            failures = self._exchange(grid, msgs, self.s.step_timeout, on_reply)
            for node, reason in failures.items():
                records[node].fail("failed", f"align: {reason}")
                drop(node)
        return lost

    def _global_ids(self, rec: NodeRecord, ids: np.ndarray) -> np.ndarray:
        """Ids in the merged set: local data mode offsets a participant's own indices."""
        return ids + self.namespace[rec.name]["offset"] if self.local else ids

    def _merge_reply(
        self, rec: NodeRecord, reply: Message, assigned: np.ndarray, round_: int, anchor: NodeRecord
    ) -> None:
        node, arrays = reply.content[P.NODE], reply.content[P.ARRAYS]
        ids = check_ids(arrays[P.IDS].numpy(), assigned, "aligned ids")
        # A view into the message: the largest payload is copied once, into the merged buffer.
        targets = check_targets(
            P.array_view(arrays[P.TARGETS]), len(ids), self.s.target_dim, "aligned targets"
        )
        shared_aligned = check_targets(
            arrays[P.SHARED_ALIGNED].numpy(), len(self.shared_ids), self.s.target_dim, "shared aligned"
        )
        residual = float(node[P.RESIDUAL])
        if not np.isfinite(residual):
            raise ReplyError(f"residual {residual} is not finite")
        reason = screening.check_alignment(
            rec.shared_targets,
            anchor.shared_targets,
            shared_aligned,
            residual,
            ridge=self.s.ridge,
            is_anchor=rec.node_id == anchor.node_id,
        ) or screening.check_shard_distribution(
            rec.shared_targets,
            anchor.shared_targets,
            targets,
            ridge=self.s.ridge,
            is_anchor=rec.node_id == anchor.node_id,
            max_tv=self.s.screen_max_tv,
            max_samples=self.s.g_max_samples,
            seed=self.s.seed,
        )
        if reason:
            raise ReplyError(reason)
        stage = int(node[P.STAGE]) if P.STAGE in node else 0
        if stage != rec.stage:
            raise ReplyError(f"aligned with evolution stage {stage}, reported uniformity with {rec.stage}")
        ids = self._global_ids(rec, ids)
        self.merged.add(ids, targets, rec.partition_id, round_, stage=rec.stage)
        rec.samples += len(ids)
        rec.residual = residual
        rec.align_seconds += float(node[P.EMBED_SECONDS])
        rec.cached += int(node[P.CACHED])
        if rec.shared_aligned is None:
            rec.shared_aligned = shared_aligned

    # ------------------------------------------------------------------ rounds
    def run_round(self, grid: GridLike, round_: int, resume: dict[str, Any] | None = None) -> RoundResult:
        """One protocol round; updates the merged data set in place.

        ``resume`` is the restored state of this round from a checkpoint: its finished phases
        are skipped.
        """
        phases: dict[str, float] = dict(resume["phase-seconds"]) if resume else {}
        if resume is None:
            t = time.perf_counter()
            first = round_ == 1 or not self.round_summaries
            node_ids = self.wait_for_nodes(grid) if first else sorted(int(n) for n in grid.get_node_ids())
            phases["wait-nodes"] = time.perf_counter() - t
            upgraded = self.upgrade(round_)
            self.log(
                f"[coopt] round {round_}: {len(node_ids)} nodes, |S|={len(self.shared_ids)}, "
                f"n={self.s.target_dim}, data mode {self.s.data_mode}"
                + (f", upgrading partitions {upgraded}" if upgraded else "")
            )
            t = time.perf_counter()
            records = self._uniformity_phase(grid, round_, node_ids)
            phases["uniformity"] = time.perf_counter() - t

            t = time.perf_counter()
            # In partition order: node ids are random per run, and G's pairwise estimate (k-NN
            # ties, seeded subsampling per pair) must not depend on them.
            ok = sorted((r for r in records.values() if r.status == "ok"), key=lambda r: r.partition_id)
            if not ok:
                raise RuntimeError(
                    "no participant delivered a valid uniformity report: "
                    + "; ".join(f"{r.node_id}: {r.reason}" for r in records.values())
                )
            anchor = min(ok, key=lambda r: (r.uniformity, r.partition_id))
            g_before = self._g([r.shared_targets for r in ok])
            phases["anchor"] = time.perf_counter() - t
            self.log(
                f"[coopt] anchor: participant {anchor.partition_id} ({anchor.prior}), "
                f"V={anchor.uniformity:.4f}"
            )
            state = {"g-before": g_before, "reassigned": 0, "upgraded": upgraded, "phase-seconds": phases}
            self._save_checkpoint(round_, "uniformity", records, anchor, state)
        else:
            records, anchor = resume["records"], resume["anchor"]
            state = {
                "g-before": resume["g-before"],
                "reassigned": resume["reassigned"],
                "upgraded": resume["upgraded"],
                "phase-seconds": phases,
            }
            g_before = state["g-before"]
            self.log(f"[coopt] round {round_}: resumed after its {resume['phase']} phase")

        if resume is None or resume["phase"] == "uniformity":
            t = time.perf_counter()
            for rec in records.values():  # a redone phase starts from nothing merged
                rec.samples, rec.shared_aligned = 0, None
            state["reassigned"] = self._align_phase(grid, round_, records, anchor)
            phases["align"] = time.perf_counter() - t
            state["phase-seconds"] = phases
            self._save_checkpoint(round_, "align", records, anchor, state)

        t = time.perf_counter()
        ranked = sorted(records.values(), key=lambda r: r.partition_id)  # G in partition order
        aligned = [r.shared_aligned for r in ranked if r.status == "ok" and r.shared_aligned is not None]
        g_after = self._g(aligned)
        phases["merge"] = time.perf_counter() - t
        nodes = sorted(records.values(), key=lambda r: (r.partition_id < 0, r.partition_id, r.node_id))
        return RoundResult(
            round=round_,
            nodes=nodes,
            anchor_partition=anchor.partition_id,
            anchor_prior=anchor.prior,
            g_before=g_before,
            g_after=g_after,
            phase_seconds=phases,
            missing=len(self.merged.missing_ids()),
            reassigned=int(state["reassigned"]),
            upgraded=list(state["upgraded"]),
        )

    def _g(self, targets: list[np.ndarray | None]) -> float | None:
        arrays = [t for t in targets if t is not None]
        if len(arrays) < 2:
            return None
        return inconsistency(arrays, max_samples=self.s.g_max_samples, seed=self.s.seed)

    def run(self, grid: GridLike) -> RunResult:
        """Run every round, writing D' and the summary after each one (resuming if asked)."""
        out = self.s.output_dir
        out.mkdir(parents=True, exist_ok=True)
        self.log(f"[coopt] output folder: {out}")
        resume = self._load_checkpoint() if self.s.resume else None
        start = 1
        if resume is not None:
            start = resume["round"] + (1 if resume["phase"] == "done" else 0)
            if resume["phase"] == "done":
                resume = None
            if start > self.s.num_rounds:
                self.log(f"[coopt] {out} already holds all {self.s.num_rounds} rounds; nothing to do")
                summary = json.loads((out / SUMMARY_FILE).read_text())
                return RunResult(rounds=[], output_dir=str(out), summary=summary)
        rounds: list[RoundResult] = []
        summary: dict[str, Any] = {}
        for round_ in range(start, self.s.num_rounds + 1):
            result = self.run_round(grid, round_, resume if round_ == start else None)
            t = time.perf_counter()
            tensors = self.merged.tensors()
            if self.local:
                tensors["local-index"] = self._local_index(tensors["ids"])
            write_tensors(
                out / OPTIMIZED_FILE,
                tensors,
                metadata={"target-dim": str(self.s.target_dim), "num-samples": str(self.merged.num_samples)},
            )
            del tensors
            result.phase_seconds["write"] = time.perf_counter() - t
            if self.on_round is not None:
                t = time.perf_counter()
                result.metrics = dict(self.on_round(result, self.merged) or {})
                result.phase_seconds["hook"] = time.perf_counter() - t
            rounds.append(result)
            self.round_summaries.append(self._round_summary(result))
            summary = self._summary(result)
            write_json(out / SUMMARY_FILE, summary)
            self._save_checkpoint(round_, "done", {}, None, {})
            self.log(format_summary(summary))
        return RunResult(rounds=rounds, output_dir=str(out), summary=summary)

    def _local_index(self, ids: np.ndarray) -> np.ndarray:
        """Each merged id's index in its participant's own data (local mode)."""
        local = np.full(len(ids), -1, dtype=np.int64)
        for entry in self.namespace.values():
            lo, hi = entry["offset"], entry["offset"] + entry["count"]
            sel = (ids >= lo) & (ids < hi)
            local[sel] = ids[sel] - lo
        return local

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        d = asdict(self.s)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in _FINGERPRINT_KEYS}

    def _save_checkpoint(
        self,
        round_: int,
        phase: str,
        records: dict[int, NodeRecord],
        anchor: NodeRecord | None,
        state: dict[str, Any],
    ) -> None:
        """Persist the platform's state after a phase: tensors first, then the JSON naming them.

        The JSON is replaced last and atomically, so a crash at any point leaves a consistent
        checkpoint (the previous one, or the new one).
        """
        out = self.s.output_dir
        tensor_file = f"checkpoint-r{round_}-{phase}.safetensors"
        arrays: dict[str, np.ndarray] = {
            "merged.targets": self.merged.targets,
            "merged.participant": self.merged.participant,
            "merged.round": self.merged.round,
            "merged.stage": self.merged.stage,
        }
        for rec in records.values():
            for name in _ARRAY_FIELDS:
                value = getattr(rec, name)
                if value is not None:
                    arrays[f"{name}.{rec.node_id}"] = value
        write_tensors(out / tensor_file, arrays)
        previous = self._checkpoint_json()
        write_json(
            out / CHECKPOINT_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self._fingerprint(),
                "round": round_,
                "phase": phase,
                "tensors": tensor_file,
                "anchor-node": None if anchor is None else str(anchor.node_id),
                "records": [r.public() for r in records.values()],
                "state": {k: v for k, v in state.items() if k != "phase-seconds"},
                "phase-seconds": state.get("phase-seconds", {}),
                "namespace": self.namespace,
                "num-partitions": self.num_partitions,
                "stages": {str(k): v for k, v in self.stages.items()},
                "path-lengths": {str(k): v for k, v in self.path_lengths.items()},
                "node-partitions": {str(k): v for k, v in self.node_partitions.items()},
                "round-summaries": self.round_summaries,
                "resumes": self.resumes,
            },
        )
        if previous and previous.get("tensors") not in (None, tensor_file):
            (out / previous["tensors"]).unlink(missing_ok=True)

    def _checkpoint_json(self) -> dict[str, Any] | None:
        path = self.s.output_dir / CHECKPOINT_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path} is not a readable checkpoint ({exc}); move it away to start afresh"
            ) from exc

    def _load_checkpoint(self) -> dict[str, Any] | None:
        """Restore the state of the last finished phase; ``None`` when there is no checkpoint.

        Raises
        ------
        ValueError
            The checkpoint belongs to a run with other settings, or is unreadable.
        """
        ck = self._checkpoint_json()
        if ck is None:
            return None
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {ck.get('format')} is not {CHECKPOINT_FORMAT}")
        mine = self._fingerprint()
        differ = sorted(k for k in mine if ck["fingerprint"].get(k) != mine[k])
        if differ:
            raise ValueError(
                f"{self.s.output_dir} holds a checkpoint of a run with other settings ({', '.join(differ)}); "
                "use another output-dir, or resume=false to start afresh there"
            )
        arrays = load_tensors(self.s.output_dir / ck["tensors"])
        self.merged.grow(len(arrays["merged.participant"]))
        self.merged.targets[:] = arrays.pop("merged.targets")
        self.merged.participant[:] = arrays.pop("merged.participant")
        self.merged.round[:] = arrays.pop("merged.round")
        self.merged.stage[:] = arrays.pop("merged.stage")
        self.namespace = {k: {kk: int(vv) for kk, vv in v.items()} for k, v in ck["namespace"].items()}
        self.num_partitions = int(ck["num-partitions"])
        self.stages = {int(k): int(v) for k, v in ck["stages"].items()}
        self.path_lengths = {int(k): int(v) for k, v in ck["path-lengths"].items()}
        self.node_partitions = {int(k): int(v) for k, v in ck["node-partitions"].items()}
        self.round_summaries = list(ck["round-summaries"])
        self.resumes = [*ck.get("resumes", []), {"round": int(ck["round"]), "after-phase": ck["phase"]}]
        records = {int(d["node_id"]): NodeRecord.from_public(d, arrays) for d in ck["records"]}
        anchor = records.get(int(ck["anchor-node"])) if ck["anchor-node"] is not None else None
        self.log(
            f"[coopt] resuming from {self.s.output_dir / CHECKPOINT_FILE}: "
            f"round {ck['round']}, after its {ck['phase']} phase"
        )
        return {
            "round": int(ck["round"]),
            "phase": ck["phase"],
            "records": records,
            "anchor": anchor,
            "phase-seconds": ck["phase-seconds"],
            **ck["state"],
        }

    # ------------------------------------------------------------------ summary
    def _round_summary(self, r: RoundResult) -> dict[str, Any]:
        return {
            "round": r.round,
            "anchor-partition": r.anchor_partition,
            "anchor-prior": r.anchor_prior,
            "g-before": r.g_before,
            "g-after": r.g_after,
            "phase-seconds": r.phase_seconds,
            "missing": r.missing,
            "reassigned": r.reassigned,
            "upgraded": r.upgraded,
            "metrics": r.metrics,
            "participants": [n.public() for n in r.nodes],
        }

    def _summary(self, last: RoundResult) -> dict[str, Any]:
        missing = self.merged.missing_ids()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        merged_mb = self.merged.targets.nbytes / 2**20
        summary = {
            "num-samples": self.merged.num_samples,
            "shared-samples": len(self.shared_ids),
            "target-dim": self.s.target_dim,
            "data-mode": self.s.data_mode,
            "complete": bool(len(missing) == 0),
            "missing-ids": missing.tolist(),
            "anchor": {"partition": last.anchor_partition, "prior": last.anchor_prior},
            "g-before": last.g_before,
            "g-after": last.g_after,
            "participants": [r.public() for r in last.nodes],
            "rounds": self.round_summaries,
            "resumes": self.resumes,
            "platform-memory-mb": {
                "baseline": round(self._baseline_rss_mb, 1),
                "peak": round(peak_mb, 1),
                "merged-targets": round(merged_mb, 1),
            },
            "config": {
                k: (str(v) if not isinstance(v, (int, float, str, bool, list, tuple)) else v)
                for k, v in asdict(self.s).items()
            },
        }
        if self.local:
            summary["id-namespace"] = self.namespace
        return summary
