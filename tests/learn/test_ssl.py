"""SSL baselines (coopt_flwr.learn.ssl): contract with the training loop, learning signal, momentum, seeds.

Runs on the CPU in a few seconds: a 2-conv backbone, 16 px digits, batch 24, narrow heads. The
training loop is a local stand-in for ``coopt_flwr.learn.training.fit`` (SGD over
``trainable_modules()``, ``step`` then ``backward``/``optimizer.step`` then ``after_step``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from coopt_flwr.learn.ssl import SSL_METHODS, SSLMethod, create_ssl, default_hparams

SIZE = 16
BATCH = 24
FEAT = 32

# Narrow heads so that every test stays fast.
SMALL: dict[str, dict] = {
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "moco": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 96},
    "simsiam": {"proj_hidden_dim": 64, "proj_output_dim": 64, "pred_hidden_dim": 16},
    "dino": {"head_hidden_dim": 64, "head_bottleneck_dim": 32, "output_dim": 128},
    "swav": {"proj_hidden_dim": 64, "proj_output_dim": 32, "n_prototypes": 16},
}
MOMENTUM_METHODS = ("byol", "moco", "dino")
# Near-identity views (large crops, no colour changes): the loss on a fixed batch must fall within a
# few steps. MoCo also gets an instant key encoder: with momentum 0.99 its loss rises at first while
# the keys lag behind the queries (and while real keys replace the random queue), which is expected.
MILD = {"min_scale": 0.7, "cj_prob": 0.0, "random_gray_scale": 0.0}
LEARNS: dict[str, dict] = {
    "byol": {},
    "simclr": {"transform": MILD},
    "moco": {"transform": MILD, "queue_size": 0, "momentum": 0.0, "momentum_end": 0.0},
    "simsiam": {"transform": MILD},
    "dino": {},
    "swav": {},
}


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    gray = np.kron(load_digits().images[:BATCH], np.ones((2, 2))) * (255.0 / 16.0)
    rgb = np.repeat(np.rint(gray)[..., None], 3, axis=-1).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(rgb))  # (24, 16, 16, 3) uint8 NHWC


def tiny_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, FEAT, 3, 2, 1),
        nn.BatchNorm2d(FEAT),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def make(name: str, seed: int = 0, backbone: nn.Module | None = None, **overrides) -> SSLMethod:
    kw = {**SMALL[name], **overrides}
    return create_ssl(name, backbone or tiny_backbone(seed), FEAT, SIZE, seed=seed, **kw)


def train(method: SSLMethod, images: torch.Tensor, steps: int, lr: float = 0.1) -> list[float]:
    """Stand-in for training.fit: SGD over trainable_modules(), after_step after each update."""
    params = [p for m in method.trainable_modules() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    idx = torch.arange(images.shape[0], dtype=torch.int64)
    losses = []
    for i in range(steps):
        loss = method.step(images, idx, i / steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step((i + 1) / steps)
        losses.append(loss.item())
    return losses


def param_ids(modules) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def distance(a: nn.Module, b: nn.Module) -> float:
    return sum((pa - pb).pow(2).sum().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


# --------------------------------------------------------------------------- API


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"barlow.*byol, simclr, moco, simsiam, dino, swav"):
        create_ssl("barlow", tiny_backbone(), FEAT, SIZE)
    with pytest.raises(ValueError, match="byol, simclr"):
        default_hparams("nope", 32)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match=r"temprature.*valid:.*temperature"):
        create_ssl("simclr", tiny_backbone(), FEAT, SIZE, temprature=0.1)
    with pytest.raises(ValueError, match="aug_backend"):
        create_ssl("simclr", tiny_backbone(), FEAT, SIZE, aug_backend="gpu")


def test_names_are_case_insensitive():
    assert make("simclr").name == create_ssl("SimCLR", tiny_backbone(), FEAT, SIZE, **SMALL["simclr"]).name


def test_overrides_reach_the_lightly_pieces():
    m = make("moco", queue_size=64, temperature=0.3, momentum=0.95, momentum_end=0.95)
    assert m.criterion.temperature == 0.3
    assert tuple(m.criterion.memory_bank.size) == (64, 32)
    m.after_step(0.5)
    assert m.momentum == pytest.approx(0.95)
    s = make("swav", n_prototypes=10, temperature=0.2)
    assert s.prototypes.heads[0].out_features == 10 and s.criterion.temperature == 0.2
    d = make("dino", output_dim=64)
    assert d.head.last_layer.weight_v.shape[0] == 64 and d.criterion.center.shape[-1] == 64
    c = make("simclr", proj_output_dim=24, transform={"min_scale": 0.5})
    assert c.hparams["transform"]["min_scale"] == 0.5 and c.hparams["transform"]["input_size"] == SIZE
    assert c.projection_head.layers[-2].out_features == 24  # last Linear (followed by BatchNorm1d)


def test_default_hparams_scale_with_image_size():
    small, large = default_hparams("byol", 32), default_hparams("byol", 96)
    assert small["transform_view1"]["gaussian_blur"] == small["transform_view2"]["gaussian_blur"] == 0.0
    assert large["transform_view1"]["gaussian_blur"] == 1.0  # lightly's default kept at >= 64 px
    assert default_hparams("dino", 32)["transform"]["gaussian_blur"] == (0.0, 0.0, 0.0)
    assert default_hparams("dino", 32)["transform"]["local_crop_size"] == 16
    assert default_hparams("swav", 32)["transform"]["crop_sizes"] == (32, 16)
    assert default_hparams("moco", 32)["queue_size"] == 4096
    assert default_hparams("moco", 32)["momentum"] == default_hparams("moco", 32)["momentum_end"] == 0.99
    assert default_hparams("swav", 32)["queue_length"] == 0
    default_hparams("simclr", 32)["transform"]["input_size"] = 1  # a fresh dict every call
    assert default_hparams("simclr", 32)["transform"]["input_size"] == 32


def test_views_have_the_multi_crop_shapes(digits):
    for name, n_local in (("dino", 4), ("swav", 4)):
        views = make(name).views(digits)
        assert [tuple(v.shape) for v in views[:2]] == [(BATCH, 3, SIZE, SIZE)] * 2
        assert [tuple(v.shape) for v in views[2:]] == [(BATCH, 3, SIZE // 2, SIZE // 2)] * n_local
    (v0, v1) = make("byol").views(digits)
    assert v0.dtype == torch.float32 and v0.shape == (BATCH, 3, SIZE, SIZE)
    assert v0.is_contiguous(memory_format=torch.channels_last)  # the fast layout for oneDNN convs
    assert not torch.equal(v0, v1)  # two different augmentations
    assert -2.5 < v0.mean().item() < 2.5  # normalized, not raw 0..255


def test_tensor_backend_runs_the_same_lightly_pipeline(digits):
    # Same private random stream -> same crop/flip/jitter draws; only the resampling kernels differ
    # (PIL vs torchvision), a few grey levels at most. Views with solarization draw it from numpy
    # (lightly, PIL) or torch (tensor backend), so their streams part there: not compared.
    for name, views in (("simclr", 2), ("byol", 1)):
        a = make(name, aug_backend="pil").views(digits)
        b = make(name, aug_backend="tensor").views(digits)
        for x, y in zip(a[:views], b[:views], strict=True):
            assert x.shape == y.shape
            assert (x - y).abs().mean().item() < 0.02 and (x - y).abs().max().item() < 0.1


def test_bad_inputs_are_rejected(digits):
    m = make("simclr")
    with pytest.raises(ValueError, match="uint8"):
        m.step(digits.float(), None, 0.0)
    wrong = create_ssl("simclr", tiny_backbone(), FEAT + 1, SIZE, **SMALL["simclr"])
    with pytest.raises(ValueError, match="feature_dim"):
        wrong.step(digits, None, 0.0)


# --------------------------------------------------------------------------- per method


@pytest.mark.parametrize("name", SSL_METHODS)
def test_step_is_a_finite_scalar_that_trains_the_shared_backbone(name, digits):
    backbone = tiny_backbone()
    m = create_ssl(name, backbone, FEAT, SIZE, **SMALL[name])
    assert m.name == name
    assert m.backbone is backbone and m.trainable_modules()[0] is backbone
    loss = m.step(digits, torch.arange(BATCH), 0.0)
    assert loss.ndim == 0 and loss.requires_grad and math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in backbone.parameters())
    for _, ema in m.momentum_pairs():
        assert all(p.grad is None and not p.requires_grad for p in ema.parameters())
    assert not param_ids(e for _, e in m.momentum_pairs()) & param_ids(m.trainable_modules())
    assert (name in MOMENTUM_METHODS) == bool(m.momentum_pairs())


@pytest.mark.parametrize("name", SSL_METHODS)
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(name, digits):
    torch.manual_seed(123)  # the local loop is global-RNG free anyway; the methods use their own seeds
    losses = train(make(name, seed=1, **LEARNS[name]), digits, steps=10)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02, losses


@pytest.mark.parametrize("name", SSL_METHODS)
def test_default_config_trains_and_moves_the_backbone(name, digits):
    backbone = tiny_backbone()
    before = [p.detach().clone() for p in backbone.parameters()]
    m = create_ssl(name, backbone, FEAT, SIZE, **SMALL[name])
    losses = train(m, digits, steps=4)
    assert all(math.isfinite(x) for x in losses) and len(set(losses)) > 1
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters(), strict=True))
    # Probing uses the same backbone on un-augmented, identically normalized images.
    with torch.no_grad():
        feats = m.backbone.eval()(m.preprocess(digits))
    assert feats.shape == (BATCH, FEAT) and torch.isfinite(feats).all()


@pytest.mark.parametrize("name", MOMENTUM_METHODS)
def test_after_step_moves_the_momentum_copy_toward_the_online_network(name, digits):
    m = make(name)
    params = [p for mod in m.trainable_modules() for p in mod.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    for online, ema in m.momentum_pairs():
        assert distance(online, ema) == 0.0  # copies start equal
    for _ in range(2):
        loss = m.step(digits, None, 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        gaps = [distance(o, e) for o, e in m.momentum_pairs()]
        m.after_step(0.3)
        after = [distance(o, e) for o, e in m.momentum_pairs()]
        assert all(a < g for a, g in zip(after, gaps, strict=True) if g > 0) and max(gaps) > 0
        # d(ema', online) = m * d(ema, online) for a convex EMA step.
        assert math.sqrt(sum(after)) == pytest.approx(m.momentum * math.sqrt(sum(gaps)), rel=1e-3)


def test_momentum_schedules():
    byol = make("byol")
    assert byol.momentum_at(0.0) == pytest.approx(0.99)
    assert byol.momentum_at(0.5) == pytest.approx(0.995)
    assert byol.momentum_at(1.0) == pytest.approx(1.0)
    assert make("dino").momentum_at(0.0) == pytest.approx(0.99)
    moco = make("moco")
    assert moco.momentum_at(0.0) == moco.momentum_at(0.7) == pytest.approx(0.99)
    for name in ("simclr", "simsiam", "swav"):
        m = make(name)
        m.after_step(0.5)  # no-op
        assert m.momentum is None and m.momentum_pairs() == []


def test_dino_teacher_temperature_warms_up_with_progress(digits):
    m = make("dino")
    assert m.teacher_temperature(0.0) == pytest.approx(0.04)
    assert m.teacher_temperature(0.15) == pytest.approx(0.055)
    assert m.teacher_temperature(0.3) == pytest.approx(0.07)
    assert m.teacher_temperature(1.0) == pytest.approx(0.07)
    train(m, digits, steps=2)
    assert m.criterion.center.abs().sum().item() > 0  # centre follows the teacher outputs
    assert m.teacher_backbone.training == m.backbone.training


def test_moco_queue_holds_the_latest_keys(digits):
    m = make("moco", queue_size=96)
    loss = m.step(digits, None, 0.0)
    assert int(m.criterion.memory_bank.bank_ptr) == 2 * BATCH  # both key sets enqueued once
    bank = m.criterion.memory_bank.bank[: 2 * BATCH]
    assert torch.allclose(bank.norm(dim=1), torch.ones(2 * BATCH), atol=1e-5)
    assert not loss.isnan()
    train(m, digits, steps=3)  # wraps around the 96-entry queue
    assert int(m.criterion.memory_bank.bank_ptr) < 96


def test_swav_queue_starts_late_and_is_used_once_full(digits):
    m = make("swav", queue_length=2 * BATCH, queue_start_progress=0.5)
    m.step(digits, None, 0.2)
    assert m.queue_filled == 0 and not m.queue_used
    for _ in range(2):
        m.step(digits, None, 0.6)
        assert not m.queue_used  # filling
    loss = m.step(digits, None, 0.7)
    assert m.queue_used and m.queue_filled == 3 * BATCH and math.isfinite(loss.item())
    assert torch.allclose(m.prototypes.heads[0].weight.norm(dim=1), torch.ones(16), atol=1e-5)
    assert len(make("swav").queues) == 0  # off by default


@pytest.mark.parametrize("name", SSL_METHODS)
def test_same_seed_same_losses_and_global_rng_untouched(name, digits):
    # Backbones built (and globally seeded) up front; the methods themselves must not touch the
    # global torch / numpy generators, nor depend on them.
    a, b, c = make(name, seed=0), make(name, seed=0), make(name, seed=1)
    torch.manual_seed(7)
    np.random.seed(7)
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = train(a, digits, steps=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    torch.manual_seed(99)
    np.random.seed(99)
    assert train(b, digits, steps=3) == first
    assert train(c, digits, steps=3) != first
    backbone = tiny_backbone()
    state = torch.get_rng_state()
    make(name, seed=3, backbone=backbone)
    assert torch.equal(torch.get_rng_state(), state)  # create_ssl seeds a forked generator
