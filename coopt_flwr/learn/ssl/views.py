"""Augmented views for the SSL baselines: lightly's view transforms, run fast on uint8 batches.

lightly's transforms are per-sample torchvision pipelines. The batch is moved to the CPU, each
lightly view transform is applied sample by sample, and its final ``ToTensor`` + ``Normalize``
(lightly's ImageNet statistics by default) run once on the stacked uint8 views on the training
device; no-op pieces (probability 0) are dropped. Two backends:

* ``aug_backend="pil"`` (default): the unmodified lightly pipelines on PIL images (one
  ``Image.fromarray`` per sample, no other conversion). On the 2-core CPU this is the faster one:
  about 0.4 ms per 32 px view against 0.7 ms for tensors (PIL's resized crop and hue jitter are
  about twice as fast as torchvision's tensor kernels on 3x32x32 inputs).
* ``aug_backend="tensor"``: the same lightly objects on uint8 CHW tensors, with lightly's two
  PIL-only pieces swapped for tensor-native torchvision ones: ``RandomSolarization`` ->
  ``v2.RandomSolarize`` (same threshold and probability) and ``GaussianBlur`` (a PIL round trip)
  -> ``v2.GaussianBlur`` with lightly's sigma range and a kernel of about 10 % of the crop.

Views (and :meth:`SSLMethod.preprocess <coopt_flwr.learn.ssl.base.SSLMethod.preprocess>`) come out
in channels-last memory format, the layout the NHWC batch already has and the one the student's
training loop uses, so both sides of the comparison run the same convolution kernels (on the
2-core CPU a ResNet-10 forward + backward at 32 px, batch 256, is 4-8 % faster channels-last than
from contiguous NCHW input).

Per-sample work runs with one intra-op thread (``aug_threads``): the ops are tiny and an OpenMP
fork/join per op costs more than it saves, badly so when other processes keep the cores busy.
Augmentation draws from its own seeded torch / numpy random streams, so a method's loss sequence
depends only on its seed and the backbone's initial weights, never on other users of the global
generators.

Gaussian blur is off below 64 px (:func:`blur`), as in lightly's CIFAR-10 benchmark (a sigma of up
to 2 px is a large fraction of a 32 px image); at 64 px and above each transform keeps its default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from lightly.transforms import GaussianBlur, RandomRotate, RandomSolarization
from lightly.transforms.torchvision_v2_compatibility import ToTensor as _LightlyToTensor
from torch import Tensor
from torchvision.transforms import v2

__all__ = ["AUG_BACKENDS", "Views", "blur", "check_images"]

AUG_BACKENDS = ("pil", "tensor")

_BLUR_MIN_SIZE = 64  # below this image size Gaussian blur is off by default


def blur(image_size: int, default: Any) -> Any:
    """lightly's blur probability at >= 64 px, off below (as in lightly's CIFAR-10 benchmark)."""
    if image_size >= _BLUR_MIN_SIZE:
        return default
    return tuple(0.0 for _ in default) if isinstance(default, tuple) else 0.0


def check_images(images: Tensor) -> Tensor:
    """``images`` itself if it is a uint8 NHWC tensor with 1 or 3 channels, else a ValueError."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 tensor of shape (N, H, W, C)")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be NHWC with 1 or 3 channels, got shape {tuple(images.shape)}")
    return images


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
            gaussian = v2.GaussianBlur(kernel_size=_blur_kernel(crop_size), sigma=tuple(op.sigmas))
            return v2.RandomApply([gaussian], p=op.prob)
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


class Views:
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
        cpu = check_images(images).detach().cpu()
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
