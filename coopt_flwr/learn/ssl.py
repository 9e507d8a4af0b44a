"""Self-supervised baselines for CoOpt: BYOL, SimCLR, MoCo v2, SimSiam, DINO and SwAV.

CoOpt is compared against SSL on the raw images at an equal training budget and with the same
student backbone. Every method here trains the *shared* backbone it is given (the module that
is linear-probed afterwards) and plugs into the generic training loop of
:mod:`coopt_flwr.learn.training`::

    method = create_ssl("byol", backbone, feature_dim=512, image_size=32, seed=0)
    fit(method.step, method.trainable_modules(), images_uint8_nhwc, cfg, after_step=method.after_step)

``step(images, idx, progress)`` takes a uint8 NHWC batch already on the training device (``idx``
is ignored), draws the method's augmented views, runs the networks and returns the scalar loss;
``after_step(progress)`` performs the momentum (EMA) update of the target / key / teacher network
after each optimizer step. Momentum copies are not in ``trainable_modules()`` and never receive
gradients.

Everything is assembled from lightly 1.6 pieces, not rewritten:

=========  ==================================================  ===========================  ==========
method     heads (``lightly.models.modules``)                  loss (``lightly.loss``)      views
=========  ==================================================  ===========================  ==========
byol       BYOLProjectionHead + BYOLPredictionHead, momentum   NegativeCosineSimilarity     BYOLTransform
simclr     SimCLRProjectionHead                                NTXentLoss                   SimCLRTransform
moco       MoCoProjectionHead, momentum key encoder            NTXentLoss + memory bank     MoCoV2Transform
simsiam    SimSiamProjectionHead + SimSiamPredictionHead       NegativeCosineSimilarity     SimSiamTransform
dino       DINOProjectionHead, momentum teacher                DINOLoss                     DINOTransform
swav       SwaVProjectionHead + SwaVPrototypes (+ queue)       SwaVLoss                     SwaVTransform
=========  ==================================================  ===========================  ==========

Momentum updates use ``lightly.models.utils.update_momentum`` with a
``lightly.utils.scheduler.cosine_schedule`` from ``momentum`` to ``momentum_end`` over training
progress; copies are frozen with ``deactivate_requires_grad``.

Hyper-parameters (:func:`default_hparams`) follow each paper and lightly's CIFAR-10 benchmark
(head widths: BYOL 1024/256, SimCLR and MoCo 512/128, SwAV 512/128 with 512 prototypes; SimSiam
lightly's 3-layer 2048 projector with a 512 bottleneck predictor), with these changes for small
images and CPU-sized budgets:

* every view transform gets ``input_size`` / crop size = ``image_size``; DINO and SwAV local
  crops are ``image_size // 2`` pixels (16 px at 32 px instead of 96 px at 224 px) and there are
  4 of them instead of 6 (augmentation runs per sample on the CPU); crop *scale* ranges stay at
  each method's standard values;
* Gaussian blur is off below 64 px, as in lightly's CIFAR-10 benchmark (a sigma of up to 2 px is
  a large fraction of a 32 px image); at 64 px and above each transform keeps its default;
* SimCLR colour jitter strength 0.5 (the SimCLR paper's CIFAR setting); the others keep their
  defaults (BYOL's, MoCo v2's, SimSiam's and DINO's jitter is already the weaker 0.4 variant);
* momentum: BYOL and DINO use a cosine 0.99 -> 1 schedule (0.996 in the papers is too slow for a
  few hundred steps), MoCo v2 a constant 0.99 with a 4096-entry queue and temperature 0.2; its
  loss is symmetrised in one NTXentLoss call (both query sets against the queue as it was, then
  both key sets enqueued); no shuffled BN, which changes nothing on one device;
* DINO: head hidden width 1024 (2048 in the paper), 2048 prototypes (65536 for ImageNet), batch
  norm in the head (ResNet backbone), teacher temperature warmed up linearly 0.04 -> 0.07 over the
  first 30 % of training (progress, not epochs);
* SwAV: queue off by default (``queue_length=0``); with ``queue_length > 0`` one queue per
  high-resolution crop starts filling at ``queue_start_progress`` and is used once full;
  prototypes are re-normalized before every step.

Probing: :meth:`SSLMethod.preprocess` turns uint8 NHWC images into exactly the normalized input
the backbone was trained on (no augmentation), so that a linear probe sees the same statistics.

Augmentation. lightly's transforms are per-sample torchvision pipelines. The batch is moved to
the CPU, each lightly view transform is applied sample by sample, and its final ``ToTensor`` +
``Normalize`` (lightly's ImageNet statistics by default) run once on the stacked uint8 views on the
training device; no-op pieces (probability 0) are dropped. Two backends:

* ``aug_backend="pil"`` (default): the unmodified lightly pipelines on PIL images (one
  ``Image.fromarray`` per sample, no other conversion). On the 2-core CPU this is the faster one:
  about 0.4 ms per 32 px view against 0.7 ms for tensors (PIL's resized crop and hue jitter are
  about twice as fast as torchvision's tensor kernels on 3x32x32 inputs).
* ``aug_backend="tensor"``: the same lightly objects on uint8 CHW tensors, with lightly's two
  PIL-only pieces swapped for tensor-native torchvision ones: ``RandomSolarization`` ->
  ``v2.RandomSolarize`` (same threshold and probability) and ``GaussianBlur`` (a PIL round trip)
  -> ``v2.GaussianBlur`` with lightly's sigma range and a kernel of about 10 % of the crop.

Views (and :meth:`SSLMethod.preprocess`) come out in channels-last memory format, the layout the
NHWC batch already has and the one the student's training loop uses, so both sides of the
comparison run the same convolution kernels (on the 2-core CPU a ResNet-10 forward + backward at
32 px, batch 256, is 4-8 % faster channels-last than from contiguous NCHW input).

Per-sample work runs with one intra-op thread (``aug_threads``): the ops are tiny and an OpenMP
fork/join per op costs more than it saves, badly so when other processes keep the cores busy.
Augmentation draws from its own seeded torch / numpy random streams, so a method's loss sequence
depends only on its seed and the backbone's initial weights, never on other users of the global
generators.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    GaussianBlur,
    MoCoV2Transform,
    RandomRotate,
    RandomSolarization,
    SimCLRTransform,
    SimSiamTransform,
    SwaVTransform,
)
from lightly.transforms.torchvision_v2_compatibility import ToTensor as _LightlyToTensor
from lightly.transforms.utils import IMAGENET_NORMALIZE
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.transforms import v2

__all__ = [
    "SSL_METHODS",
    "SSLMethod",
    "create_ssl",
    "default_hparams",
]

SSL_METHODS: tuple[str, ...] = ("byol", "simclr", "moco", "simsiam", "dino", "swav")
"""Names accepted by :func:`create_ssl` (MoCo is MoCo v2: MLP head, queue, v2 augmentations)."""

AUG_BACKENDS = ("pil", "tensor")

_SCHEDULE_RESOLUTION = 1_000_000  # progress in [0, 1] -> integer step for lightly's cosine_schedule
_BLUR_MIN_SIZE = 64  # below this image size Gaussian blur is off by default


# --------------------------------------------------------------------------- hyper-parameters


def _common() -> dict[str, Any]:
    return {
        "aug_backend": "pil",
        "aug_threads": 1,
        "normalize": {"mean": list(IMAGENET_NORMALIZE["mean"]), "std": list(IMAGENET_NORMALIZE["std"])},
    }


def _blur(image_size: int, default: Any) -> Any:
    """lightly's blur probability at >= 64 px, off below (as in lightly's CIFAR-10 benchmark)."""
    if image_size >= _BLUR_MIN_SIZE:
        return default
    return tuple(0.0 for _ in default) if isinstance(default, tuple) else 0.0


def default_hparams(name: str, image_size: int) -> dict[str, Any]:
    """Documented defaults of method ``name`` for ``image_size`` px inputs (a fresh dict).

    Keys starting with ``transform`` are keyword arguments of the lightly transform (an override
    dict is merged into them); ``normalize`` (``{"mean", "std"}`` or ``None``) is passed to every
    lightly view transform. See the module docstring for what differs from the papers.
    """
    key = _check_name(name)
    size = int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    local = max(1, size // 2)
    hp = _common()
    if key == "byol":
        hp |= {
            "proj_hidden_dim": 1024,
            "proj_output_dim": 256,
            "pred_hidden_dim": 1024,
            "momentum": 0.99,
            "momentum_end": 1.0,
            "transform_view1": {"input_size": size, "gaussian_blur": _blur(size, 1.0)},
            "transform_view2": {"input_size": size, "gaussian_blur": _blur(size, 0.1)},
        }
    elif key == "simclr":
        hp |= {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "proj_num_layers": 2,
            "temperature": 0.5,
            "transform": {"input_size": size, "cj_strength": 0.5, "gaussian_blur": _blur(size, 0.5)},
        }
    elif key == "moco":
        hp |= {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "temperature": 0.2,
            "queue_size": 4096,
            "momentum": 0.99,
            "momentum_end": 0.99,
            "transform": {"input_size": size, "gaussian_blur": _blur(size, 0.5)},
        }
    elif key == "simsiam":
        hp |= {
            "proj_hidden_dim": 2048,
            "proj_output_dim": 2048,
            "pred_hidden_dim": 512,
            "transform": {"input_size": size, "gaussian_blur": _blur(size, 0.5)},
        }
    elif key == "dino":
        hp |= {
            "head_hidden_dim": 1024,
            "head_bottleneck_dim": 256,
            "output_dim": 2048,
            "head_batch_norm": True,
            "norm_last_layer": True,
            "student_temp": 0.1,
            "teacher_temp": 0.07,
            "warmup_teacher_temp": 0.04,
            "teacher_temp_warmup_progress": 0.3,
            "center_momentum": 0.9,
            "momentum": 0.99,
            "momentum_end": 1.0,
            "transform": {
                "global_crop_size": size,
                "global_crop_scale": (0.4, 1.0),
                "local_crop_size": local,
                "local_crop_scale": (0.05, 0.4),
                "n_local_views": 4,
                "gaussian_blur": _blur(size, (1.0, 0.1, 0.5)),
            },
        }
    else:  # swav
        hp |= {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "n_prototypes": 512,
            "n_steps_frozen_prototypes": 0,
            "temperature": 0.1,
            "sinkhorn_iterations": 3,
            "sinkhorn_epsilon": 0.05,
            "queue_length": 0,
            "queue_start_progress": 0.15,
            "transform": {
                "crop_sizes": (size, local),
                "crop_counts": (2, 4),
                "crop_min_scales": (0.14, 0.05),
                "crop_max_scales": (1.0, 0.14),
                "gaussian_blur": _blur(size, 0.5),
            },
        }
    return hp


def _check_name(name: str) -> str:
    key = str(name).strip().lower()
    if key not in SSL_METHODS:
        raise ValueError(f"unknown SSL method {name!r}; choose one of {', '.join(SSL_METHODS)}")
    return key


def _merge_overrides(hp: dict[str, Any], overrides: dict[str, Any], name: str) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for SSL method {name!r}; "
            f"valid: {', '.join(sorted(hp))}"
        )
    out = dict(hp)
    for key, value in overrides.items():
        if key.startswith("transform") and isinstance(value, dict):
            out[key] = {**hp[key], **value}
        else:
            out[key] = value
    if out["aug_backend"] not in AUG_BACKENDS:
        raise ValueError(f"aug_backend must be one of {AUG_BACKENDS}, got {out['aug_backend']!r}")
    return out


# --------------------------------------------------------------------------- views


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if not n or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _is_lightly_wrapper(obj: Any) -> bool:
    """lightly's view classes (and RandomRotateDegrees) only call ``self.transform``."""
    return (
        type(obj).__module__.startswith("lightly.")
        and not isinstance(obj, (v2.Transform, _LightlyToTensor))
        and callable(getattr(obj, "transform", None))
    )


