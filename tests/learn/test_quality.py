"""Target quality and rank statistics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from coopt_flwr.learn.quality import probe_split, rankdata, spearman, target_probe_accuracy


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=30).astype(float)
    y = x * 0.5 + rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_extremes_and_errors():
    x = np.array([0.1, 0.5, 0.2, 0.9])
    assert spearman(x, -3 * x) == pytest.approx(-1.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert np.isnan(spearman(x, np.ones(4)))
    with pytest.raises(ValueError, match="one length"):
        spearman(x, x[:3])
    with pytest.raises(ValueError, match="non-finite"):
        spearman(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_probe_split_is_seeded_disjoint_and_capped():
    a = probe_split(100, 0.2, seed=3)
    assert len(a.test) == 20 and len(a.train) == 80
    assert not np.intersect1d(a.train, a.test).size
    np.testing.assert_array_equal(np.union1d(a.train, a.test), np.arange(100))
    b = probe_split(100, 0.2, seed=3)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.test, probe_split(100, 0.2, seed=4).test)
    c = probe_split(100, 0.2, seed=3, max_train=10, max_test=5)
    assert len(c.train) == 10 and len(c.test) == 5 and set(c.test) <= set(a.test)


def test_target_probe_tells_informative_from_random_targets():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    centres = rng.normal(size=(4, 8)) * 3
    good = centres[labels] + rng.normal(size=(400, 8))
    noise = rng.normal(size=(400, 8))
    split = probe_split(400, 0.25, seed=0)
    assert target_probe_accuracy(good, labels, split) > 0.9
    assert target_probe_accuracy(noise, labels, split) < 0.45
    # unavailable rows (NaN targets of samples nobody delivered) are left out
    holes = good.copy()
    holes[::7] = np.nan
    available = np.isfinite(holes).all(axis=1)
    assert target_probe_accuracy(holes, labels, split, available) > 0.9
    with pytest.raises(ValueError, match="no samples"):
        target_probe_accuracy(good, labels, split, np.zeros(400, bool))


def test_statistics_import_without_torch():
    # The pure statistics must not pull in torch; only target_probe_accuracy imports it, lazily.
    code = "import sys, coopt_flwr.learn.quality; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
