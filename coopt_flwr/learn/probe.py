"""Linear-probe evaluation of a frozen backbone, the standard yardstick of SSL and of CoOpt students.

Features of labeled train and test images are extracted once per evaluation (eval mode, no
augmentation), standardized with the train statistics, and a multinomial logistic regression is
fitted on the train features with full-batch L-BFGS in float64 (deterministic: convex problem,
zero initialization, no sampling). The score is top-1 accuracy on the test features.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coopt_flwr.devices import resolve_device, tune_cpu_allocator
from coopt_flwr.learn.student import channel_stats, normalize
from coopt_flwr.learn.training import to_float_nchw
from coopt_flwr.registry.datasets import ImageData

__all__ = [
    "CPU_BATCH_SIZE",
    "CUDA_BATCH_SIZE",
    "DEFAULT_MAX_ITER",
    "DEFAULT_WEIGHT_DECAY",
    "LinearProbe",
    "extract_features",
    "frozen",
    "linear_probe",
]

DEFAULT_MAX_ITER = 300
"""L-BFGS iterations; accuracy is stable to ~0.1 point well before this on 10k x 256 features."""
CPU_BATCH_SIZE = 128
"""Default extraction batch on the CPU: cache-sized activations run ~1.4x faster than 512."""
CUDA_BATCH_SIZE = 512
"""Default extraction batch elsewhere."""
DEFAULT_WEIGHT_DECAY = 1e-3
"""L2 penalty ``0.5 * wd * ||W||^2`` added to the mean cross-entropy (standardized features)."""


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return resolve_device(None)


def extract_features(
    backbone: nn.Module,
    images: np.ndarray,
    batch_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embed images with a frozen backbone (eval mode, no augmentation, inference mode).

    Parameters
    ----------
    backbone : nn.Module
        Maps normalized float (B, 3, H, W) to pooled features (B, d). Its train/eval mode is
        restored afterwards.
    images : np.ndarray
        uint8 array of shape (N, H, W, 3).
    batch_size : int or None
        Images per forward pass; None: :data:`CPU_BATCH_SIZE` on the CPU, else :data:`CUDA_BATCH_SIZE`.
    mean, std : tuple of float or None
        Per-channel normalization in [0, 1] units (the one used in training); None computes it
        from ``images``.
    device : str, torch.device or None
        None runs where the backbone's parameters are; otherwise the backbone is moved there.

    Returns
    -------
    np.ndarray
        float32 features of shape (N, d).
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("extract_features: images must be a uint8 numpy array of shape (N, H, W, 3)")
    if (mean is None) != (std is None):
        raise ValueError("extract_features: give both mean and std, or neither")
    if mean is None:
        mean, std = channel_stats(images)
    if device is None:
        dev = _module_device(backbone)
    else:
        dev = resolve_device(device)
        backbone.to(dev)
    if dev.type == "cpu":
        tune_cpu_allocator()
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE if dev.type == "cpu" else CUDA_BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}")
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    chunks: list[np.ndarray] = []
    with frozen(backbone), torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            # np.array: a writable copy (inputs may be read-only memory maps).
            batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(dev)
            feats = backbone(normalize(to_float_nchw(batch), m, s))
            if feats.ndim != 2:
                raise ValueError(f"extract_features: backbone output has shape {tuple(feats.shape)}, not 2-D")
            chunks.append(feats.float().cpu().numpy())
    if not chunks:
        raise ValueError("extract_features: no images")
    return np.concatenate(chunks)


def linear_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    *,
    max_iter: int = DEFAULT_MAX_ITER,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    seed: int = 0,
) -> float:
    """Top-1 test accuracy of an L2-regularized multinomial logistic regression on frozen features.

    Features are standardized with the train mean/std; the model ``softmax(W z + b)`` minimizes
    mean cross-entropy + ``0.5 * weight_decay * ||W||^2`` by full-batch L-BFGS (strong Wolfe line
    search) in float64 on the CPU, from zero weights.

    Parameters
    ----------
    train_feats : np.ndarray
        Shape (N, d).
    train_labels : np.ndarray
        Integer class ids of shape (N,).
    test_feats : np.ndarray
        Shape (M, d).
    test_labels : np.ndarray
        Integer class ids of shape (M,).
    max_iter : int
        L-BFGS iterations.
    weight_decay : float
        L2 penalty on the weights (not the bias).
    seed : int
        Accepted so callers can pass their run seed; the convex solve starts from zeros and
        draws no random numbers, so the result does not depend on it.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    del seed  # deterministic by construction, see the docstring
    xtr, ytr, xte, yte = _probe_tensors(train_feats, train_labels, test_feats, test_labels)
    num_classes = int(max(int(ytr.max()), int(yte.max()))) + 1
    mu = xtr.mean(0)
    sd = xtr.std(0)
    # Constant features (dead units) carry nothing; dividing by ~0 would blow them up.
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    ztr = (xtr - mu) / sd
    zte = (xte - mu) / sd
    weight, bias = _fit_logistic(ztr, ytr, num_classes, max_iter, weight_decay)
    with torch.no_grad():
        pred = (zte @ weight + bias).argmax(1)
    return float((pred == yte).double().mean())