def _flatten(obj: Any) -> Iterator[Any]:
    if isinstance(obj, v2.Compose):
        for t in obj.transforms:
            yield from _flatten(t)
    elif _is_lightly_wrapper(obj):
        yield from _flatten(obj.transform)
    else:
        yield obj


def _blur_kernel(size: int) -> int:
    k = max(3, round(0.1 * size))
    return k if k % 2 else k + 1


def _adapt(op: Any, backend: str, crop_size: int) -> Any:
    """The per-sample op to run for lightly's ``op``, or None where it is a no-op."""
    prob = None
    if isinstance(op, (GaussianBlur, RandomSolarization, RandomRotate)):
        prob = op.prob
    elif isinstance(op, (v2.RandomApply, v2.RandomHorizontalFlip, v2.RandomVerticalFlip, v2.RandomGrayscale)):
        prob = op.p
    if prob is not None and prob <= 0:
        return None
    if isinstance(op, v2.ColorJitter) and all(
        getattr(op, a) is None for a in ("brightness", "contrast", "saturation", "hue")
    ):
        return None  # SwaVViewTransform's bare ColorJitter()
    if backend == "tensor":
        if isinstance(op, GaussianBlur):  # PIL round trip in lightly
            blur = v2.GaussianBlur(kernel_size=_blur_kernel(crop_size), sigma=tuple(op.sigmas))
            return v2.RandomApply([blur], p=op.prob)
        if isinstance(op, RandomSolarization):  # PIL-only in lightly
            return v2.RandomSolarize(threshold=op.threshold, p=op.prob)
    return op


