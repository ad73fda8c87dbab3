"""`IMLoss`: feature-imitation MSE between student and teacher features (method.md §4.2).

`KnowledgeDistillationKLDivLoss` (LD and KD) is mmdet's own and is reused by name: mmrotate's
ROTATED_LOSSES is mmdet's MODELS registry, so registering it again would be a duplicate.
"""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.losses.utils import weighted_loss
from mmrotate.models.builder import ROTATED_LOSSES
from torch import Tensor, nn


@weighted_loss
def im_loss(x: Tensor, soft_target: Tensor) -> Tensor:
    """Element-wise squared error; the 'mean' reduction makes it `F.mse_loss(x, soft_target)`."""
    return F.mse_loss(x, soft_target, reduction="none")


@ROTATED_LOSSES.register_module()
class IMLoss(nn.Module):
    """loss_weight · mean over elements of (x - soft_target)², as the seed computes it.

    The teacher features come from a no_grad pass; they are detached again here so a caller
    that passes live features cannot train the teacher through this loss.
    """

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(
        self,
        x: Tensor,
        soft_target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        assert reduction_override in (None, "none", "mean", "sum")
        reduction = reduction_override if reduction_override else self.reduction
        return self.loss_weight * im_loss(x, soft_target.detach(), weight, reduction=reduction, avg_factor=avg_factor)
