"""Student backbones (CIFAR stem, cifar_resnet10), normalization and target-regression training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from coopt_flwr.learn.probe import LinearProbe
from coopt_flwr.learn.student import (
    CIFAR_RESNET10,
    Student,
    apply_cifar_stem,
    center_targets,
    channel_stats,
    cosine_regression_loss,
    create_backbone,
    train_student,
)
from coopt_flwr.learn.training import TrainConfig, load_checkpoint
from coopt_flwr.registry.datasets import create_dataset


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return model.conv1 if isinstance(model.conv1, nn.Conv2d) else model.conv1[0]


@pytest.mark.parametrize(("arch", "width"), [(CIFAR_RESNET10, 256), ("resnet18", 512)])
def test_cifar_stem_is_3x3_stride_1_without_max_pool(arch: str, width: int) -> None:
    backbone, dim = create_backbone(arch, cifar_stem=True)
    conv = _first_conv(backbone)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert isinstance(backbone.maxpool, nn.Identity)
    assert dim == width
    backbone.eval()
    with torch.no_grad():
        assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, width)
        assert backbone(torch.zeros(2, 3, 8, 8)).shape == (2, width)


def test_imagenet_stem_is_kept_without_cifar_stem() -> None:
    backbone, _ = create_backbone("resnet18", cifar_stem=False)
    assert backbone.conv1.kernel_size == (7, 7) and backbone.conv1.stride == (2, 2)
    assert isinstance(backbone.maxpool, nn.MaxPool2d)


def test_deep_stem_and_conv_stem_families() -> None:
    backbone, _ = create_backbone("resnet10t")  # three-conv deep stem: first conv gets stride 1
    assert backbone.conv1[0].kernel_size == (3, 3) and backbone.conv1[0].stride == (1, 1)
    assert isinstance(backbone.maxpool, nn.Identity)
    reductions = [info["reduction"] for info in backbone.feature_info]
    assert reductions == [1, 1, 2, 4, 8]
    apply_cifar_stem(backbone)  # idempotent
    assert [info["reduction"] for info in backbone.feature_info] == reductions
    mobile, dim = create_backbone("mobilenetv3_small_050")
    assert mobile.conv_stem.stride == (1, 1)
    with torch.no_grad():
        assert mobile.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, dim)


def test_unsupported_stem_and_unknown_arch_raise() -> None:
    with pytest.raises(ValueError, match="cifar_stem=False"):
        create_backbone("convnext_atto", cifar_stem=True)
    create_backbone("convnext_atto", cifar_stem=False)
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_backbone("resnet_nonexistent")


def test_cifar_resnet10_size_and_timm_registration() -> None:
    backbone, dim = create_backbone(CIFAR_RESNET10)
    params = sum(p.numel() for p in backbone.parameters())
    assert 0.9e6 <= params <= 1.5e6 and dim == 256
    assert [m.out_channels for m in backbone.modules() if isinstance(m, nn.Conv2d)][:1] == [32]
    assert [layer[0].conv2.out_channels for layer in (backbone.layer1, backbone.layer2)] == [32, 64]
    classifier = timm.create_model(CIFAR_RESNET10, num_classes=10)
    assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    maps = timm.create_model(CIFAR_RESNET10, features_only=True)(torch.zeros(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps][-1] == (256, 4, 4)


def test_backbone_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a, _ = create_backbone(CIFAR_RESNET10, seed=3)
    assert torch.equal(torch.rand(1), expected)
    b, _ = create_backbone(CIFAR_RESNET10, seed=3)
    c, _ = create_backbone(CIFAR_RESNET10, seed=4)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_student_output_shapes() -> None:
    student = Student.create(CIFAR_RESNET10, 48, seed=0).eval()
    x = torch.rand(3, 3, 8, 8)
    assert student(x).shape == (3, 48)
    assert student.features(x).shape == (3, 256)
    assert student.feature_dim == 256 and student.target_dim == 48


def test_channel_stats_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 5, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=7)
    x = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-6)
    _, const_std = channel_stats(np.full((4, 2, 2, 3), 9, dtype=np.uint8))
    assert min(const_std) > 0  # clamped: no division by zero


def test_cosine_regression_loss() -> None:
    y = torch.randn(4, 8)
    assert float(cosine_regression_loss(2.5 * y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_regression_loss(-y, y)) == pytest.approx(2.0, abs=1e-6)


def test_center_targets_removes_the_mean_and_only_the_mean() -> None:
    rng = np.random.default_rng(0)
    t = rng.standard_normal((50, 6)).astype(np.float32)
    offset = 5.0 * rng.standard_normal(6).astype(np.float32)
    c = center_targets(t + offset)
    assert c.dtype == np.float32 and c.shape == t.shape
    np.testing.assert_allclose(c.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(c, center_targets(t), atol=1e-5)  # blind to a shared offset
    np.testing.assert_allclose(c[1:] - c[:-1], t[1:] - t[:-1], atol=1e-5)  # differences kept
    with pytest.raises(ValueError, match="shape"):
        center_targets(t[0])


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = create_dataset("digits")
    rng = np.random.default_rng(0)
    # Targets a good prior would give: class structure in a random 32-dim space, plus noise.
    centers = rng.standard_normal((10, 32)).astype(np.float32)
    targets = centers[data.labels] + 0.3 * rng.standard_normal((len(data), 32)).astype(np.float32)
    return data.images, data.labels, targets


def test_train_student_on_digits_regresses_targets_and_learns_classes(
    digits: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    images, labels, targets = digits
    mean, std = channel_stats(images)
    order = np.random.default_rng(1).permutation(len(images))
    tr, te = order[:1000], order[1000:]
    probe = LinearProbe(images[tr], labels[tr], images[te], labels[te], mean=mean, std=std)
    student = Student.create(CIFAR_RESNET10, 32, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, progress=False, device="cpu")
    result = train_student(
        student, images, targets, cfg, evaluate=lambda: probe(student.backbone), mean=mean, std=std, pad=1
    )
    assert len(result.losses) == 2
    assert result.losses[-1] < 0.75 * result.losses[0]
    untrained, trained = result.curve[0][1], result.final_acc
    assert result.curve[-1][0] == result.train_seconds
    # The targets encode the classes, so the regressed features must separate them well
    # (measured: 0.93 untrained -> 0.97 after two epochs).
    assert trained is not None and trained > 0.9
    assert trained > untrained + 0.02
    assert student.training


def test_train_student_is_deterministic_and_checkpoints(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    images, _, targets = digits
    images, targets = images[:512], targets[:512]
    runs = []
    for seed in (0, 0, 1):
        student = Student.create(CIFAR_RESNET10, 32, seed=0)
        ckpt = tmp_path / f"run{len(runs)}"
        cfg = TrainConfig(
            epochs=1, batch_size=128, progress=False, device="cpu", seed=seed, checkpoint_dir=str(ckpt)
        )
        runs.append((student, train_student(student, images, targets, cfg), ckpt))
    (s0, r0, c0), (s1, r1, _), (_, r2, _) = runs
    assert r0.losses == r1.losses and r0.losses != r2.losses
    assert all(
        torch.equal(a, b) for a, b in zip(s0.state_dict().values(), s1.state_dict().values(), strict=True)
    )
    restored = Student.create(CIFAR_RESNET10, 32, seed=9)
    load_checkpoint(c0 / "last.pt", [restored])
    assert torch.equal(restored.head.weight, s0.head.weight)


def test_train_student_centers_targets_unless_told_not_to(
    digits: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    images, _, targets = digits
    images, targets = images[:256], targets[:256]
    offset = np.full(targets.shape[1], 20.0, dtype=np.float32)  # a shared direction, as post-ReLU
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, device="cpu")

    def losses(t: np.ndarray, center: bool) -> list[float]:
        student = Student.create(CIFAR_RESNET10, 32, seed=0)
        return train_student(student, images, t, cfg, center=center).losses

    centered = losses(targets, True)
    np.testing.assert_allclose(losses(targets + offset, True), centered, rtol=1e-4)
    # Uncentered, the offset dominates the cosine: the loss is already near 0 and tells little.
    raw = losses(targets + offset, False)
    assert raw[0] < 0.5 * centered[0]


def test_train_student_validates_targets(digits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    images, _, targets = digits
    student = Student.create(CIFAR_RESNET10, 32)
    cfg = TrainConfig(epochs=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="shape"):
        train_student(student, images, targets[:10], cfg)
    with pytest.raises(ValueError, match="width"):
        train_student(student, images, targets[:, :16], cfg)
    bad = targets.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_student(student, images, bad, cfg)
