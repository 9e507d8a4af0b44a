"""The CoOpt student: a backbone trained from scratch to regress the optimized targets.

A student is a timm backbone (pooled features, no classifier) plus a linear head to the target
width ``n``. It is trained with :func:`train_student` on the optimized data set ``D'`` (one
forward pass per image, loss ``1 - cos(head(phi(aug(x))), y)``) through the shared loop
:func:`coopt_flwr.learn.training.fit`, and evaluated by a linear probe on the frozen backbone.

Importing this module registers ``cifar_resnet10`` with timm: a BasicBlock ResNet with one block
per stage, widths 32/64/128/256, a 3x3 stride-1 stem and no max-pool (~1.2M parameters), the
student that works at CPU scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from coopt_flwr.devices import resolve_device
from coopt_flwr.learn.training import TrainConfig, TrainResult, augment_crop_flip, fit, to_float_nchw

__all__ = [
    "CIFAR_RESNET10",
    "CifarResNet",
    "Student",
    "apply_cifar_stem",
    "center_targets",
    "channel_stats",
    "cifar_resnet10",
    "cosine_regression_loss",
    "create_backbone",
    "normalize",
    "train_student",
]

CIFAR_RESNET10 = "cifar_resnet10"

# timm looks the default config up in the module's ``default_cfgs`` when the entrypoint registers.
# No weights exist (url ""); mean/std are placeholders, callers normalize with their data's stats.
default_cfgs = generate_default_cfgs(
    {
        CIFAR_RESNET10: {
            "url": "",
            "num_classes": 10,
            "input_size": (3, 32, 32),
            "pool_size": (4, 4),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD,
            "first_conv": "conv1",
            "classifier": "fc",
        }
    }
)


# --------------------------------------------------------------------------- backbones


def _stem_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A 3x3 stride-1 'same' conv with the channels of ``conv``, initialized like timm's ResNets."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _shrink_reductions(model: nn.Module, factor: int) -> None:
    # timm's feature_info records each stage's stride; removing stem strides divides them.
    for info in getattr(model, "feature_info", None) or []:
        if isinstance(info, dict) and "reduction" in info:
            info["reduction"] = max(1, info["reduction"] // factor)


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """Adapt an ImageNet-style stem to 32x32 inputs, in place: first conv 3x3 stride 1, no max-pool.

    Idempotent. ``feature_info`` reductions are updated to the removed strides.

    Parameters
    ----------
    model : nn.Module
        A timm model.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        For a model whose stem this function does not know how to adapt.

    Notes
    -----
    timm ``ResNet`` (resnet*, resnext*, seresnet*, wide_resnet*, the deep-stem c/d/t variants ...):
    a single ``conv1`` becomes a 3x3 stride-1 conv (freshly initialized when it changes); in a
    deep stem the first conv keeps its 3x3 weights and gets stride 1; ``maxpool`` (or the strided
    conv that replaces it) becomes the identity.

    Models with a ``conv_stem`` (EfficientNet, MobileNetV2/V3, MNASNet, FBNet ...): ``conv_stem``
    gets stride 1 (and a 3x3 kernel if it had another); they have no max-pool.
    """
    if isinstance(model, ResNet):
        first = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1
        if not isinstance(first, nn.Conv2d):
            raise ValueError(f"unrecognized ResNet stem {type(model.conv1).__name__}")
        factor = first.stride[0] * (1 if isinstance(model.maxpool, nn.Identity) else 2)
        if isinstance(model.conv1, nn.Sequential):
            first.stride = (1, 1)
        elif first.kernel_size != (3, 3) or first.stride != (1, 1):
            model.conv1 = _stem_conv(first)
        model.maxpool = nn.Identity()
        _shrink_reductions(model, factor)
        return model
    conv = getattr(model, "conv_stem", None)
    if isinstance(conv, nn.Conv2d):
        factor = conv.stride[0]
        if conv.kernel_size != (3, 3):
            model.conv_stem = _stem_conv(conv)
        else:
            conv.stride = (1, 1)
        _shrink_reductions(model, factor)
        return model
    raise ValueError(
        f"cannot apply a CIFAR stem to {type(model).__name__}: supported are timm ResNets (conv1/maxpool) "
        "and models with a conv_stem (EfficientNet, MobileNet ...); pass cifar_stem=False to keep its stem"
    )


class CifarResNet(ResNet):
    """timm ``ResNet`` with a single 3x3 stride-1 stem conv of ``stem_width * 2`` channels, no max-pool.

    Takes ``ResNet``'s arguments with ``stem_type="deep"``: timm then sizes the stem output (and
    the first stage's input) as ``stem_width * 2``, and the three-conv deep stem is replaced by
    one conv of that width.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, "stem_type": "deep"})
        apply_cifar_stem(self)  # first, so that feature_info loses the deep stem's strides
        self.conv1 = _stem_conv(nn.Conv2d(self.in_chans, self.bn1.num_features, 3, bias=False))


