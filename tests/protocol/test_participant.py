"""The participant's protocol steps with a tiny linear prior (no network weights needed)."""

from __future__ import annotations

import numpy as np
import pytest

from coopt_flwr.protocol.alignment import Standardizer, fit_alignment
from coopt_flwr.protocol.participant import (
    FeatureCache,
    aligned_upload,
    check_shard_ids,
    embed_ids,
    prior_targets,
    shared_set,
    uniformity_report,
)
from coopt_flwr.protocol.projection import project, projection_matrix
from coopt_flwr.protocol.uniformity import uniformity
from coopt_flwr.registry.datasets import ImageData


class LinearPrior:
    """ψ(x) = flatten(x) @ M: a deterministic prior that counts its calls."""

    kind = "random"

    def __init__(self, in_dim: int, feature_dim: int, seed: int):
        self.spec = f"linear-{seed}"
        self.feature_dim = feature_dim
        self.m = np.random.default_rng(seed).standard_normal((in_dim, feature_dim)).astype(np.float32)
        self.calls = 0

    def embed(self, images, labels=None):
        self.calls += len(images)
        return images.reshape(len(images), -1).astype(np.float32) @ self.m


def _upload(prior, data, shard, shared, anchor, *, is_anchor=False, target_dim=16, seed=0, ridge=1e-3, **kw):
    """``aligned_upload`` of ``prior`` with an empty feature cache (``kw``: method, standardize)."""
    return aligned_upload(
        prior,
        data,
        shard,
        shared,
        anchor,
        is_anchor=is_anchor,
        target_dim=target_dim,
        seed=seed,
        ridge=ridge,
        cache=FeatureCache(prior.spec),
        **kw,
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 4, 4, 3), dtype=np.uint8)
    return ImageData(name="toy", images=images, labels=np.arange(60) % 3, num_classes=3)


def test_embed_uses_the_cache(data):
    prior, cache = LinearPrior(48, 8, 0), FeatureCache(prior="linear-0")
    a, cached = embed_ids(prior, data, np.array([5, 1, 9]), cache)
    assert cached == 0 and prior.calls == 3
    b, cached = embed_ids(prior, data, np.array([9, 2, 5]), cache)
    assert cached == 2 and prior.calls == 4
    np.testing.assert_allclose(b[0], a[2])
    np.testing.assert_allclose(b[2], a[0])
    np.testing.assert_allclose(b[1], prior.embed(data.batch(np.array([2])))[0])


def test_uniformity_report_is_the_projection_of_the_features(data):
    prior, shared = LinearPrior(48, 8, 1), np.arange(0, 60, 3)
    rep = uniformity_report(prior, data, shared, target_dim=16, seed=5, cache=FeatureCache("x"))
    feats = prior.embed(data.batch(shared))
    np.testing.assert_allclose(rep.shared_targets, project(feats, projection_matrix(8, 16, 5)), rtol=1e-5)
    assert rep.uniformity == pytest.approx(uniformity(feats))
    assert rep.feature_dim == 8


def test_alignment_maps_a_linear_prior_onto_the_anchor():
    # Two invertible linear priors of the same pixels, projected without loss (n = l = 12):
    # the anchor's targets are an exact linear map of the other's, so alignment fitted on S
    # (|S| = 100 > n) is exact on the whole shard too.
    rng = np.random.default_rng(1)
    data = ImageData(
        name="px", images=rng.integers(0, 256, (200, 2, 2, 3), dtype=np.uint8), labels=None, num_classes=None
    )
    shared, shard = np.arange(0, 200, 2), np.arange(1, 200, 2)
    anchor_prior, other = LinearPrior(12, 12, 2), LinearPrior(12, 12, 3)
    anchor_rep = uniformity_report(anchor_prior, data, shared, 12, 7, FeatureCache("a"))
    up = _upload(other, data, shard, shared, anchor_rep.shared_targets, target_dim=12, seed=7, ridge=0.0)
    truth = project(anchor_prior.embed(data.batch(shard)), projection_matrix(12, 12, 7))
    np.testing.assert_allclose(up.targets, truth, atol=1e-3 * np.abs(truth).max())
    assert up.residual < 1e-4
    np.testing.assert_array_equal(up.ids, shard)


