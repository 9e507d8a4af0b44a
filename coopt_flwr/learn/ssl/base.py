"""The SSL method base class and the machinery every method shares.

An :class:`SSLMethod` trains the *shared* backbone it is given (the module that is linear-probed
afterwards) and plugs into the generic training loop of :mod:`coopt_flwr.learn.training`:
``step(images, idx, progress)`` takes a uint8 NHWC batch already on the training device (``idx``
is ignored), draws the method's augmented views (:mod:`coopt_flwr.learn.ssl.views`), runs the
networks and returns the scalar loss; ``after_step(progress)`` performs the momentum (EMA) update
of the target / key / teacher network after each optimizer step. Momentum copies are not in
``trainable_modules()`` and never receive gradients.

Momentum updates use ``lightly.models.utils.update_momentum`` with a
``lightly.utils.scheduler.cosine_schedule`` from ``momentum`` to ``momentum_end`` over training
progress; copies are frozen with ``deactivate_requires_grad``.

A subclass sets ``name``, builds its heads, loss and lightly transform in ``__init__`` and
implements :meth:`SSLMethod.defaults` (its own hyper-parameters for an image size),
:meth:`SSLMethod.trainable_modules` and ``_loss``; methods with a momentum network also override
:meth:`SSLMethod.momentum_pairs`.

Probing: :meth:`SSLMethod.preprocess` turns uint8 NHWC images into exactly the normalized input
the backbone was trained on (no augmentation), so that a linear probe sees the same statistics.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.utils import IMAGENET_NORMALIZE
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn
from torch.nn import functional as F

from coopt_flwr.learn.ssl.views import Views, check_images

__all__ = ["SSLMethod", "common_hparams", "forward_grouped", "momentum_copy"]

_SCHEDULE_RESOLUTION = 1_000_000  # progress in [0, 1] -> integer step for lightly's cosine_schedule


def common_hparams() -> dict[str, Any]:
    """Hyper-parameters every method has: the augmentation backend and threads, ``normalize``."""
    return {
        "aug_backend": "pil",
        "aug_threads": 1,
        "normalize": {"mean": list(IMAGENET_NORMALIZE["mean"]), "std": list(IMAGENET_NORMALIZE["std"])},
    }


def momentum_copy(module: nn.Module, factory: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A frozen copy of ``module`` with the same weights (``factory`` where deepcopy cannot work)."""
    if factory is None:
        twin = copy.deepcopy(module)
    else:
        twin = factory()
        twin.load_state_dict(module.state_dict())
    deactivate_requires_grad(twin)
    return twin


def forward_grouped(fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
    """``fn`` over consecutive same-resolution views concatenated (as DINO's/SwAV's multi-crop)."""
    outs: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        out = fn(torch.cat(list(views[start:end])))
        outs.extend(out.chunk(end - start))
        start = end
    return outs


class SSLMethod(nn.Module, ABC):
    """A self-supervised method around a shared student ``backbone``.

    Attributes: ``name``; ``backbone`` (the very module passed to
    :func:`~coopt_flwr.learn.ssl.create_ssl`; it is what gets linear-probed); ``feature_dim``;
    ``image_size``; ``hparams`` (the resolved hyper-parameters); ``momentum`` (the current EMA
    factor, or None for methods without a momentum network); ``num_steps`` (calls of :meth:`step`).
    """

    name: str = ""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        image_size: int,
        hparams: dict[str, Any],
        transform: Any,
        seed: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        self.hparams = hparams
        self.views = Views(transform, hparams["aug_backend"], hparams["aug_threads"], seed)
        self.momentum: float | None = None
        self.num_steps = 0
        self._state_device: torch.device | None = None

    # -- hyper-parameters ---------------------------------------------------
    @classmethod
    def default_hparams(cls, image_size: int) -> dict[str, Any]:
        """:func:`common_hparams` plus this method's :meth:`defaults` (a fresh dict)."""
        size = int(image_size)
        if size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        return common_hparams() | cls.defaults(size)

    @classmethod
    @abstractmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        """The method's own hyper-parameters for ``size`` px inputs (``size >= 1``; a fresh dict)."""

    # -- public API ---------------------------------------------------------
    def step(self, images: Tensor, idx: Tensor | None, progress: float) -> Tensor:
        """uint8 NHWC batch on the training device -> scalar loss (``idx`` is ignored)."""
        self._follow_device(images.device)
        self._sync_momentum_modes()
        views = self.views(images)
        loss = self._loss(views, float(progress))
        self.num_steps += 1
        return loss

    def after_step(self, progress: float) -> None:
        """EMA update of the momentum networks after an optimizer step (no-op without them)."""
        pairs = self.momentum_pairs()
        if not pairs:
            return
        m = self.momentum_at(progress)
        for online, ema in pairs:
            update_momentum(online, ema, m)
        self.momentum = m

    @abstractmethod
    def trainable_modules(self) -> list[nn.Module]:
        """Backbone and heads: the modules whose parameters the optimizer updates."""

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum copy) pairs that :meth:`after_step` updates."""
        return []

    def momentum_at(self, progress: float) -> float:
        """Cosine schedule from ``momentum`` to ``momentum_end`` over progress in [0, 1]."""
        p = min(max(float(progress), 0.0), 1.0)
        return cosine_schedule(
            step=round(p * _SCHEDULE_RESOLUTION),
            max_steps=_SCHEDULE_RESOLUTION + 1,
            start_value=float(self.hparams["momentum"]),
            end_value=float(self.hparams["momentum_end"]),
        )

    def embed(self, x: Tensor) -> Tensor:
        """Backbone features (N, feature_dim) of normalized float images."""
        y = self.backbone(x).flatten(start_dim=1)
        if y.shape[1] != self.feature_dim:
            raise ValueError(
                f"backbone returned {y.shape[1]} features per image, expected feature_dim={self.feature_dim} "
                "(the backbone must output pooled features)"
            )
        return y

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 NHWC -> the float NCHW input the backbone was trained on, without augmentation.

        Use it to feed the backbone for linear probing: same ``normalize`` statistics as training,
        resized (bilinear, antialiased) to ``image_size`` if needed.
        """
        x = check_images(images)
        if x.shape[-1] == 1:
            x = x.expand(-1, -1, -1, 3)
        x = x.permute(0, 3, 1, 2).float().div(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        norm = self.hparams.get("normalize")
        if norm:
            mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    # -- internals ----------------------------------------------------------
    @abstractmethod
    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        """The method's loss on one batch of views (a scalar tensor)."""

    def _follow_device(self, device: torch.device) -> None:
        # The training loop moves trainable_modules(); momentum copies and loss buffers follow here.
        if self._state_device != device:
            self.to(device)
            self._state_device = device

    def _sync_momentum_modes(self) -> None:
        for online, ema in self.momentum_pairs():
            if ema.training != online.training:
                ema.train(online.training)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, image_size={self.image_size}"
