"""`IMLoss`: feature-imitation MSE between student and teacher features (method.md §4.2).

`KnowledgeDistillationKLDivLoss` (LD and KD) is mmdet's own and is reused by name: mmrotate's
ROTATED_LOSSES is mmdet's MODELS registry, so registering it again would be a duplicate.
"""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.losses.utils import weighted_loss
from mmrotate.models.builder import ROTATED_LOSSES
from torch import Tensor

from rotld_cli.engine.models.kd_losses import WeightedKDLoss


@weighted_loss
def im_loss(x: Tensor, soft_target: Tensor) -> Tensor:
    """Element-wise squared error; the 'mean' reduction makes it `F.mse_loss(x, soft_target)`."""
    return F.mse_loss(x, soft_target, reduction="none")


@ROTATED_LOSSES.register_module()
class IMLoss(WeightedKDLoss):
    """loss_weight · mean over elements of (x - soft_target)², as the seed computes it.

    The teacher features come from a no_grad pass; they are detached again here (by the base
    class) so a caller that passes live features cannot train the teacher through this loss.
    """

    def element_loss(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        return im_loss(pred, target, **kwargs)
