"""The ClientApp's process-wide memo of the shared set's features (seed-free priors)."""

from __future__ import annotations

import numpy as np
import pytest
from harness import InProcessGrid, NoSettleStrategy

from coopt_flwr import client_app
from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.registry.datasets import create_dataset
from coopt_flwr.store.storage import load_optimized

# Three holders of one pretrained prior (seed-free), a random-init one (seeded), an annotator.
LITE = "efficientnet_lite0?size=16"
PRIORS = ",".join([LITE, LITE, "timm:resnet10t?size=16", LITE, "human"])
DATA = "digits?subset=400"  # small: the test is about who embeds S, not about quality
_REPORT = client_app.uniformity_report


def _run(out, memo_size: int, monkeypatch):
    monkeypatch.setattr(client_app, "_SHARED_MEMO_SIZE", memo_size)
    client_app._SHARED_MEMO.clear()
    cached: dict[int, int] = {}  # partition -> S features its uniformity report found cached
    report = _REPORT

    def spy(prior, data, shared_ids, *args, **kw):
        rep = report(prior, data, shared_ids, *args, **kw)
        cached[len(cached)] = rep.cached  # the in-process grid answers in partition order
        return rep

    monkeypatch.setattr(client_app, "uniformity_report", spy)
    settings = Settings.from_config(
        {},
        {
            "priors": PRIORS,
            "dataset": DATA,
            "shared-fraction": 0.2,
            "output-dir": str(out),
            "target-dim": 16,
            "node-wait-timeout": 5.0,
        },
    )
    grid = InProcessGrid(make_client_app({"priors": PRIORS, "dataset": DATA}), 5)
    n = len(create_dataset(DATA))
    result = NoSettleStrategy(settings, n, log=lambda s: None, poll_interval=0.01).run(grid)
    return result, load_optimized(out), cached


@pytest.mark.slow  # two rounds with real networks (~20 s)
def test_holders_of_one_pretrained_prior_embed_s_once_and_reply_exactly_as_alone(tmp_path, monkeypatch):
    alone, alone_set, alone_cached = _run(tmp_path / "alone", 0, monkeypatch)  # memo off
    shared, shared_set, cached = _run(tmp_path / "shared", 8, monkeypatch)
    by_part = {r.partition_id: r for r in shared.rounds[0].nodes}
    alone_by_part = {r.partition_id: r for r in alone.rounds[0].nodes}
    # Off: every node embeds S itself. On: the first Lite0 holder embeds S, the next two
    # start from its features; the seeded ResNet and the annotator embed their own.
    s_size = len(by_part[0].shared_targets)
    assert alone_cached == {p: 0 for p in range(5)}
    assert cached == {0: 0, 1: s_size, 2: 0, 3: s_size, 4: 0}
    # Every reply and the merged set are byte for byte what each node computes alone.
    for p, rec in by_part.items():
        assert np.array_equal(rec.shared_targets, alone_by_part[p].shared_targets), p
    for key in ("ids", "targets"):
        assert np.array_equal(shared_set[key], alone_set[key])


def test_memo_key_is_none_for_seeded_priors_and_tracks_what_s_features_depend_on():
    class _Job:
        def __init__(self, spec, dataset="digits", root=""):
            self.who = type("W", (), {"spec": spec})()
            self.config = {"dataset": dataset, "data-root": root}
            self.settings = Settings.from_config({}, {})

    data = create_dataset("digits")
    ids = np.arange(10)
    key = client_app._shared_memo_key
    assert key(_Job("timm:resnet10t?size=16"), data, ids, "data") is None
    assert key(_Job("human?fraction=0.5"), data, ids, "data") is None
    base = key(_Job("efficientnet_lite0?size=16"), data, ids, "data")
    assert base is not None and base == key(_Job("efficientnet_lite0?size=16"), data, ids.copy(), "data")
    assert key(_Job("efficientnet_lite0?size=16"), data, ids + 1, "data") != base
    assert key(_Job("efficientnet_lite0?size=32"), data, ids, "data") != base
    assert key(_Job("efficientnet_lite0?size=16", dataset="cifar10"), data, ids, "data") != base
    # Local data mode: S's own images (their bytes) decide.
    shared = client_app.shared_set(data.images[:10], None)
    other = client_app.shared_set(data.images[10:20], None)
    assert key(_Job("human"), shared, ids, "shared") != key(_Job("human"), other, ids, "shared")


@pytest.fixture(autouse=True)
def _empty_memo():
    yield
    client_app._SHARED_MEMO.clear()
