"""Linear-probe evaluation: L-BFGS logistic regression, frozen feature extraction, LinearProbe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coopt_flwr.learn.probe import LinearProbe, extract_features, frozen, linear_probe
from coopt_flwr.learn.student import CIFAR_RESNET10, channel_stats, create_backbone
from coopt_flwr.registry.datasets import create_dataset


def _clusters(n: int, d: int, classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 5.0
    labels = rng.integers(0, classes, n)
    feats = centers[labels] + spread * rng.standard_normal((n, d))
    # Offset and scale the features: standardization must undo both.
    return (feats * 30.0 + 100.0).astype(np.float32), labels


def test_well_separated_features_are_classified_almost_perfectly() -> None:
    x, y = _clusters(3000, 64, 10, 1.0, seed=0)
    acc = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:])
    assert acc >= 0.99


def test_random_labels_give_chance_accuracy() -> None:
    rng = np.random.default_rng(1)
    xtr, xte = rng.standard_normal((2000, 32)), rng.standard_normal((3000, 32))
    ytr, yte = rng.integers(0, 10, 2000), rng.integers(0, 10, 3000)
    acc = linear_probe(xtr, ytr, xte, yte)
    assert 0.06 <= acc <= 0.15


def test_probe_is_deterministic_and_seed_free() -> None:
    rng = np.random.default_rng(2)
    xtr, xte = rng.standard_normal((500, 16)), rng.standard_normal((300, 16))
    ytr, yte = (xtr[:, 0] > 0).astype(int) + 2 * (xtr[:, 1] > 0), (xte[:, 0] > 0).astype(int)
    results = {linear_probe(xtr, ytr, xte, yte, seed=s) for s in (0, 0, 1)}
    assert len(results) == 1


def test_constant_features_and_unseen_test_classes_are_handled() -> None:
    xtr, ytr = _clusters(600, 8, 3, 0.5, seed=3)
    xtr = np.concatenate([xtr, np.full((600, 1), 7.0, dtype=np.float32)], axis=1)  # a dead unit
    acc = linear_probe(xtr, ytr, xtr[:50], np.full(50, 5))  # class 5 never seen in training
    assert acc == 0.0
    assert linear_probe(xtr, ytr, xtr, ytr) >= 0.99


def test_probe_rejects_malformed_input() -> None:
    x, y = np.zeros((10, 4)), np.zeros(10, dtype=int)
    with pytest.raises(ValueError):
        linear_probe(x, y, np.zeros((5, 3)), y[:5])
    with pytest.raises(ValueError):
        linear_probe(x, y[:9], x, y)
    with pytest.raises(ValueError):
        linear_probe(x * np.nan, y, x, y)
    with pytest.raises(ValueError):
        linear_probe(x, y - 1, x, y)


class _Tiny(nn.Module):
    """Conv + BatchNorm + pool: its output depends on the batch only in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.conv(x))).flatten(1)


def test_extract_features_uses_eval_mode_and_restores_modes() -> None:
    torch.manual_seed(0)
    model = _Tiny()
    model.bn.running_mean.fill_(0.3)
    model.pool.eval()  # a submodule in its own mode must keep it
    images = np.random.default_rng(0).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    full = extract_features(model, images, batch_size=7, mean=mean, std=std)
    single = extract_features(model, images[:1], batch_size=1, mean=mean, std=std)
    assert full.shape == (20, 6) and full.dtype == np.float32
    np.testing.assert_allclose(single[0], full[0], rtol=1e-5, atol=1e-6)  # eval-mode BN: batch-free
    assert model.training and model.conv.training and not model.pool.training
    assert float(model.bn.running_mean[0]) == pytest.approx(0.3)  # statistics untouched
    with frozen(model):
        assert not model.training
    assert model.training


def test_linear_probe_on_digits_with_an_untrained_student() -> None:
    data = create_dataset("digits")
    order = np.random.default_rng(0).permutation(len(data))
    tr, te = order[:1000], order[1000:]
    mean, std = channel_stats(data.images[tr])
    probe = LinearProbe(
        data.images[tr], data.labels[tr], data.images[te], data.labels[te], mean=mean, std=std
    )
    backbone, dim = create_backbone(CIFAR_RESNET10, seed=0)
    backbone.train()
    acc = probe(backbone)
    assert 0.1 < acc <= 1.0
    assert backbone.training and all(m.training for m in backbone.modules())
    assert probe.last_seconds >= probe.last_fit_seconds > 0
    assert probe.features(backbone)[0].shape == (1000, dim)
    assert probe(backbone) == acc  # deterministic end to end
    subset = create_dataset("digits?subset=500")
    assert 0.1 < LinearProbe.from_data(subset, data)(backbone) <= 1.0


def test_linear_probe_needs_labels_for_every_image() -> None:
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="label"):
        LinearProbe(images, np.zeros(3, dtype=int), images, np.zeros(4, dtype=int))