class _ViewPipeline:
    """One lightly view transform split into a per-sample uint8 stage and a batched float stage."""

    def __init__(self, view_transform: Callable[[Any], Any], backend: str) -> None:
        leaves = list(_flatten(view_transform))
        crops = [op.size for op in leaves if isinstance(op, v2.RandomResizedCrop)]
        if len(crops) != 1:
            raise ValueError(f"expected one RandomResizedCrop in a view transform, found {len(crops)}")
        self.size = (int(crops[0][0]), int(crops[0][-1]))
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        ops = []
        for op in leaves:
            if isinstance(op, _LightlyToTensor):
                continue
            if isinstance(op, v2.Normalize):
                self.mean = torch.tensor(op.mean, dtype=torch.float32).view(1, -1, 1, 1)
                self.std = torch.tensor(op.std, dtype=torch.float32).view(1, -1, 1, 1)
                continue
            adapted = _adapt(op, backend, self.size[0])
            if adapted is not None:
                ops.append(adapted)
        self.backend = backend
        self.ops = v2.Compose(ops)

    def sample(self, batch: Sequence[Any]) -> Tensor:
        """Per-sample stage: CHW uint8 tensors or PIL images -> uint8 (N, C, h, w) on the CPU."""
        if self.backend == "tensor":
            return torch.stack([self.ops(x) for x in batch])
        arrays = [np.asarray(self.ops(im), dtype=np.uint8) for im in batch]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def finish(self, views_u8: Tensor, device: torch.device) -> Tensor:
        """Batched ToTensor + Normalize on ``device``; channels-last float (N, C, h, w)."""
        x = views_u8.to(device, non_blocking=True).float().div_(255.0)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(device)) / self.std.to(device)
        return x.contiguous(memory_format=torch.channels_last)


