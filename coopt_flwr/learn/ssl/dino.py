"""DINO (Caron et al., 2021): self-distillation of a momentum teacher into the student, multi-crop.

Head ``DINOProjectionHead`` with a momentum teacher, loss ``DINOLoss``, views ``DINOTransform``.
Changes for small images and CPU-sized budgets: head hidden width 1024 (2048 in the paper), 2048
prototypes (65536 for ImageNet), batch norm in the head (ResNet backbone); 4 local crops of
``image_size // 2`` px (6 of 96 px at 224 px) with the standard scale ranges; teacher temperature
warmed up linearly 0.04 -> 0.07 over the first 30 % of training (progress, not epochs); momentum
a cosine 0.99 -> 1 schedule (0.996 in the paper is too slow for a few hundred steps).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.transforms import DINOTransform
from torch import Tensor, nn

from coopt_flwr.learn.ssl.base import SSLMethod, forward_grouped, momentum_copy
from coopt_flwr.learn.ssl.views import blur

__all__ = ["DINO"]


class DINO(SSLMethod):
    name = "dino"

    @classmethod
    def defaults(cls, size: int) -> dict[str, Any]:
        return {
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
                "local_crop_size": max(1, size // 2),
                "local_crop_scale": (0.05, 0.4),
                "n_local_views": 4,
                "gaussian_blur": blur(size, (1.0, 0.1, 0.5)),
            },
        }

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
        self.teacher_backbone = momentum_copy(backbone)
        # weight_norm modules cannot be deep-copied: build a twin and copy the weights.
        self.teacher_head = momentum_copy(self.head, factory=make_head)
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
            teacher = forward_grouped(
                lambda x: self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1)), glob
            )
        student = forward_grouped(lambda x: self.head(self.embed(x)), views)
        return self.criterion(teacher, student, teacher_temp=self.teacher_temperature(progress))
