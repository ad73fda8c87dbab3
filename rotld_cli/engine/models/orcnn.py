"""Oriented R-CNN with a distribution RoI box head, and its LD+KD student (the RoI head's side).

`RotatedShared2FCBBoxHeadDistribution` is mmrotate 0.3.4's `RotatedShared2FCBBoxHead`
(class-agnostic regression, as Oriented R-CNN's config) whose `fc_reg` predicts, per RoI, five
discrete distributions of reg_max + 1 bins for the coder's normalised deltas dx, dy, dw, dh, dθ
(bins `families.ORCNN_BINS`). Their expected values (softmax · bins, `integral.py`) are the deltas
the unchanged mmrotate code consumes: SmoothL1 against the encoded targets, the
`DeltaXYWHAOBBoxCoder` (edge swap, projected xy) and the class-wise rotated NMS at test time.

The student (`KnowledgeDistillationOrientedRCNN`, `kd_detector.py`) keeps its own RPN and its own
RoI sampling; `KDOrientedStandardRoIHead` runs the frozen teacher's RoI head on the teacher's
features for the *student's* sampled RoIs, so both heads predict for the same boxes, and
`LDRotatedShared2FCBBoxHead` adds

* loss_ld: KL of each of the 5 delta distributions on the positive RoIs (weight 1 each, divided by
  their number): the region where the student regresses at all;
* loss_kd: softmax KL of the C + 1 class logits (background included) on every sampled RoI with a
  label weight, divided by their number: the teacher's view of which RoIs are background is
  knowledge too, as in two-stage classification KD (Chen et al., NeurIPS 2017).
"""

from __future__ import annotations

import torch
from mmcv.runner import force_fp32
from mmdet.models.utils import build_linear_layer
from mmrotate.models.builder import ROTATED_HEADS, build_loss
from mmrotate.models.roi_heads.bbox_heads.convfc_rbbox_head import RotatedShared2FCBBoxHead
from mmrotate.models.roi_heads.oriented_standard_roi_head import OrientedStandardRoIHead
from torch import Tensor

from rotld_cli.engine.families import ORCNN_BINS
from rotld_cli.engine.models.distill_terms import kd_term, ld_term, positive_region, term_enabled
from rotld_cli.engine.models.integral import NUM_COORDS, Integral, IntegralAngle, integral_deltas


@ROTATED_HEADS.register_module()
class RotatedShared2FCBBoxHeadDistribution(RotatedShared2FCBBoxHead):
    """Oriented R-CNN's box head with the 5 normalised deltas as discrete distributions.

    Args:
        reg_max: bins per delta = reg_max + 1.
        bins: (low, high, angle_low, angle_high): the bins span [low, high] for dx, dy, dw, dh and
            [angle_low, angle_high] for dθ.
    """

    def __init__(self, *args, reg_max: int = 16, bins=(*ORCNN_BINS[0], *ORCNN_BINS[1]), **kwargs) -> None:
        if not kwargs.get("reg_class_agnostic", False):
            raise ValueError(
                "RotatedShared2FCBBoxHeadDistribution: the distributions are class-agnostic "
                "(reg_class_agnostic=True, as Oriented R-CNN's config)"
            )
        super().__init__(*args, **kwargs)
        self.reg_max = reg_max
        low, high, angle_low, angle_high = (float(v) for v in bins)
        self.integral = Integral(reg_max, low, high)
        self.integral_angle = IntegralAngle(reg_max, angle_low, angle_high)
        self.fc_reg = build_linear_layer(
            self.reg_predictor_cfg, in_features=self.reg_last_dim, out_features=NUM_COORDS * (reg_max + 1)
        )

    def deltas(self, bbox_pred: Tensor | None) -> Tensor | None:
        """(n, 5·(reg_max+1)) logits → (n, 5) expected normalised deltas."""
        return None if bbox_pred is None else integral_deltas(bbox_pred, self.integral, self.integral_angle)

    @force_fp32(apply_to=("cls_score", "bbox_pred"))
    def loss(
        self, cls_score, bbox_pred, rois, labels, label_weights, bbox_targets, bbox_weights, reduction_override=None
    ):
        """mmrotate's box-head losses on the expected deltas."""
        return super().loss(
            cls_score,
            self.deltas(bbox_pred),
            rois,
            labels,
            label_weights,
            bbox_targets,
            bbox_weights,
            reduction_override=reduction_override,
        )

    @force_fp32(apply_to=("cls_score", "bbox_pred"))
    def get_bboxes(self, rois, cls_score, bbox_pred, img_shape, scale_factor, rescale=False, cfg=None):
        """Inference on the expected deltas (decode, rescale, class-wise rotated NMS)."""
        return super().get_bboxes(rois, cls_score, self.deltas(bbox_pred), img_shape, scale_factor, rescale, cfg)

    @force_fp32(apply_to=("bbox_preds",))
    def refine_bboxes(self, rois, labels, bbox_preds, pos_is_gts, img_metas):
        """Cascade refinement, on the expected deltas."""
        return super().refine_bboxes(rois, labels, self.deltas(bbox_preds), pos_is_gts, img_metas)