@register_model
def cifar_resnet10(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-10: BasicBlock, layers [1, 1, 1, 1], widths 32/64/128/256, 3x3 stride-1 stem.

    A timm entrypoint (``timm.create_model("cifar_resnet10", num_classes=0)``; ``features_only``
    works too); ~1.2M parameters without the classifier. No pretrained weights exist.
    """
    if pretrained:
        raise ValueError(f"{CIFAR_RESNET10} has no pretrained weights")
    # stem_width 16 -> 32 stem channels, equal to layer1's width, so layer1 needs no projection.
    # zero_init_last=False (timm's ResNets default to True): with zero-initialized residual
    # branches an untrained net only sees the pixels its strided 1x1 shortcuts sample, and its
    # linear probe drops from ~38 % to ~33 % on CIFAR-10 (19 % instead of 89 % on 8x8 digits).
    args = {
        "block": BasicBlock,
        "layers": (1, 1, 1, 1),
        "channels": (32, 64, 128, 256),
        "stem_width": 16,
        "zero_init_last": False,
    }
    return build_model_with_cfg(CifarResNet, CIFAR_RESNET10, pretrained=False, **{**args, **kwargs})


def create_backbone(
    arch: str, cifar_stem: bool = True, seed: int = 0, **model_kwargs: Any
) -> tuple[nn.Module, int]:
    """Build a randomly initialized timm backbone returning pooled features.

    Parameters
    ----------
    arch : str
        A timm architecture name, including ``cifar_resnet10`` (registered by this module).
    cifar_stem : bool
        Adapt the stem to 32x32-scale images (see :func:`apply_cifar_stem`).
        ``cifar_resnet10`` has that stem either way.
    seed : int
        Seed of the initialization; the caller's global RNG state is left untouched.
    **model_kwargs
        Passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``zero_init_last``).

    Returns
    -------
    backbone : nn.Module
        Maps float (B, 3, H, W) to (B, feature_dim).
    feature_dim : int
        Width of the pooled features.

    Raises
    ------
    ValueError
        For an unknown architecture, or ``cifar_stem`` on an unsupported family.
    """
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm architecture {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0, **model_kwargs)
        if cifar_stem and arch != CIFAR_RESNET10:
            apply_cifar_stem(model)
    # head_hidden_size is the pooled output width where a pre-logits head exists (MobileNetV3).
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(dim)


# --------------------------------------------------------------------------- normalization


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a uint8 image set, in [0, 1] units.

    Parameters
    ----------
    images : np.ndarray
        uint8 array of shape (N, H, W, 3).
    chunk : int
        Images converted to float at a time (bounds memory on large sets).

    Returns
    -------
    mean, std : tuple of float
        Three values each.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats: expected a non-empty (N, H, W, C) array, got {images.shape}")
    c = images.shape[-1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, images.shape[0], chunk):
        x = np.asarray(images[start : start + chunk], dtype=np.float64).reshape(-1, c) / 255.0
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    # Clamp: constant channels (e.g. gray digits replicated) must not divide by zero.
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0)).clip(min=1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; ``x`` float (B, 3, H, W), ``mean``/``std`` (1, 3, 1, 1)."""
    return (x - mean) / std


