"""`BCKDRotatedRetinaHead`: BCKD (Yang et al., ICCV 2023) on the rotated distribution head.

As the authors' `LDHead.loss_single` (TinyTigerPan/BCKD, mmdet/models/dense_heads/ld_head.py; the
`bckd_*` configs set `loss_kd=NovelKDLoss` weight 1 and `loss_score_kd=GIoULoss` weight 4), on
each FPN level that holds a positive anchor of the batch (both terms are 0 on the other levels):

* loss_bckd_cls: classification distillation as per-class binary problems — `BinaryKDLoss`, the
  BCE towards the teacher's sigmoid scores modulated by |σ(s) − σ(t)|^β (β = 1) — weighted by the
  anchors' `label_weights` (0 for ignored anchors and anchors outside the image), normalised by
  the number of positive anchors (the focal loss's normaliser).
* loss_bckd_iou: the IoU-based localization distillation on decoded boxes. Both heads'
  distributions are integrated to the 5 deltas and decoded by the head's `DeltaXYWHAOBBoxCoder`
  against the same anchors; per level the loss is Σ_a w_a (1 − GIoU(b_s, b_t)) / N_pos with
  w_a = max_c |σ(t_ac) − σ(s_ac)| · label_weight_a (detached): the paper's weight, large where
  student and teacher disagree most about some class, so localization is distilled where the
  classifier still has something to learn and not on settled background. GIoU is the exact
  rotated GIoU (`rotated_giou`, differentiable; mmcv's `box_iou_rotated` has no gradient), with
  the convex hull of both boxes as the enclosing region, so the angle is distilled through the
  overlap it produces: no angle-period or w/h-swap ambiguity, unlike a loss on dθ.

`iou_weight_thr` (default 0: every anchor with a non-zero weight, the authors' sum) skips anchors
whose weight is at or below it; each skipped anchor would add at most 2 · iou_weight_thr / N_pos
(1 − GIoU ≤ 2), and skipping bounds the polygon clipping on ~2·10⁵ anchors per DOTA patch if
memory is short.
"""

from __future__ import annotations

import torch
from mmrotate.models.builder import ROTATED_HEADS, build_loss
from torch import nn

from rotld_cli.engine.models.integral import NUM_COORDS, integral_deltas
from rotld_cli.engine.models.kd_losses import bckd_box_weight, has_positive
from rotld_cli.engine.models.kd_terms_head import KDTermsHead
from rotld_cli.engine.models.ld_head import flat_scores

DEFAULT_LOSS_BCKD_CLS = dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0)
DEFAULT_LOSS_BCKD_IOU = dict(type="RotatedIoUKDLoss", mode="giou", loss_weight=4.0)


def setup_bckd_losses(head: nn.Module, loss_bckd_cls: dict | None, loss_bckd_iou: dict | None,
                      iou_weight_thr: float) -> None:
    """BCKD's two losses (binary KD of the scores, 1 − GIoU of the boxes) on a student head."""
    head.loss_bckd_cls = build_loss(loss_bckd_cls or dict(DEFAULT_LOSS_BCKD_CLS))
    head.loss_bckd_iou = build_loss(loss_bckd_iou or dict(DEFAULT_LOSS_BCKD_IOU))
    head.iou_weight_thr = iou_weight_thr


@ROTATED_HEADS.register_module()
class BCKDRotatedRetinaHead(KDTermsHead):
    """Student head with BCKD's binary classification and rotated-IoU localization distillation.

    Args:
        loss_bckd_cls: default BinaryKDLoss(β=1, weight 1).
        loss_bckd_iou: default RotatedIoUKDLoss(mode 'giou', weight 4).
        iou_weight_thr: anchors with max_c |σ(t) − σ(s)| · label_weight <= this are skipped by loss_bckd_iou.
        loss_ld / loss_kd / loss_im: optional LD-head terms.
    """

    successor_keys = ("loss_bckd_cls", "loss_bckd_iou")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        loss_bckd_cls: dict | None = None,
        loss_bckd_iou: dict | None = None,
        iou_weight_thr: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        setup_bckd_losses(self, loss_bckd_cls, loss_bckd_iou, iou_weight_thr)

    def decoded_boxes(self, anchors, bbox_pred, keep):
        """Boxes of the kept anchors: (N, A*(reg_max+1)*5, H, W) logits → integral deltas → coder."""
        logits = bbox_pred.permute(0, 2, 3, 1).reshape(-1, (self.reg_max + 1) * NUM_COORDS)[keep]
        deltas = integral_deltas(logits, self.integral, self.integral_angle)
        return self.bbox_coder.decode(anchors, deltas)

    def successor_terms(self, cls_score, bbox_pred, teacher_cls_score, teacher_bbox_pred, level, num_total_samples):
        """Binary KD and GIoU distillation of one level; both 0 on a level without a positive anchor."""
        if not has_positive(level.labels, self.num_classes):
            return cls_score.sum() * 0, bbox_pred.sum() * 0
        student_cls = flat_scores(cls_score, self.cls_out_channels)
        teacher_cls = flat_scores(teacher_cls_score, self.cls_out_channels)
        loss_cls = self.loss_bckd_cls(
            student_cls, teacher_cls, weight=level.label_weights, avg_factor=num_total_samples
        )
        weight = bckd_box_weight(student_cls, teacher_cls, level.label_weights)
        keep = weight > self.iou_weight_thr
        if not bool(keep.any()):
            return loss_cls, bbox_pred.sum() * 0
        anchors = level.anchors.reshape(-1, NUM_COORDS)[keep]
        student_boxes = self.decoded_boxes(anchors, bbox_pred, keep)
        with torch.no_grad():
            teacher_boxes = self.decoded_boxes(anchors, teacher_bbox_pred, keep)
        loss_iou = self.loss_bckd_iou(student_boxes, teacher_boxes, weight=weight[keep], avg_factor=num_total_samples)
        return loss_cls, loss_iou