def test_anchor_uploads_its_projection_unchanged(data):
    prior, shared, shard = LinearPrior(48, 8, 4), np.arange(10), np.arange(10, 60)
    rep = uniformity_report(prior, data, shared, 16, 1, FeatureCache("a"))
    up = _upload(prior, data, shard, shared, rep.shared_targets, is_anchor=True, seed=1)
    np.testing.assert_allclose(
        up.targets, project(prior.embed(data.batch(shard)), projection_matrix(8, 16, 1)), rtol=1e-5
    )
    assert up.residual == 0.0


def test_wrong_anchor_shape_is_refused(data):
    with pytest.raises(ValueError, match="anchor targets"):
        _upload(LinearPrior(48, 8, 0), data, np.arange(5), np.arange(5, 10), np.zeros((4, 16)))


def test_shard_ids_must_index_the_nodes_data():
    check_shard_ids(np.arange(0), 0)
    check_shard_ids(np.array([0, 9]), 10)
    for bad in ([-1, 3], [3, 10]):
        with pytest.raises(ValueError, match="outside this node's 10 samples"):
            check_shard_ids(np.array(bad), 10)


def test_shared_set_counts_classes_only_with_labels():
    images = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    assert shared_set(images, np.array([0, 4, 1])).num_classes == 5
    assert shared_set(images, None).num_classes is None


def test_standardized_targets_zscore_the_features_with_the_shared_sets_statistics(data):
    prior, shared, shard = LinearPrior(48, 8, 6), np.arange(0, 60, 3), np.arange(1, 60, 3)
    rep = uniformity_report(prior, data, shared, 16, 2, FeatureCache("s"), standardize=True)
    feats, w = prior.embed(data.batch(shared)), projection_matrix(8, 16, 2)
    z = Standardizer.fit(feats).apply(feats)
    np.testing.assert_allclose(rep.shared_targets, project(z, w), rtol=1e-4, atol=1e-5)
    assert rep.uniformity == pytest.approx(uniformity(feats))  # V of the raw features, as before
    # the anchor's upload is its standardized targets; the shard uses S's statistics too
    up = _upload(prior, data, shard, shared, rep.shared_targets, is_anchor=True, seed=2, standardize=True)
    np.testing.assert_array_equal(up.shared_aligned, rep.shared_targets)
    shard_feats = prior.embed(data.batch(shard))
    np.testing.assert_allclose(up.targets, prior_targets(shard_feats, feats, w, True), rtol=1e-5)
    plain = uniformity_report(prior, data, shared, 16, 2, FeatureCache("s"))
    assert not np.allclose(plain.shared_targets, rep.shared_targets)


def test_procrustes_alignment_is_a_scaled_rotation_fitted_on_s(data):
    anchor_prior, other = LinearPrior(48, 8, 7), LinearPrior(48, 8, 8)
    shared, shard = np.arange(0, 60, 2), np.arange(1, 60, 2)
    anchor = uniformity_report(anchor_prior, data, shared, 16, 3, FeatureCache("a")).shared_targets
    mine = uniformity_report(other, data, shared, 16, 3, FeatureCache("b")).shared_targets
    up = _upload(other, data, shard, shared, anchor, seed=3, method="procrustes")
    fit = fit_alignment(mine, anchor, method="procrustes")
    np.testing.assert_allclose(up.shared_aligned, fit.apply(mine), rtol=1e-4, atol=1e-4)
    assert up.residual == pytest.approx(fit.residual)
    gram = fit.matrix.T @ fit.matrix  # s² I
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(16), atol=1e-8 * gram[0, 0] + 1e-12)
    ridge = _upload(other, data, shard, shared, anchor, seed=3)
    assert up.residual > ridge.residual  # the rotation cannot fit S as closely as the free map
