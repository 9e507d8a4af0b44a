"""SwAV (Caron et al., 2020): swapped prediction of online-clustered prototype codes, multi-crop.

Heads ``SwaVProjectionHead`` (512/128) + ``SwaVPrototypes`` (512 prototypes, re-normalized before
every step), loss ``SwaVLoss``, views ``SwaVTransform`` with 4 local crops of ``image_size // 2``
px (6 of 96 px at 224 px) and the standard scale ranges. Queue off by default
(``queue_length=0``); with ``queue_length > 0`` one queue per high-resolution crop starts filling
at ``queue_start_progress`` and is used once full.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.transforms import SwaVTransform
from torch import Tensor, nn
from torch.nn import functional as F

from coopt_flwr.learn.ssl.base import SSLMethod, forward_grouped
from coopt_flwr.learn.ssl.views import blur

__all__ = ["SwAV"]


class SwAV(SSLMethod):
    name = "swav"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
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
                "crop_sizes": (size, max(1, size // 2)),
                "crop_counts": (2, 4),
                "crop_min_scales": (0.14, 0.05),
                "crop_max_scales": (1.0, 0.14),
                "gaussian_blur": blur(size, 0.5),
            },
        }

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
        projections = forward_grouped(self._project, views)
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
