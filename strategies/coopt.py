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

Ensembles and anchor rules (run-config, defaults keep the protocol above): with
``redundancy`` r > 1 (platform data mode) every sample goes to r participants of different
prior entries where possible; their aligned targets are kept apart per sample
(:class:`coopt_flwr.protocol.merge.RoundContributions`) until the alignment phase ends and
then averaged into one row, so a participant rejected mid-phase is taken out exactly and its
copies reassigned to healthy participants not yet holding those samples. ``anchor-rule``
``consensus`` picks the anchor by :func:`coopt_flwr.protocol.consensus.consensus_scores`
instead of argmin V. Every participant's cross-fitted alignment residual to the anchor
(``residual-oos``) is recorded, and weighs its copies under ``ensemble-weighting=residual``.

The platform checkpoints its state after every phase (``checkpoint.json`` plus a tensor
file, both written atomically): a ServerApp restarted with the same ``output-dir`` resumes
after the last finished phase and produces the same merged data set.

The module holds the strategy itself: membership, the phases with their transport, shard
assignment and the round. What it records is in :mod:`strategies.records`, the checkpoint in
:mod:`strategies.checkpoint`, ``summary.json`` in :mod:`strategies.summary`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from coopt_flwr.config import Settings
from coopt_flwr.devices import available_cpus, current_rss_mb, trim_heap
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol import screening
from coopt_flwr.protocol.alignment import RIDGE_AUTO_FALLBACK, cross_fitted_residual, cv_folds, resolve_ridge
from coopt_flwr.protocol.anchor import choose_anchor
from coopt_flwr.protocol.consensus import CONSENSUS_PARTNERS, consensus_scores
from coopt_flwr.protocol.ensemble import assign_redundant
from coopt_flwr.protocol.evolution import choose_upgrades
from coopt_flwr.protocol.inconsistency import inconsistency
from coopt_flwr.protocol.merge import (
    MergedTargets,
    ReplyError,
    RoundContributions,
    check_ids,
    check_targets,
)
from coopt_flwr.protocol.shards import disjoint_shards, quality_gate, reassign_lost
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData, shared_subset
from coopt_flwr.store.report import format_summary
from coopt_flwr.store.storage import OPTIMIZED_FILE, SUMMARY_FILE, write_json, write_tensors
from strategies.checkpoint import Checkpoint, Checkpoints, PlatformState, RoundState
from strategies.records import NodeRecord, RoundResult, RunResult, Status
from strategies.replies import reply_array, reply_float, reply_int, reply_record, reply_str
from strategies.summary import round_summary, run_summary

try:  # the grid of a Flower simulation (run_simulation, ``flwr run`` on a simulation federation)
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid as _SimulationGrid
except ImportError:  # pragma: no cover - moved in another Flower: no window unless configured
    _SimulationGrid = None

#: Messages in flight per CPU core in a simulation when ``max-in-flight`` is 0 ("auto"): enough
#: to keep every worker busy (on 2 cores at 1,000 participants, 8 in flight beat 4, 16 and 64:
#: docs/BENCHMARKS.md, "Load").
IN_FLIGHT_PER_CPU = 4

__all__ = ["CoOptStrategy", "GridLike", "NodeRecord", "RoundHook", "RoundResult", "RunResult", "Status"]


class GridLike(Protocol):
    """The part of :class:`flwr.serverapp.Grid` the strategy uses."""

    def get_node_ids(self) -> Iterable[int]: ...
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str | None]: ...
    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]: ...


RoundHook = Callable[[RoundResult, MergedTargets], Mapping[str, Any] | None]
"""Called after each round with its result and the merged set (already written to disk);
what it returns is recorded as the round's ``metrics`` in the summary."""

_BAD_REPLY = (ReplyError, KeyError, TypeError, ValueError)

#: ``ensemble-weighting`` ``residual``: the smallest weight of a contribution, so a sample
#: whose contributors all align badly still gets a (plain) mean.
MIN_ENSEMBLE_WEIGHT = 1e-3


#: Bounds on what a node may claim about itself: a claim past them is rejected, not trusted
#: (a claim of 10⁹ samples made the platform allocate for them; a huge federation size made
#: it wait for participants that do not exist).
MAX_PARTITIONS = 100_000
MAX_LOCAL_SAMPLES = 10_000_000


def _error_reason(reply: Message) -> str:
    err = reply.error
    lines = [ln for ln in str(err.reason).strip().splitlines() if ln.strip()]
    return f"error code {err.code}: {lines[-1] if lines else 'no reason given'}"


