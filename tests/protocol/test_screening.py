"""Screening of dishonest or poisoned replies: each check against its definition, and by property."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coopt_flwr.config import DEFAULTS
from coopt_flwr.protocol import screening
from coopt_flwr.protocol.alignment import fit_alignment
from coopt_flwr.protocol.merge import MergedTargets, ReplyError, check_ids, check_targets
from coopt_flwr.protocol.uniformity import uniformity

S, N = 120, 16
# The run-config's thresholds, which the strategy passes from its Settings.
INFO = {"max_residual": DEFAULTS["screen-max-residual"]}
SHARD = {"max_tv": DEFAULTS["screen-max-tv"], "max_samples": DEFAULTS["g-max-samples"]}


def _latent(seed=0, rows=S):
    return np.random.default_rng(seed).normal(size=(rows, 6))


def _prior_view(latent, seed, width=N, noise=0.3):
    """A participant's targets: a random linear view of shared latent content plus noise."""
    rng = np.random.default_rng(seed)
    return (
        latent @ rng.normal(size=(latent.shape[1], width)) + noise * rng.normal(size=(len(latent), width))
    ).astype(np.float32)


def test_held_out_residual_is_small_for_a_linear_relation_and_about_one_for_noise():
    z = _latent()
    a, b = _prior_view(z, 1, noise=0.01), _prior_view(z, 2, noise=0.01)
    assert screening.held_out_residual(a, b) < 0.2
    noise = np.random.default_rng(9).normal(size=a.shape)
    assert screening.held_out_residual(noise, b) > 1.0  # worse than the mean out of sample
    with pytest.raises(ValueError):
        screening.held_out_residual(a[:3], b[:3])


def test_claimed_uniformity_must_match_the_targets():
    t = _prior_view(_latent(), 1)
    assert screening.check_claimed_uniformity(t, uniformity(t)) is None
    reason = screening.check_claimed_uniformity(t, uniformity(t) - 0.5)
    assert reason is not None and "disagrees" in reason
    assert screening.check_claimed_uniformity(t, float("nan")) is not None


def test_information_check_rejects_noise_and_accepts_weak_but_related_priors():
    z = _latent()
    honest = [_prior_view(z, s, noise=1.0) for s in range(1, 4)]  # weak: noisy views
    noise = np.random.default_rng(5).normal(size=(S, N)).astype(np.float32)
    for i, h in enumerate(honest):
        peers = [p for j, p in enumerate(honest) if j != i] + [noise]
        assert screening.check_information(h, peers, **INFO) is None
    reason = screening.check_information(noise, honest, **INFO)
    assert reason is not None and "no information" in reason
    # with fewer than two peers there is no majority to judge against
    assert screening.check_information(noise, honest[:1], **INFO) is None


def test_alignment_check_accepts_the_honest_upload_and_catches_tampering():
    z = _latent()
    mine, anchor = _prior_view(z, 1), _prior_view(z, 2)
    fit = fit_alignment(mine, anchor, ridge=1e-3)
    aligned = fit.apply(mine)
    assert screening.check_alignment(mine, anchor, aligned, fit.residual, 1e-3, is_anchor=False) is None
    assert screening.check_alignment(anchor, anchor, anchor, 0.0, 1e-3, is_anchor=True) is None
    tampered = screening.check_alignment(mine, anchor, anchor.copy(), fit.residual, 1e-3, is_anchor=False)
    assert tampered is not None and "not the alignment" in tampered
    lied = screening.check_alignment(mine, anchor, aligned, fit.residual / 2, 1e-3, is_anchor=False)
    assert lied is not None and "claimed alignment residual" in lied


