"""Target-guided pruning: keep a fraction p of the data set D, chosen from its merged targets alone.

The optimized data set holds, for every sample of D, a target made from the best priors the
federation had. These targets are a label-free description of each image, so they can choose
*which* images are worth training on. :func:`select` returns the rows to keep; no labels, no
images and no training are involved::

    from coopt_flwr.learn.pruning import select, save_kept_ids
    from coopt_flwr.store.storage import load_optimized

    opt = load_optimized("outputs/run")                      # ids (N,), targets (N, n)
    rows = select(opt["targets"], 0.5, "kcenter", seed=0)    # sorted row indices
    save_kept_ids("kept.json", opt["ids"][rows], method="kcenter", fraction=0.5, seed=0,
                  num_total=len(opt["ids"]))

The target space
    Every method but ``random`` works in the geometry the student is trained in: its loss is
    ``1 - cos`` to the *centered* targets (:func:`coopt_flwr.learn.student.center_targets`), so
    the targets are centered (the data set's mean removed), L2-normalized and, where a method
    has a ``dim`` option, projected onto their ``dim`` leading principal components
    (:func:`target_space`; PCA is deterministic, no seed involved).

Methods (the registry: :func:`list_methods`; options with :func:`method_options`). Times are
for p = 0.5 of 50,000 x 512 Gaussian targets on the 2-core development machine.
    ``random``
        A seeded uniform draw without replacement: the baseline (0.1 s).
    ``kcenter``
        Greedy farthest-first k-center (Gonzalez 1985; the coreset of Sener & Savarese 2018):
        start from a seeded random row, then repeatedly add the row farthest (Euclidean) from
        everything chosen so far. A 2-approximation of the smallest covering radius. Option
        ``dim`` (default 64): the PCA width it runs in, one O(N * dim) pass per pick (45 s for
        25,000 centers; 22 s at ``dim=32``). On CIFAR-10 targets of the cpu benchmark (512-d),
        64 components hold 83 % of the normalized targets' variance and their pairwise
        distances correlate at 0.985 with the full width's (32: 73 %, 0.962).
    ``zcore``
        Zero-shot coreset scores in the spirit of ZCore (Griffin et al. 2024): a Monte Carlo
        estimate of how much of the target distribution each sample covers, minus a penalty
        for near neighbours of the samples that cover (:func:`zcore_scores` says exactly what
        is computed); the rows with the highest scores are kept. 10**6 probes in 2-D
        subspaces of a 32-d PCA space: 16 s.
    ``prototype``
        The self-supervised prototype metric of Sorscher et al. 2022 ("Beyond neural scaling
        laws"): seeded spherical k-means (100 clusters) on the normalized targets, difficulty
        = cosine distance to the nearest centroid. ``keep="hard"`` keeps the most distant
        (atypical) samples, ``"easy"`` the closest (prototypical) ones, ``"moderate"`` those
        closest to the median distance (Moderate-DS, Xia et al. 2023), and ``"auto"`` (the
        default) hard when ``p >= threshold`` (default 0.5) and easy below: keep hard examples
        when data is plentiful, easy ones when it is scarce (their theory and ImageNet
        results). ``balanced=True`` applies the rule inside each cluster, every cluster keeping
        its share of the kept rows. 16 s (50 k-means iterations at the full width).

Every method is deterministic for a given seed (``kcenter`` and ``zcore`` through their seeded
start / draws, ``prototype`` through the seeded k-means++ initialization); the number of rows
kept is always :func:`kept_count` (``round(p * N)``, half up, at least 1), and ``p = 1`` keeps
every row without running a method. Kept ids travel as a small JSON file
(:func:`save_kept_ids` / :func:`load_kept_ids`) holding *data-set ids* (the optimized set's
``ids`` column), not row indices.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flwr.registry.registry import Registry, UnknownNameError
from coopt_flwr.registry.spec import parse_spec
from coopt_flwr.store.storage import write_json

__all__ = [
    "KEEP_RULES",
    "UnknownMethodError",
    "kcenter_select",
    "kept_count",
    "list_methods",
    "load_kept_ids",
    "method_options",
    "prototype_scores",
    "prototype_select",
    "random_select",
    "register_method",
    "save_kept_ids",
    "select",
    "spherical_kmeans",
    "target_space",
    "zcore_scores",
    "zcore_select",
]

KEEP_RULES = ("auto", "hard", "easy", "moderate")
"""``prototype``'s ``keep`` option."""