class _Views:
    """All views of a lightly multi-view transform, drawn from a private seeded RNG stream."""

    def __init__(self, transform: Any, backend: str, threads: int | None, seed: int) -> None:
        self.backend = backend
        self.threads = threads
        cache: dict[int, _ViewPipeline] = {}  # views sharing one lightly transform share a pipeline
        self.pipelines: list[_ViewPipeline] = []
        for t in transform.transforms:
            if id(t) not in cache:
                cache[id(t)] = _ViewPipeline(t, backend)
            self.pipelines.append(cache[id(t)])
        gen = torch.Generator().manual_seed(int(seed) + 1)
        self._torch_state = gen.get_state()
        self._np_state = np.random.RandomState((int(seed) + 1) % 2**32).get_state()

    @contextlib.contextmanager
    def _private_rng(self) -> Iterator[None]:
        np_outer = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_state)
            np.random.set_state(self._np_state)
            try:
                yield
            finally:
                self._torch_state = torch.get_rng_state()
                self._np_state = np.random.get_state()
                np.random.set_state(np_outer)

    def __call__(self, images: Tensor) -> list[Tensor]:
        cpu = _check_images(images).detach().cpu()
        if cpu.shape[-1] == 1:
            cpu = cpu.expand(-1, -1, -1, 3)
        with self._private_rng(), _torch_threads(self.threads):
            if self.backend == "pil":
                from PIL import Image

                batch: Sequence[Any] = [Image.fromarray(a) for a in np.ascontiguousarray(cpu.numpy())]
            else:
                batch = cpu.permute(0, 3, 1, 2).contiguous().unbind(0)
            sampled = [p.sample(batch) for p in self.pipelines]
        return [p.finish(s, images.device) for p, s in zip(self.pipelines, sampled, strict=True)]


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 tensor of shape (N, H, W, C)")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be NHWC with 1 or 3 channels, got shape {tuple(images.shape)}")
    return images


# --------------------------------------------------------------------------- methods


