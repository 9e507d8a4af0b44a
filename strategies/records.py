"""What the platform records of a run: one participant in a round, a round, the whole run.

``summary.json`` and ``checkpoint.json`` hold participants as :meth:`NodeRecord.public`:
kebab-case keys, like every other key of the run's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["ARRAY_FIELDS", "NodeRecord", "RoundResult", "RunResult", "Status"]


class Status(str, Enum):
    """A participant's standing in a round; its value is what the summary shows."""

    PENDING = "pending"  # asked, no answer yet
    OK = "ok"
    REJECTED = "rejected"  # answered, but the platform's checks refused the reply
    FAILED = "failed"  # an error reply, or none in time

    def __str__(self) -> str:
        return self.value


ARRAY_FIELDS = ("shared_targets", "shared_aligned")
"""Fields kept out of the JSON files (the checkpoint stores them as tensors)."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


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
    residual: float | None = None  # in-sample alignment residual on S, as the node reports it
    residual_oos: float | None = None  # cross-fitted residual of its S targets to the anchor's
    consensus: float | None = None  # consensus anchor score (anchor-rule "consensus" only)
    gated: bool = False  # no share of D this round: residual-oos above shard-max-residual
    data_samples: int = 0  # how many samples the node holds (its own data in local mode)
    samples: int = 0  # how many targets of it were merged this round
    status: Status = Status.PENDING
    reason: str = ""
    embed_seconds: float = 0.0
    align_seconds: float = 0.0
    cached: int = 0
    stage: int = 0  # evolution stage of the prior used this round
    num_stages: int = 1  # length of the participant's evolution path
    shared_targets: np.ndarray | None = field(default=None, repr=False)
    shared_aligned: np.ndarray | None = field(default=None, repr=False)

    def fail(self, status: Status, reason: str) -> None:
        """Mark the record rejected or failed; the first reason is kept (later ones are consequences)."""
        if self.status not in (Status.REJECTED, Status.FAILED):
            self.status, self.reason = Status(status), reason

    def public(self) -> dict[str, Any]:
        """The record as JSON: kebab-case keys, no arrays, the uint64 node id as a string."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name not in ARRAY_FIELDS:
                d[_kebab(f.name)] = getattr(self, f.name)
        d["node-id"] = str(self.node_id)  # uint64: keep exact in JSON for any reader
        d["status"] = Status(self.status).value
        return d

    @classmethod
    def from_public(cls, d: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> NodeRecord:
        """Rebuild a record from :meth:`public` and its arrays (a checkpoint).

        Snake-case keys (checkpoints written before the keys became kebab-case) are read too.
        """
        d = {_kebab(k): v for k, v in d.items()}
        known = {_kebab(f.name): f.name for f in fields(cls) if f.name not in ARRAY_FIELDS}
        values = {known[k]: v for k, v in d.items() if k in known}
        values["node_id"] = int(d["node-id"])
        if "status" in values:
            values["status"] = Status(values["status"])
        rec = cls(**values)
        for name in ARRAY_FIELDS:
            key = f"{name}.{rec.node_id}"
            if key in arrays:
                setattr(rec, name, np.asarray(arrays[key]))
        return rec


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
    redundancy: int = 1  # contributions asked per sample (the run-config's, clipped to K)
    fewer_contributions: int = 0  # samples merged from fewer than ``redundancy`` contributions
    ridge: float | None = None  # the alignment's ridge strength this round (chosen when "auto")
    metrics: dict[str, Any] = field(default_factory=dict)  # what the round hook reported


@dataclass
class RunResult:
    """Outcome of a whole run (the last round's merged data set is on disk)."""

    rounds: list[RoundResult]
    output_dir: str
    summary: dict[str, Any]