SelectFn = Callable[..., np.ndarray]
"""``fn(targets, k, *, seed, progress, **options) -> k distinct row indices``."""

_RESERVED = ("seed", "progress")
_EPS = 1e-12


class UnknownMethodError(UnknownNameError):
    """Raised by :func:`select` for a pruning method that is not registered."""


# A method "factory" is the selection function itself; nothing is worth caching.
_METHODS: Registry[np.ndarray] = Registry("pruning method", error=UnknownMethodError, cache_size=0)


def register_method(name: str) -> Callable[[SelectFn], SelectFn]:
    """Decorator registering ``fn(targets, k, *, seed, progress, **options)`` under ``name``.

    ``fn`` receives float32 targets (N, n) and the number ``k`` of rows to keep
    (1 <= k < N) and returns ``k`` distinct row indices in any order; its keyword-only
    parameters other than ``seed`` and ``progress`` are its options.
    """
    return _METHODS.register(name)


def list_methods() -> list[str]:
    """The registered pruning methods, sorted."""
    return _METHODS.names()


def _method(name: str) -> SelectFn:
    spec = parse_spec(name)
    if spec.arg is not None or spec.options:
        raise ValueError(f"pruning method {name!r}: give a bare name, and options as keyword arguments")
    return _METHODS.factory(spec)


def method_options(name: str) -> dict[str, Any]:
    """A method's options and their defaults, e.g. ``{"dim": 64}`` for ``kcenter``.

    Raises
    ------
    UnknownMethodError
        For a name that is not registered (naming the registered ones).
    """
    params = inspect.signature(_method(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RESERVED
    }


# ---------------------------------------------------------------------------- selection
def kept_count(num_total: int, fraction: float) -> int:
    """How many of ``num_total`` rows a fraction keeps: ``round(p * N)`` half up, at least 1.

    Raises
    ------
    ValueError
        For ``fraction`` outside (0, 1] (or not a real number), or ``num_total < 1``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    p = float(fraction)
    if not (0.0 < p <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if int(num_total) < 1:
        raise ValueError(f"nothing to select from: {num_total} rows")
    # 1e-9 absorbs float error in p * N (0.3 * 10 = 3.0000000000000004 must give 3, 0.15 * 10 gives 2).
    return int(min(num_total, max(1, math.floor(p * num_total + 0.5 + 1e-9))))


def _checked_targets(targets: np.ndarray) -> np.ndarray:
    x = np.asarray(targets)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"targets must have shape (N, n) with N, n >= 1, got {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"targets must be numeric, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("targets hold NaN or infinite values")
    return x


def select(
    targets: np.ndarray,
    fraction: float,
    method: str = "random",
    seed: int = 0,
    *,
    progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """Choose ``round(p * N)`` rows of the merged targets, without labels.

    Parameters
    ----------
    targets : np.ndarray
        float (N, n): row i is the target of sample i (e.g. ``load_optimized(...)["targets"]``).
    fraction : float
        p in (0, 1]: the share of rows to keep (:func:`kept_count` rows).
    method : str
        A registered method (:func:`list_methods`): ``random``, ``kcenter``, ``zcore``,
        ``prototype``.
    seed : int
        Seeds the method's random choices; the same arguments give the same rows.
    progress : bool
        Show a tqdm progress bar (stderr) on the long loops.
    **options
        The method's options (:func:`method_options`), e.g. ``dim=64`` or ``keep="easy"``.

    Returns
    -------
    np.ndarray
        int64 (k,), sorted, unique row indices into ``targets`` (map them to data-set ids with
        the optimized set's ``ids`` column).

    Raises
    ------
    UnknownMethodError
        For an unknown method (a ValueError/KeyError naming the registered ones).
    ValueError
        For ``fraction`` outside (0, 1], malformed targets or an option the method lacks.
    """
    fn = _method(str(method))
    allowed = method_options(str(method))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"pruning method {method!r} has no option(s) {unknown}; its options: {sorted(allowed) or 'none'}"
        )
    x = _checked_targets(targets)
    n = x.shape[0]
    k = kept_count(n, fraction)
    if k == n:
        return np.arange(n, dtype=np.int64)
    rows = np.asarray(fn(x, k, seed=int(seed), progress=bool(progress), **options), dtype=np.int64)
    rows = np.unique(rows)
    if len(rows) != k or rows[0] < 0 or rows[-1] >= n:
        raise RuntimeError(
            f"pruning method {method!r} returned {len(rows)} distinct valid rows, expected {k}"
        )
    return rows


# ---------------------------------------------------------------------------- the target space
def target_space(targets: np.ndarray, dim: int | None = None, *, renormalize: bool = False) -> np.ndarray:
    """The geometry the student learns in: centered, L2-normalized targets, optionally PCA-reduced.

    Parameters
    ----------
    targets : np.ndarray
        float (N, n).
    dim : int or None
        Project onto the ``dim`` leading principal components of the normalized targets
        (exact PCA: eigenvectors of the n x n covariance; no seed). None, or ``dim >= n``,
        keeps all n dimensions.
    renormalize : bool
        L2-normalize the rows again after the projection (for cosine geometry in the PCA space).

    Returns
    -------
    np.ndarray
        float32 (N, d), ``d = min(dim, n)``. Without projection every row has unit norm (an
        all-zero centered row stays zero).
    """
    x = _checked_targets(targets).copy()
    # The student regresses centered targets under a cosine loss: the common mean carries no
    # information about an image, and only directions matter.
    x -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
    _normalize_rows(x)
    if dim is not None:
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1 or None, got {dim}")
        if int(dim) < x.shape[1]:
            x = _pca(x, int(dim))
            if renormalize:
                _normalize_rows(x)
    return x


def _normalize_rows(x: np.ndarray) -> None:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.maximum(norms, _EPS)


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Coordinates of ``x`` (N, n) on its ``dim`` leading principal axes: float32 (N, dim)."""
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x - mean.astype(np.float32)
    cov = (xc.T @ xc).astype(np.float64) / max(1, len(x) - 1)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    axes = vecs[:, ::-1][:, :dim]
    # A fixed sign per axis (largest loading positive), so the coordinates do not depend on LAPACK.
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dim)])
    axes = (axes * np.where(signs == 0, 1.0, signs)).astype(np.float32)
    return np.ascontiguousarray(xc @ axes)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One stream per method, so that two methods with the same seed draw independently.
    return np.random.default_rng([int(seed), stream])


