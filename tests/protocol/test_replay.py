"""The in-process replay of the protocol used by the analyses."""

from __future__ import annotations

import numpy as np
import pytest
from harness import InProcessGrid, register_counting_prior

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.protocol.replay import anchor_for, embed_prior, merge_targets, project_all
from coopt_flwr.registry.datasets import create_dataset, shared_subset
from coopt_flwr.store.storage import load_optimized
from strategies.coopt import CoOptStrategy

SPECS = ["counting:r0", "counting:r1?dim=24", "human"]


def test_anchor_for_each_mode():
    v = [-0.5, -2.0, -1.0, -0.1]
    assert anchor_for(v, "best") == 1 and anchor_for(v, "worst") == 3
    assert anchor_for(v, "medium") == 2 and anchor_for(v, "none") is None
    assert anchor_for([-1.0, -1.0], "best") == 0  # ties go to the lowest index, as on the platform
    with pytest.raises(ValueError, match="anchor mode"):
        anchor_for(v, "median")


def test_replay_matches_the_real_protocol(tmp_path):
    """Same seed, priors and settings: the in-process replay gives the strategy's D' and G."""
    register_counting_prior()
    data = create_dataset("digits")
    cfg = {
        "priors": ",".join(SPECS),
        "output-dir": str(tmp_path),
        "target-dim": 16,
        "seed": 3,
        "g-max-samples": 100,
        "step-timeout": 30.0,
    }
    settings = Settings.from_config({}, cfg)
    grid = InProcessGrid(make_client_app({"priors": cfg["priors"]}), len(SPECS))
    result = CoOptStrategy(settings, len(data), log=lambda s: None, poll_interval=0.01).run(grid)
    real = load_optimized(tmp_path)

    embedded = [embed_prior(s, data, seed=3 + k) for k, s in enumerate(SPECS)]
    merged = merge_targets(
        embedded,
        project_all(embedded, 16, seed=3),
        len(data),
        shared_subset(len(data), 0.1, 3),
        "best",
        seed=3,
        ridge=settings.ridge,
        g_max_samples=100,
    )
    assert merged.anchor == result.rounds[0].anchor_partition
    np.testing.assert_array_equal(merged.participant, real["participant"])
    np.testing.assert_allclose(merged.targets, real["targets"], rtol=1e-4, atol=1e-4)
    assert merged.g_before == pytest.approx(result.rounds[0].g_before)
    assert merged.g_after == pytest.approx(result.rounds[0].g_after)
    platform_v = {n.partition_id: n.uniformity for n in result.rounds[0].nodes}
    assert merged.uniformity == pytest.approx([platform_v[k] for k in range(3)])


def test_modes_choose_their_anchor_and_no_alignment_leaves_targets_unaligned():
    register_counting_prior()
    data = create_dataset("digits")
    embedded = [embed_prior(s, data, seed=k) for k, s in enumerate(SPECS)]
    projected = project_all(embedded, 16, seed=0)
    shared = shared_subset(len(data), 0.1, 0)
    runs = {
        m: merge_targets(embedded, projected, len(data), shared, m, g_max_samples=100)
        for m in ("none", "worst", "best")
    }
    order = np.argsort(runs["best"].uniformity)
    assert runs["best"].anchor == order[0] and runs["worst"].anchor == order[-1]
    none = runs["none"]
    assert none.anchor is None and none.residuals == [0.0, 0.0, 0.0]
    assert none.g_after == none.g_before
    assert runs["best"].g_after < none.g_after
    rows = none.participant == 1
    np.testing.assert_allclose(none.targets[rows], projected[1][rows], rtol=1e-6)


def test_missing_features_are_an_error():
    register_counting_prior()
    data = create_dataset("digits")
    e = embed_prior("counting:r0", data, ids=np.arange(100), seed=0)
    with pytest.raises(KeyError, match="not embedded"):
        merge_targets([e], project_all([e], 8, 0), len(data), np.arange(10), "best")
