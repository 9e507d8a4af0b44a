"""Self-supervised baselines for CoOpt: BYOL, SimCLR, MoCo v2, SimSiam, DINO and SwAV.

CoOpt is compared against SSL on the raw images at an equal training budget and with the same
student backbone. Every method here trains the *shared* backbone it is given (the module that
is linear-probed afterwards) and plugs into the generic training loop of
:mod:`coopt_flwr.learn.training`::

    method = create_ssl("byol", backbone, feature_dim=512, image_size=32, seed=0)
    fit(method.step, method.trainable_modules(), images_uint8_nhwc, cfg, after_step=method.after_step)

One file per method holds its class and its defaults (``<Method>.defaults(image_size)``); the
shared machinery is in :mod:`~coopt_flwr.learn.ssl.base` (the :class:`SSLMethod` contract,
momentum updates, probing input) and :mod:`~coopt_flwr.learn.ssl.views` (augmentation). This
module keeps the name -> class registry.

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

Hyper-parameters (:func:`default_hparams`) follow each paper and lightly's CIFAR-10 benchmark
(head widths: BYOL 1024/256, SimCLR and MoCo 512/128, SwAV 512/128 with 512 prototypes; SimSiam
lightly's 3-layer 2048 projector with a 512 bottleneck predictor), with these changes for small
images and CPU-sized budgets (each method's own are listed in its file):

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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from coopt_flwr.learn.ssl.base import SSLMethod
from coopt_flwr.learn.ssl.byol import BYOL
from coopt_flwr.learn.ssl.dino import DINO
from coopt_flwr.learn.ssl.moco import MoCo
from coopt_flwr.learn.ssl.simclr import SimCLR
from coopt_flwr.learn.ssl.simsiam import SimSiam
from coopt_flwr.learn.ssl.swav import SwAV
from coopt_flwr.learn.ssl.views import AUG_BACKENDS

__all__ = [
    "BYOL",
    "DINO",
    "SSL_METHODS",
    "MoCo",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SwAV",
    "create_ssl",
    "default_hparams",
]

_METHODS: dict[str, type[SSLMethod]] = {cls.name: cls for cls in (BYOL, SimCLR, MoCo, SimSiam, DINO, SwAV)}

SSL_METHODS: tuple[str, ...] = tuple(_METHODS)
"""Names accepted by :func:`create_ssl` (MoCo is MoCo v2: MLP head, queue, v2 augmentations)."""


def default_hparams(name: str, image_size: int) -> dict[str, Any]:
    """Documented defaults of method ``name`` for ``image_size`` px inputs (a fresh dict).

    Keys starting with ``transform`` are keyword arguments of the lightly transform (an override
    dict is merged into them); ``normalize`` (``{"mean", "std"}`` or ``None``) is passed to every
    lightly view transform. See the module docstring for what differs from the papers.
    """
    return _METHODS[_check_name(name)].default_hparams(image_size)


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