@pytest.mark.parametrize("attack", ["noise", "constant", "shifted", "other-distribution"])
def test_shard_distribution_check_flags_poisoned_shards(attack):
    z_s, z_d = _latent(0, S), _latent(1, 400)
    mine_s, anchor_s, mine_d = _prior_view(z_s, 1), _prior_view(z_s, 2), _prior_view(z_d, 1)
    fit = fit_alignment(mine_s, anchor_s, ridge=1e-3)
    shard = fit.apply(mine_d)  # honest: the participant's alignment applied to unseen images

    def check(targets):
        return screening.check_shard_distribution(
            mine_s, anchor_s, targets, ridge=1e-3, is_anchor=False, **SHARD
        )

    assert check(shard) is None
    assert (
        screening.check_shard_distribution(
            anchor_s, anchor_s, _prior_view(z_d, 2), 1e-3, is_anchor=True, **SHARD
        )
        is None
    )
    rng = np.random.default_rng(3)
    poisoned = {
        "noise": rng.normal(size=shard.shape),
        "constant": np.ones_like(shard) + 1e-3 * rng.normal(size=shard.shape),
        "shifted": shard + 10 * shard.std() * np.ones(shard.shape[1]),
        "other-distribution": _prior_view(z_d, 99),
    }[attack].astype(np.float32)
    reason = check(poisoned)
    assert reason is not None and "poisoning" in reason


def test_honest_shard_passes_even_when_the_alignment_overfits_s():
    # n close to |S|: in-sample aligned S targets hug the anchor, unseen images do not; the
    # check must compare the shard with out-of-sample alignments, not the in-sample ones.
    rng = np.random.default_rng(0)
    z_s, z_d = rng.normal(size=(60, 40)), rng.normal(size=(500, 40))
    mine_s, mine_d = z_s @ rng.normal(size=(40, 48)), z_d @ rng.normal(size=(40, 48))
    anchor_s = np.eye(48)[rng.integers(0, 10, size=60)] @ rng.normal(size=(48, 48))  # label-like codes
    shard = fit_alignment(mine_s, anchor_s, ridge=1e-3).apply(mine_d)
    assert (
        screening.check_shard_distribution(mine_s, anchor_s, shard, ridge=1e-3, is_anchor=False, **SHARD)
        is None
    )
    oos = screening.cross_fitted_alignment(mine_s, anchor_s, ridge=1e-3)
    assert oos.shape == anchor_s.shape and oos.dtype == np.float32


def test_check_targets_rejects_values_beyond_float32():
    # found by the property below: finite in float64, infinite once merged as float32
    with pytest.raises(ReplyError, match="beyond float32"):
        check_targets(np.array([[3.4028236e38], [0.0]]), 2, 1, "targets")


# -------------------------------------------------------------- malformed input, by property
_float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    elements=None,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_float_arrays, rows=st.integers(0, 6), width=st.integers(1, 6))
def test_check_targets_accepts_only_finite_float_arrays_of_the_asked_shape(a, rows, width):
    try:
        out = check_targets(a, rows, width, "targets")
    except ReplyError:
        with np.errstate(over="ignore"):  # finite as float32, the merged dtype
            finite = np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a.astype(np.float32)))
        ok = finite and a.shape == (rows, width)
        assert not ok  # rejected only when something is actually wrong
        return
    assert out.dtype == np.float32 and out.shape == (rows, width) and np.all(np.isfinite(out))


@settings(max_examples=150, deadline=None)
@given(
    sent=hnp.arrays(
        dtype=st.sampled_from([np.int64, np.int32, np.uint64, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=8),
        elements=st.integers(0, 12),
    ),
    expected=st.lists(st.integers(0, 12), unique=True, max_size=8),
)
def test_check_ids_accepts_exactly_the_assigned_set(sent, expected):
    expected = np.array(sorted(expected), dtype=np.int64)
    try:
        out = check_ids(sent, expected, "ids")
    except ReplyError:
        return
    assert np.issubdtype(sent.dtype, np.integer) and sent.ndim == 1
    assert len(np.unique(out)) == len(out) and np.array_equal(np.sort(out), expected)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(-3, 12), max_size=10),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),
)
def test_merged_targets_never_write_outside_the_data_set(ids, value):
    m = MergedTargets(10, 2)
    a = np.array(ids, dtype=np.int64)
    try:
        m.add(a, np.full((len(a), 2), value, np.float32), participant=0, round_=1)
    except ReplyError:
        assert len(a) and (a.min() < 0 or a.max() >= 10)
        assert not m.filled.any()  # a rejected write leaves nothing behind
        return
    assert set(np.flatnonzero(m.filled)) == set(ids)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8), elements=st.floats(width=32)
    ),
    y=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8), elements=st.floats(width=32)
    ),
)
def test_alignment_rejects_malformed_input_with_a_value_error(x, y):
    try:
        fit = fit_alignment(x, y, ridge=1e-3)
    except ValueError:
        return
    assert x.ndim == 2 and y.ndim == 2 and len(x) == len(y) >= 2
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert fit.matrix.shape == (x.shape[1], y.shape[1])


