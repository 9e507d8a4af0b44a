"""The CoOpt strategy driving the real ClientApp through an in-process grid.

Every round here runs the real protocol (ClientApp, messages, screening, merge) with the
cheap ``counting:`` priors of the harness (a seeded random linear map of the pixels) and the
one-hot ``human`` prior: the strategy's behaviour does not depend on how good a prior is, and
real networks are covered by the end-to-end tests. The clean 4-node round is run once for
the module (:func:`clean`); a test that changes a run's outcome (a fault, other settings)
runs its own.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from harness import InProcessGrid, NoSettleStrategy, register_counting_prior, replace_reply

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import DEFAULTS, Settings
from coopt_flwr.protocol import messages as P
from coopt_flwr.protocol.alignment import cross_fitted_residual, fit_alignment
from coopt_flwr.protocol.consensus import consensus_scores
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import create_dataset
from coopt_flwr.store.storage import load_optimized
from strategies import Status
from strategies.coopt import CoOptStrategy, RunResult
from strategies.records import NodeRecord

FAST_PRIORS = "counting:a?dim=48,counting:b?dim=40,human,counting:c?dim=56"
N_DIGITS = 1797

register_counting_prior()


def _settings(tmp_path, **kw):
    cfg = {
        "priors": FAST_PRIORS,
        "output-dir": str(tmp_path / "out"),
        "target-dim": 32,
        "node-wait-timeout": 5.0,
        "step-timeout": 60.0,
        "g-max-samples": 128,
    }
    cfg.update(kw)
    return Settings.from_config({}, cfg)


def _strategy(settings, log=lambda s: None, **kw):
    # no 1 s settle of the membership wait (the late-joiner test uses the real wait)
    return NoSettleStrategy(settings, N_DIGITS, log=log, poll_interval=0.01, **kw)


def _run(tmp_path, num_nodes=4, fault=None, **kw):
    settings = _settings(tmp_path, **kw)
    overrides = {"priors": settings.priors and ",".join(settings.priors)}
    grid = InProcessGrid(make_client_app(overrides), num_nodes, fault=fault)
    return _strategy(settings).run(grid), grid, settings


@dataclass
class CleanRun:
    result: RunResult
    grid: InProcessGrid
    settings: Settings

    def copy_to(self, tmp_path: Path) -> None:
        """Put a copy of the finished run's output folder where ``_settings(tmp_path)`` points."""
        shutil.copytree(self.settings.output_dir, tmp_path / "out")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> CleanRun:
    """The standard round: 4 healthy nodes, default settings of this module (read only)."""
    return CleanRun(*_run(tmp_path_factory.mktemp("clean")))


def _tamper(partition: int, kind: str, key: str, fn):
    def fault(p, message_type, request, reply):
        if p == partition and message_type == kind and not reply.has_error():
            arrays = reply.content[P.ARRAYS]
            new = {k: Array(fn(arrays[k].numpy()) if k == key else arrays[k].numpy()) for k in arrays}
            content = RecordDict({P.NODE: reply.content[P.NODE], P.ARRAYS: ArrayRecord(new)})
            return Message(content=content, reply_to=request)
        return reply

    return fault


def test_full_round_merges_every_id_once(clean):
    grid, settings = clean.grid, clean.settings
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert out["targets"].shape == (N_DIGITS, 32) and out["targets"].dtype == np.float32
    assert np.all(np.isfinite(out["targets"]))
    assert set(np.unique(out["participant"])) == {0, 1, 2, 3}
    assert np.all(out["round"] == 1)
    summary = json.loads((settings.output_dir / "summary.json").read_text())
    parts = summary["participants"]
    assert summary["complete"] and len(parts) == 4
    assert sum(p["samples"] for p in parts) == N_DIGITS
    best = min(parts, key=lambda p: p["uniformity"])
    assert summary["anchor"]["partition"] == best["partition-id"]
    assert summary["g-after"] < summary["g-before"]
    # priors are assigned to partitions round-robin from the list
    assert [p["prior"] for p in parts] == FAST_PRIORS.split(",")
    assert all(isinstance(p["node-id"], str) and int(p["node-id"]) > 2**63 for p in parts)
    # the message sequence is the protocol's
    assert [t for _, t in grid.sent] == [P.MSG_UNIFORMITY] * 4 + [P.MSG_ALIGN] * 4


def test_anchor_targets_are_uploaded_unchanged(clean):
    result = clean.result
    anchor = next(n for n in result.rounds[0].nodes if n.partition_id == result.rounds[0].anchor_partition)
    assert anchor.residual == 0.0
    np.testing.assert_allclose(anchor.shared_aligned, anchor.shared_targets, atol=1e-5)


