"""Target-guided pruning: each method against its definition on small synthetic targets, and the
kept-ids files."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from coopt_flwr.learn.pruning import (
    UnknownMethodError,
    kept_count,
    list_methods,
    load_kept_ids,
    method_options,
    prototype_scores,
    save_kept_ids,
    select,
    target_space,
    zcore_scores,
)

METHODS = ["random", "kcenter", "zcore", "prototype"]


def _gaussian(n: int = 60, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _clusters(
    k: int, per: int, dim: int = 16, noise: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight clusters around orthogonal directions; (targets (k * per, dim), cluster of each row)."""
    rng = np.random.default_rng(seed)
    centers = np.eye(dim, dtype=np.float32)[:k] * 3.0
    labels = np.repeat(np.arange(k), per)
    x = centers[labels] + noise * rng.standard_normal((k * per, dim)).astype(np.float32)
    return x, labels


def _covering_radius(space: np.ndarray, rows: np.ndarray) -> float:
    d = np.linalg.norm(space[:, None, :] - space[None, rows, :], axis=2)
    return float(d.min(axis=1).max())


# ---------------------------------------------------------------------------- the contract
def test_the_methods_are_registered() -> None:
    assert set(METHODS) <= set(list_methods())
    assert method_options("random") == {}
    assert method_options("kcenter") == {"dim": 64}
    assert method_options("prototype")["keep"] == "auto"
    assert {"dim", "samples", "sample_dim", "redundancy_nn", "redundancy_exp"} <= set(method_options("zcore"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.7, 0.99, 1.0])
def test_each_method_keeps_round_p_n_sorted_unique_rows(method: str, fraction: float) -> None:
    targets = _gaussian(60)
    rows = select(targets, fraction, method, seed=3)
    assert rows.dtype == np.int64 and rows.ndim == 1
    assert len(rows) == max(1, math.floor(fraction * 60 + 0.5))
    assert np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < 60


def test_kept_count_rounds_half_up_and_keeps_at_least_one() -> None:
    assert kept_count(10, 0.25) == 3 and kept_count(10, 0.3) == 3 and kept_count(10, 0.15) == 2
    assert kept_count(10, 0.01) == 1 and kept_count(10, 1.0) == 10 and kept_count(1, 0.5) == 1
    assert kept_count(50_000, 0.5) == 25_000


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_deterministic_per_seed(method: str) -> None:
    targets = _gaussian(80)
    assert np.array_equal(select(targets, 0.3, method, seed=5), select(targets.copy(), 0.3, method, seed=5))


def test_random_differs_across_seeds() -> None:
    targets = _gaussian(200)
    picks = {tuple(select(targets, 0.2, "random", seed=s)) for s in range(5)}
    assert len(picks) == 5


def test_p_one_keeps_everything_whatever_the_method() -> None:
    for method in METHODS:
        assert np.array_equal(select(_gaussian(7), 1.0, method), np.arange(7))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, 2, float("nan"), True, "0.5"])
def test_a_fraction_outside_zero_one_is_refused(fraction: object) -> None:
    with pytest.raises(ValueError, match="fraction"):
        select(_gaussian(10), fraction, "random")  # type: ignore[arg-type]


def test_an_unknown_method_names_the_registered_ones() -> None:
    with pytest.raises(UnknownMethodError, match="unknown pruning method 'kcentre'") as err:
        select(_gaussian(10), 0.5, "kcentre")
    assert "did you mean kcenter" in str(err.value)
    assert all(m in str(err.value) for m in METHODS)
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)


def test_an_unknown_option_names_the_method_s_options() -> None:
    with pytest.raises(
        ValueError, match=re.escape("'kcenter' has no option(s) ['keep']; its options: ['dim']")
    ):
        select(_gaussian(10), 0.5, "kcenter", keep="hard")
    with pytest.raises(ValueError, match="give a bare name"):
        select(_gaussian(10), 0.5, "kcenter?dim=4")


@pytest.mark.parametrize(
    "targets", [np.zeros(5), np.zeros((0, 3)), np.array([[1.0, np.nan]]), np.array([["a", "b"]])]
)
def test_malformed_targets_are_refused(targets: np.ndarray) -> None:
    with pytest.raises(ValueError, match="targets"):
        select(targets, 0.5, "kcenter")


