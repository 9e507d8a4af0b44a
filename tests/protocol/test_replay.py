"""The in-process replay of the protocol used by the analyses."""

from __future__ import annotations

import numpy as np
import pytest
from harness import InProcessGrid, register_counting_prior

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import Settings
from coopt_flwr.protocol.alignment import cross_fitted_residual, fit_alignment, select_ridge
from coopt_flwr.protocol.consensus import consensus_scores
from coopt_flwr.protocol.replay import Embedded, anchor_for, embed_prior, merge_targets, project_all
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import create_dataset, shard_split, shared_subset
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


# ------------------------------------------------------------- anchor rule, alignment, r, standardize
def _embedded(spec: str, features: np.ndarray) -> Embedded:
    ids = np.arange(len(features), dtype=np.int64)
    return Embedded(spec, "random", ids, features.astype(np.float32), 1.0)


def _digits_round():
    register_counting_prior()
    data = create_dataset("digits")
    embedded = [embed_prior(s, data, seed=k) for k, s in enumerate(SPECS)]
    return data, embedded, project_all(embedded, 16, seed=0), shared_subset(len(data), 0.1, 0)


def test_defaults_are_the_disjoint_uniformity_ridge_round():
    """Built independently from the protocol's pieces; the new options at their defaults change nothing."""
    data, embedded, projected, shared = _digits_round()
    merged = merge_targets(embedded, projected, len(data), shared, seed=4, g_max_samples=100)
    explicit = merge_targets(
        embedded,
        projected,
        len(data),
        shared,
        seed=4,
        g_max_samples=100,
        anchor_rule="uniformity",
        alignment="ridge",
        standardize=False,
        redundancy=1,
    )
    on_s = [p[shared] for p in projected]  # embedded ids are 0..N-1
    anchor = int(np.argmin([uniformity(s) for s in on_s]))
    assert merged.anchor == explicit.anchor == anchor
    expected = np.full_like(merged.targets, np.nan)
    participant = np.full(len(data), -1)
    for k, ids in enumerate(shard_split(len(data), 3, 4)):
        fit = fit_alignment(on_s[k], on_s[anchor], ridge=1e-3) if k != anchor else None
        expected[ids] = projected[k][ids] if fit is None else fit.apply(projected[k][ids])
        participant[ids] = k
    np.testing.assert_array_equal(merged.targets, expected)
    np.testing.assert_array_equal(explicit.targets, expected)
    np.testing.assert_array_equal(merged.participant, participant)
    np.testing.assert_array_equal(merged.contributors[:, 0], participant)
    assert merged.contributors.shape == (len(data), 1) and merged.redundancy == 1
    assert (merged.g_before, merged.g_after, merged.residuals) == (
        explicit.g_before,
        explicit.g_after,
        explicit.residuals,
    )


def test_redundancy_two_averages_two_distinct_participants():
    data, embedded, projected, shared = _digits_round()
    one = merge_targets(embedded, projected, len(data), shared, g_max_samples=100)
    two = merge_targets(embedded, projected, len(data), shared, g_max_samples=100, redundancy=2)
    c = two.contributors
    assert c.shape == (len(data), 2) and np.all(c >= 0) and np.all(c[:, 0] < c[:, 1])
    np.testing.assert_array_equal(two.participant, c[:, 0])
    loads = np.bincount(c.ravel(), minlength=3)
    assert loads.sum() == 2 * len(data) and loads.max() - loads.min() <= 1  # balanced
    # every row is the mean of its two contributors' aligned targets (same fits as r = 1)
    fits = [
        fit_alignment(p[shared], projected[two.anchor][shared], ridge=1e-3) if k != two.anchor else None
        for k, p in enumerate(projected)
    ]
    aligned = [p if f is None else f.apply(p) for p, f in zip(projected, fits, strict=True)]
    rows, stacked = np.arange(len(data)), np.stack(aligned).astype(np.float64)
    mean = (stacked[c[:, 0], rows] + stacked[c[:, 1], rows]) / 2
    np.testing.assert_allclose(two.targets, mean, rtol=1e-5, atol=1e-5)
    assert two.anchor == one.anchor and two.g_after == one.g_after  # S is the same for both
    with pytest.raises(ValueError, match="redundancy"):
        merge_targets(embedded, projected, len(data), shared, redundancy=4)


def test_redundancy_puts_the_copies_of_an_id_on_different_priors():
    """Two participants share a spec (one group): an id never gets both of them when r = 2."""
    rng = np.random.default_rng(0)
    feats = {s: rng.standard_normal((200, 6)) for s in ("a", "b", "c")}
    embedded = [_embedded(s, feats[s]) for s in ("a", "b", "c", "c")]
    merged = merge_targets(
        embedded, project_all(embedded, 6, 0), 200, np.arange(40), g_max_samples=50, redundancy=2
    )
    c = merged.contributors
    assert not np.any((c[:, 0] == 2) & (c[:, 1] == 3))
    assert np.bincount(c.ravel(), minlength=4).tolist() == [100, 100, 100, 100]