_KEBAB = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def _keys(value, path=""):
    """Every dict key in a JSON value with its path (not inside ``id-namespace``: names)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k
            if k != "id-namespace":
                yield from _keys(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _keys(v, f"{path}[{i}]")


def test_every_summary_key_is_kebab_case(clean):
    summary = json.loads((clean.settings.output_dir / "summary.json").read_text())
    bad = [path for path, key in _keys(summary) if not _KEBAB.fullmatch(key)]
    assert not bad, bad
    assert all(type(p["status"]) is str for p in clean.result.summary["participants"])
    assert {"partition-id", "prior-kind", "feature-dim", "reported-uniformity"} <= set(
        summary["participants"][0]
    )
    assert {p["status"] for p in summary["participants"]} == {"ok"}


def test_summary_config_is_the_run_config_of_the_run(clean):
    config = json.loads((clean.settings.output_dir / "summary.json").read_text())["config"]
    assert set(config) == set(DEFAULTS) - {"prior-mix"}
    assert config["priors"] == FAST_PRIORS.split(",") and config["target-dim"] == 32
    assert config["output-dir"] == str(clean.settings.output_dir)
    again = Settings.from_config({}, config | {"priors": ",".join(config["priors"])})
    assert again == clean.settings


def test_node_record_round_trips_through_its_public_form():
    rec = NodeRecord(
        node_id=2**64 - 5,
        partition_id=3,
        prior_kind="random",
        feature_dim=48,
        reported_uniformity=-2.5,
        status=Status.REJECTED,
        reason="why",
        num_stages=2,
        shared_targets=np.ones((3, 2), np.float32),
    )
    public = rec.public()
    assert public["node-id"] == str(2**64 - 5) and public["status"] == "rejected"
    assert type(public["status"]) is str and "shared_targets" not in public
    arrays = {f"shared_targets.{rec.node_id}": rec.shared_targets}
    back = NodeRecord.from_public(json.loads(json.dumps(public)), arrays)
    assert back.status is Status.REJECTED
    np.testing.assert_array_equal(back.shared_targets, rec.shared_targets)
    assert back.public() == public
    # a checkpoint written with the earlier snake-case keys still reads
    legacy = {k.replace("-", "_"): v for k, v in public.items()}
    assert NodeRecord.from_public(legacy, {}).public() == public


def test_a_failure_keeps_its_first_reason():
    rec = NodeRecord(node_id=1, status=Status.OK)
    rec.fail(Status.REJECTED, "first")
    rec.fail(Status.FAILED, "second")
    assert rec.status is Status.REJECTED and rec.reason == "first"
    assert Status.OK == "ok" and json.dumps(Status.FAILED) == '"failed"'


def test_nan_upload_is_rejected_and_its_shard_reassigned(tmp_path):
    fault = _tamper(
        1, P.MSG_ALIGN, P.TARGETS, lambda t: np.where(np.arange(t.size).reshape(t.shape) == 3, np.nan, t)
    )
    result, _, settings = _run(tmp_path, fault=fault)
    summary = result.summary
    bad = next(p for p in summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "rejected" and "non-finite" in bad["reason"]
    assert summary["complete"] and summary["rounds"][0]["reassigned"] > 0
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert 1 not in set(out["participant"].tolist())


@pytest.mark.parametrize(
    "key,fn,reason",
    [
        (P.TARGETS, lambda t: t[:, :-1], "shape"),
        (P.IDS, lambda i: np.concatenate([i[:-1], i[:1]]), "duplicated"),
        (P.IDS, lambda i: i + 100_000, "differ from the assigned"),
        (P.TARGETS, lambda t: t.astype(np.int32), "dtype"),
    ],
)
def test_malformed_upload_is_rejected_with_reason(tmp_path, key, fn, reason):
    result, _, _ = _run(tmp_path, fault=_tamper(2, P.MSG_ALIGN, key, fn))
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 2)
    assert bad["status"] == "rejected" and reason in bad["reason"]
    assert result.summary["complete"]


def test_silent_node_is_reported_and_nothing_is_lost(tmp_path):
    def silent(p, kind, request, reply):
        return None if (p == 3 and kind == P.MSG_ALIGN) else reply

    result, _, settings = _run(tmp_path, fault=silent, **{"step-timeout": 0.5})
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 3)
    assert bad["status"] == "failed" and "no reply within" in bad["reason"]
    np.testing.assert_array_equal(load_optimized(settings.output_dir)["ids"], np.arange(N_DIGITS))


def test_node_error_at_uniformity_excludes_it(tmp_path):
    result, _, _ = _run(tmp_path, **{"priors": FAST_PRIORS.replace("human", "nosuchprior:x")})
    bad = next(p for p in result.summary["participants"] if p["status"] != "ok")
    assert bad["status"] == "failed" and "nosuchprior" in bad["reason"]
    assert result.summary["complete"]
    assert sum(p["samples"] for p in result.summary["participants"]) == N_DIGITS


def test_missing_shard_is_reported_when_reassignment_is_off(tmp_path):
    fault = _tamper(0, P.MSG_ALIGN, P.TARGETS, lambda t: t * np.inf)
    result, _, settings = _run(tmp_path, fault=fault, **{"max-reassign": 0})
    summary = result.summary
    assert not summary["complete"]
    missing = np.array(summary["missing-ids"])
    out = load_optimized(settings.output_dir)
    assert len(missing) + len(out["ids"]) == N_DIGITS
    assert not np.intersect1d(missing, out["ids"]).size


def test_second_round_reuses_cached_features(tmp_path):
    result, _, settings = _run(tmp_path, **{"num-rounds": 2})
    first, second = result.rounds
    shared = result.summary["shared-samples"]
    # round 1 embeds S once (the align step reuses it, and the part of the shard inside S)
    assert all(shared <= n.cached < shared + n.samples for n in first.nodes)
    # round 2 embeds nothing: S twice and the whole shard come from the node's cache
    assert all(n.cached == 2 * shared + n.samples for n in second.nodes)
    out = load_optimized(settings.output_dir)
    assert np.all(out["round"] == 2)


def test_shards_are_a_seeded_disjoint_cover_stable_across_rounds(tmp_path):
    s = CoOptStrategy(_settings(tmp_path), 1000, log=lambda _: None)
    a = s.assign_shards([0, 1, 2], 3)
    b = s.assign_shards([2, 0, 1], 3)
    assert sorted(a) == [0, 1, 2]
    for p in a:
        np.testing.assert_array_equal(a[p], b[p])
    np.testing.assert_array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(1000))
    assert max(map(len, a.values())) - min(map(len, a.values())) <= 1


def test_absent_partitions_shards_go_to_the_present_ones(tmp_path):
    s = CoOptStrategy(_settings(tmp_path), 1000, log=lambda _: None)
    full = s.assign_shards([0, 1, 2, 3], 4)
    part = s.assign_shards([0, 2], 4)
    np.testing.assert_array_equal(np.sort(np.concatenate(list(part.values()))), np.arange(1000))
    for p in (0, 2):
        assert set(full[p]) <= set(part[p])  # a present partition keeps its own shard


def test_late_joiners_are_waited_for_and_queried(tmp_path):
    settings = _settings(tmp_path, **{"min-nodes": 2})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4)
    all_nodes = list(grid.contexts)
    calls = {"n": 0}

    def staggered():  # two nodes at first, the other two register a few polls later
        calls["n"] += 1
        # the membership wait polls 6 times (every 0.2 s until 1 s of no change), so the
        # other two appear only once the round has started without them
        return all_nodes if calls["n"] > 7 else all_nodes[:2]

    grid.get_node_ids = staggered
    # the real membership wait (with its settle time), not this module's shortcut
    result = CoOptStrategy(settings, N_DIGITS, log=lambda s: None, poll_interval=0.01).run(grid)
    assert len(result.summary["participants"]) == 4 and result.summary["complete"]
    assert sorted(p for p, _ in grid.sent if _ == P.MSG_UNIFORMITY) == [0, 1, 2, 3]


# ------------------------------------------------------------------ hostile participants
def _noise_participant(node, arrays):
    # Noise is perfectly uniform: without screening it would win the anchor choice. It also
    # reports the true uniformity of what it sends, so only the information check can catch it.
    noise = np.random.default_rng(0).normal(size=arrays[P.SHARED_TARGETS].shape).astype(np.float32)
    arrays[P.SHARED_TARGETS] = noise
    node[P.REPORTED_TARGET_UNIFORMITY] = uniformity(noise)


def test_noise_participant_is_rejected_before_it_can_become_the_anchor(tmp_path):
    result, _, _ = _run(tmp_path, fault=replace_reply(1, P.MSG_UNIFORMITY, _noise_participant))
    summary = result.summary
    bad = next(p for p in summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "rejected" and "no information" in bad["reason"]
    assert bad["uniformity"] < min(p["uniformity"] for p in summary["participants"] if p["partition-id"] != 1)
    assert summary["anchor"]["partition"] != 1 and summary["complete"]


def test_false_uniformity_claim_is_rejected(tmp_path):
    def lie(node, arrays):
        node[P.REPORTED_TARGET_UNIFORMITY] = float(node[P.REPORTED_TARGET_UNIFORMITY]) - 1.0

    result, _, _ = _run(tmp_path, fault=replace_reply(0, P.MSG_UNIFORMITY, lie))
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 0)
    assert bad["status"] == "rejected" and "claimed uniformity" in bad["reason"]


@pytest.mark.parametrize(
    "attack,reason",
    [
        ("noise-shard", "poisoning"),  # noise at 3x the scale: the magnitude check catches it
        # one of its own aligned S rows for every image: inside the scale bound, caught by the
        # shard-distribution (k-NN TV) check
        ("constant-shard", "distributed unlike its own shared-set targets"),
        ("fake-shared-aligned", "not the alignment"),
        ("lower-residual", "claimed alignment residual"),
    ],
)
def test_poisoned_upload_is_rejected_and_its_shard_reassigned(tmp_path, clean, attack, reason):
    # partition 0 must not be the anchor: the anchor's residual is 0, and halving 0 is no lie
    assert clean.result.rounds[0].anchor_partition != 0

    def poison(node, arrays):
        rng = np.random.default_rng(1)
        if attack == "noise-shard":
            arrays[P.TARGETS] = rng.normal(size=arrays[P.TARGETS].shape).astype(np.float32) * 3
        elif attack == "constant-shard":
            arrays[P.TARGETS] = np.repeat(arrays[P.SHARED_ALIGNED][:1], len(arrays[P.TARGETS]), axis=0)
        elif attack == "fake-shared-aligned":
            arrays[P.SHARED_ALIGNED] = arrays[P.SHARED_ALIGNED][::-1].copy()
        else:
            node[P.RESIDUAL] = float(node[P.RESIDUAL]) * 0.5

    result, _, settings = _run(tmp_path, fault=replace_reply(0, P.MSG_ALIGN, poison))
    summary = result.summary
    bad = next(p for p in summary["participants"] if p["partition-id"] == 0)
    assert bad["status"] == "rejected" and reason in bad["reason"], bad["reason"]
    assert summary["complete"] and summary["rounds"][0]["reassigned"] > 0
    assert 0 not in set(load_optimized(settings.output_dir)["participant"].tolist())


# ------------------------------------------------------------------ local data mode
def _local_data(tmp_path, sizes):
    """Each participant's own npz (disjoint slices of digits, different sizes)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (np.repeat(d.images[..., None], 3, axis=-1) * (255 / 16)).astype(np.uint8)
    paths, start = {}, 0
    for p, n in enumerate(sizes):
        path = tmp_path / f"node{p}.npz"
        np.savez(path, x=images[start : start + n], y=d.target[start : start + n])
        paths[p], start = path, start + n
    return paths