def _bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows with the highest scores, ties to the lower row index."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


# ---------------------------------------------------------------------------- random
@register_method("random")
def random_select(targets: np.ndarray, k: int, *, seed: int = 0, progress: bool = False) -> np.ndarray:
    """``k`` rows drawn uniformly without replacement (seeded): the baseline."""
    return _rng(seed, 0x4A4D).choice(len(targets), size=int(k), replace=False)


# ---------------------------------------------------------------------------- k-center
@register_method("kcenter")
def kcenter_select(
    targets: np.ndarray, k: int, *, seed: int = 0, progress: bool = False, dim: int | None = 64
) -> np.ndarray:
    """Greedy farthest-first k-center in the target space.

    Start from a seeded uniformly random row; then ``k - 1`` times add the row whose Euclidean
    distance to its nearest chosen row is largest (ties: the lowest row). The chosen rows'
    covering radius is at most twice the optimum (Gonzalez 1985).

    Parameters
    ----------
    targets : np.ndarray
        float (N, n).
    k : int
        Rows to choose, 1 <= k <= N.
    seed : int
        Seeds the first center.
    progress : bool
        A progress bar over the ``k`` picks.
    dim : int or None
        PCA width of the space (:func:`target_space`); each pick costs O(N * dim).

    Returns
    -------
    np.ndarray
        int64 (k,) rows in the order they were picked.
    """
    x = target_space(targets, dim)
    n = len(x)
    k = int(k)
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=np.float32)  # squared distance to the nearest chosen row
    buf = np.empty(n, dtype=np.float32)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = int(_rng(seed, 0x6B63).integers(n))
    bar = _bar(k, "kcenter", "center", progress)
    for i in range(k):
        c = int(chosen[i])
        # |x - x_c|^2 = |x|^2 - 2 x.x_c + |x_c|^2: one matrix-vector product per pick.
        np.dot(x, x[c], out=buf)
        buf *= -2.0
        buf += sq
        buf += sq[c]
        np.minimum(nearest, buf, out=nearest)
        nearest[c] = -np.inf  # never picked again, whatever the rounding of its own distance
        if i + 1 < k:
            chosen[i + 1] = int(np.argmax(nearest))
        if bar is not None and (i + 1) % 256 == 0:
            bar.update(256)
    if bar is not None:
        bar.update(k - bar.n)
        bar.close()
    return chosen