# ---------------------------------------------------------------------------- the target space
def test_target_space_is_centered_and_normalized_and_pca_keeps_distances_in_its_span() -> None:
    targets = _gaussian(100, 6) + 5.0
    x = target_space(targets)
    assert x.dtype == np.float32 and x.shape == (100, 6)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # Centering before normalizing: the common offset of 5 is gone.
    assert abs(float(np.mean(x @ x.T))) < 0.1
    # Projecting onto all 6 principal axes is a rotation: distances are kept.
    low = target_space(np.concatenate([targets, np.zeros((100, 4), np.float32)], axis=1), dim=6)
    d_full = np.linalg.norm(x[:, None] - x[None], axis=2)
    d_low = np.linalg.norm(low[:, None] - low[None], axis=2)
    assert low.shape == (100, 6) and np.allclose(d_full, d_low, atol=1e-4)
    assert target_space(targets, dim=64).shape == (100, 6)  # dim >= n keeps the width
    renorm = target_space(targets, dim=3, renormalize=True)
    assert np.allclose(np.linalg.norm(renorm, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------- k-center
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_picks_one_row_from_each_well_separated_cluster(seed: int) -> None:
    targets, cluster = _clusters(k=5, per=20, seed=seed)
    rows = select(targets, 5 / 100, "kcenter", seed=seed)
    assert sorted(cluster[rows]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(5))
def test_kcenter_covers_no_worse_than_random(seed: int) -> None:
    targets = _gaussian(200, 8, seed=seed)
    space = target_space(targets)  # kcenter's default width 64 > 8: the same space
    greedy = _covering_radius(space, select(targets, 0.1, "kcenter", seed=seed))
    rand = _covering_radius(space, select(targets, 0.1, "random", seed=seed))
    assert greedy <= rand


def test_kcenter_in_a_pca_space_still_covers_the_clusters() -> None:
    targets, cluster = _clusters(k=6, per=15, dim=40)
    rows = select(targets, 6 / 90, "kcenter", dim=8)
    assert sorted(cluster[rows]) == list(range(6))


# ---------------------------------------------------------------------------- prototypes
def _with_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 tight clusters of 30 rows (directions e0..e3) and 2 atypical rows in each (tilted ~27°
    towards e4..e7, still nearest their own cluster); (targets (128, 8), is-outlier mask)."""
    rng = np.random.default_rng(seed)
    eye = np.eye(8, dtype=np.float32)
    rows, outlier = [], []
    for c in range(4):
        core = eye[c] + 0.02 * rng.standard_normal((30, 8)).astype(np.float32)
        odd = np.stack([eye[c] + 0.5 * eye[4 + c], eye[c] - 0.5 * eye[4 + (c + 1) % 4]])
        rows += [core, odd]
        outlier += [False] * 30 + [True] * 2
    return np.concatenate(rows), np.asarray(outlier)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prototype_hard_keeps_the_rows_far_from_their_centroid(seed: int) -> None:
    targets, outlier = _with_outliers(seed)
    rows = select(targets, 8 / 128, "prototype", seed=seed, clusters=4, keep="hard")
    assert set(rows) == set(np.flatnonzero(outlier))
    difficulty = prototype_scores(targets, seed=seed, clusters=4)
    assert difficulty[outlier].min() > difficulty[~outlier].max()


def test_prototype_easy_and_auto_follow_the_stated_rule() -> None:
    targets, outlier = _with_outliers()
    easy = select(targets, 0.25, "prototype", clusters=4, keep="easy")
    assert not outlier[easy].any()
    # auto: easy below the threshold (0.5), hard from it on.
    assert np.array_equal(select(targets, 0.25, "prototype", clusters=4), easy)
    hard_half = select(targets, 0.5, "prototype", clusters=4)
    assert np.array_equal(hard_half, select(targets, 0.5, "prototype", clusters=4, keep="hard"))
    assert outlier[hard_half].sum() == 8
    assert np.array_equal(
        select(targets, 0.25, "prototype", clusters=4, threshold=0.2),
        select(targets, 0.25, "prototype", clusters=4, keep="hard"),
    )
    with pytest.raises(ValueError, match="keep must be one of"):
        select(targets, 0.25, "prototype", keep="middle")


def test_prototype_balanced_keeps_each_cluster_s_share() -> None:
    targets, _ = _with_outliers()
    cluster = np.repeat(np.arange(4), 32)
    for keep in ("easy", "hard"):
        rows = select(targets, 0.25, "prototype", clusters=4, keep=keep, balanced=True)
        assert np.bincount(cluster[rows], minlength=4).tolist() == [8, 8, 8, 8]
    # Unequal clusters: shares in proportion to the sizes, summing to round(p * N).
    lopsided = np.concatenate([targets[:32], targets[32:48]])  # 32 rows of cluster 0, 16 of cluster 1
    rows = select(lopsided, 0.5, "prototype", clusters=2, keep="easy", balanced=True)
    assert np.bincount(np.repeat([0, 1], [32, 16])[rows]).tolist() == [16, 8]


def test_prototype_moderate_keeps_the_rows_nearest_the_median_difficulty() -> None:
    targets, outlier = _with_outliers()
    difficulty = prototype_scores(targets, clusters=4)
    rows = select(targets, 0.25, "prototype", clusters=4, keep="moderate")
    gap = np.abs(difficulty - np.median(difficulty))
    # Definition: no dropped row is strictly nearer the median than a kept one.
    dropped = np.setdiff1d(np.arange(len(targets)), rows)
    assert gap[rows].max() <= gap[dropped].min() + 1e-12
    assert not outlier[rows].any()  # the atypical extreme is dropped ...
    easy = select(targets, 0.25, "prototype", clusters=4, keep="easy")
    assert not np.array_equal(np.sort(rows), np.sort(easy))  # ... and so is the typical one
    # Balanced: the median of each cluster, each keeping its share.
    cluster = np.repeat(np.arange(4), 32)
    rows = select(targets, 0.25, "prototype", clusters=4, keep="moderate", balanced=True)
    assert np.bincount(cluster[rows], minlength=4).tolist() == [8, 8, 8, 8]


# ---------------------------------------------------------------------------- zcore
def test_zcore_keeps_at_most_one_of_two_identical_or_near_identical_rows() -> None:
    base = _gaussian(200, 8)
    near = base[1] + 1e-3 * np.random.default_rng(9).standard_normal(8).astype(np.float32)
    targets = np.concatenate([base, base[:1], near[None]])  # row 200 = row 0; row 201 ≈ row 1
    for seed in range(3):
        rows = set(select(targets, 0.1, "zcore", seed=seed).tolist())
        assert not {0, 200} <= rows and not {1, 201} <= rows
    scores = zcore_scores(targets)
    assert scores[200] == -np.inf and np.isfinite(np.delete(scores, 200)).all()


def test_zcore_prefers_spread_rows_to_crowds() -> None:
    # Two crowds of 50 rows at opposite directions (opposite, so that centering keeps them
    # crowds), 10 rows spread over others: coverage of the distribution favours the spread
    # rows, and the redundancy penalty pushes the crowds down.
    rng = np.random.default_rng(0)
    sides = np.repeat([1.0, -1.0], 50)[:, None].astype(np.float32)
    crowd = sides * np.eye(8, dtype=np.float32)[0] + 0.05 * rng.standard_normal((100, 8)).astype(np.float32)
    spread = rng.standard_normal((10, 8)).astype(np.float32)
    targets = np.concatenate([crowd, spread])
    rows = select(targets, 10 / 110, "zcore")
    assert (rows >= 100).sum() >= 7


def test_zcore_options_are_checked() -> None:
    with pytest.raises(ValueError, match="sample_dim"):
        select(_gaussian(20), 0.5, "zcore", sample_dim=20)
    with pytest.raises(ValueError, match="samples"):
        select(_gaussian(20), 0.5, "zcore", samples=0)


# ---------------------------------------------------------------------------- kept-ids files
def test_kept_ids_round_trip(tmp_path) -> None:
    path = save_kept_ids(
        tmp_path / "k.json",
        np.array([9, 3, 120]),
        method="kcenter",
        fraction=0.5,
        seed=2,
        num_total=6,
        source="run/optimized.safetensors",
        options={"dim": 32},
    )
    data = json.loads(path.read_text())
    assert data == {
        "ids": [3, 9, 120],
        "method": "kcenter",
        "fraction": 0.5,
        "seed": 2,
        "num_total": 6,
        "source": "run/optimized.safetensors",
        "options": {"dim": 32},
    }
    ids = load_kept_ids(str(path))
    assert ids.dtype == np.int64 and ids.tolist() == [3, 9, 120]
    save_kept_ids(tmp_path / "s.json", np.array([1]), method="random", fraction=0.1, seed=0, num_total=10)
    assert json.loads((tmp_path / "s.json").read_text())["source"] is None


def test_load_kept_ids_sorts_and_accepts_extra_keys(tmp_path) -> None:
    (tmp_path / "k.json").write_text(json.dumps({"ids": [5, 1, 3], "note": "by hand"}))
    assert load_kept_ids(tmp_path / "k.json").tolist() == [1, 3, 5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"method": "random"}), "has no 'ids' list"),
        (json.dumps([1, 2, 3]), "has no 'ids' list"),
        (json.dumps({"ids": "1,2"}), "has no 'ids' list"),
        (json.dumps({"ids": []}), "'ids' is empty"),
        (json.dumps({"ids": [1, -2, 3]}), "negative id -2"),
        (json.dumps({"ids": [4, 1, 4]}), "id 4 appears more than once"),
        (json.dumps({"ids": [1, 2.5]}), "ids must be integers, found 2.5"),
        (json.dumps({"ids": [1, True]}), "ids must be integers, found True"),
    ],
)
def test_load_kept_ids_errors_are_one_line(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        load_kept_ids(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_load_kept_ids_of_a_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no kept-ids file at"):
        load_kept_ids(tmp_path / "nowhere.json")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (np.array([1, 1]), "appears more than once"),
        (np.array([-1, 2]), "negative id"),
        (np.array([0.5]), "integer"),
        (np.array([], dtype=np.int64), "non-empty"),
        (np.arange(5), "num_total is 4"),
    ],
)
def test_save_kept_ids_refuses_bad_ids(tmp_path, ids: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        save_kept_ids(tmp_path / "k.json", ids, method="random", fraction=0.5, seed=0, num_total=4)
    assert not (tmp_path / "k.json").exists()