def test_consensus_picks_the_prior_the_others_derive_from():
    """Uniformity prefers pure noise (the most spread); consensus picks the generating prior."""
    rng = np.random.default_rng(1)
    n, latent = 400, rng.standard_normal((400, 6))
    feats = [
        rng.standard_normal((n, 16)),  # noise: very uniform, no shared signal
        latent @ rng.standard_normal((6, 16)),  # the generator: everything the others hold
        latent[:, :3] @ rng.standard_normal((3, 16)) + 0.3 * rng.standard_normal((n, 16)),
        latent @ rng.standard_normal((6, 16)) + 0.8 * rng.standard_normal((n, 16)),
    ]
    embedded = [_embedded(f"p{k}", f) for k, f in enumerate(feats)]
    projected = project_all(embedded, 16, 0)
    shared = np.arange(0, n, 4)
    by_v = merge_targets(embedded, projected, n, shared, g_max_samples=100)
    by_c = merge_targets(embedded, projected, n, shared, g_max_samples=100, anchor_rule="consensus")
    assert by_v.anchor == 0 and by_c.anchor == 1
    assert by_c.consensus == by_v.consensus and int(np.argmin(by_c.consensus)) == 1
    assert by_c.consensus[0] > 0.9  # noise predicts nothing and is predicted by nothing
    expected = consensus_scores({k: p[shared] for k, p in enumerate(projected)}, folds=5, seed=0)
    assert by_c.consensus == pytest.approx([expected[k] for k in range(4)])
    # out-of-sample residuals to the anchor; the in-sample ones flatter (n = 16 < |S| = 100 here)
    assert by_c.cv_residuals[1] == 0.0
    for k in (0, 2, 3):
        cv = cross_fitted_residual(projected[k][shared], projected[1][shared], folds=5, seed=0, ridge=1e-3)
        assert by_c.cv_residuals[k] == pytest.approx(cv) and cv >= by_c.residuals[k] - 1e-9
    with pytest.raises(ValueError, match="anchor rule"):
        merge_targets(embedded, projected, n, shared, anchor_rule="median")


def test_procrustes_alignment_is_passed_through():
    data, embedded, projected, shared = _digits_round()
    merged = merge_targets(embedded, projected, len(data), shared, g_max_samples=100, alignment="procrustes")
    a = merged.anchor
    other = next(k for k in range(3) if k != a)
    fit = fit_alignment(projected[other][shared], projected[a][shared], method="procrustes")
    rows = merged.participant == other
    np.testing.assert_allclose(merged.targets[rows], fit.apply(projected[other][rows]), rtol=1e-6)
    assert merged.residuals[other] == pytest.approx(fit.residual) and merged.alignment == "procrustes"
    with pytest.raises(ValueError, match="alignment"):
        merge_targets(embedded, projected, len(data), shared, alignment="cca")


def test_standardize_removes_each_feature_dimension_scale_and_offset():
    rng = np.random.default_rng(2)
    feats = [rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10)) for _ in range(3)]
    scaled = [f * rng.uniform(0.01, 100.0, 10) + rng.uniform(-50, 50, 10) for f in feats]
    shared = np.arange(0, 300, 5)
    runs = []
    for fs in (feats, scaled):
        embedded = [_embedded(f"p{k}", f) for k, f in enumerate(fs)]
        runs.append(
            merge_targets(
                embedded, project_all(embedded, 8, 3), 300, shared, seed=3, g_max_samples=60, standardize=True
            )
        )
    assert runs[0].anchor == runs[1].anchor and runs[0].standardize
    np.testing.assert_allclose(runs[0].targets, runs[1].targets, rtol=1e-3, atol=1e-3)
    embedded = [_embedded(f"p{k}", f) for k, f in enumerate(scaled)]
    plain = merge_targets(embedded, project_all(embedded, 8, 3), 300, shared, seed=3, g_max_samples=60)
    assert not np.allclose(plain.targets, runs[1].targets, atol=1e-2)


def test_ridge_auto_is_chosen_on_the_shared_set_and_reported():
    data, embedded, projected, shared = _digits_round()
    auto = merge_targets(embedded, projected, len(data), shared, g_max_samples=100, ridge="auto")
    on_s = [p[shared] for p in projected]
    assert auto.ridge == select_ridge(on_s, folds=5, seed=0)[0]
    fixed = merge_targets(embedded, projected, len(data), shared, g_max_samples=100, ridge=auto.ridge)
    np.testing.assert_array_equal(auto.targets, fixed.targets)


@pytest.mark.parametrize("redundancy", [1, 2])
def test_gate_gives_no_share_of_d_to_participants_above_the_residual_bound(redundancy):
    data, embedded, projected, shared = _digits_round()
    free = merge_targets(embedded, projected, len(data), shared, g_max_samples=100)
    worst = int(np.argmax(free.cv_residuals))
    bound = (sorted(free.cv_residuals)[-1] + sorted(free.cv_residuals)[-2]) / 2
    gated = merge_targets(
        embedded,
        projected,
        len(data),
        shared,
        g_max_samples=100,
        redundancy=redundancy,
        shard_max_residual=bound,
    )
    assert gated.gated == [worst] and gated.cv_residuals == free.cv_residuals
    assert not np.any(gated.contributors == worst) and np.all(np.isfinite(gated.targets))
    assert np.all((gated.contributors >= 0).sum(axis=1) == min(redundancy, 2))
