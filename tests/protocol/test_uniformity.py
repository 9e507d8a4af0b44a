import numpy as np
import pytest

from coopt_flwr.protocol.uniformity import normalize_rows, uniformity


def _definition(x, t=2.0):
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    vals = [np.exp(-t * np.sum((f[i] - f[j]) ** 2)) for i in range(len(f)) for j in range(len(f)) if i != j]
    return np.log(np.mean(vals))


def test_matches_definition_on_random_features():
    x = np.random.default_rng(0).standard_normal((30, 7))
    assert uniformity(x) == pytest.approx(_definition(x), rel=1e-10)
    assert uniformity(x, t=0.5) == pytest.approx(_definition(x, t=0.5), rel=1e-10)


def test_collapsed_features_have_uniformity_zero():
    x = np.tile([[3.0, 4.0]], (10, 1)) * np.arange(1, 11)[:, None]  # one direction, any scale
    assert uniformity(x) == pytest.approx(0.0, abs=1e-12)


def test_antipodal_pair_known_value():
    # ‖f1 − f2‖² = 4, so V = −2 · 4 = −8 for t = 2.
    assert uniformity(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-8.0)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_bounds_are_minus_4t_and_0_and_tight(t):
    # ‖f_i − f_j‖² ≤ 4 on the unit sphere, so −4t ≤ V ≤ 0; an antipodal pair reaches −4t.
    rng = np.random.default_rng(4)
    for x in (rng.standard_normal((50, 3)), rng.standard_normal((3, 1)), np.vstack([np.eye(4), -np.eye(4)])):
        assert -4 * t < uniformity(x, t=t) <= 0.0
    assert uniformity(np.array([[0.0, 3.0], [0.0, -0.5]]), t=t) == pytest.approx(-4 * t, rel=1e-12)


def test_orthonormal_simplex_known_value():
    # d orthonormal vectors: every pair at squared distance 2, V = −2t = −4.
    assert uniformity(np.eye(6)) == pytest.approx(-4.0)


def test_spread_beats_clustered():
    rng = np.random.default_rng(1)
    spread = rng.standard_normal((100, 16))
    clustered = np.ones((100, 16)) + 0.05 * rng.standard_normal((100, 16))
    assert uniformity(spread) < uniformity(clustered)


def test_invariant_to_row_scale():
    x = np.random.default_rng(2).standard_normal((20, 5))
    scales = np.random.default_rng(3).uniform(0.1, 10, size=(20, 1))
    assert uniformity(x * scales) == pytest.approx(uniformity(x))


def test_errors():
    with pytest.raises(ValueError):
        uniformity(np.ones((1, 3)))
    with pytest.raises(ValueError):
        uniformity(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_normalize_rows_keeps_zero_rows():
    out = normalize_rows(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(out, [[0, 0], [0.6, 0.8]])