def test_local_data_mode_namespaces_ids_per_participant(tmp_path):
    sizes = [300, 250, 410, 200]
    paths = _local_data(tmp_path, sizes)
    names = ["hospital-a", "lab-b", "clinic-c", "uni-d"]
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}", P.NODE_NAME: names[p]} for p in range(4)}
    settings = _settings(tmp_path, **{"data-mode": "local", "dataset": "digits", "shared-fraction": 0.1})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4, node_configs=node_configs)
    result = _strategy(settings, shared_data=create_dataset("digits")).run(grid)
    summary = result.summary
    assert summary["complete"] and summary["num-samples"] == sum(sizes)
    space = summary["id-namespace"]
    assert [space[n]["count"] for n in names] == sizes
    assert [space[n]["offset"] for n in names] == [0, 300, 550, 960]
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(sum(sizes)))
    for p, name in enumerate(names):
        rows = out["participant"] == p
        np.testing.assert_array_equal(out["local-index"][rows], np.arange(sizes[p]))
        np.testing.assert_array_equal(out["ids"][rows] - space[name]["offset"], np.arange(sizes[p]))
    # the platform sent the S images itself; no node was told the platform's data set ids to load
    assert all(p["status"] == "ok" for p in summary["participants"])


def test_local_data_mode_keeps_a_failed_participants_block_for_a_later_round(tmp_path):
    sizes = [300, 250, 410]
    paths = _local_data(tmp_path, sizes)
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}"} for p in range(3)}
    calls = {"align": 0}

    def fails_first_align(p, kind, request, reply):
        if p == 2 and kind == P.MSG_ALIGN:
            calls["align"] += 1
            if calls["align"] == 1:
                return None  # silent in round 1
        return reply

    settings = _settings(
        tmp_path,
        **{
            "data-mode": "local",
            "num-rounds": 2,
            "step-timeout": 0.5,
            "priors": "counting:a?dim=48,counting:b?dim=40,human",
        },
    )
    grid = InProcessGrid(
        make_client_app({"priors": settings.priors and ",".join(settings.priors)}),
        3,
        fault=fails_first_align,
        node_configs=node_configs,
    )
    result = _strategy(settings, shared_data=create_dataset("digits")).run(grid)
    first, second = result.summary["rounds"]
    assert first["missing"] == 410 and second["missing"] == 0
    bad = next(p for p in first["participants"] if p["partition-id"] == 2)
    assert bad["status"] == "failed" and "no reply" in bad["reason"]
    assert result.summary["complete"]
    out = load_optimized(settings.output_dir)
    assert np.all(out["round"][out["participant"] == 2] == 2)


def test_local_data_mode_keeps_a_rejected_participants_block_for_a_later_round(tmp_path):
    # Round 1: partition 2 uploads a NaN; its rows are never merged and its block waits (only
    # it holds those images). Round 2: it answers honestly and its block is merged then.
    sizes = [300, 250, 410]
    paths = _local_data(tmp_path, sizes)
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}"} for p in range(3)}

    def nan(node, arrays):
        arrays[P.TARGETS][5, 3] = np.nan

    settings = _settings(
        tmp_path,
        **{"data-mode": "local", "num-rounds": 2, "priors": "counting:a?dim=48,counting:b?dim=40,human"},
    )
    grid = InProcessGrid(
        make_client_app({"priors": settings.priors and ",".join(settings.priors)}),
        3,
        fault=replace_reply(2, P.MSG_ALIGN, nan, round_=1),
        node_configs=node_configs,
    )
    result = _strategy(settings, shared_data=create_dataset("digits")).run(grid)
    first, second = result.summary["rounds"]
    bad = next(p for p in first["participants"] if p["partition-id"] == 2)
    assert bad["status"] == "rejected" and "non-finite" in bad["reason"], bad["reason"]
    assert first["missing"] == 410 and second["missing"] == 0
    assert result.summary["complete"]
    out = load_optimized(settings.output_dir)
    assert np.all(out["round"][out["participant"] == 2] == 2)
    assert np.isfinite(out["targets"]).all()


