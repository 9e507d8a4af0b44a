"""MoCo v2 (Chen et al., 2020): queries against a momentum key encoder and a queue of negatives.

Head ``MoCoProjectionHead`` (512/128), loss ``NTXentLoss`` with a memory bank, views
``MoCoV2Transform``. A constant momentum 0.99 with a 4096-entry queue and temperature 0.2; the
loss is symmetrised in one NTXentLoss call (both query sets against the queue as it was, then both
key sets enqueued); no shuffled BN, which changes nothing on one device.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.transforms import MoCoV2Transform
from torch import Tensor, nn

from coopt_flwr.learn.ssl.base import SSLMethod, momentum_copy
from coopt_flwr.learn.ssl.views import blur

__all__ = ["MoCo"]


class MoCo(SSLMethod):
    """MoCo v2: MLP head, momentum key encoder, queue of negatives, symmetric loss."""

    name = "moco"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "temperature": 0.2,
            "queue_size": 4096,
            "momentum": 0.99,
            "momentum_end": 0.99,
            "transform": {"input_size": size, "gaussian_blur": blur(size, 0.5)},
        }

    def __init__(self, backbone: nn.Module, feature_dim: int, image_size: int, hp: dict, seed: int) -> None:
        transform = MoCoV2Transform(**{**hp["transform"], "normalize": hp["normalize"]})
        super().__init__(backbone, feature_dim, image_size, hp, transform, seed)
        self.projection_head = MoCoProjectionHead(feature_dim, hp["proj_hidden_dim"], hp["proj_output_dim"])
        self.backbone_momentum = momentum_copy(backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
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
