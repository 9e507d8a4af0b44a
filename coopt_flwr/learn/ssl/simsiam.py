"""SimSiam (Chen & He, 2021): a predictor regresses the other view's projection, stop-gradient.

Heads ``SimSiamProjectionHead`` (lightly's 3-layer 2048 projector) + ``SimSiamPredictionHead``
(512 bottleneck), loss ``NegativeCosineSimilarity``, views ``SimSiamTransform``.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from lightly.transforms import SimSiamTransform
from torch import Tensor, nn

from coopt_flwr.learn.ssl.base import SSLMethod
from coopt_flwr.learn.ssl.views import blur

__all__ = ["SimSiam"]


class SimSiam(SSLMethod):
    name = "simsiam"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
            "proj_hidden_dim": 2048,
            "proj_output_dim": 2048,
            "pred_hidden_dim": 512,
            "transform": {"input_size": size, "gaussian_blur": blur(size, 0.5)},
        }

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