def test_local_data_mode_without_node_data_fails_that_node_with_a_clear_reason(tmp_path):
    settings = _settings(tmp_path, **{"data-mode": "local"})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 2)
    with pytest.raises(RuntimeError, match="no node config key 'data'"):
        _strategy(settings, shared_data=create_dataset("digits")).run(grid)


# ------------------------------------------------------------------ checkpoints and resume
class _Killed(BaseException):
    """Stands in for SIGKILL of the ServerApp: nothing after it runs."""


def killed_during_align(p, kind, request, reply):
    """A fault: the ServerApp dies when partition 2's align reply arrives."""
    if kind == P.MSG_ALIGN and p == 2:
        raise _Killed
    return reply


def test_resume_after_a_kill_mid_round_gives_the_same_merged_set(tmp_path, clean):
    reference = clean.result  # the same settings, run without a kill
    ref = load_optimized(clean.settings.output_dir)

    settings = _settings(tmp_path / "run")
    app = make_client_app({"priors": FAST_PRIORS})
    with pytest.raises(_Killed):
        _strategy(settings).run(InProcessGrid(app, 4, fault=killed_during_align))
    ck = json.loads((settings.output_dir / "checkpoint.json").read_text())
    assert ck["phase"] == "uniformity" and ck["round"] == 1
    grid = InProcessGrid(app, 4)
    logs = []
    result = _strategy(settings, log=logs.append).run(grid)
    assert [t for _, t in grid.sent] == [P.MSG_ALIGN] * 4  # the uniformity phase was not redone
    assert any("resum" in line for line in logs)
    assert result.summary["resumes"] == [{"round": 1, "after-phase": "uniformity"}]
    out = load_optimized(settings.output_dir)
    for key in ("ids", "targets", "participant", "round"):
        np.testing.assert_array_equal(out[key], ref[key])
    assert result.summary["anchor"] == reference.summary["anchor"]
    assert result.summary["g-after"] == reference.summary["g-after"]
    # only the files of the last checkpoint are kept
    assert sorted(p.name for p in settings.output_dir.glob("checkpoint*")) == [
        "checkpoint-r1-done.safetensors",
        "checkpoint.json",
    ]
    # a finished run is not redone
    again = InProcessGrid(app, 4)
    _strategy(settings).run(again)
    assert again.sent == []


def test_more_rounds_continue_a_finished_run(tmp_path, clean):
    clean.copy_to(tmp_path)  # a finished one-round run in tmp_path / "out"
    settings = _settings(tmp_path, **{"num-rounds": 2})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4)
    result = _strategy(settings).run(grid)
    assert [r["round"] for r in result.summary["rounds"]] == [1, 2]
    assert np.all(load_optimized(settings.output_dir)["round"] == 2)


def test_checkpoint_of_other_settings_is_refused_by_name(tmp_path, clean):
    clean.copy_to(tmp_path)
    settings = _settings(tmp_path, **{"target-dim": 16})
    with pytest.raises(ValueError, match="target_dim"):
        _strategy(settings).run(InProcessGrid(make_client_app({}), 4))
    fresh = _settings(tmp_path, **{"target-dim": 16, "resume": False})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4)
    assert _strategy(fresh).run(grid).summary["complete"]


def test_g_does_not_depend_on_node_ids(tmp_path):
    """Node ids are random per run; G is computed over participants in partition order."""
    gs = []
    for order in ((10, 20, 30, 40), (40, 30, 20, 10)):
        settings = _settings(tmp_path / str(order[0]), **{"priors": "counting:a?dim=48,human,human"})
        grid = InProcessGrid(make_client_app({"priors": settings.priors and ",".join(settings.priors)}), 4)
        # the same partitions behind node ids that sort differently
        by_partition = sorted(grid.contexts.values(), key=lambda c: int(c.node_config["partition-id"]))
        grid.contexts = dict(zip(order, by_partition, strict=True))
        r = _strategy(settings).run(grid).rounds[0]
        gs.append((r.g_before, r.g_after))
    assert gs[0] == gs[1]


# ------------------------------------------------------------------ uploads in parts
def test_uploads_in_parts_give_the_same_merged_set(tmp_path, clean):
    _result, grid, settings = _run(tmp_path / "parts", **{"upload-max-samples": 100})
    whole, parts = load_optimized(clean.settings.output_dir), load_optimized(settings.output_dir)
    for key in ("ids", "participant", "round"):
        np.testing.assert_array_equal(parts[key], whole[key])
    # smaller batches through the prior and the map may change the last float32 bits
    np.testing.assert_allclose(parts["targets"], whole["targets"], rtol=1e-4, atol=1e-5)
    aligns = [p for p, t in grid.sent if t == P.MSG_ALIGN]
    assert len(aligns) == 4 * 5  # shards of ~450 samples in parts of at most 100


def test_a_poisoned_later_part_clears_the_earlier_parts_of_that_node(tmp_path):
    calls = {"n": 0}

    def poison_second_part(p, kind, request, reply):
        if p == 1 and kind == P.MSG_ALIGN and not reply.has_error():
            calls["n"] += 1
            if calls["n"] == 2:
                node = dict(reply.content[P.NODE])
                arrays = {k: v.numpy() for k, v in reply.content[P.ARRAYS].items()}
                arrays[P.TARGETS] = np.full_like(arrays[P.TARGETS], np.nan)
                content = RecordDict(
                    {
                        P.NODE: ConfigRecord(node),
                        P.ARRAYS: ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
                    }
                )
                return Message(content=content, reply_to=request)
        return reply

    result, _, settings = _run(tmp_path, fault=poison_second_part, **{"upload-max-samples": 100})
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "rejected" and bad["samples"] == 0
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert 1 not in set(out["participant"].tolist())  # its first part was cleared and redone


def test_a_silent_later_part_keeps_the_earlier_parts_of_that_node(tmp_path):
    # A failure is not a rejection: the first part passed every check and stays merged; only
    # the parts not delivered go to the other participants.
    calls = {"n": 0}

    def silent_second_part(p, kind, request, reply):
        if p == 1 and kind == P.MSG_ALIGN:
            calls["n"] += 1
            if calls["n"] == 2:
                return None
        return reply

    result, _, settings = _run(
        tmp_path, fault=silent_second_part, **{"upload-max-samples": 100, "step-timeout": 0.5}
    )
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "failed" and bad["samples"] == 100
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert int(np.sum(out["participant"] == 1)) == 100
    assert result.summary["complete"]
    shard = _strategy(settings).assign_shards([0, 1, 2, 3], 4)[1]
    assert result.summary["rounds"][0]["reassigned"] == len(shard) - 100


# ------------------------------------------------------------------ redundancy, anchor rule, alignment
NEW_KEYS = {
    "redundancy": 1,
    "ensemble-weighting": "mean",
    "anchor-rule": "uniformity",
    "alignment": "ridge",
    "standardize-targets": False,
}


