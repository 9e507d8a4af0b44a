import numpy as np
import pytest

from coopt_flwr.protocol.alignment import Alignment, fit_alignment, relative_residual


def test_recovers_known_linear_map_exactly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 16))
    t_true = rng.standard_normal((16, 8))
    fit = fit_alignment(x, x @ t_true, ridge=0.0, fit_intercept=False)
    np.testing.assert_allclose(fit.matrix, t_true, atol=1e-10)
    assert fit.residual == pytest.approx(0.0, abs=1e-10)


def test_recovers_affine_map_with_intercept():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 6))
    t_true, b_true = rng.standard_normal((6, 6)), rng.standard_normal(6)
    fit = fit_alignment(x, x @ t_true + b_true, ridge=0.0)
    np.testing.assert_allclose(fit.matrix, t_true, atol=1e-10)
    np.testing.assert_allclose(fit.bias, b_true, atol=1e-10)
    np.testing.assert_allclose(fit.apply(x), (x @ t_true + b_true).astype(np.float32), atol=1e-5)


def test_ridge_is_well_posed_when_width_exceeds_shared_set():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 64)), rng.standard_normal((10, 64))
    fit = fit_alignment(x, y, ridge=1e-3)
    assert np.all(np.isfinite(fit.matrix))
    # n > |S|: the ridge solution interpolates the shared set almost exactly.
    assert fit.residual < 0.1


def test_ridge_shrinks_the_map():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 8))
    y = x @ rng.standard_normal((8, 8))
    small = fit_alignment(x, y, ridge=1e-6)
    large = fit_alignment(x, y, ridge=10.0)
    assert np.linalg.norm(large.matrix) < np.linalg.norm(small.matrix)
    assert large.residual > small.residual


def test_identity_and_residual_definition():
    ident = Alignment.identity(4)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(ident.apply(x), x)
    y = np.array([[0.0], [2.0]])
    assert relative_residual(np.array([[1.0], [1.0]]), y) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "x,y,kwargs",
    [
        (np.ones((5, 3)), np.ones((4, 3)), {}),
        (np.ones((1, 3)), np.ones((1, 3)), {}),
        (np.full((5, 3), np.inf), np.ones((5, 3)), {}),
        (np.ones((5, 3)), np.ones((5, 3)), {"ridge": -1.0}),
    ],
)
def test_errors(x, y, kwargs):
    with pytest.raises(ValueError):
        fit_alignment(x, y, **kwargs)
