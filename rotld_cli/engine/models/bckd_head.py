"""`BCKDRotatedRetinaHead`: BCKD (Yang et al., ICCV 2023) on the rotated distribution head.

* loss_bckd_cls: classification distillation as per-class binary problems — `BinaryKDLoss`, the
  BCE towards the teacher's sigmoid scores, QFL-modulated by |σ(s) − σ(t)|^β — over every anchor,
  normalised by the number of positive anchors (the focal loss's normaliser).
* loss_bckd_iou: localization distillation through an IoU loss on decoded boxes. Both heads'
  distributions are integrated to the 5 deltas and decoded by the head's `DeltaXYWHAOBBoxCoder`
  against the same anchors; the loss is Σ_a w_a (1 − IoU(b_s, b_t)) / Σ_a w_a per level with
  w_a = max_c σ(t_ac), the teacher's top class score (the teacher's confidence that a box is
  there at all). The IoU is the exact rotated IoU (`rotated_iou`, differentiable; mmcv's
  `box_iou_rotated` has no gradient), so the angle is distilled through the overlap it produces:
  no angle-period or w/h-swap ambiguity, unlike a loss on dθ.

Anchors whose teacher score is below `iou_score_thr` (default 0.01, the head's prior
probability) are left out of both sums: they would add under 1% weight each, and a DOTA patch has
~2·10⁵ anchors, so skipping them keeps the polygon clipping small.
"""

from __future__ import annotations

import torch
from mmrotate.models.builder import ROTATED_HEADS, build_loss

from rotld_cli.engine.models.integral import NUM_COORDS, integral_deltas
from rotld_cli.engine.models.kd_terms_head import KDTermsHead
from rotld_cli.engine.models.ld_head import flat_scores

DEFAULT_LOSS_BCKD_CLS = dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0)
DEFAULT_LOSS_BCKD_IOU = dict(type="RotatedIoUKDLoss", loss_weight=5.0)


@ROTATED_HEADS.register_module()
class BCKDRotatedRetinaHead(KDTermsHead):
    """Student head with BCKD's binary classification and rotated-IoU localization distillation.

    Args:
        loss_bckd_cls: default BinaryKDLoss(β=1, weight 1).
        loss_bckd_iou: default RotatedIoUKDLoss(weight 5, the GWD box loss's weight).
        iou_score_thr: anchors with a teacher top score below this are skipped by loss_bckd_iou.
        loss_ld / loss_kd / loss_im: optional LD-head terms.
    """

    successor_keys = ("loss_bckd_cls", "loss_bckd_iou")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        loss_bckd_cls: dict | None = None,
        loss_bckd_iou: dict | None = None,
        iou_score_thr: float = 0.01,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.loss_bckd_cls = build_loss(loss_bckd_cls or dict(DEFAULT_LOSS_BCKD_CLS))
        self.loss_bckd_iou = build_loss(loss_bckd_iou or dict(DEFAULT_LOSS_BCKD_IOU))
        self.iou_score_thr = iou_score_thr

    def decoded_boxes(self, anchors, bbox_pred, keep):
        """Boxes of the kept anchors: (N, A*(reg_max+1)*5, H, W) logits → integral deltas → coder."""
        logits = bbox_pred.permute(0, 2, 3, 1).reshape(-1, (self.reg_max + 1) * NUM_COORDS)[keep]
        deltas = integral_deltas(logits, self.integral, self.integral_angle)
        return self.bbox_coder.decode(anchors, deltas)

    def successor_terms(
        self, cls_score, bbox_pred, anchors, teacher_cls_score, teacher_bbox_pred, ld_region, num_total_samples
    ):
        teacher_cls = flat_scores(teacher_cls_score, self.cls_out_channels)
        loss_cls = self.loss_bckd_cls(
            flat_scores(cls_score, self.cls_out_channels), teacher_cls, avg_factor=num_total_samples
        )
        weight = teacher_cls.sigmoid().amax(dim=1)
        keep = weight >= self.iou_score_thr
        if not bool(keep.any()):
            return loss_cls, bbox_pred.sum() * 0
        anchors = anchors.reshape(-1, NUM_COORDS)[keep]
        student_boxes = self.decoded_boxes(anchors, bbox_pred, keep)
        with torch.no_grad():
            teacher_boxes = self.decoded_boxes(anchors, teacher_bbox_pred, keep)
        weight = weight[keep]
        loss_iou = self.loss_bckd_iou(student_boxes, teacher_boxes, weight=weight, avg_factor=weight.sum())
        return loss_cls, loss_iou