def _run_keys(tmp_path, num_nodes=4, fault=None, node_keys=None, log=lambda s: None, **kw):
    """``_run`` with the run-config ``kw`` on both sides: the nodes read ``alignment`` and
    ``standardize-targets`` from it (``node_keys`` replaces what the nodes get)."""
    settings = _settings(tmp_path, **kw)
    nodes = {"priors": ",".join(settings.priors), **(kw if node_keys is None else node_keys)}
    nodes = {k: v for k, v in nodes.items() if k in NEW_KEYS or k == "priors"}
    grid = InProcessGrid(make_client_app(nodes), num_nodes, fault=fault)
    return _strategy(settings, log=log).run(grid), grid, settings


def _recorder(uploads: list):
    """A fault that changes nothing and keeps every align reply: (partition, ids, targets)."""

    def fault(p, kind, request, reply):
        if kind == P.MSG_ALIGN and not reply.has_error():
            arrays = reply.content[P.ARRAYS]
            uploads.append((p, arrays[P.IDS].numpy(), arrays[P.TARGETS].numpy()))
        return reply

    return fault


@dataclass
class RedundantRun:
    result: RunResult
    settings: Settings
    uploads: list  # every align reply (partition, ids, targets)


@pytest.fixture(scope="module")
def redundant(tmp_path_factory) -> RedundantRun:
    """The standard round with redundancy 2 (read only)."""
    uploads: list = []
    result, _, settings = _run_keys(tmp_path_factory.mktemp("r2"), fault=_recorder(uploads), redundancy=2)
    return RedundantRun(result, settings, uploads)


def _contributors(uploads, accepted) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Sample id → the (partition, target) pairs uploaded for it by ``accepted`` partitions."""
    by_id: dict[int, list[tuple[int, np.ndarray]]] = {}
    for p, ids, targets in uploads:
        if p in accepted:
            for i, t in zip(ids.tolist(), targets, strict=True):
                by_id.setdefault(i, []).append((p, t))
    return by_id


def test_redundancy_2_merges_every_id_once_as_the_mean_of_two_priors(redundant):
    summary, settings = redundant.result.summary, redundant.settings
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert summary["complete"] and np.all(out["contributions"] == 2)
    assert sum(p["samples"] for p in summary["participants"]) == 2 * N_DIGITS
    assert summary["rounds"][0]["redundancy"] == 2 and summary["rounds"][0]["fewer-contributions"] == 0
    by_id = _contributors(redundant.uploads, {0, 1, 2, 3})
    assert sorted(by_id) == list(range(N_DIGITS))
    for i, pairs in by_id.items():
        parts = [p for p, _ in pairs]
        assert len(parts) == 2 and len({settings.prior_for(p) for p in parts}) == 2
        assert out["participant"][i] == min(parts)  # the primary contributor
    want = np.stack([np.mean([t.astype(np.float64) for _, t in by_id[i]], axis=0) for i in range(N_DIGITS)])
    np.testing.assert_allclose(out["targets"], want, rtol=1e-6, atol=1e-6)


def test_redundant_copies_go_to_different_priors_where_the_mix_has_them(tmp_path):
    for priors, k, r in (("counting:a?dim=48,human", 4, 2), ("counting:a,counting:b,human", 6, 3)):
        s = CoOptStrategy(_settings(tmp_path, priors=priors), 600, log=lambda _: None)
        shards = s.assign_redundant_shards(list(range(k)), r)
        owners: dict[int, list[int]] = {}
        for p, ids in shards.items():
            for i in ids.tolist():
                owners.setdefault(i, []).append(p)
        assert sorted(owners) == list(range(600))
        assert all(len({p % len(s.settings.paths) for p in ps}) == r for ps in owners.values())
        loads = [len(v) for v in shards.values()]
        assert max(loads) - min(loads) <= 1
        again = s.assign_redundant_shards(list(reversed(range(k))), r)  # stable: caches stay valid
        assert all(np.array_equal(shards[p], again[p]) for p in shards)


def _nan_part(partition: int, which: int):
    """A fault: ``partition``'s ``which``-th align reply (1-based) carries a NaN target."""
    calls = {"n": 0}

    def fault(p, kind, request, reply):
        if p == partition and kind == P.MSG_ALIGN and not reply.has_error():
            calls["n"] += 1
            if calls["n"] == which:
                return replace_reply(p, kind, lambda node, a: a[P.TARGETS].__setitem__((0, 0), np.nan))(
                    p, kind, request, reply
                )
        return reply

    return fault


