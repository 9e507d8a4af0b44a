import numpy as np
import pytest

from coopt_flwr.protocol.alignment import (
    RIDGE_AUTO_FALLBACK,
    RIDGE_GRID,
    Alignment,
    Standardizer,
    cross_fitted_residual,
    fit_alignment,
    relative_residual,
    resolve_ridge,
    ridge_path_residuals,
    select_ridge,
)


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


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def test_default_method_is_ridge():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5))
    a, b = fit_alignment(x, y), fit_alignment(x, y, method="ridge")
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_procrustes_recovers_scaled_rotation_and_intercept():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6))
    rot, bias = _orthogonal(6, 6), rng.standard_normal(6)
    fit = fit_alignment(x, 2.5 * x @ rot + bias, method="procrustes")
    np.testing.assert_allclose(fit.matrix, 2.5 * rot, atol=1e-10)
    np.testing.assert_allclose(fit.bias, bias, atol=1e-10)
    assert fit.residual == pytest.approx(0.0, abs=1e-10)


def test_procrustes_is_the_optimum_of_its_definition():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((25, 5))
    y = x @ rng.standard_normal((5, 5)) + 0.3 * rng.standard_normal((25, 5)) + 1.0
    fit = fit_alignment(x, y, method="procrustes")
    s = np.linalg.norm(fit.matrix, 2)
    rot = fit.matrix / s
    np.testing.assert_allclose(rot.T @ rot, np.eye(5), atol=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)
    # Least-squares scale for the fitted rotation, and no random rotation does better.
    assert s == pytest.approx(np.trace(rot.T @ xc.T @ yc) / np.sum(xc**2))
    best = np.linalg.norm(xc @ fit.matrix - yc)
    for seed in range(20):
        other = _orthogonal(5, 100 + seed)
        scale = max(np.trace(other.T @ xc.T @ yc), 0.0) / np.sum(xc**2)
        assert best <= np.linalg.norm(xc @ (scale * other) - yc) + 1e-9
    unscaled = fit_alignment(x, y, method="procrustes", scale=False)
    np.testing.assert_allclose(unscaled.matrix, rot, atol=1e-10)


@pytest.mark.parametrize("kwargs", [{"method": "procrustes"}, {"method": "lasso"}])
def test_method_errors(kwargs):
    with pytest.raises(ValueError):
        fit_alignment(np.ones((5, 3)), np.ones((5, 4)), **kwargs)


def test_standardizer_round_trip_and_constant_dimension():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 4)) * [1.0, 10.0, 0.1, 1.0] + [0.0, 5.0, -3.0, 0.0]
    x[:, 3] = 0.7
    st = Standardizer.fit(x)
    z = st.apply(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), [1.0, 1.0, 1.0, 0.0], atol=1e-12)
    assert st.scale[3] == 1.0
    np.testing.assert_allclose(st.invert(z), x, atol=1e-12)
    with pytest.raises(ValueError):
        st.apply(np.ones((3, 5)))
    with pytest.raises(ValueError):
        Standardizer.fit(np.ones(4))


def _manual_cross_fit(x, y, folds, seed, **kw):
    parts = np.array_split(np.random.default_rng(seed).permutation(len(x)), folds)
    pred = np.empty_like(y)
    for held in parts:
        train = np.setdiff1d(np.arange(len(x)), held)
        fit = fit_alignment(x[train], y[train], **kw)
        pred[held] = x[held] @ fit.matrix + fit.bias
    return np.linalg.norm(pred - y) / np.linalg.norm(y - y.mean(0))


@pytest.mark.parametrize("kw", [{}, {"ridge": 0.1}, {"method": "procrustes"}])
def test_cross_fitted_residual_matches_definition(kw):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((37, 6))
    y = x @ rng.standard_normal((6, 6)) + 0.5 * rng.standard_normal((37, 6))
    got = cross_fitted_residual(x, y, folds=4, seed=3, **kw)
    assert got == pytest.approx(_manual_cross_fit(x, y, 4, 3, **kw), rel=1e-12)


def test_cross_fitting_exposes_overfitting_that_in_sample_hides():
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((40, 128)), rng.standard_normal((40, 8))
    assert fit_alignment(x, y).residual < 0.1
    assert cross_fitted_residual(x, y) > 0.9
    signal = rng.standard_normal((40, 8))
    assert cross_fitted_residual(signal, signal @ rng.standard_normal((8, 8)) + 3.0) < 1e-2


@pytest.mark.parametrize("rows,folds", [(10, 1), (10, 11), (3, 2)])
def test_cross_fit_fold_errors(rows, folds):
    # One fold holds nothing out; more folds than rows; a training part of 1 row.
    x = np.random.default_rng(0).standard_normal((rows, 2))
    with pytest.raises(ValueError):
        cross_fitted_residual(x, x, folds=folds)


def test_ridge_path_is_the_cross_fitted_residual_of_every_strength():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 24))
    y = x[:, :10] @ rng.standard_normal((10, 12)) + 0.5 * rng.standard_normal((60, 12)) + 3.0
    grid = [0.01, 0.3, 1.0, 30.0]
    path = ridge_path_residuals(x, y, grid, folds=4, seed=3)
    want = [cross_fitted_residual(x, y, folds=4, seed=3, ridge=r) for r in grid]
    np.testing.assert_allclose(path, want, rtol=1e-8)


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0], [float("nan")]])
def test_ridge_path_refuses_strengths_that_are_not_positive(bad):
    x = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match="strengths > 0"):
        ridge_path_residuals(x, x, bad)


def test_select_ridge_is_weak_for_an_exact_map_and_strong_for_unrelated_targets():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 8))
    related = [base @ rng.standard_normal((8, 8)) for _ in range(3)]  # exact linear maps of each other
    ridge, scores = select_ridge(related, folds=5, seed=0)
    assert ridge == min(RIDGE_GRID) and scores.shape == (len(RIDGE_GRID),)
    # n = 64 wide noise on |S| = 80: any fit over-fits, the strongest ridge predicts the mean best
    unrelated = [rng.standard_normal((80, 64)) for _ in range(3)]
    ridge, scores = select_ridge(unrelated, folds=5, seed=0)
    assert ridge == max(RIDGE_GRID) and scores[-1] == scores.min()


def test_select_ridge_scores_a_seeded_sample_of_pairs_when_there_are_many():
    rng = np.random.default_rng(2)
    shared = [rng.standard_normal((30, 4)) for _ in range(6)]  # 30 ordered pairs
    a = select_ridge(shared, seed=5, max_pairs=4)
    b = select_ridge(shared, seed=5, max_pairs=4)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="at least 2 participants"):
        select_ridge(shared[:1])


def test_resolve_ridge_keeps_a_fixed_strength_and_falls_back_where_nothing_can_be_cross_fitted():
    rng = np.random.default_rng(3)
    two = [rng.standard_normal((40, 5)), rng.standard_normal((40, 5))]
    assert resolve_ridge(0.25, two) == 0.25
    assert resolve_ridge(None, two) == select_ridge(two, folds=5, seed=0)[0]
    assert resolve_ridge(None, two[:1]) == RIDGE_AUTO_FALLBACK
    assert resolve_ridge(None, [a[:2] for a in two]) == RIDGE_AUTO_FALLBACK  # |S| = 2: no folds