def test_information_check_accepts_weak_priors_worse_than_the_mean_but_better_than_shuffled():
    # n = 128 on |S| = 500: every held-out fit overfits, and a weak but honest prior (a
    # nonlinear, noisy view of the same latent) is predicted worse than its mean. The
    # permutation null tells it from noise; the plain "residual < 1" rule did not.
    z = np.random.default_rng(0).normal(size=(500, 16))

    def weak(seed: int, noise: float) -> np.ndarray:
        r = np.random.default_rng(seed)
        return (np.tanh(z @ r.normal(size=(16, 128)) / 3) + noise * r.normal(size=(500, 128))).astype(
            np.float32
        )

    honest = [weak(s, noise=1.0) for s in range(1, 4)]
    assert screening.held_out_residual(honest[0], honest[1]) > 1.0  # the old rule's false alarm
    assert screening.check_information(honest[0], honest[1:], **INFO) is None
    noise = np.random.default_rng(7).normal(size=(500, 128)).astype(np.float32)
    reason = screening.check_information(noise, honest, **INFO)
    assert reason is not None and "shuffled rows" in reason


@pytest.mark.parametrize("seed", range(6))
def test_information_check_rejects_noise_for_every_seed(seed: int):
    z = _latent()
    honest = [_prior_view(z, s, noise=1.0) for s in range(1, 6)]
    noise = np.random.default_rng(100 + seed).normal(size=(S, N)).astype(np.float32)
    assert screening.check_information(noise, honest, seed=seed, **INFO) is not None


# ------------------------------------------------------------ magnitude and discrete priors
def _honest(seed=0):
    """A participant's and the anchor's S targets, and the participant's honest aligned shard."""
    z_s, z_d = _latent(seed, S), _latent(seed + 1, 400)
    mine_s, anchor_s, mine_d = _prior_view(z_s, 1), _prior_view(z_s, 2), _prior_view(z_d, 1)
    return mine_s, anchor_s, fit_alignment(mine_s, anchor_s, ridge=1e-3).apply(mine_d)


@pytest.mark.parametrize(
    "attack", ["one-row", "whole-shard", "random-row-factors", "shrunk-row", "anchor-row"]
)
def test_scale_check_catches_magnitude_poisoning(attack):
    # Screening compared L2-normalized rows, so scale passed: one row times 1e6 was merged.
    mine_s, anchor_s, shard = _honest()
    is_anchor = attack == "anchor-row"
    if is_anchor:
        mine_s, shard = anchor_s, _prior_view(_latent(1, 400), 2)
    rng = np.random.default_rng(5)
    poisoned = shard.astype(np.float64)
    if attack in ("one-row", "anchor-row"):
        poisoned[7] *= 1e6
    elif attack == "whole-shard":
        poisoned *= 1e3
    elif attack == "random-row-factors":
        poisoned *= 10.0 ** rng.uniform(-2, 2, size=(len(poisoned), 1))
    else:
        poisoned[3] *= 1e-6
    args = {"ridge": 1e-3, "is_anchor": is_anchor, **SHARD}
    assert screening.check_shard_distribution(mine_s, anchor_s, shard, **args) is None
    reason = screening.check_shard_distribution(mine_s, anchor_s, poisoned.astype(np.float32), **args)
    assert reason is not None and "magnitude poisoning" in reason