def test_redundancy_reassigns_a_rejected_participants_contributions(tmp_path):
    uploads: list = []
    recorder, poison = _recorder(uploads), _nan_part(1, 2)  # parts merged before it are taken out

    def fault(p, kind, request, reply):
        return recorder(p, kind, request, poison(p, kind, request, reply))

    result, _, settings = _run_keys(tmp_path, fault=fault, redundancy=2, **{"upload-max-samples": 300})
    summary = result.summary
    bad = next(p for p in summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "rejected" and bad["samples"] == 0
    assert summary["complete"] and summary["rounds"][0]["reassigned"] > 0
    out = load_optimized(settings.output_dir)
    assert np.all(out["contributions"] == 2) and summary["rounds"][0]["fewer-contributions"] == 0
    by_id = _contributors(uploads, {0, 2, 3})
    assert all(len({p for p, _ in pairs}) == 2 for pairs in by_id.values())
    want = np.stack([np.mean([t.astype(np.float64) for _, t in by_id[i]], axis=0) for i in range(N_DIGITS)])
    np.testing.assert_allclose(out["targets"], want, rtol=1e-6, atol=1e-6)


def test_redundancy_is_clipped_to_the_participants_and_fewer_contributions_reported(tmp_path):
    logs: list[str] = []
    result, _, settings = _run_keys(
        tmp_path, num_nodes=2, fault=_nan_part(1, 1), log=logs.append, redundancy=3
    )
    first = result.summary["rounds"][0]
    assert first["redundancy"] == 2 and any("redundancy 3 clipped to 2" in line for line in logs)
    # the other participant already holds every sample: nobody is left to take its copies
    assert first["fewer-contributions"] == N_DIGITS and result.summary["complete"]
    out = load_optimized(settings.output_dir)
    assert np.all(out["contributions"] == 1) and np.all(out["participant"] == 0)


def test_resume_after_a_kill_mid_round_with_redundancy_2_gives_the_same_merged_set(tmp_path, redundant):
    ref = load_optimized(redundant.settings.output_dir)
    parts = {"count": 0}

    def killed_during_align(p, kind, request, reply):
        if kind == P.MSG_ALIGN:
            parts["count"] += 1
            if parts["count"] == 6:  # in the second exchange: the first four parts are merged
                raise _Killed
        return reply

    with pytest.raises(_Killed):
        _run_keys(tmp_path, fault=killed_during_align, redundancy=2, **{"upload-max-samples": 300})
    ck = json.loads((tmp_path / "out" / "checkpoint.json").read_text())
    assert ck["phase"] == "uniformity" and parts["count"] == 6
    # the redone phase asks for whole shards again (the part size is not part of the fingerprint)
    result, grid, settings = _run_keys(tmp_path, redundancy=2)
    assert [t for _, t in grid.sent] == [P.MSG_ALIGN] * 4
    assert result.summary["resumes"] == [{"round": 1, "after-phase": "uniformity"}]
    out = load_optimized(settings.output_dir)
    assert set(out) == set(ref)
    for key in out:
        assert out[key].tobytes() == ref[key].tobytes(), key


def test_default_run_config_gives_the_same_merged_set_as_before(tmp_path, clean):
    """The new keys at their defaults change nothing: r = 1, argmin V, ridge, raw features."""
    _, _, settings = _run_keys(tmp_path, **NEW_KEYS)
    ref, out = load_optimized(clean.settings.output_dir), load_optimized(settings.output_dir)
    assert set(out) == set(ref) == {"ids", "targets", "participant", "round", "stage", "contributions"}
    for key in out:
        assert out[key].tobytes() == ref[key].tobytes(), key
    assert np.all(out["contributions"] == 1)


def test_a_checkpoint_of_another_redundancy_is_refused_and_old_fingerprints_read(tmp_path, clean):
    clean.copy_to(tmp_path)
    with pytest.raises(ValueError, match="redundancy"):
        _strategy(_settings(tmp_path, redundancy=2)).run(InProcessGrid(make_client_app({}), 4))
    # a checkpoint written before the keys existed ran with their defaults
    path = tmp_path / "out" / "checkpoint.json"
    ck = json.loads(path.read_text())
    ck["fingerprint"] = {k: v for k, v in ck["fingerprint"].items() if k.replace("_", "-") not in NEW_KEYS}
    path.write_text(json.dumps(ck))
    grid = InProcessGrid(make_client_app({}), 4)
    assert _strategy(_settings(tmp_path)).run(grid).rounds == [] and grid.sent == []


def test_residual_oos_is_the_cross_fitted_residual_to_the_anchor(clean):
    nodes = clean.result.rounds[0].nodes
    anchor = next(n for n in nodes if n.partition_id == clean.result.rounds[0].anchor_partition)
    for n in nodes:
        want = (
            0.0
            if n is anchor
            else cross_fitted_residual(
                n.shared_targets,
                anchor.shared_targets,
                seed=clean.settings.seed,
                ridge=clean.result.rounds[0].ridge,
            )
        )
        assert n.residual_oos == want
        assert n.consensus is None  # scored only under anchor-rule "consensus"
    summary = json.loads((clean.settings.output_dir / "summary.json").read_text())
    assert all(p["residual-oos"] > p["residual"] for p in summary["participants"] if p["residual"])


def test_consensus_anchor_rule_picks_the_prior_that_explains_the_others(tmp_path):
    # A 96-wide linear map of the pixels (n = 64) holds what the 6- and 16-wide ones hold;
    # the one-hot human prior is the most uniform, so argmin V would pick it instead.
    priors = "counting:low?dim=6,human,counting:full?dim=96,counting:mid?dim=16"
    result, _, settings = _run_keys(tmp_path, priors=priors, **{"anchor-rule": "consensus", "target-dim": 64})
    summary = result.summary
    assert summary["anchor"] == {"partition": 2, "prior": "counting:full?dim=96", "rule": "consensus"}
    parts = summary["participants"]
    assert min(parts, key=lambda p: p["uniformity"])["partition-id"] == 1
    nodes = result.rounds[0].nodes
    want = consensus_scores(
        {n.partition_id: n.shared_targets for n in nodes},
        ridge=result.rounds[0].ridge,
        seed=settings.seed,
        partners=8,
    )
    assert {p["partition-id"]: p["consensus"] for p in parts} == want
    assert summary["complete"] and all(p["status"] == "ok" for p in parts)


@pytest.mark.parametrize(
    "keys",
    [
        {"alignment": "procrustes"},
        {"standardize-targets": True},
        {"alignment": "procrustes", "redundancy": 2},
    ],
)
def test_procrustes_and_standardized_targets_run_end_to_end(tmp_path, clean, keys):
    result, _, settings = _run_keys(tmp_path, **keys)
    summary = result.summary
    assert summary["complete"] and all(p["status"] == "ok" for p in summary["participants"])
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert np.all(np.isfinite(out["targets"]))
    nodes, ref = result.rounds[0].nodes, clean.result.rounds[0].nodes
    anchor = next(n for n in nodes if n.partition_id == result.rounds[0].anchor_partition)
    for n, r in zip(nodes, ref, strict=True):
        standardized = keys.get("standardize-targets", False)
        assert np.array_equal(n.shared_targets, r.shared_targets) != standardized
        if n is not anchor:
            fit = fit_alignment(
                n.shared_targets,
                anchor.shared_targets,
                ridge=result.rounds[0].ridge,
                method=settings.alignment,
            )
            assert n.residual == pytest.approx(fit.residual, rel=1e-3)


def test_nodes_aligning_otherwise_than_the_platform_checks_are_rejected(tmp_path):
    result, _, _ = _run_keys(tmp_path, node_keys={"alignment": "ridge"}, alignment="procrustes")
    anchor = result.summary["anchor"]["partition"]
    others = [p for p in result.summary["participants"] if p["partition-id"] != anchor]
    assert all(p["status"] == "rejected" and "not the alignment" in p["reason"] for p in others)


def test_local_data_mode_refuses_redundancy(tmp_path):
    with pytest.raises(ValueError, match="redundancy 2 needs data-mode 'platform'"):
        _settings(tmp_path, **{"data-mode": "local", "redundancy": 2})


def test_residual_weighting_weighs_each_contribution_by_its_out_of_sample_fit(tmp_path):
    uploads: list = []
    result, _, settings = _run_keys(
        tmp_path, fault=_recorder(uploads), redundancy=2, **{"ensemble-weighting": "residual"}
    )
    oos = {p["partition-id"]: p["residual-oos"] for p in result.summary["participants"]}
    weight = {p: max(1.0 - r**2, 1e-3) for p, r in oos.items()}
    assert weight[result.summary["anchor"]["partition"]] == 1.0
    by_id = _contributors(uploads, set(oos))
    want = np.stack(
        [
            sum(weight[p] * t.astype(np.float64) for p, t in by_id[i]) / sum(weight[p] for p, _ in by_id[i])
            for i in range(N_DIGITS)
        ]
    )
    out = load_optimized(settings.output_dir)
    np.testing.assert_allclose(out["targets"], want, rtol=1e-6, atol=1e-6)


def _ridges_sent(sent: list):
    """A fault that changes nothing and keeps the ridge of every align request."""

    def fault(p, kind, request, reply):
        if kind == P.MSG_ALIGN:
            sent.append(request.content[P.CONFIG][P.RIDGE])
        return reply

    return fault


def test_ridge_auto_is_chosen_on_s_recorded_per_round_and_sent_to_the_nodes(tmp_path):
    from coopt_flwr.protocol.alignment import RIDGE_GRID, select_ridge

    sent: list = []
    result, _, settings = _run(tmp_path, fault=_ridges_sent(sent))
    round_ = result.rounds[0]
    shared = [n.shared_targets for n in sorted(round_.nodes, key=lambda n: n.partition_id)]
    assert round_.ridge in RIDGE_GRID and round_.ridge == select_ridge(shared, seed=settings.seed)[0]
    summary = json.loads((settings.output_dir / "summary.json").read_text())
    assert summary["config"]["ridge"] == "auto" and summary["rounds"][0]["ridge"] == round_.ridge
    assert set(sent) == {round_.ridge} and len(sent) >= 4


def test_a_fixed_ridge_is_used_as_given(tmp_path):
    sent: list = []
    result, _, _ = _run(tmp_path, fault=_ridges_sent(sent), ridge=0.05)
    assert result.rounds[0].ridge == 0.05 and set(sent) == {0.05}


@pytest.mark.parametrize("redundancy", [1, 2])
def test_participants_above_shard_max_residual_get_no_share_of_d(tmp_path, redundancy):
    logs: list[str] = []
    result, _, settings = _run_keys(
        tmp_path, log=logs.append, redundancy=redundancy, **{"shard-max-residual": 1e-9}
    )
    summary, round_ = result.summary, result.rounds[0]
    parts = {p["partition-id"]: p for p in summary["participants"]}
    anchor = round_.anchor_partition
    assert [p for p, d in parts.items() if not d["gated"]] == [anchor]
    assert all(d["samples"] == 0 for p, d in parts.items() if p != anchor)
    out = load_optimized(settings.output_dir)
    np.testing.assert_array_equal(out["ids"], np.arange(N_DIGITS))
    assert np.all(out["participant"] == anchor) and summary["complete"]
    assert round_.redundancy == 1  # clipped to the one participant left
    assert sum("gets no share of D" in line for line in logs) == len(parts) - 1


# ------------------------------------------------------------------ identity, claims, restarts
def _claims(partition: int, round_: int | None = None, **fields):
    """A fault: ``partition``'s uniformity reply claims other node fields (in ``round_`` only)."""

    def fault(p, kind, request, reply):
        if p != partition or kind != P.MSG_UNIFORMITY or reply.has_error():
            return reply
        if round_ is not None and request.metadata.group_id != str(round_):
            return reply
        node = ConfigRecord({**dict(reply.content[P.NODE]), **fields})
        return Message(
            content=RecordDict({P.NODE: node, P.ARRAYS: reply.content[P.ARRAYS]}), reply_to=request
        )

    return fault


def test_a_node_keeps_its_partition_and_a_second_claim_of_it_is_rejected(tmp_path):
    # In round 2 the node of partition 3 claims partition 0 (whose holder is connected): the
    # claimant is rejected, never the holder, whatever order their node ids sort in.
    fault = _claims(3, round_=2, **{P.PARTITION_ID: 0})
    result, _, _ = _run(tmp_path, fault=fault, **{"num-rounds": 2})
    second = result.summary["rounds"][1]["participants"]
    rejected = [p for p in second if p["status"] == "rejected"]
    assert len(rejected) == 1 and "partition 3 is bound to this node" in rejected[0]["reason"]
    holder = next(p for p in second if p["status"] == "ok" and p["partition-id"] == 0)
    assert holder["node-id"] != rejected[0]["node-id"]
    assert result.summary["complete"]


def test_a_newcomer_cannot_take_a_connected_holders_partition(tmp_path):
    settings = _settings(tmp_path, **{"num-rounds": 2})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4)
    impostor = 5  # a smaller node id than every honest one: it would sort first

    def join(result, merged):
        from flwr.app import Context

        honest = next(iter(grid.contexts.values()))
        grid.contexts[impostor] = Context(
            run_id=7,
            node_id=impostor,
            node_config={**honest.node_config, "partition-id": 1},
            state=RecordDict(),
            run_config=dict(honest.run_config),
        )

    result = _strategy(settings, on_round=join).run(grid)
    second = {int(p["node-id"]): p for p in result.summary["rounds"][1]["participants"]}
    assert second[impostor]["status"] == "rejected"
    assert "partition id 1 is bound to node" in second[impostor]["reason"]
    assert sum(p["status"] == "ok" and p["partition-id"] == 1 for p in second.values()) == 1