def _probe_tensors(
    train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray, test_labels: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float64 features and int64 labels: (train x, train y, test x, test y)."""
    xtr = torch.as_tensor(np.asarray(train_feats), dtype=torch.float64)
    xte = torch.as_tensor(np.asarray(test_feats), dtype=torch.float64)
    ytr = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    yte = torch.as_tensor(np.asarray(test_labels), dtype=torch.int64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"linear_probe: features must be (N, d) and (M, d), got {xtr.shape} {xte.shape}")
    if ytr.shape != (xtr.shape[0],) or yte.shape != (xte.shape[0],):
        raise ValueError("linear_probe: one label per feature row is needed")
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise ValueError("linear_probe: empty train or test set")
    if not (torch.isfinite(xtr).all() and torch.isfinite(xte).all()):
        raise ValueError("linear_probe: features contain NaN or infinity")
    if min(int(ytr.min()), int(yte.min())) < 0:
        raise ValueError("linear_probe: labels must be >= 0")
    return xtr, ytr, xte, yte


def _fit_logistic(
    z: torch.Tensor, y: torch.Tensor, num_classes: int, max_iter: int, weight_decay: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (d, C) and bias (C,) of the L2-regularized softmax regression, by L-BFGS from zeros."""
    weight = torch.zeros(z.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        history_size=20,
        tolerance_grad=1e-5,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight, bias


class LinearProbe:
    """A linear-probe evaluator: labeled train/test images in, ``probe(backbone) -> accuracy``.

    This is the ``evaluate`` closure of a training run (``lambda: probe(student.backbone)``):
    each call extracts features of both sets with the frozen backbone, fits
    :func:`linear_probe` and restores the backbone's train/eval modes.

    Parameters
    ----------
    train_images, test_images : np.ndarray
        uint8 arrays of shape (N, H, W, 3) and (M, H, W, 3).
    train_labels, test_labels : np.ndarray
        Integer class ids of shape (N,) and (M,).
    mean, std : tuple of float or None
        Input normalization, the one the backbone is trained with; None computes it from
        ``train_images``.
    batch_size : int or None
        Images per forward pass of the feature extraction (None: see :func:`extract_features`).
    device : str, torch.device or None
        Where to extract; None uses the backbone's device.
    max_iter, weight_decay : int, float
        See :func:`linear_probe`.

    Attributes
    ----------
    last_seconds : float
        Wall time of the last call; ``last_extract_seconds`` and ``last_fit_seconds`` split it.
    """

    def __init__(
        self,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        *,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        max_iter: int = DEFAULT_MAX_ITER,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
    ) -> None:
        if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
            raise ValueError("LinearProbe: one label per image is needed")
        if (mean is None) != (std is None):
            raise ValueError("LinearProbe: give both mean and std, or neither")
        if mean is None:
            mean, std = channel_stats(train_images)
        self.train_images = train_images
        self.train_labels = np.asarray(train_labels, dtype=np.int64)
        self.test_images = test_images
        self.test_labels = np.asarray(test_labels, dtype=np.int64)
        self.mean = tuple(mean)
        self.std = tuple(std)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.device = device
        self.max_iter = int(max_iter)
        self.weight_decay = float(weight_decay)
        self.last_seconds = 0.0
        self.last_extract_seconds = 0.0
        self.last_fit_seconds = 0.0

    @classmethod
    def from_data(cls, train: ImageData, test: ImageData, **kwargs) -> LinearProbe:
        """A probe on two labeled data sets (e.g. a balanced train subset and the test split)."""
        if train.labels is None or test.labels is None:
            raise ValueError("LinearProbe.from_data: both data sets must be labeled")
        return cls(train.images, train.labels, test.images, test.labels, **kwargs)

    def features(self, backbone: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """Frozen features of the train and test images: float32 (N, d) and (M, d)."""
        kw = {"batch_size": self.batch_size, "mean": self.mean, "std": self.std, "device": self.device}
        return extract_features(backbone, self.train_images, **kw), extract_features(
            backbone, self.test_images, **kw
        )

    def __call__(self, backbone: nn.Module) -> float:
        """Linear-probe top-1 accuracy in [0, 1] of ``backbone``'s frozen features."""
        t0 = time.perf_counter()
        train_feats, test_feats = self.features(backbone)
        t1 = time.perf_counter()
        acc = linear_probe(
            train_feats,
            self.train_labels,
            test_feats,
            self.test_labels,
            max_iter=self.max_iter,
            weight_decay=self.weight_decay,
        )
        t2 = time.perf_counter()
        self.last_extract_seconds, self.last_fit_seconds, self.last_seconds = t1 - t0, t2 - t1, t2 - t0
        return acc