# ---------------------------------------------------------------------------- ZCore-like scores
def zcore_scores(
    targets: np.ndarray,
    *,
    seed: int = 0,
    dim: int | None = 32,
    samples: int | None = None,
    sample_dim: int = 2,
    redundancy_nn: int = 64,
    redundancy_exp: float = 4.0,
    rand_init: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Coverage-minus-redundancy scores of every row (higher = keep first).

    What is computed, in the target space ``X = target_space(targets, dim)`` (N, d):

    1. Exact duplicate rows of ``X``: only the first of each group is scored; the others get
       ``-inf`` (a copy adds nothing) and rank last.
    2. Scores start at ``U(0, 1)`` per row (seeded; ``rand_init``), as ZCore's default, so that
       rows no probe ever reaches are ordered at random rather than by index.
    3. ``samples`` Monte Carlo probes (default ``min(10**6, 100 * N)``; ZCore draws 10**6). Each
       picks ``sample_dim`` distinct coordinates uniformly at random and a point whose
       coordinate j is drawn from the triangular distribution (min_j, median_j, max_j) of
       column j of ``X``. **Coverage**: the row nearest to that point in those coordinates
       (L1 distance) gains +1.
    4. **Redundancy**: the ``redundancy_nn`` rows nearest to that covering row (same coordinates,
       L1; itself excluded) lose weights ``w_i ∝ 1 / dist_i ** redundancy_exp`` summing to 1;
       if the nearest of them is at distance 0, that one alone loses 1 instead.

    This is ZCore's ``sample_score`` with three changes for speed at 50,000 x 512: it runs in the
    PCA space of the normalized targets (ZCore samples raw embedding dimensions); probes are
    grouped by their coordinate subset and answered with a KD-tree per subset (scipy's
    ``cKDTree``; identical in distribution to drawing the subset per probe); and the
    redundancy neighbourhood is 64 rows, not 1000: with exponent 4 in 2-D the k-th neighbour
    carries weight ~1/k², so rows past the 64th hold ~1.5 % of the penalty.

    Parameters
    ----------
    targets : np.ndarray
        float (N, n).
    seed : int
        Seeds the initial scores, the coordinate subsets and the probe points.
    dim : int or None
        PCA width of the space (None: the full width; the number of coordinate subsets is
        ``C(d, sample_dim)``, one KD-tree each).
    samples : int or None
        Monte Carlo probes.
    sample_dim : int
        Coordinates per probe (ZCore: 2).
    redundancy_nn : int
        Neighbours penalized per covering row.
    redundancy_exp : float
        Exponent of the distance weighting (ZCore: 4).
    rand_init : bool
        Start from ``U(0, 1)`` scores (else 0).
    progress : bool
        A progress bar over the coordinate subsets.

    Returns
    -------
    np.ndarray
        float64 (N,).
    """
    from scipy.spatial import cKDTree

    x = target_space(targets, dim)
    n, d = x.shape
    s = int(sample_dim)
    if not 1 <= s <= d:
        raise ValueError(f"sample_dim must be in [1, {d}] (the space's width), got {sample_dim}")
    if int(redundancy_nn) < 1 or not float(redundancy_exp) > 0:
        raise ValueError("redundancy_nn must be >= 1 and redundancy_exp > 0")
    total = min(10**6, 100 * n) if samples is None else int(samples)
    if total < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    combos = list(itertools.combinations(range(d), s)) if math.comb(d, s) <= 200_000 else None
    if combos is None:
        raise ValueError(f"C({d}, {s}) coordinate subsets is too many: lower dim or sample_dim")

    _, first = np.unique(x, axis=0, return_index=True)
    rows = np.sort(first)  # one row per distinct point
    xu = np.ascontiguousarray(x[rows], dtype=np.float64)
    m = len(rows)
    rng = _rng(seed, 0x2C02E)
    scores = rng.uniform(0.0, 1.0, m) if rand_init else np.zeros(m)
    lo, med, hi = xu.min(axis=0), np.median(xu, axis=0), xu.max(axis=0)
    flat = hi <= lo
    hi_safe = np.where(flat, lo + 1.0, hi)  # the triangular draw needs left < right
    med_safe = np.clip(med, lo, hi_safe)
    counts = rng.multinomial(total, np.full(len(combos), 1.0 / len(combos)))
    kq = min(int(redundancy_nn) + 1, m)
    bar = _bar(len(combos), "zcore", "subset", progress)
    for combo, count in zip(combos, counts, strict=True):
        if bar is not None:
            bar.update(1)
        if count == 0:
            continue
        cols = list(combo)
        pts = np.ascontiguousarray(xu[:, cols])
        tree = cKDTree(pts)
        probes = rng.triangular(lo[cols], med_safe[cols], hi_safe[cols], size=(int(count), s))
        probes = np.where(flat[cols], lo[cols], probes)
        _, win = tree.query(probes, k=1, p=1)
        winners, hits = np.unique(win, return_counts=True)
        scores += np.bincount(winners, weights=hits, minlength=m)
        if kq < 2:
            continue
        dist, nn = tree.query(pts[winners], k=kq, p=1)
        dist, nn = _drop_self(dist, nn, winners)
        penalty = _redundancy_weights(dist, float(redundancy_exp)) * hits[:, None]
        scores -= np.bincount(nn.ravel(), weights=penalty.ravel(), minlength=m)
    if bar is not None:
        bar.close()
    out = np.full(n, -np.inf)
    out[rows] = scores
    return out


def _drop_self(dist: np.ndarray, nn: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists (R, k) without the query row itself: (R, k - 1).

    A row is normally among its own neighbours at distance 0; where more than k points tie at
    distance 0 it may be missing, and the farthest entry is dropped instead.
    """
    is_self = nn == rows[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # Only the first occurrence counts as self (a row appears once per list anyway).
    keep = ~is_self
    r, k = nn.shape
    return dist[keep].reshape(r, k - 1), nn[keep].reshape(r, k - 1)


def _redundancy_weights(dist: np.ndarray, exponent: float) -> np.ndarray:
    """ZCore's penalty per neighbour list: 1 on an exact duplicate, else ∝ 1/dist^exp summing to 1."""
    out = np.zeros_like(dist)
    dup = dist[:, 0] <= 0.0
    out[dup, 0] = 1.0
    far = ~dup
    if far.any():
        # Relative to the nearest distance: the same weights as 1/d^e, without overflow.
        rel = (dist[far, :1] / dist[far]) ** exponent
        out[far] = rel / rel.sum(axis=1, keepdims=True)
    return out


@register_method("zcore")
def zcore_select(
    targets: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    progress: bool = False,
    dim: int | None = 32,
    samples: int | None = None,
    sample_dim: int = 2,
    redundancy_nn: int = 64,
    redundancy_exp: float = 4.0,
    rand_init: bool = True,
) -> np.ndarray:
    """The ``k`` rows with the highest :func:`zcore_scores` (ties: the lower row)."""
    scores = zcore_scores(
        targets,
        seed=seed,
        dim=dim,
        samples=samples,
        sample_dim=sample_dim,
        redundancy_nn=redundancy_nn,
        redundancy_exp=redundancy_exp,
        rand_init=rand_init,
        progress=progress,
    )
    return _top(scores, int(k))


# ---------------------------------------------------------------------------- prototypes
def spherical_kmeans(
    x: np.ndarray, clusters: int, *, seed: int = 0, iterations: int = 50, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded spherical k-means (cosine similarity) of unit rows.

    k-means++ initialization (D² sampling with distance ``1 - cos``), then Lloyd iterations:
    assign each row to its most similar centroid, set each centroid to the normalized mean of
    its rows, until no assignment changes or ``iterations`` are done. An emptied cluster is
    re-seeded with the row least similar to its own centroid.

    Parameters
    ----------
    x : np.ndarray
        float32 (N, d), unit rows.
    clusters : int
        Number of centroids, capped at N.

    Returns
    -------
    centroids : np.ndarray
        float32 (K, d), unit rows.
    assign : np.ndarray
        int64 (N,), each row's centroid.
    """
    n = len(x)
    kc = max(1, min(int(clusters), n))
    rng = _rng(seed, 0x5047)
    centroids = np.empty((kc, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centroids[0] = x[first]
    dist = np.maximum(1.0 - x @ centroids[0], 0.0).astype(np.float64)
    for j in range(1, kc):
        total = dist.sum()
        pick = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        centroids[j] = x[pick]
        np.minimum(dist, np.maximum(1.0 - x @ centroids[j], 0.0), out=dist)
    assign = np.full(n, -1, dtype=np.int64)
    bar = _bar(int(iterations), "prototype k-means", "iter", progress)
    for _ in range(int(iterations)):
        sims = x @ centroids.T
        new = sims.argmax(axis=1)
        if bar is not None:
            bar.update(1)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros(centroids.shape, dtype=np.float64)
        _sum_by_group(sums, assign, x)
        sizes = np.bincount(assign, minlength=kc)
        own = sims[np.arange(n), assign]
        for j in np.flatnonzero(sizes == 0):
            worst = int(np.argmin(own))  # the row least like its centroid starts a new cluster
            sums[j] = x[worst]
            own[worst] = np.inf
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, _EPS)).astype(np.float32)
    if bar is not None:
        bar.close()
    assign = (x @ centroids.T).argmax(axis=1)
    return centroids, assign.astype(np.int64)


def _sum_by_group(out: np.ndarray, groups: np.ndarray, x: np.ndarray) -> None:
    """``out[g] += x[i]`` for every row i of group g (sorted segments; np.add.at is slow)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    # float32 sums (a cluster holds at most N rows of unit norm), accumulated into float64.
    out[g[starts]] += np.add.reduceat(x[order], starts, axis=0)


def _prototypes(
    targets: np.ndarray, seed: int, clusters: int, dim: int | None, iterations: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(difficulty float64 (N,), cluster int64 (N,)) of :func:`prototype_scores`."""
    x = target_space(targets, dim, renormalize=True)
    centroids, assign = spherical_kmeans(x, clusters, seed=seed, iterations=iterations, progress=progress)
    cos = np.einsum("ij,ij->i", x, centroids[assign])
    return (1.0 - cos).astype(np.float64), assign


def prototype_scores(
    targets: np.ndarray,
    *,
    seed: int = 0,
    clusters: int = 100,
    dim: int | None = None,
    iterations: int = 50,
    progress: bool = False,
) -> np.ndarray:
    """Sorscher et al.'s self-supervised prototype difficulty of every row.

    ``1 - cos(x_i, c(x_i))``: the cosine distance of each normalized target to its nearest
    centroid of a seeded :func:`spherical_kmeans` with ``clusters`` centroids (Sorscher et al.
    cluster SwAV embeddings; here the targets are the embedding). ``dim`` PCA-reduces the space
    first (rows renormalized); None keeps the full width.

    Returns
    -------
    np.ndarray
        float64 (N,) in [0, 2]: higher = harder (less prototypical).
    """
    return _prototypes(targets, seed, clusters, dim, iterations, progress)[0]


def _quotas(sizes: np.ndarray, k: int) -> np.ndarray:
    """Per-group counts proportional to ``sizes`` summing to ``k`` (largest remainders; ties: lower group)."""
    exact = sizes * (k / sizes.sum())
    quota = np.floor(exact).astype(np.int64)
    short = k - int(quota.sum())
    order = np.lexsort((np.arange(len(sizes)), -(exact - quota)))
    quota[order[:short]] += 1
    return np.minimum(quota, sizes)


@register_method("prototype")
def prototype_select(
    targets: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    progress: bool = False,
    clusters: int = 100,
    keep: str = "auto",
    threshold: float = 0.5,
    balanced: bool = False,
    dim: int | None = None,
    iterations: int = 50,
) -> np.ndarray:
    """Keep the hardest or the easiest rows by :func:`prototype_scores`.

    ``keep="hard"``: the ``k`` largest distances to the nearest centroid; ``"easy"``: the ``k``
    smallest; ``"auto"``: hard when ``k / N >= threshold``, else easy (Sorscher et al.: with
    plenty of data keep hard examples, with little keep easy ones); ``"moderate"``: the ``k``
    closest to the median distance, dropping both the most typical and the most atypical
    rows (Moderate-DS, Xia et al. 2023, with clusters standing in for classes). Ties: the
    lower row.
    ``balanced``: the same rule inside every cluster, each keeping its share of ``k`` in
    proportion to its size (largest remainders), so that no cluster is dropped or emptied.
    """
    if keep not in KEEP_RULES:
        raise ValueError(f"prototype: keep must be one of {KEEP_RULES}, got {keep!r}")
    difficulty, assign = _prototypes(targets, seed, clusters, dim, iterations, progress)
    k = int(k)
    hard = keep == "hard" or (keep == "auto" and k / len(difficulty) >= float(threshold))
    score = difficulty if hard else -difficulty
    if keep == "moderate" and not balanced:
        score = -np.abs(difficulty - np.median(difficulty))
    if not balanced:
        return _top(score, k)
    groups = np.unique(assign)
    sizes = np.array([(assign == g).sum() for g in groups])
    picks = []
    for g, q in zip(groups, _quotas(sizes, k), strict=True):
        members = np.flatnonzero(assign == g)
        if keep == "moderate":  # the median of the sample's own cluster (Moderate-DS per class)
            score[members] = -np.abs(difficulty[members] - np.median(difficulty[members]))
        picks.append(members[_top(score[members], int(q))])
    return np.concatenate(picks)


# ---------------------------------------------------------------------------- kept-ids files
def save_kept_ids(
    path: str | Path,
    ids: np.ndarray,
    *,
    method: str,
    fraction: float,
    seed: int,
    num_total: int,
    source: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Write the kept data-set ids as JSON (atomically).

    Keys: ``ids`` (sorted ints), ``method``, ``fraction``, ``seed``, ``num_total`` (rows the
    choice was made from), ``source`` (e.g. the optimized set's path, or None) and ``options``
    (the method's options, ``{}`` when none are given).

    Raises
    ------
    ValueError
        For ids that are not non-negative unique integers, or more ids than ``num_total``.
    """
    a = np.asarray(ids)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"kept ids must be a non-empty 1-D integer array, got {a.dtype} {a.shape}")
    a = np.sort(a.astype(np.int64))
    _check_ids(a, "kept ids")
    if len(a) > int(num_total):
        raise ValueError(f"{len(a)} kept ids but num_total is {num_total}")
    record = {
        "ids": [int(v) for v in a],
        "method": str(method),
        "fraction": float(fraction),
        "seed": int(seed),
        "num_total": int(num_total),
        "source": None if source is None else str(source),
        "options": dict(options or {}),
    }
    return write_json(Path(path), record)


def _check_ids(a: np.ndarray, where: str) -> None:
    """``a`` sorted int64: no negative id, no id twice."""
    if a[0] < 0:
        raise ValueError(f"{where}: negative id {int(a[0])}")
    dup = np.flatnonzero(a[1:] == a[:-1])
    if dup.size:
        raise ValueError(f"{where}: id {int(a[dup[0]])} appears more than once")


def load_kept_ids(path: str | Path) -> np.ndarray:
    """The kept data-set ids of a :func:`save_kept_ids` file: sorted unique int64 (K,).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not JSON, no ``ids`` list, an empty list, non-integer, negative or repeated ids (each a
        one-line message naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no kept-ids file at {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise ValueError(f"{p} has no 'ids' list (expected a JSON object written by save_kept_ids)")
    raw = data["ids"]
    if not raw:
        raise ValueError(f"{p}: 'ids' is empty")
    bad = next((v for v in raw if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise ValueError(f"{p}: ids must be integers, found {bad!r}")
    a = np.sort(np.asarray(raw, dtype=np.int64))
    _check_ids(a, str(p))
    return a
