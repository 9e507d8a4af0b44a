"""SimCLR (Chen et al., 2020): contrast two views of each image against the rest of the batch.

Head ``SimCLRProjectionHead`` (512/128, 2 layers), loss ``NTXentLoss`` (temperature 0.5), views
``SimCLRTransform`` with colour jitter strength 0.5 (the SimCLR paper's CIFAR setting).
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import Tensor, nn

from coopt_flwr.learn.ssl.base import SSLMethod
from coopt_flwr.learn.ssl.views import blur

__all__ = ["SimCLR"]


class SimCLR(SSLMethod):
    name = "simclr"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "proj_num_layers": 2,
            "temperature": 0.5,
            "transform": {"input_size": size, "cj_strength": 0.5, "gaussian_blur": blur(size, 0.5)},
        }

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
