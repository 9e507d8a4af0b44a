"""The checkpoint as input: confined to the output folder, checked against its digest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coopt_flwr.config import Settings
from coopt_flwr.protocol.merge import MergedTargets
from coopt_flwr.store.storage import write_tensors
from strategies.checkpoint import CheckpointError, Checkpoints, PlatformState, RoundState
from strategies.records import NodeRecord, Status

N, DIM = 12, 3
NODE = 2**63 + 5


def _checkpoints(out: Path, log=None) -> Checkpoints:
    settings = Settings.from_config({}, {"output-dir": str(out), "target-dim": DIM})
    return Checkpoints(settings, log=log or (lambda s: None))


def _save(ck: Checkpoints, phase: str = "uniformity", round_: int = 1) -> MergedTargets:
    merged = MergedTargets(N, DIM)
    merged.add(np.arange(4, dtype=np.int64), np.ones((4, DIM), np.float32), participant=0, round_=round_)
    rec = NodeRecord(node_id=NODE, partition_id=0, status=Status.OK, prior="human")
    rec.shared_targets = np.arange(2 * DIM, dtype=np.float32).reshape(2, DIM)
    ck.save(round_, phase, {NODE: rec}, rec, RoundState(), merged, PlatformState(num_partitions=1))
    return merged


def _edit(ck: Checkpoints, **changes) -> None:
    data = json.loads(ck.path.read_text())
    data.update(changes)
    ck.path.write_text(json.dumps(data))


def test_a_saved_checkpoint_records_its_digest_and_loads(tmp_path):
    ck = _checkpoints(tmp_path)
    saved = _save(ck)
    data = json.loads(ck.path.read_text())
    assert len(data["tensors-sha256"]) == 64
    merged = MergedTargets(0, DIM)
    checkpoint, _platform = ck.load(merged)
    np.testing.assert_array_equal(merged.targets, saved.targets)
    assert checkpoint.records[NODE].shared_targets.shape == (2, DIM)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "subfolder", "symlink", "empty", "not-a-string"])
def test_a_tensor_file_outside_the_output_folder_is_refused_and_left_alone(tmp_path, kind):
    out, outside = tmp_path / "out", tmp_path / "outside.safetensors"
    ck = _checkpoints(out)
    _save(ck)
    # A valid tensor file outside, with its true digest: only its place is wrong.
    write_tensors(outside, {"merged.participant": np.zeros(N, np.int64)})
    names = {
        "absolute": str(outside),
        "dotdot": "../outside.safetensors",
        "subfolder": "sub/x.safetensors",
        "symlink": "link.safetensors",
        "empty": "",
        "not-a-string": 3,
    }
    (out / "sub").mkdir()
    (out / "sub" / "x.safetensors").write_bytes(outside.read_bytes())
    (out / "link.safetensors").symlink_to(outside)
    _edit(ck, tensors=names[kind])
    with pytest.raises(CheckpointError, match="not a file in"):
        ck.load(MergedTargets(0, DIM))
    assert outside.is_file()


def test_saving_never_deletes_what_a_tampered_checkpoint_names(tmp_path):
    out = tmp_path / "out"
    ck = _checkpoints(out)
    _save(ck)
    victims = [tmp_path / "precious.safetensors", out / "optimized.safetensors", tmp_path / "c.safetensors"]
    for v in victims:
        v.write_bytes(b"keep me")
    (out / "checkpoint-r0-x.safetensors").symlink_to(victims[2])  # named like ours, leads out
    for name in (str(victims[0]), "../precious.safetensors", "optimized.safetensors"):
        _edit(ck, tensors=name)
        _save(ck, phase="align")
    _edit(ck, tensors="checkpoint-r0-x.safetensors")
    _save(ck, phase="done")
    assert all(v.read_bytes() == b"keep me" for v in victims)
    assert not (out / "checkpoint-r0-x.safetensors").is_symlink()  # the link went, not its target
    _save(ck, round_=2)  # our own previous tensor file is still cleaned up
    assert not (out / "checkpoint-r1-done.safetensors").exists()
    assert (out / "checkpoint-r2-uniformity.safetensors").is_file()


def test_a_tampered_tensor_file_is_refused(tmp_path):
    ck = _checkpoints(tmp_path)
    _save(ck)
    tensors = tmp_path / json.loads(ck.path.read_text())["tensors"]
    raw = bytearray(tensors.read_bytes())
    raw[-16:] = bytes(16)  # zeroed bytes in the data section: still a readable file
    tensors.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        ck.load(MergedTargets(0, DIM))
    tensors.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        ck.load(MergedTargets(0, DIM))


def test_a_checkpoint_without_a_digest_still_loads_with_a_warning(tmp_path):
    lines = []
    ck = _checkpoints(tmp_path, log=lines.append)
    saved = _save(ck)
    data = json.loads(ck.path.read_text())
    del data["tensors-sha256"]
    ck.path.write_text(json.dumps(data))
    merged = MergedTargets(0, DIM)
    assert ck.load(merged) is not None
    np.testing.assert_array_equal(merged.targets, saved.targets)
    assert len(lines) == 1 and "warning" in lines[0] and "integrity" in lines[0]


def test_an_unreadable_checkpoint_is_a_clear_error_and_is_replaced_by_the_next_save(tmp_path):
    ck = _checkpoints(tmp_path)
    ck.path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ck.load(MergedTargets(0, DIM))
    ck.path.write_text("{broken")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ck.load(MergedTargets(0, DIM))
    _save(ck)  # resume=false over a broken checkpoint: replaced
    assert ck.load(MergedTargets(0, DIM)) is not None
