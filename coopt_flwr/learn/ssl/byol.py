"""BYOL (Grill et al., 2020): online network with a predictor regresses a momentum target network.

Heads ``BYOLProjectionHead`` + ``BYOLPredictionHead`` (1024/256, lightly's CIFAR-10 benchmark),
loss ``NegativeCosineSimilarity`` symmetrised over the two views, views ``BYOLTransform``.
Momentum: a cosine 0.99 -> 1 schedule (0.996 in the paper is too slow for a few hundred steps).
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from torch import Tensor, nn

from coopt_flwr.learn.ssl.base import SSLMethod, momentum_copy
from coopt_flwr.learn.ssl.views import blur

__all__ = ["BYOL"]


class BYOL(SSLMethod):
    name = "byol"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
            "proj_hidden_dim": 1024,
            "proj_output_dim": 256,
            "pred_hidden_dim": 1024,
            "momentum": 0.99,
            "momentum_end": 1.0,
            "transform_view1": {"input_size": size, "gaussian_blur": blur(size, 1.0)},
            "transform_view2": {"input_size": size, "gaussian_blur": blur(size, 0.1)},
        }

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
        self.backbone_momentum = momentum_copy(backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
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