def test_a_partition_moves_to_a_newcomer_once_its_holder_is_gone(tmp_path):
    # After round 1 the holder of partition 1 leaves and a new node claims partition 1: the
    # binding holds only while its holder is connected, so the newcomer takes it over.
    from flwr.app import Context

    settings = _settings(tmp_path, **{"num-rounds": 2})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4)
    newcomer, swapped = 5, []

    def swap(result, merged):
        if swapped:
            return
        holder = next(n for n, c in grid.contexts.items() if c.node_config["partition-id"] == 1)
        gone = grid.contexts.pop(holder)
        grid.contexts[newcomer] = Context(
            run_id=7,
            node_id=newcomer,
            node_config=dict(gone.node_config),
            state=RecordDict(),
            run_config=dict(gone.run_config),
        )
        swapped.append(holder)

    result = _strategy(settings, on_round=swap).run(grid)
    second = {int(p["node-id"]): p for p in result.summary["rounds"][1]["participants"]}
    assert swapped and swapped[0] not in second
    assert second[newcomer]["status"] == "ok" and second[newcomer]["partition-id"] == 1
    assert all(p["status"] == "ok" for p in second.values())
    assert result.summary["complete"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (P.NUM_PARTITIONS, 10**6, "claims a federation of 1000000 partitions"),
        (P.NUM_PARTITIONS, 0, "claims a federation of 0 partitions"),
        (P.PARTITION_ID, 7, "partition id 7 outside 0 to 3"),
    ],
)
def test_unbounded_claims_are_rejected(tmp_path, field, value, reason):
    result, _, _ = _run(tmp_path, fault=_claims(2, **{field: value}))
    bad = next(p for p in result.summary["participants"] if p["status"] == "rejected")
    assert reason in bad["reason"]
    assert result.summary["complete"]  # its share went to the others


def test_an_enormously_scaled_would_be_anchor_is_rejected_at_its_uniformity_report(tmp_path, clean):
    # Uniformity ignores scale: S targets × 10^37 (finite in float32) keep their V and would
    # win the anchor as before, setting the space every aligned target is merged in.
    anchor = clean.result.rounds[0].anchor_partition

    def enormous(node, arrays):
        arrays[P.SHARED_TARGETS] = arrays[P.SHARED_TARGETS] * np.float32(1e37)

    result, _, settings = _run(tmp_path, fault=replace_reply(anchor, P.MSG_UNIFORMITY, enormous))
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == anchor)
    assert bad["status"] == "rejected" and "magnitude" in bad["reason"], bad["reason"]
    assert result.rounds[0].anchor_partition != anchor
    assert result.summary["complete"]
    assert np.abs(load_optimized(settings.output_dir)["targets"]).max() < 100