def _stats_tensors(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


# --------------------------------------------------------------------------- student


class Student(nn.Module):
    """Backbone ``phi`` plus a linear head to the target width.

    Parameters
    ----------
    backbone : nn.Module
        Maps float (B, 3, H, W) to pooled features (B, feature_dim).
    feature_dim : int
        Backbone output width.
    target_dim : int
        Width ``n`` of the optimized targets.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, target_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, target_dim)
        self.feature_dim = int(feature_dim)
        self.target_dim = int(target_dim)

    @classmethod
    def create(cls, arch: str, target_dim: int, *, cifar_stem: bool = True, seed: int = 0) -> Student:
        """A seeded student with a :func:`create_backbone` backbone."""
        backbone, dim = create_backbone(arch, cifar_stem=cifar_stem, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)  # the head's own stream, distinct from the backbone's
            return cls(backbone, dim, target_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features: float (B, 3, H, W), normalized -> (B, feature_dim)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted targets: float (B, 3, H, W), normalized -> (B, target_dim)."""
        return self.head(self.backbone(x))


def cosine_regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(pred_i, target_i)`` over the batch, computed in float32.

    Parameters
    ----------
    pred, target : torch.Tensor
        Shape (B, n).

    Returns
    -------
    torch.Tensor
        Scalar in [0, 2].
    """
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8)).mean()


def center_targets(targets: np.ndarray) -> np.ndarray:
    """Subtract the per-dimension mean over the data set: (N, n) -> (N, n) float32.

    Prior features are often far from zero-mean (post-ReLU pooling: EfficientNet-Lite0 targets
    share a direction holding ~37 % of their energy, mean pairwise cosine 0.37). Under a cosine
    loss that common direction is the easiest thing to predict and carries no information about
    the image; removing it leaves the loss to the directions that tell images apart. In the
    benchmark's cpu profile (CIFAR-10, Lite0 160 px targets, 400 s of SGD training) centering
    lifts the student's linear probe from 45.0 % to 54.8 % (docs/BENCHMARKS.md).
    """
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2:
        raise ValueError(f"center_targets: expected shape (N, n), got {targets.shape}")
    return targets - targets.mean(axis=0, dtype=np.float64).astype(np.float32)


def train_student(
    student: Student,
    images: np.ndarray,
    targets: np.ndarray,
    cfg: TrainConfig,
    evaluate: Callable[[], float] | None = None,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    augment: bool = True,
    pad: int = 4,
    center: bool = True,
) -> TrainResult:
    """Train a student to regress the optimized targets (loss ``1 - cosine``).

    Parameters
    ----------
    student : Student
        Trained in place (moved to the training device).
    images : np.ndarray
        uint8 array of shape (N, H, W, 3).
    targets : np.ndarray
        float array of shape (N, n): ``targets[i]`` is the target of ``images[i]`` (align the
        ``ids`` of an optimized data set beforehand, e.g. ``images = data.batch(opt["ids"])``).
    cfg : TrainConfig
        Training settings (see :class:`coopt_flwr.learn.training.TrainConfig`).
    evaluate : callable or None
        ``evaluate() -> accuracy``, e.g. ``lambda: probe(student.backbone)`` with a
        :class:`coopt_flwr.learn.probe.LinearProbe`.
    mean, std : tuple of float or None
        Per-channel input normalization in [0, 1] units; None computes it from ``images``
        (use the same values for the probe).
    augment : bool
        Random crop (zero padding ``pad``) and horizontal flip; False feeds the images as they are.
    pad : int
        Padding of the random crop.
    center : bool
        Regress :func:`center_targets` of ``targets`` (the default); False regresses them as given.

    Returns
    -------
    TrainResult
        See :func:`coopt_flwr.learn.training.fit`.
    """
    targets = _checked_targets(student, images, targets)
    if (mean is None) != (std is None):
        raise ValueError("train_student: give both mean and std, or neither")
    if center:
        targets = center_targets(targets)
    if mean is None:
        mean, std = channel_stats(images)
    device = resolve_device(cfg.device)
    student.to(device)
    if device.type == "cuda":
        # Inputs arrive channels-last (permuted NHWC); matching weights use the fast cuDNN kernels.
        student.to(memory_format=torch.channels_last)
    m, s = _stats_tensors(mean, std, device)  # type: ignore[arg-type]
    y = torch.as_tensor(targets, dtype=torch.float32).to(device)
    # Augmentation has its own seeded stream, distinct from fit's shuffling stream.
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)

    def step(x: torch.Tensor, idx: torch.Tensor, progress: float) -> torch.Tensor:
        xf = augment_crop_flip(x, pad=pad, generator=gen) if augment else to_float_nchw(x)
        return cosine_regression_loss(student(normalize(xf, m, s)), y[idx])

    return fit(step, [student], images, cfg, evaluate=evaluate)


def _checked_targets(student: Student, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``targets`` as an array, checked to be finite with one row per image and the head's width."""
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(
            f"train_student: targets must have shape ({images.shape[0]}, n), got {targets.shape}"
        )
    if targets.shape[1] != student.target_dim:
        raise ValueError(
            f"train_student: targets have width {targets.shape[1]}, the student's head {student.target_dim}"
        )
    if not np.isfinite(targets).all():
        raise ValueError("train_student: targets contain NaN or infinity")
    return targets
