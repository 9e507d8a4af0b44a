"""The CoOpt strategy: drives protocol rounds over the Flower Message API.

Flower's built-in ``Strategy.start()`` is hard-wired to train → evaluate; CoOpt has its own
steps, so this class is driven from the ServerApp's ``@app.main()`` and talks to the nodes
through a :class:`flwr.serverapp.Grid` directly:

    (upgrades) → uniformity report → anchor choice + shard assignment → anchor broadcast /
    aligned upload → merge (→ reassignment of shards whose owner failed) → write D' and the
    summary.

Continuous optimization: from round 2 on, a seeded draw (:func:`coopt_flwr.evolution.choose_upgrades`)
moves about ``upgrade-fraction`` of the participants one stage along their evolution path of
priors; every message carries the stage of every partition, so an upgraded participant embeds
with its new prior while the others reuse their cached features. Uniformity is re-reported,
the anchor re-chosen and every participant re-aligned each round; the merged set keeps one
target per sample, overwritten in place, with the round and stage that produced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from coopt_flwr import protocol as P
from coopt_flwr.config import Settings
from coopt_flwr.datasets import shard_split, shared_subset
from coopt_flwr.evolution import choose_upgrades
from coopt_flwr.inconsistency import inconsistency
from coopt_flwr.merge import MergedTargets, ReplyError, check_ids, check_targets
from coopt_flwr.report import format_summary
from coopt_flwr.storage import OPTIMIZED_FILE, SUMMARY_FILE, write_json, write_tensors
from coopt_flwr.uniformity import uniformity


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
    prior: str = ""
    prior_kind: str = ""
    feature_dim: int = 0
    uniformity: float | None = None  # computed by the platform from the shared targets
    reported_uniformity: float | None = None  # the node's own claim, on raw features
    residual: float | None = None
    samples: int = 0
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
        d = {k: v for k, v in asdict(self).items() if k not in ("shared_targets", "shared_aligned")}
        d["node_id"] = str(self.node_id)  # uint64: keep exact in JSON for any reader
        return d


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
        |D|, the size of the data set the platform indexes.
    log
        Where progress lines go (``print`` in the ServerApp).
    poll_interval
        Seconds between pulls of replies (the platform side; Flower's own
        ``send_and_receive`` sleeps 3 s, which would dominate small rounds).
    on_round
        Optional :data:`RoundHook`, e.g. to measure the quality of the merged targets.
    """

    def __init__(
        self,
        settings: Settings,
        num_samples: int,
        log: Callable[[str], None] = print,
        poll_interval: float = 0.1,
        on_round: RoundHook | None = None,
    ) -> None:
        self.s = settings
        self.num_samples = num_samples
        self.log = log
        self.poll_interval = poll_interval
        self.on_round = on_round
        self.shared_ids = shared_subset(num_samples, settings.shared_fraction, settings.seed)
        self.merged = MergedTargets(num_samples, settings.target_dim)
        self.num_partitions = 0  # the federation's size, as the nodes report it
        self.stages: dict[int, int] = {}  # partition -> evolution stage it uses this round
        self.path_lengths: dict[int, int] = {}  # partition -> stages of its path (as reported)
        self.node_partitions: dict[int, int] = {}  # node id -> partition it last reported
        if len(self.shared_ids) < 2:
            raise ValueError("the shared set needs at least 2 samples")

    # ------------------------------------------------------------------ transport
    def _exchange(
        self, grid: GridLike, messages: dict[int, Message], timeout: float
    ) -> tuple[dict[int, Message], dict[int, str]]:
        """Push one message per node, pull replies until all arrive or ``timeout`` passes.

        Returns
        -------
        tuple
            Replies by node id, and a failure reason by node id for every node that sent
            an error or nothing in time (never silently dropped).
        """
        nodes = list(messages)
        msg_ids = list(grid.push_messages([messages[n] for n in nodes]))
        pending = {mid: n for mid, n in zip(msg_ids, nodes, strict=True) if mid}
        failures = {
            n: "message could not be pushed" for mid, n in zip(msg_ids, nodes, strict=True) if not mid
        }
        replies: dict[int, Message] = {}
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
            for reply in grid.pull_messages(list(pending)):
                node = pending.pop(reply.metadata.reply_to_message_id, None)
                if node is None:
                    continue
                if reply.has_error():
                    failures[node] = _error_reason(reply)
                else:
                    replies[node] = reply
            if pending:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                wait = min(wait * 1.5, 1.0)
        for node in pending.values():
            failures[node] = f"no reply within {timeout:.0f} s"
        return replies, failures

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
        todo, expected = list(node_ids), 0
        while todo:
            msgs = {
                n: self._message(n, P.MSG_UNIFORMITY, round_, config, {P.SHARED_IDS: self.shared_ids})
                for n in todo
            }
            replies, failures = self._exchange(grid, msgs, self.s.step_timeout)
            for node in todo:
                # A node that fails keeps the partition it reported before (for the summary).
                rec = records.setdefault(
                    node, NodeRecord(node_id=node, partition_id=self.node_partitions.get(node, -1))
                )
                if node in failures:
                    rec.fail("failed", f"uniformity: {failures[node]}")
                    continue
                try:
                    expected = max(expected, self._read_uniformity(rec, replies[node]))
                    rec.status = "ok"
                except (ReplyError, KeyError, TypeError, ValueError) as exc:
                    rec.fail("rejected", f"uniformity: {exc}")
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
        seen: dict[int, int] = {}
        for rec in sorted(records.values(), key=lambda r: r.node_id):
            if rec.status != "ok":
                continue
            if rec.partition_id < 0 or rec.partition_id in seen:
                rec.fail(
                    "rejected",
                    f"uniformity: partition id {rec.partition_id} is invalid or "
                    f"already taken by node {seen.get(rec.partition_id)}",
                )
            else:
                seen[rec.partition_id] = rec.node_id
                self.node_partitions[rec.node_id] = rec.partition_id
                # What the platform knows of each path decides who may upgrade next round.
                self.stages[rec.partition_id] = rec.stage
                self.path_lengths[rec.partition_id] = rec.num_stages
        if len(records) < expected:
            self.log(
                f"[coopt] warning: {len(records)} of {expected} participants answered; "
                "going on without the others"
            )
        return records

    def _read_uniformity(self, rec: NodeRecord, reply: Message) -> int:
        node = reply.content[P.NODE]
        arrays = reply.content[P.ARRAYS]
        rec.partition_id = int(node[P.PARTITION_ID])
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
        rec.embed_seconds = float(node[P.EMBED_SECONDS])
        rec.cached = int(node[P.CACHED])
        rec.reported_uniformity = float(node[P.REPORTED_UNIFORMITY])
        targets = check_targets(
            arrays[P.SHARED_TARGETS].numpy(), len(self.shared_ids), self.s.target_dim, "shared targets"
        )
        rec.shared_targets = targets
        rec.uniformity = uniformity(targets)  # the platform's own value, not the node's claim
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
        shards = self.assign_shards([r.partition_id for r in ok], self.num_partitions)
        assignment = {r.node_id: shards[r.partition_id] for r in ok}
        anchor_targets = anchor.shared_targets
        reassigned = 0
        for attempt in range(self.s.max_reassign + 1):
            msgs = {}
            for node, ids in assignment.items():
                config = self._base_config(round_) | {P.IS_ANCHOR: node == anchor.node_id}
                msgs[node] = self._message(
                    node,
                    P.MSG_ALIGN,
                    round_,
                    config,
                    {
                        P.SHARD_IDS: ids,
                        P.SHARED_IDS: self.shared_ids,
                        P.ANCHOR_TARGETS: anchor_targets,
                    },
                )
            replies, failures = self._exchange(grid, msgs, self.s.step_timeout)
            lost: list[np.ndarray] = []
            for node, ids in assignment.items():
                rec = records[node]
                try:
                    if node in failures:
                        raise ReplyError(failures[node])
                    self._merge_reply(rec, replies[node], ids, round_)
                except (ReplyError, KeyError, TypeError, ValueError) as exc:
                    rec.fail("failed" if node in failures else "rejected", f"align: {exc}")
                    lost.append(ids)
            if not lost:
                break
            lost_ids = np.sort(np.concatenate(lost))
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

    def _merge_reply(self, rec: NodeRecord, reply: Message, assigned: np.ndarray, round_: int) -> None:
        node, arrays = reply.content[P.NODE], reply.content[P.ARRAYS]
        ids = check_ids(arrays[P.IDS].numpy(), assigned, "aligned ids")
        targets = check_targets(arrays[P.TARGETS].numpy(), len(ids), self.s.target_dim, "aligned targets")
        shared_aligned = check_targets(
            arrays[P.SHARED_ALIGNED].numpy(), len(self.shared_ids), self.s.target_dim, "shared aligned"
        )
        residual = float(node[P.RESIDUAL])
        if not np.isfinite(residual):
            raise ReplyError(f"residual {residual} is not finite")
        stage = int(node[P.STAGE]) if P.STAGE in node else 0
        if stage != rec.stage:
            raise ReplyError(f"aligned with evolution stage {stage}, reported uniformity with {rec.stage}")
        self.merged.add(ids, targets, rec.partition_id, round_, stage=rec.stage)
        rec.samples += len(ids)
        rec.residual = residual
        rec.align_seconds += float(node[P.EMBED_SECONDS])
        rec.cached += int(node[P.CACHED])
        if rec.shared_aligned is None:
            rec.shared_aligned = shared_aligned

    # ------------------------------------------------------------------ rounds
    def run_round(self, grid: GridLike, round_: int) -> RoundResult:
        """One protocol round; updates the merged data set in place."""
        phases: dict[str, float] = {}
        t = time.perf_counter()
        node_ids = self.wait_for_nodes(grid) if round_ == 1 else sorted(int(n) for n in grid.get_node_ids())
        phases["wait-nodes"] = time.perf_counter() - t
        upgraded = self.upgrade(round_)
        self.log(
            f"[coopt] round {round_}: {len(node_ids)} nodes, |D|={self.num_samples}, "
            f"|S|={len(self.shared_ids)}, n={self.s.target_dim}"
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
            f"[coopt] anchor: participant {anchor.partition_id} ({anchor.prior}), V={anchor.uniformity:.4f}"
        )

        t = time.perf_counter()
        reassigned = self._align_phase(grid, round_, records, anchor)
        phases["align"] = time.perf_counter() - t

        t = time.perf_counter()
        aligned = [r.shared_aligned for r in ok if r.status == "ok" and r.shared_aligned is not None]
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
            reassigned=reassigned,
            upgraded=upgraded,
        )

    def _g(self, targets: list[np.ndarray | None]) -> float | None:
        arrays = [t for t in targets if t is not None]
        if len(arrays) < 2:
            return None
        return inconsistency(arrays, max_samples=self.s.g_max_samples, seed=self.s.seed)

    def run(self, grid: GridLike) -> RunResult:
        """Run every round, writing D' and the summary after each one."""
        out = self.s.output_dir
        out.mkdir(parents=True, exist_ok=True)
        self.log(f"[coopt] output folder: {out}")
        rounds: list[RoundResult] = []
        summary: dict[str, Any] = {}
        for round_ in range(1, self.s.num_rounds + 1):
            result = self.run_round(grid, round_)
            t = time.perf_counter()
            write_tensors(
                out / OPTIMIZED_FILE,
                self.merged.tensors(),
                metadata={"target-dim": str(self.s.target_dim), "num-samples": str(self.num_samples)},
            )
            result.phase_seconds["write"] = time.perf_counter() - t
            if self.on_round is not None:
                t = time.perf_counter()
                result.metrics = dict(self.on_round(result, self.merged) or {})
                result.phase_seconds["hook"] = time.perf_counter() - t
            rounds.append(result)
            summary = self._summary(rounds)
            write_json(out / SUMMARY_FILE, summary)
            self.log(format_summary(summary))
        return RunResult(rounds=rounds, output_dir=str(out), summary=summary)

    def _summary(self, rounds: list[RoundResult]) -> dict[str, Any]:
        last = rounds[-1]
        missing = self.merged.missing_ids()
        return {
            "num-samples": self.num_samples,
            "shared-samples": len(self.shared_ids),
            "target-dim": self.s.target_dim,
            "complete": bool(len(missing) == 0),
            "missing-ids": missing.tolist(),
            "anchor": {"partition": last.anchor_partition, "prior": last.anchor_prior},
            "g-before": last.g_before,
            "g-after": last.g_after,
            "participants": [r.public() for r in last.nodes],
            "rounds": [
                {
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
                for r in rounds
            ],
            "config": {
                k: (str(v) if not isinstance(v, (int, float, str, bool, list, tuple)) else v)
                for k, v in asdict(self.s).items()
            },
        }