@pytest.mark.parametrize("seed", range(8))
def test_honest_shards_sit_inside_the_scale_bound(seed):
    mine_s, anchor_s, shard = _honest(seed)
    reference = screening.shard_reference(mine_s, anchor_s, 1e-3, is_anchor=False, seed=seed)
    assert screening.check_shard_scale(reference, shard) is None
    assert screening.check_shard_scale(anchor_s, _prior_view(_latent(seed + 1, 400), 2)) is None


def test_scale_check_definition():
    ref = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])  # mean (0, 2/3); farthest row 4/3 away
    far = np.array([[0.0, 2 / 3 + 4 * 4 / 3 + 1e-6]])
    assert "farther" in screening.check_shard_scale(ref, far, max_scale=4.0)
    assert screening.check_shard_scale(ref, far - np.array([0.0, 2e-6]), max_scale=4.0) is None
    small = np.array([[0.25 - 1e-6, 0.0]])  # smallest reference norm 1: bound 1/4
    assert "norm" in screening.check_shard_scale(ref, small, max_scale=4.0)
    assert screening.check_shard_scale(ref, small + np.array([2e-6, 0.0]), max_scale=4.0) is None
    assert screening.check_shard_scale(ref[:1], far) is None  # too few reference rows


def test_is_discrete_counts_distinct_rows():
    codes = np.eye(4)[np.arange(40) % 4]
    assert screening.is_discrete(codes)
    assert not screening.is_discrete(np.random.default_rng(0).normal(size=(40, 4)))
    assert not screening.is_discrete(np.zeros((0, 4)))


@pytest.mark.parametrize("anchor_kind", ["annotator", "model"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_honest_annotators_pass_the_shard_check(anchor_kind, fraction):
    # Label codes are discrete: the cross-fitted reference splits each code into one atom per
    # fold, which the k-NN estimate tells apart from the shard's single atom. Two honest
    # human annotators were rejected that way.
    rng = np.random.default_rng(0)
    y_s, y_d = rng.integers(0, 10, size=200), rng.integers(0, 10, size=1000)

    def codes(labels, seed):
        out = np.eye(10)[labels]
        if fraction < 1.0:  # an unlabeled image gets the uniform code, as human?fraction does
            out[np.random.default_rng(seed).random(len(labels)) >= fraction] = 0.1
        return (out @ np.random.default_rng(7).normal(size=(10, N))).astype(np.float32)

    mine_s, mine_d = codes(y_s, 1), codes(y_d, 2)
    if anchor_kind == "annotator":
        anchor_s = (np.eye(10)[y_s] @ rng.normal(size=(10, N))).astype(np.float32)
    else:  # a model that knows the classes only roughly
        anchor_s = (np.eye(10)[y_s] @ rng.normal(size=(10, N)) + rng.normal(size=(200, N))).astype(np.float32)
    shard = fit_alignment(mine_s, anchor_s, ridge=1e-3).apply(mine_d)
    args = {"ridge": 1e-3, "is_anchor": False, **SHARD}
    assert screening.check_shard_distribution(mine_s, anchor_s, shard, **args) is None
    if fraction == 1.0 and anchor_kind == "annotator":
        # what the old reference did: the same honest shard looks like a different distribution
        from coopt_flwr.protocol.inconsistency import tv_distance

        oos = screening.cross_fitted_alignment(mine_s, anchor_s, ridge=1e-3)
        assert tv_distance(oos, shard, max_samples=SHARD["max_samples"]) > SHARD["max_tv"]
    noise = np.random.default_rng(9).normal(size=shard.shape).astype(np.float32) * shard.std()
    reason = screening.check_shard_distribution(mine_s, anchor_s, noise, **args)
    assert reason is not None and "poisoning" in reason


def test_row_distances_in_chunks_equal_the_whole_cast():
    from coopt_flwr.protocol.screening import _row_distances

    x = np.random.default_rng(0).standard_normal((2500, 7)).astype(np.float32)
    mu = x[:10].astype(np.float64).mean(axis=0)
    far, norms = _row_distances(x, mu, chunk=1024)
    whole = x.astype(np.float64)
    assert np.array_equal(far, np.linalg.norm(whole - mu, axis=1))
    assert np.array_equal(norms, np.linalg.norm(whole, axis=1))
