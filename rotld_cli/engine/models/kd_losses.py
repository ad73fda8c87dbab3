"""Losses of the CrossKD and BCKD distillers (registered by type name, as mmdet's losses).

* `BinaryKDLoss`: each class of a sigmoid detector is its own binary problem; the teacher's sigmoid
  score is the soft target of a binary cross-entropy, modulated as Quality Focal Loss is:

      ℓ_a = Σ_c |σ(s_ac) − σ(t_ac)|^β · BCE(σ(s_ac), σ(t_ac))

  (β = 1 by default). The modulating factor vanishes where the student already agrees, so the ~10⁵
  easy background anchors of a DOTA patch do not swamp the few that disagree. CrossKD applies it to
  the cross-head logits, BCKD to the student's own logits. Unlike the softmax KD of the LD head, the
  absolute score of every class is matched, which is what NMS and the AP ranking read. It is the
  authors' `KDQualityFocalLoss` (jbwang1997/CrossKD, mmdet/models/losses/kd_loss.py) and
  `NovelKDLoss` (TinyTigerPan/BCKD, same path); both heads pass the anchors' `label_weights` as
  the weight, so ignored anchors (IoU between the assigner's thresholds) and anchors outside the
  image add nothing, as the authors' `pred_mimicking_loss_single` / `LDHead.loss_single` do.
* `RotatedIoUKDLoss`: 1 − rotated GIoU(student box, teacher box) on decoded boxes (BCKD's IoU-based
  localization distillation; the authors' configs use mmdet's `GIoULoss`, `loss_score_kd`), or
  1 − IoU with mode='iou'; the teacher box is a constant target.

Both take `weight` and `avg_factor` like every mmdet loss: loss = loss_weight · Σ_a w_a ℓ_a / avg_factor.
`has_positive` and `bckd_box_weight` are the two pieces of BCKD's restriction of its terms, shared
by every head family that runs BCKD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weighted_loss
from mmrotate.models.builder import ROTATED_LOSSES
from torch import Tensor, nn

from rotld_cli.engine.models.rotated_iou import rotated_giou, rotated_iou

IOU_MODES = {"giou": rotated_giou, "iou": rotated_iou}


def has_positive(labels: Tensor, num_classes: int) -> bool:
    """Whether any anchor of these labels is assigned a class (background is `num_classes`).

    BCKD's `LDHead.loss_single` computes `loss_kd` and `loss_score_kd` only `if len(pos_inds) > 0`
    on the FPN level, over the whole batch; elsewhere both are 0."""
    return bool(((labels >= 0) & (labels < num_classes)).any())


def bckd_box_weight(logits: Tensor, teacher_logits: Tensor, label_weights: Tensor) -> Tensor:
    """(M, C) student and teacher logits, (M,) label weights → (M,) max_c |σ(t) − σ(s)| · label_weight.

    BCKD's per-anchor weight of its localization term (`total_weight_targets` in the authors'
    `LDHead.loss_single`), detached: localization is distilled where the classifiers disagree."""
    with torch.no_grad():
        gap = (teacher_logits.sigmoid() - logits.sigmoid()).abs().amax(dim=1)
        return gap * label_weights


@weighted_loss
def binary_kd_loss(logits: Tensor, teacher_logits: Tensor, beta: float = 1.0) -> Tensor:
    """(M, C) student and teacher logits → (M,) per-anchor Σ_c |Δσ|^β · BCE with soft targets."""
    target = teacher_logits.sigmoid()
    modulation = (logits.sigmoid() - target).abs().pow(beta)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (modulation * bce).sum(dim=1)


@weighted_loss
def rotated_iou_kd_loss(boxes: Tensor, teacher_boxes: Tensor, mode: str = "giou") -> Tensor:
    """(M, 5) decoded student and teacher boxes (cx, cy, w, h, θ) → (M,) 1 − GIoU (or 1 − IoU)."""
    return 1.0 - IOU_MODES[mode](boxes, teacher_boxes)


class WeightedKDLoss(nn.Module):
    """loss_weight × the mmdet-reduced element loss; the teacher's side is always detached.

    The base of every rotld distillation loss (IM, binary KD, rotated-IoU KD): subclasses only say
    which element loss they reduce."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def element_loss(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        assert reduction_override in (None, "none", "mean", "sum")
        reduction = reduction_override if reduction_override else self.reduction
        return self.loss_weight * self.element_loss(
            pred, target.detach(), weight=weight, reduction=reduction, avg_factor=avg_factor
        )


@ROTATED_LOSSES.register_module()
class BinaryKDLoss(WeightedKDLoss):
    """Per-class binary cross-entropy towards the teacher's sigmoid scores, QFL-modulated (β)."""

    def __init__(self, beta: float = 1.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.beta = beta

    def element_loss(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        return binary_kd_loss(pred, target, beta=self.beta, **kwargs)


@ROTATED_LOSSES.register_module()
class RotatedIoUKDLoss(WeightedKDLoss):
    """1 − GIoU (mode 'giou', BCKD's) or 1 − IoU ('iou') between decoded rotated boxes (see `rotated_iou`)."""

    def __init__(self, mode: str = "giou", reduction: str = "mean", loss_weight: float = 1.0) -> None:
        if mode not in IOU_MODES:
            raise ValueError(f"RotatedIoUKDLoss mode must be one of {', '.join(IOU_MODES)}, got {mode!r}")
        super().__init__(reduction, loss_weight)
        self.mode = mode

    def element_loss(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        return rotated_iou_kd_loss(pred, target, mode=self.mode, **kwargs)