def test_one_node_claiming_a_huge_federation_does_not_set_its_size(tmp_path):
    # 99,999 partitions is within the bound; the federation's size is the median claim (4), so
    # D is still split four ways instead of into 99,999 shards that nobody holds.
    result, _, _ = _run(tmp_path, fault=_claims(2, **{P.NUM_PARTITIONS: 99_999}))
    assert result.summary["complete"]
    merged = [p["samples"] for p in result.summary["participants"] if p["status"] == "ok"]
    assert len(merged) == 4 and sum(merged) == N_DIGITS and min(merged) > N_DIGITS // 8


def test_local_mode_a_claim_of_a_billion_samples_is_rejected_without_allocating(tmp_path):
    sizes = [300, 250, 410]
    paths = _local_data(tmp_path, sizes)
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}"} for p in range(3)}
    settings = _settings(tmp_path, **{"data-mode": "local", "shared-fraction": 0.1})
    grid = InProcessGrid(
        make_client_app({"priors": FAST_PRIORS}),
        3,
        node_configs=node_configs,
        fault=_claims(1, **{P.NUM_SAMPLES: 10**9}),
    )
    result = _strategy(settings, shared_data=create_dataset("digits")).run(grid)
    bad = next(p for p in result.summary["participants"] if p["partition-id"] == 1)
    assert bad["status"] == "rejected" and "claims to hold 1000000000 samples" in bad["reason"]
    assert result.summary["num-samples"] == 300 + 410


def test_local_mode_a_name_stays_bound_to_its_node(tmp_path):
    # Round 2: the node of lab-b claims hospital-a's name, to overwrite hospital-a's block.
    sizes = [300, 250, 410]
    paths = _local_data(tmp_path, sizes)
    names = ["hospital-a", "lab-b", "clinic-c"]
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}", P.NODE_NAME: names[p]} for p in range(3)}

    def fault(p, kind, request, reply):
        if p == 0 and request.metadata.group_id == "2":
            return None  # hospital-a is away in round 2
        return _claims(1, round_=2, **{P.NAME: "hospital-a"})(p, kind, request, reply)

    settings = _settings(
        tmp_path, **{"data-mode": "local", "shared-fraction": 0.1, "num-rounds": 2, "step-timeout": 0.5}
    )
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 3, node_configs=node_configs, fault=fault)
    result = _strategy(settings, shared_data=create_dataset("digits")).run(grid)
    second = result.summary["rounds"][1]["participants"]
    thief = next(p for p in second if p["partition-id"] == 1)
    assert thief["status"] == "rejected" and "name 'hospital-a' is bound to node" in thief["reason"]
    out = load_optimized(settings.output_dir)
    block = out["ids"] < sizes[0]
    assert np.all(out["participant"][block] == 0) and np.all(out["round"][block] == 1)


def test_resume_with_new_node_ids_starts_the_round_again(tmp_path, clean):
    # A restarted simulation gives every node a new id: the checkpoint's nodes are gone.
    ref = load_optimized(clean.settings.output_dir)

    settings = _settings(tmp_path / "run")
    app = make_client_app({"priors": FAST_PRIORS})
    with pytest.raises(_Killed):
        _strategy(settings).run(InProcessGrid(app, 4, fault=killed_during_align))
    grid = InProcessGrid(app, 4, first_node_id=2**63 + 5_000)
    logs: list[str] = []
    result = _strategy(settings, log=logs.append).run(grid)
    assert any("starts again from its uniformity phase" in line for line in logs)
    assert any("bound again" in line for line in logs)
    assert [t for _, t in grid.sent] == [P.MSG_UNIFORMITY] * 4 + [P.MSG_ALIGN] * 4
    assert result.summary["complete"]
    out = load_optimized(settings.output_dir)
    for key in ("ids", "targets", "participant"):
        np.testing.assert_array_equal(out[key], ref[key])
    assert {int(p["node-id"]) for p in result.summary["participants"]} == set(grid.contexts)


def test_more_rounds_after_a_restart_with_new_node_ids(tmp_path, clean):
    clean.copy_to(tmp_path)
    settings = _settings(tmp_path, **{"num-rounds": 2})
    grid = InProcessGrid(make_client_app({"priors": FAST_PRIORS}), 4, first_node_id=2**63 + 9_000)
    result = _strategy(settings).run(grid)
    assert [r["round"] for r in result.summary["rounds"]] == [1, 2]
    assert all(p["status"] == "ok" for p in result.summary["rounds"][1]["participants"])


def test_local_mode_rows_aligned_to_an_earlier_anchor_make_the_set_incomplete(tmp_path):
    # The round-1 anchor is away in round 2: its rows stay in round 1's anchor space while the
    # others move to round 2's. The summary must not call that a complete set.
    sizes = [300, 250, 410]
    paths = _local_data(tmp_path, sizes)
    node_configs = {p: {P.NODE_DATA: f"npz:{paths[p]}"} for p in range(3)}
    first: dict[str, int] = {}

    def remember(result, merged):
        first.setdefault("anchor", result.anchor_partition)

    def away_in_round_2(p, kind, request, reply):
        return None if request.metadata.group_id == "2" and p == first.get("anchor") else reply

    settings = _settings(
        tmp_path, **{"data-mode": "local", "shared-fraction": 0.1, "num-rounds": 2, "step-timeout": 0.5}
    )
    grid = InProcessGrid(
        make_client_app({"priors": FAST_PRIORS}), 3, node_configs=node_configs, fault=away_in_round_2
    )
    logs: list[str] = []
    strategy = _strategy(settings, log=logs.append, shared_data=create_dataset("digits"), on_round=remember)
    summary = strategy.run(grid).summary
    assert summary["rounds"][1]["anchor-partition"] != first["anchor"]
    assert summary["stale-samples"] == sizes[first["anchor"]]
    assert not summary["complete"] and summary["missing-ids"] == []
    assert any("earlier round's anchor" in line for line in logs)


@pytest.mark.parametrize(
    "priors", ["human,human", "human,human?fraction=0.5,human?fraction=0.5,counting:a?dim=48"]
)
def test_honest_human_annotators_are_not_rejected(tmp_path, priors):
    # Label codes are few distinct vectors; the shard check once split them into one atom per
    # cross-fitting fold and rejected honest annotators as "possible poisoning".
    result, _, _ = _run(tmp_path, num_nodes=len(priors.split(",")), priors=priors)
    assert [p["reason"] for p in result.summary["participants"] if p["status"] != "ok"] == []
    assert result.summary["complete"]
