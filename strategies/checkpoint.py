"""The platform's checkpoint: its state after every finished phase, so a restart resumes.

``checkpoint.json`` names a tensor file (``checkpoint-r<round>-<phase>.safetensors``) with
the merged set and each participant's shared-set arrays; the tensors are written first and
the JSON replaced last, both atomically, so a crash at any point leaves a consistent
checkpoint (the previous one, or the new one). A checkpoint is only resumed by a run whose
:func:`fingerprint` matches.

``checkpoint.json`` is input like any other: the tensor file it names must be a file directly
in the output folder (nothing outside it is read or deleted), and its sha256, recorded when it
was written, must match before it is resumed (zeroed or altered bytes are refused, not
resumed). A checkpoint written before the digest existed still loads, with a warning line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coopt_flwr.config import Settings
from coopt_flwr.protocol.merge import MergedTargets
from coopt_flwr.store.storage import (
    CHECKPOINT_FILE,
    file_sha256,
    load_tensors,
    write_json,
    write_tensors_hashed,
)
from strategies.records import ARRAY_FIELDS, NodeRecord

__all__ = [
    "CHECKPOINT_FORMAT",
    "FINGERPRINT_KEYS",
    "Checkpoint",
    "CheckpointError",
    "Checkpoints",
    "PlatformState",
    "RoundState",
    "fingerprint",
]

CHECKPOINT_FORMAT = 1
FINGERPRINT_KEYS = (
    "dataset",
    "data_mode",
    "priors",
    "shared_fraction",
    "target_dim",
    "ridge",
    "seed",
    "screen_max_residual",
    "screen_max_tv",
    "redundancy",
    "ensemble_weighting",
    "anchor_rule",
    "alignment",
    "standardize_targets",
    "shard_max_residual",
)
"""Settings that must match for a checkpoint to be resumed (num-rounds may grow: more rounds)."""

#: What a checkpoint written before a fingerprint key existed ran with: that key's default.
_LEGACY_FINGERPRINT = {
    "redundancy": 1,
    "ensemble_weighting": "mean",
    "anchor_rule": "uniformity",
    "alignment": "ridge",
    "standardize_targets": False,
    "shard_max_residual": None,
}

_MERGED_ARRAYS = ("targets", *MergedTargets.COLUMNS)


class CheckpointError(ValueError):
    """The checkpoint in the output folder cannot be resumed; the message says why and what to do."""


#: The tensor files :meth:`Checkpoints.save` writes; the only files it ever deletes.
_TENSOR_FILE = re.compile(r"checkpoint-r[0-9]+-[A-Za-z0-9_-]+\.safetensors")

#: What every refusal to resume ends with: the ways out.
_WAYS_OUT = "move the checkpoint files away, use another output-dir, or resume=false to start afresh there"


def fingerprint(settings: Settings) -> dict[str, Any]:
    """The :data:`FINGERPRINT_KEYS` of ``settings``, JSON-ready (tuples as lists)."""
    d = asdict(settings)
    return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in FINGERPRINT_KEYS}


def _merged_arrays(arrays: dict[str, Any]) -> dict[str, Any]:
    """The merged set's arrays of a checkpoint; one written before ``contributions`` existed
    had one contribution per filled sample."""
    if "merged.contributions" not in arrays:
        arrays["merged.contributions"] = (arrays["merged.participant"] >= 0).astype("int64")
    return {name: arrays.pop(f"merged.{name}") for name in _MERGED_ARRAYS}


@dataclass
class PlatformState:
    """What the platform carries from round to round, besides the merged set.

    Attributes
    ----------
    namespace
        Local data mode: participant name → ``offset``, ``count``, ``partition`` of its ids.
    num_partitions
        The federation's size, as the nodes report it.
    stages, path_lengths
        Partition → the evolution stage it uses, and the length of its path.
    node_partitions
        Node id → the partition it last reported.
    round_summaries
        The summary entry of every finished round.
    resumes
        Where each restart picked up the run.
    """

    namespace: dict[str, dict[str, int]] = field(default_factory=dict)
    num_partitions: int = 0
    stages: dict[int, int] = field(default_factory=dict)
    path_lengths: dict[int, int] = field(default_factory=dict)
    node_partitions: dict[int, int] = field(default_factory=dict)
    round_summaries: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "num-partitions": self.num_partitions,
            "stages": {str(k): v for k, v in self.stages.items()},
            "path-lengths": {str(k): v for k, v in self.path_lengths.items()},
            "node-partitions": {str(k): v for k, v in self.node_partitions.items()},
            "round-summaries": self.round_summaries,
            "resumes": self.resumes,
        }

    @classmethod
    def from_json(cls, ck: dict[str, Any]) -> PlatformState:
        return cls(
            namespace={k: {kk: int(vv) for kk, vv in v.items()} for k, v in ck["namespace"].items()},
            num_partitions=int(ck["num-partitions"]),
            stages={int(k): int(v) for k, v in ck["stages"].items()},
            path_lengths={int(k): int(v) for k, v in ck["path-lengths"].items()},
            node_partitions={int(k): int(v) for k, v in ck["node-partitions"].items()},
            round_summaries=list(ck["round-summaries"]),
            resumes=list(ck.get("resumes", [])),
        )


@dataclass
class RoundState:
    """A round's progress between its phases (besides the participants' records)."""

    g_before: float | None = None
    reassigned: int = 0
    upgraded: list[int] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    redundancy: int = 1  # contributions asked per sample this round (clipped to the participants)
    fewer: int = 0  # samples merged from fewer than ``redundancy`` contributions this round
    ridge: float | None = None  # the round's alignment ridge (run-config "auto": chosen on S)

    def to_json(self) -> dict[str, Any]:
        return {
            "g-before": self.g_before,
            "reassigned": self.reassigned,
            "upgraded": self.upgraded,
            "redundancy": self.redundancy,
            "fewer-contributions": self.fewer,
            "ridge": self.ridge,
        }


@dataclass
class Checkpoint:
    """A restored checkpoint: the round and its last finished phase (``done`` after a round)."""

    round: int
    phase: str
    records: dict[int, NodeRecord]
    anchor: NodeRecord | None
    state: RoundState


class Checkpoints:
    """Reads and writes the checkpoint of the run in ``settings.output_dir``.

    ``log`` receives the warning line of a checkpoint without a tensor digest.
    """

    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.out: Path = settings.output_dir
        self.fingerprint = fingerprint(settings)
        self.log = log

    @property
    def path(self) -> Path:
        return self.out / CHECKPOINT_FILE

    def tensor_path(self, name: object) -> Path:
        """The tensor file ``checkpoint.json`` names, confined to the output folder.

        Raises
        ------
        CheckpointError
            ``name`` is not a file name directly in the output folder (an absolute path, ``..``,
            a sub-folder, or a symlink that leads elsewhere).
        """
        out = self.out.resolve()
        path = (out / str(name)).resolve() if isinstance(name, str) and name else None
        if path is None or path.parent != out:
            raise CheckpointError(
                f"{self.path} names the tensor file {name!r}, which is not a file in {out}; "
                f"refusing to read it: {_WAYS_OUT}"
            )
        return path

    def save(
        self,
        round_: int,
        phase: str,
        records: dict[int, NodeRecord],
        anchor: NodeRecord | None,
        state: RoundState | None,
        merged: MergedTargets,
        platform: PlatformState,
    ) -> None:
        """Persist the state after a phase: tensors first, then the JSON naming them.

        ``state`` is ``None`` once a round is done (nothing of it is left to resume).
        """
        tensor_file = f"checkpoint-r{round_}-{phase}.safetensors"
        arrays = {f"merged.{name}": getattr(merged, name) for name in _MERGED_ARRAYS}
        for rec in records.values():
            for name in ARRAY_FIELDS:
                value = getattr(rec, name)
                if value is not None:
                    arrays[f"{name}.{rec.node_id}"] = value
        digest = write_tensors_hashed(self.out / tensor_file, arrays)
        try:
            previous = self.read_json()
        except CheckpointError:
            previous = None  # an unreadable old checkpoint is replaced, its tensors left alone
        write_json(
            self.path,
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "round": round_,
                "phase": phase,
                "tensors": tensor_file,
                "tensors-sha256": digest,
                "anchor-node": None if anchor is None else str(anchor.node_id),
                "records": [r.public() for r in records.values()],
                "state": {} if state is None else state.to_json(),
                "phase-seconds": {} if state is None else state.phase_seconds,
                **platform.to_json(),
            },
        )
        old = previous.get("tensors") if isinstance(previous, dict) else None
        # Only a name of ours (a plain file name, so the entry in this folder, a link itself and
        # never its target): nothing else a tampered JSON names is deleted.
        if isinstance(old, str) and old != tensor_file and _TENSOR_FILE.fullmatch(old):
            (self.out / old).unlink(missing_ok=True)

    def read_json(self) -> dict[str, Any] | None:
        """The raw ``checkpoint.json``; ``None`` when there is none.

        Raises
        ------
        CheckpointError
            The file is unreadable, or not a JSON object.
        """
        if not self.path.is_file():
            return None
        try:
            ck = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path} is not a readable checkpoint ({exc}); move it away to start afresh"
            ) from exc
        if not isinstance(ck, dict):
            raise CheckpointError(f"{self.path} is not a checkpoint (not a JSON object): {_WAYS_OUT}")
        return ck

    def _verify(self, ck: dict[str, Any], tensors: Path) -> None:
        """The tensor file's bytes against the digest recorded with it (old checkpoints: a warning)."""
        want = ck.get("tensors-sha256")
        if want is None:
            self.log(
                f"[coopt] warning: {self.path} predates tensor checksums; resuming from "
                f"{tensors.name} without an integrity check"
            )
            return
        if not tensors.is_file():
            raise CheckpointError(f"{self.path} names {tensors.name}, which is missing: {_WAYS_OUT}")
        got = file_sha256(tensors)
        if got != want:
            raise CheckpointError(
                f"checkpoint tensor file {tensors} does not match the sha256 recorded in {self.path} "
                f"(damaged or altered; recorded {str(want)[:12]}…, found {got[:12]}…): {_WAYS_OUT}"
            )

    def load(self, merged: MergedTargets) -> tuple[Checkpoint, PlatformState] | None:
        """Restore the last finished phase into ``merged``; ``None`` when there is no checkpoint.

        The returned platform state lists this restart among its ``resumes``.

        Raises
        ------
        CheckpointError
            The checkpoint belongs to a run with other settings, is unreadable, names a tensor
            file outside the output folder, or its tensor file does not match its digest.
        """
        ck = self.read_json()
        if ck is None:
            return None
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {ck.get('format')} is not {CHECKPOINT_FORMAT}")
        if not isinstance(ck.get("fingerprint"), dict):
            raise CheckpointError(f"{self.path} holds no settings fingerprint: {_WAYS_OUT}")
        saved = _LEGACY_FINGERPRINT | ck["fingerprint"]
        differ = sorted(k for k in self.fingerprint if saved.get(k) != self.fingerprint[k])
        if differ:
            raise CheckpointError(
                f"{self.out} holds a checkpoint of a run with other settings ({', '.join(differ)}); "
                "use another output-dir, or resume=false to start afresh there"
            )
        tensors = self.tensor_path(ck.get("tensors"))
        self._verify(ck, tensors)
        try:
            arrays = load_tensors(tensors)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{exc}: {_WAYS_OUT}") from exc
        merged.grow(len(arrays["merged.participant"]))
        for name, values in _merged_arrays(arrays).items():
            getattr(merged, name)[:] = values
        platform = PlatformState.from_json(ck)
        platform.resumes.append({"round": int(ck["round"]), "after-phase": ck["phase"]})
        records = {r.node_id: r for r in (NodeRecord.from_public(d, arrays) for d in ck["records"])}
        anchor = records.get(int(ck["anchor-node"])) if ck["anchor-node"] is not None else None
        state = RoundState(
            g_before=ck["state"].get("g-before"),
            reassigned=int(ck["state"].get("reassigned", 0)),
            upgraded=list(ck["state"].get("upgraded", [])),
            phase_seconds=dict(ck["phase-seconds"]),
            redundancy=int(ck["state"].get("redundancy", 1)),
            fewer=int(ck["state"].get("fewer-contributions", 0)),
            ridge=ck["state"].get("ridge"),
        )
        checkpoint = Checkpoint(int(ck["round"]), ck["phase"], records, anchor, state)
        return checkpoint, platform