def _accepted(records: dict[int, NodeRecord]) -> list[NodeRecord]:
    """The records still ``ok``, in partition order.

    Node ids are random per run; G's pairwise estimate (k-NN ties, seeded subsampling per
    pair) and the screening must not depend on them.
    """
    return sorted((r for r in records.values() if r.status == Status.OK), key=lambda r: r.partition_id)


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
        ``send_and_receive`` sleeps 3 s, which would dominate small rounds); it grows to 1 s
        while nothing arrives. 0.02 s rather than 0.1 s took a 1,000-participant simulation of
        cheap priors from 81 s to 59 s (a reply waits for the pull that frees its window slot).
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
        poll_interval: float = 0.02,
        shared_data: ImageData | None = None,
        on_round: RoundHook | None = None,
    ) -> None:
        self.settings = settings
        self.local = settings.data_mode == "local"
        self.num_samples = num_samples
        self.log = log
        self.poll_interval = poll_interval
        self.on_round = on_round
        self.shared_ids = shared_subset(num_samples, settings.shared_fraction, settings.seed)
        if len(self.shared_ids) < 2:
            raise ValueError("the shared set needs at least 2 samples")
        if settings.anchor_rule == "consensus" and cv_folds(len(self.shared_ids)) is None:
            raise ValueError("anchor-rule 'consensus' needs a shared set of at least 3 samples")
        self.shared_arrays: dict[str, np.ndarray] = {}
        if self.local:
            if shared_data is None or len(shared_data) != num_samples:
                raise ValueError("local data mode: the platform needs its own data set to send S from")
            self.shared_arrays[P.SHARED_IMAGES] = np.ascontiguousarray(shared_data.images[self.shared_ids])
            if shared_data.labels is not None:
                self.shared_arrays[P.SHARED_LABELS] = shared_data.labels[self.shared_ids]
        # Local mode: the merged set grows as participants register their samples.
        self.merged = MergedTargets(0 if self.local else num_samples, settings.target_dim)
        # Redundancy > 1: the round's contributions, kept apart until its alignment phase ends.
        self.contributions: RoundContributions | None = None
        self.checkpoints = Checkpoints(settings)
        # The alignment's ridge strength: the run-config's, or chosen each round on S ("auto").
        self.ridge = RIDGE_AUTO_FALLBACK if settings.ridge is None else settings.ridge
        # What the platform carries across rounds (see PlatformState); checkpointed.
        self.namespace: dict[str, dict[str, int]] = {}  # local mode: name -> offset, count, partition
        self.num_partitions = 0  # the federation's size, as the nodes report it
        self.stages: dict[int, int] = {}  # partition -> evolution stage it uses this round
        self.path_lengths: dict[int, int] = {}  # partition -> stages of its path (as reported)
        # node id -> the partition bound to it (claimed first, kept for the run; re-bound only
        # when a resumed run finds none of its nodes, as a restarted simulation does)
        self.node_partitions: dict[int, int] = {}
        self.round_summaries: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []  # where each restart picked up the run
        self._baseline_rss_mb = current_rss_mb()
        self._nodes_seen = False  # this process has waited for the federation once

    # ------------------------------------------------------------------ nodes
    def wait_for_nodes(self, grid: GridLike, settle: float = 1.0) -> list[int]:
        """Wait until at least ``min-nodes`` nodes are connected and the count settles.

        Raises
        ------
        TimeoutError
            Fewer than ``min-nodes`` connected within ``node-wait-timeout``.
        """
        min_nodes, timeout = self.settings.min_nodes, self.settings.node_wait_timeout
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while True:
            ids = sorted(int(n) for n in grid.get_node_ids())
            now = time.monotonic()
            if len(ids) != last:
                last, stable_since = len(ids), now
            if len(ids) >= min_nodes and now - stable_since >= settle:
                return ids
            if now > deadline:
                if len(ids) >= min_nodes:
                    return ids
                raise TimeoutError(
                    f"only {len(ids)} node(s) connected within {timeout:.0f} s; min-nodes is {min_nodes}"
                )
            time.sleep(0.2)

    def _connected_nodes(self, grid: GridLike) -> list[int]:
        """The nodes now: waited for (``min-nodes``, settled) the first time this process asks —
        a resumed run's nodes connect anew —, read directly afterwards."""
        if not self._nodes_seen:
            self._nodes_seen = True
            return self.wait_for_nodes(grid)
        return sorted(int(n) for n in grid.get_node_ids())

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
            self.stages, self.path_lengths, self.settings.upgrade_fraction, self.settings.seed, round_
        )
        for p in upgraded:
            self.stages[p] += 1
        return upgraded

    # ------------------------------------------------------------------ transport
    def _exchange(
        self,
        grid: GridLike,
        nodes: Iterable[int],
        make: Callable[[int], Message],
        timeout: float,
        on_reply: Callable[[int, Message], None],
    ) -> dict[int, str]:
        """Send ``make(node)`` to every node and hand each reply to ``on_reply`` as it arrives.

        At most :meth:`in_flight_window` messages are out at once; each is built
        when it is sent and waited for ``timeout`` seconds from then. Flow control keeps the
        SuperLink's message store small: Flower 1.41's in-memory store (the simulation's, and
        a SuperLink's without a database) scans every stored message for every node it
        serves, so a thousand messages sent at once cost a million checks per delivery
        sweep. Replies are processed (validated and merged) one at a time and then dropped, so
        the platform never holds every participant's upload at once.

        Returns
        -------
        dict
            A failure reason by node id for every node that sent an error or nothing within
            ``timeout`` (never silently dropped).
        """
        # A message to a node that is gone is dropped by Flower's in-memory grid without an id;
        # such nodes fail here, by name, instead of desynchronizing the ids from the nodes.
        connected = {int(n) for n in grid.get_node_ids()}
        nodes = list(nodes)
        failures = {n: "node is not connected" for n in nodes if n not in connected}
        todo = deque(n for n in nodes if n in connected)
        total = len(todo)
        window = self.in_flight_window(grid) or total
        pending: dict[str, tuple[int, float]] = {}  # message id -> (node, deadline)
        step = "?"

        def send() -> None:
            nonlocal step
            batch = []
            while todo and len(pending) + len(batch) < window:
                node = todo.popleft()
                batch.append((node, make(node)))
            if not batch:
                return
            step = batch[0][1].metadata.message_type
            # The grid sets each message's id as it stores it; one it could not store gets none
            # (in memory) or None in the returned list (HTTP), so every node is accounted for.
            pushed = {str(mid) for mid in grid.push_messages([msg for _, msg in batch]) if mid}
            deadline = time.monotonic() + timeout
            for node, msg in batch:
                mid = msg.metadata.message_id
                if mid and mid in pushed:
                    pending[mid] = (node, deadline)
                else:
                    failures[node] = "message could not be pushed (the node may have left)"

        send()
        wait = self.poll_interval
        last_log = time.monotonic()
        while pending:
            now = time.monotonic()
            if now - last_log >= 15.0:  # long steps show they are alive
                last_log = now
                left = max(d for _, d in pending.values()) - now
                done = total - len(pending) - len(todo)
                self.log(f"[coopt] {step}: {done}/{total} replies, {left:.0f} s left")
            replies = list(grid.pull_messages(list(pending)))
            while replies:
                reply = replies.pop(0)  # dropped as soon as it is merged
                node, _ = pending.pop(reply.metadata.reply_to_message_id, (None, 0.0))
                if node is None:
                    continue
                if reply.has_error():
                    failures[node] = _error_reason(reply)
                else:
                    on_reply(node, reply)
                    wait = self.poll_interval
                del reply
                trim_heap()
            now = time.monotonic()
            for mid in [mid for mid, (_, deadline) in pending.items() if deadline <= now]:
                failures[pending.pop(mid)[0]] = f"no reply within {timeout:.0f} s"
            send()
            if pending:
                first = min(d for _, d in pending.values())
                time.sleep(min(wait, max(0.0, first - time.monotonic())))
                wait = min(wait * 1.5, 1.0)
        return failures

    def in_flight_window(self, grid: GridLike) -> int:
        """How many messages may be out at once (0: all of a step).

        ``max-in-flight`` when set; otherwise (0, "auto") :data:`IN_FLIGHT_PER_CPU` per core in a
        simulation, whose workers share this machine's cores, and no bound in a deployment,
        where every SuperNode works on its own machine.
        """
        if self.settings.max_in_flight:
            return self.settings.max_in_flight
        if _SimulationGrid is not None and isinstance(grid, _SimulationGrid):
            return IN_FLIGHT_PER_CPU * available_cpus()
        return 0

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
        s = self.settings
        return {
            P.ROUND: round_,
            P.SEED: s.seed,
            P.TARGET_DIM: s.target_dim,
            P.DATASET: s.dataset,
            P.DATA_ROOT: s.data_root,
            P.DATA_MODE: s.data_mode,
            P.STAGES: self.stage_table(),
        }

    # ------------------------------------------------------------------ phase 1: uniformity
    def _uniformity_phase(self, grid: GridLike, round_: int, node_ids: list[int]) -> dict[int, NodeRecord]:
        """Ask every node for its uniformity report, then run the checks on who answered."""
        records: dict[int, NodeRecord] = {}
        expected = self._query_uniformity(grid, round_, node_ids, records)
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

    def _query_uniformity(
        self, grid: GridLike, round_: int, node_ids: list[int], records: dict[int, NodeRecord]
    ) -> int:
        """Exchange uniformity reports, also with nodes that join while the federation is short.

        Returns
        -------
        int
            The federation's size as the nodes report it.
        """
        config = self._base_config(round_)
        arrays = {P.SHARED_IDS: self.shared_ids, **self.shared_arrays}
        todo, expected, claims = list(node_ids), 0, []

        def on_reply(node: int, reply: Message) -> None:
            nonlocal expected
            rec = records[node]
            try:
                claims.append(self._read_uniformity(rec, reply))
                # The median claim: one node cannot make the platform wait for a federation
                # of a million.
                expected = int(np.median(claims))
                rec.status = Status.OK
            except _BAD_REPLY as exc:
                rec.fail(Status.REJECTED, f"uniformity: {exc}")

        while todo:
            for node in todo:
                # A node that fails keeps the partition it reported before (for the summary).
                records.setdefault(
                    node, NodeRecord(node_id=node, partition_id=self.node_partitions.get(node, -1))
                )
            failures = self._exchange(
                grid,
                todo,
                lambda n: self._message(n, P.MSG_UNIFORMITY, round_, config, arrays),
                self.settings.step_timeout,
                on_reply,
            )
            for node, reason in failures.items():
                records[node].fail(Status.FAILED, f"uniformity: {reason}")
            # Nodes report how many partitions the federation has: wait for late joiners
            # (the wait starts after the exchange, which may take long on big shared sets).
            todo = []
            deadline = time.monotonic() + self.settings.node_wait_timeout
            while len(records) < expected and time.monotonic() < deadline:
                todo = [int(n) for n in grid.get_node_ids() if int(n) not in records]
                if todo:
                    break
                time.sleep(0.5)
        return expected

    def _read_uniformity(self, rec: NodeRecord, reply: Message) -> int:
        # Every field is read typed and bounded (strategies.replies.reply_int and co.):
        # int() and float() took "3", 2.5 and True, and raised OverflowError on inf (a crash).
        node = reply_record(reply.content, P.NODE, ConfigRecord)
        arrays = reply_record(reply.content, P.ARRAYS, ArrayRecord)
        rec.partition_id = reply_int(node, P.PARTITION_ID)
        num_partitions = reply_int(node, P.NUM_PARTITIONS)
        if not 1 <= num_partitions <= MAX_PARTITIONS:
            raise ReplyError(f"claims a federation of {num_partitions} partitions (1 to {MAX_PARTITIONS})")
        if not 0 <= rec.partition_id < num_partitions:
            raise ReplyError(f"partition id {rec.partition_id} outside 0 to {num_partitions - 1}")
        rec.name = reply_str(node, P.NAME, default="") or f"partition-{rec.partition_id}"
        # A node without evolution support reports neither: one prior, stage 0.
        rec.stage = reply_int(node, P.STAGE, default=0)
        rec.num_stages = reply_int(node, P.NUM_STAGES, default=1)
        asked = self.stages.get(rec.partition_id, 0)
        if rec.stage != asked or not 0 <= rec.stage < rec.num_stages:
            raise ReplyError(
                f"used evolution stage {rec.stage} of a {rec.num_stages}-stage path, "
                f"the platform asked for stage {asked}"
            )
        rec.prior = reply_str(node, P.PRIOR)
        rec.prior_kind = reply_str(node, P.PRIOR_KIND)
        rec.feature_dim = reply_int(node, P.FEATURE_DIM, low=1)
        rec.data_samples = reply_int(node, P.NUM_SAMPLES, low=1)
        rec.embed_seconds = reply_float(node, P.EMBED_SECONDS, low=0.0)
        rec.cached = reply_int(node, P.CACHED, low=0, high=len(self.shared_ids))  # of S, embedded here
        rec.reported_uniformity = reply_float(node, P.REPORTED_UNIFORMITY)
        if self.local and not 1 <= rec.data_samples <= MAX_LOCAL_SAMPLES:
            raise ReplyError(f"claims to hold {rec.data_samples} samples (1 to {MAX_LOCAL_SAMPLES:,})")
        targets = check_targets(
            reply_array(arrays, P.SHARED_TARGETS),
            len(self.shared_ids),
            self.settings.target_dim,
            "shared targets",
        )
        rec.shared_targets = targets
        rec.uniformity = uniformity(targets)  # the platform's own value, not the node's claim
        claimed = reply_float(node, P.REPORTED_TARGET_UNIFORMITY)
        reason = screening.check_claimed_uniformity(targets, claimed)
        if reason:
            raise ReplyError(reason)
        return num_partitions

    def _check_identities(self, records: dict[int, NodeRecord]) -> None:
        """Bind partition ids (and names, in local mode) to nodes; reject conflicting claims.

        A node keeps the partition it first claimed for the whole run; another node claiming
        it while its holder is connected is rejected, never the holder (nodes bound to their
        claim are judged first). A partition whose holder is gone may be taken over. In local
        mode a name owns a block of sample ids, so it stays bound to its node even while that
        node is away: a newcomer cannot take over (and overwrite) another institution's block.
        """
        partitions: dict[int, int] = {}
        names: dict[str, int] = {}
        connected = set(records)
        holder_of = {p: n for n, p in self.node_partitions.items()}
        holders = {p: n for p, n in holder_of.items() if n in connected}

        def bound_first(rec: NodeRecord) -> tuple[bool, int]:
            return self.node_partitions.get(rec.node_id) != rec.partition_id, rec.node_id

        for rec in sorted(records.values(), key=bound_first):
            if rec.status != Status.OK:
                continue
            bound = self.node_partitions.get(rec.node_id)
            holder = holders.get(rec.partition_id)
            owner = self.namespace.get(rec.name, {}).get("node") if self.local else None
            if bound is not None and bound != rec.partition_id:
                reason = f"claims partition {rec.partition_id}, but partition {bound} is bound to this node"
            elif holder is not None and holder != rec.node_id:
                reason = f"partition id {rec.partition_id} is bound to node {holder}"
            elif rec.partition_id in partitions:
                reason = (
                    f"partition id {rec.partition_id} already claimed by node {partitions[rec.partition_id]}"
                )
            elif self.local and owner is not None and owner != rec.node_id:
                reason = f"participant name {rec.name!r} is bound to node {owner}"
            elif self.local and rec.name in names:
                reason = f"participant name {rec.name!r} already taken by node {names[rec.name]}"
            else:
                partitions[rec.partition_id] = rec.node_id
                names[rec.name] = rec.node_id
                # a dict lookup, not a rebuild per node: K can be 10,000
                previous = holder_of.get(rec.partition_id)
                if previous is not None and previous != rec.node_id:
                    del self.node_partitions[previous]
                holder_of[rec.partition_id] = rec.node_id
                self.node_partitions[rec.node_id] = rec.partition_id
                # What the platform knows of each path decides who may upgrade next round.
                self.stages[rec.partition_id] = rec.stage
                self.path_lengths[rec.partition_id] = rec.num_stages
                continue
            rec.fail(Status.REJECTED, f"uniformity: {reason}")

    def rebind(self, connected: Iterable[int]) -> bool:
        """Forget every node binding when none of the bound nodes is connected (a restarted
        simulation gives its nodes new ids); keep them all otherwise.

        Returns
        -------
        bool
            Whether the bindings were dropped.
        """
        bound = set(self.node_partitions) | {
            int(e["node"]) for e in self.namespace.values() if e.get("node") is not None
        }
        if not bound or bound & {int(n) for n in connected}:
            return False
        self.node_partitions = {}
        for entry in self.namespace.values():
            entry.pop("node", None)
        self.log(
            f"[coopt] none of the {len(bound)} node(s) bound in the checkpoint is connected (new node ids "
            "after a restart): partitions and names are bound again as nodes report"
        )
        return True

    def _screen_information(self, records: dict[int, NodeRecord]) -> None:
        """Reject participants whose shared targets predict no other participant's (check 2)."""
        ok = _accepted(records)
        reasons = {}
        for rec in ok:
            peers = [r.shared_targets for r in ok if r is not rec and r.shared_targets is not None]
            reason = screening.check_information(
                rec.shared_targets,
                peers,
                max_residual=self.settings.screen_max_residual,
                seed=self.settings.seed,
            )
            if reason:
                reasons[rec.node_id] = reason
        # Decide on all before rejecting any: one noise participant must not change the peers
        # the others were judged against.
        for node, reason in reasons.items():
            records[node].fail(Status.REJECTED, f"uniformity: {reason}")

    def _register_samples(self, records: dict[int, NodeRecord]) -> None:
        """Local mode: give each new participant name a block of global ids (stable across rounds)."""
        total = self.merged.num_samples
        for rec in _accepted(records):
            entry = self.namespace.get(rec.name)
            if entry is None:
                self.namespace[rec.name] = {
                    "offset": total,
                    "count": rec.data_samples,
                    "partition": rec.partition_id,
                    "node": rec.node_id,
                }
                total += rec.data_samples
            elif entry.get("node") is None:
                entry["node"] = rec.node_id
            elif entry["count"] != rec.data_samples:
                rec.fail(
                    Status.REJECTED,
                    f"uniformity: participant {rec.name!r} now holds {rec.data_samples} samples, "
                    f"{entry['count']} when it registered (its data changed; give it a new name)",
                )
        self.merged.grow(total)  # once for all newcomers: no chain of reallocations

    # ------------------------------------------------------------------ phase 2: anchor, shards
    def _choose_anchor(self, records: dict[int, NodeRecord]) -> NodeRecord:
        """The accepted participant with the most uniform shared targets (ties: lowest partition).

        Raises
        ------
        RuntimeError
            No participant delivered a valid uniformity report.
        """
        ok = {r.partition_id: r for r in _accepted(records)}
        if not ok:
            raise RuntimeError(
                "no participant delivered a valid uniformity report: "
                + "; ".join(f"{r.node_id}: {r.reason}" for r in records.values())
            )
        if self.settings.anchor_rule == "consensus" and len(ok) >= 2:
            scores = consensus_scores(
                {p: r.shared_targets for p, r in ok.items()},
                ridge=self.ridge,
                folds=cv_folds(len(self.shared_ids)),
                seed=self.settings.seed,
                partners=CONSENSUS_PARTNERS,
            )
            for p, score in scores.items():
                ok[p].consensus = score
            return ok[choose_anchor(scores)]
        # An accepted record has the platform's uniformity value (set before it is accepted).
        values = {p: r.uniformity for p, r in ok.items() if r.uniformity is not None}
        return ok[choose_anchor(values)]

    def _round_ridge(self, records: dict[int, NodeRecord]) -> float:
        """The round's ridge: the run-config's, or for ``auto`` the strength with the least
        cross-fitted residual between the accepted participants' shared-set targets."""
        if self.settings.ridge is not None:
            return self.settings.ridge
        shared = [r.shared_targets for r in sorted(_accepted(records), key=lambda r: r.partition_id)]
        ridge = resolve_ridge(None, shared, seed=self.settings.seed) if shared else RIDGE_AUTO_FALLBACK
        self.log(f"[coopt] ridge auto: {ridge:g} (least cross-fitted residual on S, {len(shared)} nodes)")
        return ridge

    def _score_alignment(self, records: dict[int, NodeRecord], anchor: NodeRecord) -> None:
        """Each accepted participant's out-of-sample alignment residual to the anchor on S.

        The in-sample residual a node reports goes to 0 as n approaches |S|, whatever the
        prior; the cross-fitted one (run-config ``alignment`` and ``ridge``) does not.
        """
        folds = cv_folds(len(self.shared_ids))
        for rec in _accepted(records):
            if rec is anchor:
                rec.residual_oos = 0.0
            elif folds is not None:
                rec.residual_oos = cross_fitted_residual(
                    rec.shared_targets,
                    anchor.shared_targets,
                    folds=folds,
                    seed=self.settings.seed,
                    ridge=self.ridge,
                    method=self.settings.alignment,
                )

    def _ensemble_weight(self, rec: NodeRecord) -> float:
        """A contribution's weight in a sample's mean (run-config ``ensemble-weighting``).

        ``residual``: the out-of-sample share of the anchor's S variance it explains,
        1 − residual-oos² (the anchor 1), floored at :data:`MIN_ENSEMBLE_WEIGHT`.
        """
        if self.settings.ensemble_weighting == "mean" or rec.residual_oos is None:
            return 1.0
        return max(1.0 - rec.residual_oos**2, MIN_ENSEMBLE_WEIGHT)

    def assign_shards(self, partitions: list[int], num_partitions: int) -> dict[int, np.ndarray]:
        """Disjoint shards of D over the accepted partitions, stable across rounds
        (:func:`coopt_flwr.protocol.shards.disjoint_shards` with the run seed)."""
        return disjoint_shards(self.num_samples, partitions, num_partitions, self.settings.seed)

    def assign_redundant_shards(self, partitions: list[int], redundancy: int) -> dict[int, np.ndarray]:
        """Every id of D to ``redundancy`` distinct partitions, preferably of different priors.

        The group of a partition is the index of its entry in the run-config's prior list
        (entries are assigned round-robin), so the copies of a sample go to different priors
        where the loads allow (:func:`coopt_flwr.protocol.ensemble.assign_redundant`). Seeded:
        the same participants get the same shards every round (their feature caches stay valid).

        Returns
        -------
        dict
            Partition id → int64 sorted ids; together every id exactly ``redundancy`` times.
        """
        present = sorted(partitions)
        groups = [p % len(self.settings.paths) for p in present]
        ids = np.arange(self.num_samples, dtype=np.int64)
        return assign_redundant(ids, present, groups, redundancy, seed=self.settings.seed)

    def _assignment(self, records: dict[int, NodeRecord], state: RoundState) -> dict[int, np.ndarray]:
        """Node id → the ids it must upload targets for (its shard, or all of its own data).

        Sets ``state.redundancy``: the run-config's ``redundancy`` clipped to the accepted
        participants (a sample cannot go to more participants than there are), with a warning.
        """
        ok = _accepted(records)
        if self.local:  # a participant's shard is all of its own data, in its own index space
            return {r.node_id: np.arange(r.data_samples, dtype=np.int64) for r in ok}
        ok = self._gate(ok)
        state.redundancy = min(self.settings.redundancy, len(ok))
        if state.redundancy < self.settings.redundancy:
            self.log(
                f"[coopt] warning: redundancy {self.settings.redundancy} clipped to {state.redundancy}: "
                f"only {len(ok)} participants accepted"
            )
        partitions = [r.partition_id for r in ok]
        if state.redundancy > 1:
            shards = self.assign_redundant_shards(partitions, state.redundancy)
        else:
            shards = self.assign_shards(partitions, self.num_partitions)
        return {r.node_id: shards[r.partition_id] for r in ok}

    def _gate(self, ok: list[NodeRecord]) -> list[NodeRecord]:
        """The accepted participants that get a share of D (platform mode): those whose
        out-of-sample residual to the anchor is within ``shard-max-residual``
        (:func:`coopt_flwr.protocol.shards.quality_gate`); the others are marked ``gated``."""
        residuals = {r.partition_id: r.residual_oos for r in ok}
        kept = set(quality_gate(residuals, self.settings.shard_max_residual))
        for rec in ok:
            rec.gated = rec.partition_id not in kept
            if rec.gated:
                self.log(
                    f"[coopt] participant {rec.partition_id} ({rec.prior}) gets no share of D this round: "
                    f"out-of-sample residual {rec.residual_oos:.3f} > shard-max-residual "
                    f"{self.settings.shard_max_residual:g}"
                )
        return [r for r in ok if not r.gated]

    # ------------------------------------------------------------------ phase 3: align and merge
    def _align_phase(
        self,
        grid: GridLike,
        round_: int,
        records: dict[int, NodeRecord],
        anchor: NodeRecord,
        state: RoundState,
    ) -> None:
        """Collect every assigned id's aligned target(s); reassign what failed participants held.

        Sets ``state.reassigned`` (ids reassigned to other participants), ``state.redundancy``
        and, with redundancy > 1, ``state.fewer`` (samples left with fewer contributions).
        """
        assignment = self._assignment(records, state)
        r = state.redundancy
        self.contributions = None
        if r > 1:
            self.contributions = RoundContributions(self.num_samples, self.settings.target_dim, r)
        state.reassigned = self._collect(grid, round_, records, anchor, assignment)
        if self.contributions is not None:
            counts = self.contributions.merge_into(self.merged, round_)
            self.contributions = None
            state.fewer = int(np.count_nonzero((counts > 0) & (counts < r)))
            if state.fewer:
                self.log(f"[coopt] {state.fewer} samples merged from fewer than {r} contributions")

    def _collect(
        self,
        grid: GridLike,
        round_: int,
        records: dict[int, NodeRecord],
        anchor: NodeRecord,
        assignment: dict[int, np.ndarray],
    ) -> int:
        """Run the align exchanges, reassigning failed participants' ids up to ``max-reassign`` times.

        Returns
        -------
        int
            How many ids (contributions, with redundancy) were reassigned.
        """
        reassigned = 0
        for attempt in range(self.settings.max_reassign + 1):
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
            healthy = [r for r in _accepted(records) if not r.gated]
            what = "samples" if self.contributions is None else "contributions to samples"
            if attempt == self.settings.max_reassign or not healthy:
                lost_what = "samples have no target" if self.contributions is None else f"{what} are lost"
                self.log(
                    f"[coopt] {len(lost_ids)} {lost_what}: no healthy participant left "
                    "or reassignment attempts used up"
                )
                break
            # The platform owns D here, so a failed participant's shard goes to the others.
            self.log(
                f"[coopt] reassigning {len(lost_ids)} {what} of failed participants "
                f"to {len(healthy)} healthy ones (attempt {attempt + 1})"
            )
            if self.contributions is not None:
                assignment = self._reassign_redundant(lost, healthy)
                reassigned += sum(len(ids) for ids in assignment.values())
                continue
            reassigned += len(lost_ids)
            parts = np.array_split(lost_ids, len(healthy))
            assignment = {r.node_id: p for r, p in zip(healthy, parts, strict=True) if len(p)}
        return reassigned

    def _reassign_redundant(self, lost: list[np.ndarray], healthy: list[NodeRecord]) -> dict[int, np.ndarray]:
        """Each lost contribution to a healthy participant not yet contributing that sample
        (:func:`coopt_flwr.protocol.shards.reassign_lost`); node id → ids, nodes with none left out."""
        assert self.contributions is not None
        picked = reassign_lost(lost, self.contributions.owner, [r.partition_id for r in healthy])
        return {rec.node_id: ids for rec, ids in zip(healthy, picked, strict=True) if len(ids)}

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
        merges each as it arrives. A node *rejected* on any part loses its whole assignment
        (what it sent before is distrusted and cleared again); a node that *fails* (an error,
        silence) keeps the parts already merged — they passed every check — and loses the rest.

        Returns
        -------
        list of np.ndarray
            The ids left without a target by failed or rejected nodes.
        """
        size = self.settings.upload_max_samples
        queue = {
            n: [ids[i : i + size] for i in range(0, len(ids), size)] or [ids] for n, ids in assignment.items()
        }
        done: dict[int, list[np.ndarray]] = {n: [] for n in assignment}
        lost: list[np.ndarray] = []

        def give_up(node: int, part: np.ndarray) -> None:  # a failure: the unsent rest is lost
            lost.append(np.concatenate([part, *queue[node]]))
            queue[node] = []

        def drop(node: int) -> None:  # a rejection: the node's whole assignment is redone elsewhere
            merged = np.concatenate(done[node]) if done[node] else np.zeros(0, np.int64)
            if len(merged):
                if self.contributions is not None:  # only this node's rows; others' stay
                    self.contributions.remove(merged, records[node].partition_id)
                else:
                    self.merged.clear(self._global_ids(records[node], merged))
                records[node].samples -= len(merged)
            lost.append(assignment[node])
            queue[node], done[node] = [], []

        while any(queue.values()):
            batch = {n: parts.pop(0) for n, parts in queue.items() if parts}

            def on_reply(node: int, reply: Message, batch=batch) -> None:
                try:
                    self._merge_reply(records[node], reply, batch[node], round_, anchor)
                    done[node].append(batch[node])
                except _BAD_REPLY as exc:
                    records[node].fail(Status.REJECTED, f"align: {exc}")
                    drop(node)

            failures = self._exchange(
                grid,
                batch,
                lambda node, batch=batch: self._align_message(node, batch[node], round_, anchor),
                self.settings.step_timeout,
                on_reply,
            )
            for node, reason in failures.items():
                records[node].fail(Status.FAILED, f"align: {reason}")
                give_up(node, batch[node])
        return lost

    def _align_message(self, node: int, ids: np.ndarray, round_: int, anchor: NodeRecord) -> Message:
        config = self._base_config(round_) | {P.IS_ANCHOR: node == anchor.node_id, P.RIDGE: self.ridge}
        arrays = {
            P.SHARD_IDS: ids,
            P.SHARED_IDS: self.shared_ids,
            P.ANCHOR_TARGETS: anchor.shared_targets,
            **self.shared_arrays,
        }
        return self._message(node, P.MSG_ALIGN, round_, config, arrays)

    def _global_ids(self, rec: NodeRecord, ids: np.ndarray) -> np.ndarray:
        """Ids in the merged set: local data mode offsets a participant's own indices."""
        return ids + self.namespace[rec.name]["offset"] if self.local else ids

    def _merge_reply(
        self, rec: NodeRecord, reply: Message, assigned: np.ndarray, round_: int, anchor: NodeRecord
    ) -> None:
        """Check one aligned upload (shapes, ids, screening checks 3 and 4) and merge it."""
        s = self.settings
        node = reply_record(reply.content, P.NODE, ConfigRecord)
        arrays = reply_record(reply.content, P.ARRAYS, ArrayRecord)
        ids = check_ids(reply_array(arrays, P.IDS), assigned, "aligned ids")
        # A view into the message: the largest payload is copied once, into the merged buffer.
        targets = check_targets(reply_array(arrays, P.TARGETS), len(ids), s.target_dim, "aligned targets")
        shared_aligned = check_targets(
            reply_array(arrays, P.SHARED_ALIGNED), len(self.shared_ids), s.target_dim, "shared aligned"
        )
        # Every field is read before anything is merged: a field that failed after the merge
        # (a missing embed-seconds) rejected the node with its rows still in the merged set,
        # which max-reassign 0 then kept, and inf there raised OverflowError (a crash).
        residual = reply_float(node, P.RESIDUAL)
        stage = reply_int(node, P.STAGE, default=0)
        align_seconds = reply_float(node, P.EMBED_SECONDS, low=0.0)
        cached = reply_int(node, P.CACHED, low=0, high=len(self.shared_ids) + len(ids))  # of S and shard
        is_anchor = rec.node_id == anchor.node_id
        reason = screening.check_alignment(
            rec.shared_targets,
            anchor.shared_targets,
            shared_aligned,
            residual,
            ridge=self.ridge,
            is_anchor=is_anchor,
            method=s.alignment,
        ) or screening.check_shard_distribution(
            rec.shared_targets,
            anchor.shared_targets,
            targets,
            ridge=self.ridge,
            is_anchor=is_anchor,
            max_tv=s.screen_max_tv,
            max_samples=s.g_max_samples,
            seed=s.seed,
            method=s.alignment,
        )
        if reason:
            raise ReplyError(reason)
        if stage != rec.stage:
            raise ReplyError(f"aligned with evolution stage {stage}, reported uniformity with {rec.stage}")
        ids = self._global_ids(rec, ids)
        if self.contributions is not None:
            weight = self._ensemble_weight(rec)
            self.contributions.add(ids, targets, rec.partition_id, stage=rec.stage, weight=weight)
        else:
            self.merged.add(ids, targets, rec.partition_id, round_, stage=rec.stage)
        rec.samples += len(ids)
        rec.residual = residual
        rec.align_seconds += align_seconds
        rec.cached += cached
        if rec.shared_aligned is None:
            rec.shared_aligned = shared_aligned

    def _g(self, targets: list[np.ndarray | None]) -> float | None:
        arrays = [t for t in targets if t is not None]
        if len(arrays) < 2:
            return None
        return inconsistency(arrays, max_samples=self.settings.g_max_samples, seed=self.settings.seed)

    # ------------------------------------------------------------------ rounds
    def run_round(self, grid: GridLike, round_: int, resume: Checkpoint | None = None) -> RoundResult:
        """One protocol round; updates the merged data set in place.

        ``resume`` is the restored state of this round from a checkpoint: its finished phases
        are skipped.
        """
        if resume is not None and resume.phase == "uniformity":
            # The align phase talks to the nodes of the checkpoint: after a restart they may
            # have new ids (a simulation always does), and the round starts over.
            connected = set(self._connected_nodes(grid))
            gone = sorted(r.partition_id for r in _accepted(resume.records) if r.node_id not in connected)
            if gone:
                self.log(
                    f"[coopt] round {round_}: participant(s) {gone} of the checkpoint are not connected "
                    "now: the round starts again from its uniformity phase"
                )
                self.rebind(connected)
                resume = None
        if resume is None:
            records, anchor, state = self._open_round(grid, round_)
        else:
            if resume.anchor is None:
                raise ValueError(f"the checkpoint after the {resume.phase} phase names no anchor")
            records, anchor, state = resume.records, resume.anchor, resume.state
            if state.ridge is not None:
                self.ridge = state.ridge
            self.log(f"[coopt] round {round_}: resumed after its {resume.phase} phase")
        if resume is None or resume.phase == "uniformity":
            t = time.perf_counter()
            for rec in records.values():  # a redone phase starts from nothing merged
                rec.samples, rec.shared_aligned = 0, None
            self._align_phase(grid, round_, records, anchor, state)
            state.phase_seconds["align"] = time.perf_counter() - t
            self._save_checkpoint(round_, "align", records, anchor, state)
        return self._close_round(round_, records, anchor, state)

    def _open_round(
        self, grid: GridLike, round_: int
    ) -> tuple[dict[int, NodeRecord], NodeRecord, RoundState]:
        """Membership, upgrades, the uniformity phase and the anchor choice (checkpointed)."""
        state = RoundState()
        phases = state.phase_seconds
        t = time.perf_counter()
        node_ids = self._connected_nodes(grid)
        phases["wait-nodes"] = time.perf_counter() - t
        state.upgraded = self.upgrade(round_)
        self.log(
            f"[coopt] round {round_}: {len(node_ids)} nodes, |S|={len(self.shared_ids)}, "
            f"n={self.settings.target_dim}, data mode {self.settings.data_mode}"
            + (f", upgrading partitions {state.upgraded}" if state.upgraded else "")
        )
        t = time.perf_counter()
        records = self._uniformity_phase(grid, round_, node_ids)
        phases["uniformity"] = time.perf_counter() - t

        t = time.perf_counter()
        state.ridge = self.ridge = self._round_ridge(records)
        anchor = self._choose_anchor(records)
        self._score_alignment(records, anchor)
        state.g_before = self._g([r.shared_targets for r in _accepted(records)])
        phases["anchor"] = time.perf_counter() - t
        consensus = "" if anchor.consensus is None else f", consensus {anchor.consensus:.4f}"
        self.log(
            f"[coopt] anchor ({self.settings.anchor_rule}): participant {anchor.partition_id} "
            f"({anchor.prior}), V={anchor.uniformity:.4f}{consensus}"
        )
        self._save_checkpoint(round_, "uniformity", records, anchor, state)
        return records, anchor, state

    def _close_round(
        self, round_: int, records: dict[int, NodeRecord], anchor: NodeRecord, state: RoundState
    ) -> RoundResult:
        """G after alignment and the round's result."""
        t = time.perf_counter()
        ranked = sorted(records.values(), key=lambda r: r.partition_id)  # G in partition order
        aligned = [r.shared_aligned for r in ranked if r.status == Status.OK and r.shared_aligned is not None]
        g_after = self._g(aligned)
        state.phase_seconds["merge"] = time.perf_counter() - t
        nodes = sorted(records.values(), key=lambda r: (r.partition_id < 0, r.partition_id, r.node_id))
        return RoundResult(
            round=round_,
            nodes=nodes,
            anchor_partition=anchor.partition_id,
            anchor_prior=anchor.prior,
            g_before=state.g_before,
            g_after=g_after,
            phase_seconds=state.phase_seconds,
            missing=len(self.merged.missing_ids()),
            reassigned=int(state.reassigned),
            upgraded=list(state.upgraded),
            redundancy=int(state.redundancy),
            fewer_contributions=int(state.fewer),
            ridge=state.ridge,
        )

    def run(self, grid: GridLike) -> RunResult:
        """Run every round, writing D' and the summary after each one (resuming if asked)."""
        out = self.settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        self.log(f"[coopt] output folder: {out}")
        resume = self._load_checkpoint() if self.settings.resume else None
        start = 1
        if resume is not None:
            start = resume.round + (1 if resume.phase == "done" else 0)
            if resume.phase == "done":
                resume = None
            if start > self.settings.num_rounds:
                self.log(f"[coopt] {out} already holds all {self.settings.num_rounds} rounds; nothing to do")
                summary = json.loads((out / SUMMARY_FILE).read_text())
                return RunResult(rounds=[], output_dir=str(out), summary=summary)
            self.rebind(self._connected_nodes(grid))  # a restarted simulation's nodes are new
        rounds: list[RoundResult] = []
        summary: dict[str, Any] = {}
        for round_ in range(start, self.settings.num_rounds + 1):
            result = self.run_round(grid, round_, resume if round_ == start else None)
            summary = self._finish_round(result)
            rounds.append(result)
        return RunResult(rounds=rounds, output_dir=str(out), summary=summary)

    def _finish_round(self, result: RoundResult) -> dict[str, Any]:
        """Write D', run the round hook, write the summary and mark the round done.

        Returns
        -------
        dict
            The summary as written to ``summary.json``.
        """
        out = self.settings.output_dir
        t = time.perf_counter()
        tensors = self.merged.tensors()
        if self.local:
            tensors["local-index"] = self._local_index(tensors["ids"])
        write_tensors(
            out / OPTIMIZED_FILE,
            tensors,
            metadata={
                "target-dim": str(self.settings.target_dim),
                "num-samples": str(self.merged.num_samples),
            },
        )
        del tensors
        result.phase_seconds["write"] = time.perf_counter() - t
        if self.on_round is not None:
            t = time.perf_counter()
            result.metrics = dict(self.on_round(result, self.merged) or {})
            result.phase_seconds["hook"] = time.perf_counter() - t
        self.round_summaries.append(round_summary(result))
        summary = run_summary(
            result,
            settings=self.settings,
            merged=self.merged,
            shared_samples=len(self.shared_ids),
            rounds=self.round_summaries,
            resumes=self.resumes,
            baseline_rss_mb=self._baseline_rss_mb,
            namespace=self.namespace if self.local else None,
        )
        write_json(out / SUMMARY_FILE, summary)
        if summary["stale-samples"]:
            self.log(
                f"[coopt] warning: {summary['stale-samples']} samples keep targets aligned to an earlier "
                "round's anchor (their participant did not upload this round): the set is not complete"
            )
        self._save_checkpoint(result.round, "done", {}, None, None)
        self.log(format_summary(summary))
        return summary

    def _local_index(self, ids: np.ndarray) -> np.ndarray:
        """Each merged id's index in its participant's own data (local mode)."""
        local = np.full(len(ids), -1, dtype=np.int64)
        for entry in self.namespace.values():
            lo, hi = entry["offset"], entry["offset"] + entry["count"]
            sel = (ids >= lo) & (ids < hi)
            local[sel] = ids[sel] - lo
        return local

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(
        self,
        round_: int,
        phase: str,
        records: dict[int, NodeRecord],
        anchor: NodeRecord | None,
        state: RoundState | None,
    ) -> None:
        platform = PlatformState(
            namespace=self.namespace,
            num_partitions=self.num_partitions,
            stages=self.stages,
            path_lengths=self.path_lengths,
            node_partitions=self.node_partitions,
            round_summaries=self.round_summaries,
            resumes=self.resumes,
        )
        self.checkpoints.save(round_, phase, records, anchor, state, self.merged, platform)

    def _load_checkpoint(self) -> Checkpoint | None:
        """Restore the state of the last finished phase; ``None`` when there is no checkpoint.

        Raises
        ------
        ValueError
            The checkpoint belongs to a run with other settings, or is unreadable.
        """
        loaded = self.checkpoints.load(self.merged)
        if loaded is None:
            return None
        ck, platform = loaded
        self.namespace = platform.namespace
        self.num_partitions = platform.num_partitions
        self.stages = platform.stages
        self.path_lengths = platform.path_lengths
        self.node_partitions = platform.node_partitions
        self.round_summaries = platform.round_summaries
        self.resumes = platform.resumes
        self.log(
            f"[coopt] resuming from {self.checkpoints.path}: round {ck.round}, after its {ck.phase} phase"
        )
        return ck