@ROTATED_HEADS.register_module()
class LDRotatedShared2FCBBoxHead(RotatedShared2FCBBoxHeadDistribution):
    """The student's box head: its own losses plus LD (positive RoIs) and KD (every labelled RoI)."""

    def __init__(self, *args, loss_ld: dict | None = None, loss_kd: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_ld = build_loss(loss_ld) if term_enabled(loss_ld) else None
        self.loss_kd = build_loss(loss_kd) if term_enabled(loss_kd) else None

    @force_fp32(apply_to=("cls_score", "bbox_pred", "teacher_cls_score", "teacher_bbox_pred"))
    def distill_loss(self, cls_score, bbox_pred, teacher_cls_score, teacher_bbox_pred, labels, label_weights):
        """The enabled terms for RoIs whose teacher predictions were made on the same boxes."""
        losses = {}
        if self.loss_ld is not None:
            region = positive_region(labels, self.num_classes)
            losses["loss_ld"] = ld_term(self.loss_ld, bbox_pred, teacher_bbox_pred, region, self.reg_max + 1)
        if self.loss_kd is not None:
            losses["loss_kd"] = kd_term(self.loss_kd, cls_score, teacher_cls_score, (label_weights > 0).float())
        return losses


@ROTATED_HEADS.register_module()
class KDOrientedStandardRoIHead(OrientedStandardRoIHead):
    """Oriented R-CNN's RoI head that also asks the teacher's RoI head about the student's sampled RoIs.

    The teacher's head is a reference (`attach_teacher_head`, called by the KD detector), not a
    submodule: no parameters, no state dict. Its features arrive with each `forward_train` call.
    """

    def attach_teacher_head(self, teacher_roi_head) -> None:
        object.__setattr__(self, "teacher_head", teacher_roi_head)
        self._teacher_x = None

    def forward_train(
        self, x, img_metas, proposal_list, gt_bboxes, gt_labels, gt_bboxes_ignore=None, gt_masks=None, teacher_x=None
    ):
        """mmrotate's RoI training step; `teacher_x` (the teacher's FPN features of the same batch) is
        read by `_bbox_forward_train` below, for the RoIs mmrotate's sampler drew."""
        self._teacher_x = teacher_x
        try:
            return super().forward_train(x, img_metas, proposal_list, gt_bboxes, gt_labels, gt_bboxes_ignore, gt_masks)
        finally:
            self._teacher_x = None

    def _bbox_forward_train(self, x, sampling_results, gt_bboxes, gt_labels, img_metas):
        """mmrotate 0.3.4's step (rois, forward, targets, loss), plus the teacher's RoI head on the same rois
        and the distillation terms on the same targets: each made once."""
        teacher = self.__dict__.get("teacher_head")
        if teacher is None or self._teacher_x is None:
            raise RuntimeError(
                "KDOrientedStandardRoIHead needs the teacher's RoI head and features: build the "
                "student as a KnowledgeDistillationOrientedRCNN"
            )
        from mmrotate.core import rbbox2roi

        rois = rbbox2roi([res.bboxes for res in sampling_results])
        results = self._bbox_forward(x, rois)
        targets = self.bbox_head.get_targets(sampling_results, gt_bboxes, gt_labels, self.train_cfg)
        loss_bbox = self.bbox_head.loss(results["cls_score"], results["bbox_pred"], rois, *targets)
        with torch.no_grad():
            taught = teacher._bbox_forward(self._teacher_x, rois)
        labels, label_weights = targets[:2]
        loss_bbox.update(
            self.bbox_head.distill_loss(
                results["cls_score"], results["bbox_pred"], taught["cls_score"], taught["bbox_pred"], labels,
                label_weights,
            )
        )
        results.update(loss_bbox=loss_bbox)
        return results