def _momentum_copy(module: nn.Module, factory: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A frozen copy of ``module`` with the same weights (``factory`` where deepcopy cannot work)."""
    if factory is None:
        twin = copy.deepcopy(module)
    else:
        twin = factory()
        twin.load_state_dict(module.state_dict())
    deactivate_requires_grad(twin)
    return twin


def _forward_grouped(fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
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

    Attributes: ``name``; ``backbone`` (the very module passed to :func:`create_ssl`; it is what
    gets linear-probed); ``feature_dim``; ``image_size``; ``hparams`` (the resolved
    hyper-parameters); ``momentum`` (the current EMA factor, or None for methods without a
    momentum network); ``num_steps`` (calls of :meth:`step`).
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
        self.views = _Views(transform, hparams["aug_backend"], hparams["aug_threads"], seed)
        self.momentum: float | None = None
        self.num_steps = 0
        self._state_device: torch.device | None = None

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
        x = _check_images(images)
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


class BYOL(SSLMethod):
    name = "byol"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        norm = hp["normalize"]
        transform = BYOLTransform(
            BYOLView1Transform(**{**hp["transform_view1"], "normalize": norm}),
            BYOLView2Transform(**{**hp["transform_view2"], "normalize": norm}),
        )
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = BYOLProjectionHead(feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"])
        self.prediction_head = BYOLPredictionHead(
            hp["proj_output_dim"], hp["pred_hidden_dim"], hp["proj_output_dim"]
        )
        self.backbone_momentum = _momentum_copy(backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = float(hp["momentum"])

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head, self.prediction_head]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.backbone_momentum),
            (self.projection_head, self.projection_head_momentum),
        ]

    def _online(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.embed(x)))

    @torch.no_grad()
    def _target(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1))

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        x0, x1 = views
        p0, p1 = self._online(x0), self._online(x1)
        z0, z1 = self._target(x0), self._target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class SimCLR(SSLMethod):
    name = "simclr"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = SimCLRTransform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = SimCLRProjectionHead(
            feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"], num_layers=hp["proj_num_layers"]
        )
        self.criterion = NTXentLoss(temperature=hp["temperature"])

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head]

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        z0, z1 = (self.projection_head(self.embed(x)) for x in views)
        return self.criterion(z0, z1)


class MoCo(SSLMethod):
    """MoCo v2: MLP head, momentum key encoder, queue of negatives, symmetric loss."""

    name = "moco"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = MoCoV2Transform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = MoCoProjectionHead(feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"])
        self.backbone_momentum = _momentum_copy(backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        queue = int(hp["queue_size"])
        self.criterion = NTXentLoss(
            temperature=hp["temperature"],
            memory_bank_size=(queue, int(hp["proj_output_dim"])) if queue > 0 else 0,
        )
        self.momentum = float(hp["momentum"])

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.backbone, self.backbone_momentum),
            (self.projection_head, self.projection_head_momentum),
        ]

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        q0, q1 = (self.projection_head(self.embed(x)) for x in views)
        with torch.no_grad():
            k0, k1 = (self.projection_head_momentum(self.backbone_momentum(x).flatten(1)) for x in views)
        # Symmetric loss in one call: both query sets see the queue as it was before this batch,
        # then both key sets are enqueued (two separate calls would let the second query set
        # meet its own image's key among the negatives).
        return self.criterion(torch.cat([q0, q1]), torch.cat([k1, k0]))


class SimSiam(SSLMethod):
    name = "simsiam"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = SimSiamTransform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = SimSiamProjectionHead(
            feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"]
        )
        self.prediction_head = SimSiamPredictionHead(
            hp["proj_output_dim"], hp["pred_hidden_dim"], hp["proj_output_dim"]
        )
        self.criterion = NegativeCosineSimilarity()

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head, self.prediction_head]

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        z0, z1 = (self.projection_head(self.embed(x)) for x in views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


class DINO(SSLMethod):
    name = "dino"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = DINOTransform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)

        def make_head() -> nn.Module:
            with warnings.catch_warnings():  # lightly's head uses the deprecated nn.utils.weight_norm
                warnings.filterwarnings("ignore", message=r".*weight_norm.*", category=FutureWarning)
                return DINOProjectionHead(
                    feature_dim,
                    hp["head_hidden_dim"],
                    hp["head_bottleneck_dim"],
                    hp["output_dim"],
                    batch_norm=hp["head_batch_norm"],
                    norm_last_layer=hp["norm_last_layer"],
                )

        self.head = make_head()
        self.teacher_backbone = _momentum_copy(backbone)
        # weight_norm modules cannot be deep-copied: build a twin and copy the weights.
        self.teacher_head = _momentum_copy(self.head, factory=make_head)
        self.criterion = DINOLoss(
            output_dim=hp["output_dim"],
            warmup_teacher_temp=hp["warmup_teacher_temp"],
            teacher_temp=hp["teacher_temp"],
            student_temp=hp["student_temp"],
            center_momentum=hp["center_momentum"],
        )
        self.momentum = float(hp["momentum"])
        self.n_global = 2  # DINOTransform: 2 global views first, then the local ones

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def teacher_temperature(self, progress: float) -> float:
        """Linear warm-up ``warmup_teacher_temp`` -> ``teacher_temp`` over the first part of training."""
        warm, final = float(self.hparams["warmup_teacher_temp"]), float(self.hparams["teacher_temp"])
        span = float(self.hparams["teacher_temp_warmup_progress"])
        if span <= 0 or progress >= span:
            return final
        return warm + (final - warm) * max(progress, 0.0) / span

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        glob = views[: self.n_global]
        with torch.no_grad():
            teacher = _forward_grouped(
                lambda x: self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1)), glob
            )
        student = _forward_grouped(lambda x: self.head(self.embed(x)), views)
        return self.criterion(teacher, student, teacher_temp=self.teacher_temperature(progress))


class SwAV(SSLMethod):
    name = "swav"

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = SwaVTransform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = SwaVProjectionHead(feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"])
        self.prototypes = SwaVPrototypes(
            hp["proj_output_dim"],
            hp["n_prototypes"],
            n_steps_frozen_prototypes=hp["n_steps_frozen_prototypes"],
        )
        self.criterion = SwaVLoss(
            temperature=hp["temperature"],
            sinkhorn_iterations=hp["sinkhorn_iterations"],
            sinkhorn_epsilon=hp["sinkhorn_epsilon"],
        )
        self.n_high = int(hp["transform"]["crop_counts"][0])
        self.queue_length = int(hp["queue_length"])
        self.queues = nn.ModuleList(
            [
                MemoryBankModule(
                    size=(self.queue_length, int(hp["proj_output_dim"])), feature_dim_first=False
                )
                for _ in range(self.n_high if self.queue_length > 0 else 0)
            ]
        )
        self.queue_filled = 0  # high-resolution projections enqueued per queue so far
        self.queue_used = False  # whether the last step used the queue

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head, self.prototypes]

    def _project(self, x: Tensor) -> Tensor:
        return F.normalize(self.projection_head(self.embed(x)), dim=1, p=2)

    def _loss(self, views: list[Tensor], progress: float) -> Tensor:
        self.prototypes.normalize()
        projections = _forward_grouped(self._project, views)
        logits = [self.prototypes(p, step=self.num_steps) for p in projections]
        queue_logits = None
        self.queue_used = False
        if self.queue_length > 0 and progress >= float(self.hparams["queue_start_progress"]):
            with torch.no_grad():
                full = self.queue_filled >= self.queue_length
                banks = [
                    q(p.detach(), update=True)[1] for q, p in zip(self.queues, projections, strict=False)
                ]
                self.queue_filled += projections[0].shape[0]
                if full:
                    queue_logits = [self.prototypes(b, step=self.num_steps) for b in banks]
                    self.queue_used = True
        loss = self.criterion(logits[: self.n_high], logits[self.n_high :], queue_outputs=queue_logits)
        return loss.squeeze()


_METHODS: dict[str, type[SSLMethod]] = {
    "byol": BYOL,
    "simclr": SimCLR,
    "moco": MoCo,
    "simsiam": SimSiam,
    "dino": DINO,
    "swav": SwAV,
}


def create_ssl(
    name: str, backbone: nn.Module, feature_dim: int, image_size: int, *, seed: int = 0, **overrides: Any
) -> SSLMethod:
    """Build SSL method ``name`` (one of :data:`SSL_METHODS`) around the shared ``backbone``.

    ``backbone`` maps normalized float (N, 3, H, W) images to pooled features (N, feature_dim)
    (a trailing 1x1 spatial shape is flattened); it is trained in place and stays the object
    probed afterwards (``method.backbone is backbone``). ``overrides`` replace entries of
    :func:`default_hparams` (dict-valued ``transform*`` entries are merged); an unknown key is a
    ValueError. ``seed`` fixes the heads' initialisation and the augmentation stream; the global
    random generators are left untouched.
    """
    key = _check_name(name)
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
    hp = _merge_overrides(default_hparams(key, image_size), overrides, key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        method = _METHODS[key](backbone, int(feature_dim), int(image_size), hp, int(seed))
    try:
        device = next(backbone.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    method.to(device)
    return method
