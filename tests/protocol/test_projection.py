import numpy as np
import pytest

from coopt_flwr.protocol.projection import project, projection_matrix


def test_shape_dtype_and_seed_determinism():
    w = projection_matrix(1280, 64, seed=3)
    assert w.shape == (1280, 64) and w.dtype == np.float32
    np.testing.assert_array_equal(w, projection_matrix(1280, 64, seed=3))
    assert not np.allclose(w, projection_matrix(1280, 64, seed=4))


def test_different_widths_same_seed_are_not_prefixes():
    a = projection_matrix(512, 64, seed=0)
    b = projection_matrix(1280, 64, seed=0)
    assert not np.allclose(a, b[:512])


def test_norms_preserved_in_expectation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2048)).astype(np.float32)
    y = project(x, projection_matrix(2048, 512, seed=1))
    ratio = np.linalg.norm(y, axis=1) / np.linalg.norm(x, axis=1)
    assert abs(ratio.mean() - 1.0) < 0.05
    # JL: pairwise distances are kept within a modest distortion at n=512.
    d_in = np.linalg.norm(x[:50, None] - x[None, :50], axis=-1)
    d_out = np.linalg.norm(y[:50, None] - y[None, :50], axis=-1)
    off = ~np.eye(50, dtype=bool)
    assert np.max(np.abs(d_out[off] / d_in[off] - 1)) < 0.25


def test_bad_inputs():
    with pytest.raises(ValueError):
        projection_matrix(0, 4, seed=0)
    with pytest.raises(ValueError):
        project(np.zeros((3, 5)), projection_matrix(4, 2, seed=0))
