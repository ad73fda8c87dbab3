"""Rotated FCOS with a distribution head, and its LD+KD and BCKD students.

`RotatedFCOSHeadDistribution` is mmrotate 0.3.4's `RotatedFCOSHead` whose regression predicts, per
point, five discrete distributions instead of five numbers: the four side distances (left, top,
right, bottom) over the bins 0, 1, …, reg_max in stride units (GFL's representation, Li et al.
2020), and the angle θ over reg_max + 1 bins spanning the angle convention's range (le90:
[−π/2, π/2]). The expected values (softmax · bins, `integral.py`) are the distances and angle the
unchanged mmrotate code consumes: targets (centre sampling, regress ranges, min-area gt),
`DistanceAnglePointCoder`, the loss on decoded boxes (GWD/KLD where the recipe asks), centerness,
top-k, NMS. The Scale of each level multiplies the distance logits (as GFL scales its
distribution logits), and distances are always in stride units (`norm_on_bbox`): the bins then
mean the same on every level.

Students (built by `KnowledgeDistillationRotatedSingleStageDetector`, which passes the teacher's
outputs `(cls, distance logits, angle logits, centerness)` of the same batch):

* `LDRotatedFCOSHead`: LD (KL of each of the 5 distributions) and KD (softmax KL of the class
  logits, or the binary KD) on the head's own positives, the points inside a gt's centre region
  within the level's regress range, weight 1 each, divided per level by their number
  (`distill_terms`); `kd_region='all'` puts KD on every point instead, divided by the number of
  positives (the RetinaNet student's `kd_region`: FCOS ignores no point);
* `BCKDRotatedFCOSHead`: BCKD's binary KD of the class scores on every point and 1 − rotated GIoU
  of the decoded student and teacher boxes weighted by max_c |σ(t) − σ(s)|, both divided by the
  number of positives, the normaliser of FCOS's own focal loss (`kd_losses`);
* `CrossKDRotatedFCOSHead`: the student's tower features continue through the teacher's head; those
  cross-head predictions are distilled (binary KD of the scores, LD on the positives).
"""

from __future__ import annotations

import torch
from mmcv.runner import force_fp32
from mmdet.core import multi_apply, reduce_mean
from mmrotate.models.builder import ROTATED_HEADS, build_loss
from mmrotate.models.dense_heads.rotated_fcos_head import RotatedFCOSHead
from torch import Tensor, nn

from rotld_cli.engine.models.bckd_head import setup_bckd_losses
from rotld_cli.engine.models.crosskd_head import run_tower, setup_cross_losses
from rotld_cli.engine.models.distill_terms import (
    checked_kd_region,
    flat_scores,
    ld_term,
    positive_region,
    region_kd_term,
    term_enabled,
)
from rotld_cli.engine.models.integral import ANGLE_RANGES, Integral, IntegralAngle
from rotld_cli.engine.models.kd_losses import bckd_box_weight


@ROTATED_HEADS.register_module()
class RotatedFCOSHeadDistribution(RotatedFCOSHead):
    """Rotated FCOS head whose distances and angle are discrete distributions of reg_max + 1 bins."""

    def __init__(self, num_classes: int, in_channels: int, reg_max: int = 16, **kwargs) -> None:
        self.reg_max = reg_max  # read by _init_layers, which the parent constructor calls
        if not kwargs.setdefault("norm_on_bbox", True):
            raise ValueError("RotatedFCOSHeadDistribution: distances are in stride units (norm_on_bbox must be True)")
        if kwargs.get("separate_angle"):
            raise ValueError("RotatedFCOSHeadDistribution: the angle is the fifth distribution (separate_angle=False)")
        super().__init__(num_classes, in_channels, **kwargs)
        low, high = ANGLE_RANGES[self.bbox_coder.angle_version]
        self.integral = Integral(reg_max, 0.0, float(reg_max))
        self.integral_angle = IntegralAngle(reg_max, low, high)

    @property
    def bins(self) -> int:
        return self.reg_max + 1

    def _init_layers(self) -> None:
        super()._init_layers()
        self.conv_reg = nn.Conv2d(self.feat_channels, 4 * self.bins, 3, padding=1)
        self.conv_angle = nn.Conv2d(self.feat_channels, self.bins, 3, padding=1)

    def forward_single(self, x: Tensor, scale, stride: int):
        """(cls logits, distance logits (N, 4·bins, H, W), angle logits (N, bins, H, W), centerness)."""
        cls_score, bbox_pred, cls_feat, reg_feat = super(RotatedFCOSHead, self).forward_single(x)
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        angle_pred = self.conv_angle(reg_feat)
        if self.is_scale_angle:
            angle_pred = self.scale_angle(angle_pred).float()
        return cls_score, scale(bbox_pred).float(), angle_pred, centerness

    def distance_maps(self, bbox_logits: Tensor, angle_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logit maps → (N, 4, H, W) expected distances in stride units and (N, 1, H, W) expected angles."""
        n, _, h, w = bbox_logits.shape
        distances = self.integral(flat_scores(bbox_logits, self.bins)).reshape(n, h, w, 4).permute(0, 3, 1, 2)
        angles = self.integral_angle(flat_scores(angle_logits, self.bins)).reshape(n, h, w, 1).permute(0, 3, 1, 2)
        return distances, angles

    def box_logits(self, bbox_logits: Tensor, angle_logits: Tensor) -> Tensor:
        """(M, 5·bins) rows laid out left|top|right|bottom|θ, the points in (n, h, w) order."""
        return torch.cat([flat_scores(bbox_logits, 4 * self.bins), flat_scores(angle_logits, self.bins)], dim=1)

    @force_fp32(apply_to=("cls_scores", "bbox_preds", "angle_preds", "centernesses"))
    def loss(
        self, cls_scores, bbox_preds, angle_preds, centernesses, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=None
    ):
        """mmrotate's FCOS losses on the expected distances and angles."""
        distances, angles = multi_apply(self.distance_maps, bbox_preds, angle_preds)
        return super().loss(
            cls_scores, distances, angles, centernesses, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore
        )

    @force_fp32(apply_to=("cls_scores", "bbox_preds", "angle_preds", "centernesses"))
    def get_bboxes(self, cls_scores, bbox_preds, angle_preds, centernesses, img_metas, cfg=None, rescale=None):
        """Inference: expected distances × stride (what mmrotate's forward returns at test time), then its
        top-k by score × centerness, decode and rotated NMS."""
        distances, angles = multi_apply(self.distance_maps, bbox_preds, angle_preds)
        distances = [d * stride for d, stride in zip(distances, self.strides)]
        return super().get_bboxes(cls_scores, distances, angles, centernesses, img_metas, cfg, rescale)


class FCOSStudentHead(RotatedFCOSHeadDistribution):
    """A distilled FCOS head: its own losses, then per level the enabled LD/KD terms on its positives and
    the subclass's `successor_terms`. LD and KD run only when configured with a weight > 0."""

    successor_keys: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        loss_ld: dict | None = None,
        loss_kd: dict | None = None,
        kd_region: str = "ld",
        **kwargs,
    ) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.loss_ld = build_loss(loss_ld) if term_enabled(loss_ld) else None
        self.loss_kd = build_loss(loss_kd) if term_enabled(loss_kd) else None
        self.kd_region = checked_kd_region(kd_region)
        self._assigned_labels: list[Tensor] | None = None

    def get_targets(self, points, gt_bboxes_list, gt_labels_list):
        """mmrotate's targets; the per-level labels are kept for the distillation terms of the same call,
        so the points are assigned once."""
        targets = super().get_targets(points, gt_bboxes_list, gt_labels_list)
        self._assigned_labels = targets[0]
        return targets

    def forward_train(
        self,
        x,
        out_teacher,
        teacher_x,
        img_metas,
        gt_bboxes,
        gt_labels=None,
        gt_bboxes_ignore=None,
        proposal_cfg=None,
        **kwargs,
    ):
        """Student forward, its FCOS losses, then the distillation terms against the teacher's outputs."""
        outs, extra = self.student_forward(x)
        losses = self.loss(*outs, gt_bboxes, gt_labels, img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        labels, self._assigned_labels = self._assigned_labels, None
        losses.update(self.distill_losses(outs, out_teacher, labels, extra))
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(*outs, img_metas, cfg=proposal_cfg)

    def student_forward(self, x) -> tuple[tuple, tuple]:
        """(the head's 4 outputs, per-level extras for `successor_terms`); no extras here."""
        return self(x), ()

    @force_fp32(apply_to=("outs", "out_teacher", "extra"))
    def distill_losses(self, outs, out_teacher, labels: list[Tensor], extra=()) -> dict[str, list[Tensor]]:
        """Each enabled term as a list with one scalar per level (mmdet sums the lists)."""
        regions = [positive_region(level, self.num_classes) for level in labels]
        num_pos = max(float(reduce_mean(sum(region.sum() for region in regions).float())), 1.0)
        keys = [key for key, loss in (("loss_ld", self.loss_ld), ("loss_kd", self.loss_kd)) if loss is not None]
        keys += list(self.successor_keys)
        terms: dict[str, list[Tensor]] = {key: [] for key in keys}
        for level, region in enumerate(regions):
            student = [out[level] for out in outs]
            teacher = [out[level].float() for out in out_teacher]
            values = []
            if self.loss_ld is not None:
                values.append(
                    ld_term(
                        self.loss_ld, self.box_logits(*student[1:3]), self.box_logits(*teacher[1:3]), region, self.bins
                    )
                )
            if self.loss_kd is not None:
                values.append(self.kd_loss(student[0], teacher[0], region, num_pos))
            values.extend(
                self.successor_terms(level, student, teacher, region, num_pos, *(out[level] for out in extra))
            )
            for key, value in zip(keys, values):
                terms[key].append(value)
        return terms

    def kd_loss(self, cls_score: Tensor, teacher_cls_score: Tensor, region: Tensor, num_pos: float) -> Tensor:
        """KD of one level's class logits: on the positives / their number (`kd_region='ld'`), or on every
        point / the number of positives over all levels, FCOS's own focal-loss normaliser (`'all'`)."""
        student = flat_scores(cls_score, self.cls_out_channels)
        teacher = flat_scores(teacher_cls_score, self.cls_out_channels)
        return region_kd_term(self.loss_kd, student, teacher, region, self.kd_region, num_pos)

    def successor_terms(
        self, level: int, student: list[Tensor], teacher: list[Tensor], region: Tensor, num_pos: float, *extra: Tensor
    ) -> tuple:
        """A subclass's terms of one level (student/teacher: the 4 outputs; region: the positives)."""
        return ()


@ROTATED_HEADS.register_module()
class LDRotatedFCOSHead(FCOSStudentHead):
    """LD + KD on the FCOS positives (`FCOSStudentHead` with only those terms)."""


@ROTATED_HEADS.register_module()
class BCKDRotatedFCOSHead(FCOSStudentHead):
    """BCKD (Yang et al., ICCV 2023) on the rotated FCOS distribution head.

    Args:
        loss_bckd_cls: default BinaryKDLoss(β=1, weight 1), on every point's class scores.
        loss_bckd_iou: default RotatedIoUKDLoss(weight 4), on the decoded boxes.
        iou_weight_thr: points with max_c |σ(t) − σ(s)| <= this are skipped by loss_bckd_iou.
        loss_ld / loss_kd: optional LD-head terms.
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

    def decoded_boxes(self, points: Tensor, bbox_logits: Tensor, angle_logits: Tensor, keep: Tensor) -> Tensor:
        """Boxes (px) of the kept points: expected distances × stride and angle, `DistanceAnglePointCoder`."""
        logits = self.box_logits(bbox_logits, angle_logits)[keep]
        distances = self.integral(logits[:, : 4 * self.bins].reshape(-1, self.bins)).reshape(-1, 4)
        angles = self.integral_angle(logits[:, 4 * self.bins :])
        stride = points[:, 2:3]
        return self.bbox_coder.decode(points[:, :2], torch.cat([distances * stride, angles[:, None]], dim=1))

    def successor_terms(self, level, student, teacher, region, num_pos):
        cls_score, bbox_logits, angle_logits = student[:3]
        student_cls = flat_scores(cls_score, self.cls_out_channels)
        teacher_cls = flat_scores(teacher[0], self.cls_out_channels)
        loss_cls = self.loss_bckd_cls(student_cls, teacher_cls, avg_factor=num_pos)
        weight = bckd_box_weight(student_cls, teacher_cls, 1.0)  # every point counts (no ignored ones)
        keep = weight > self.iou_weight_thr
        if not bool(keep.any()):
            return loss_cls, bbox_logits.sum() * 0
        points = self.level_points(level, cls_score)[keep]
        student_boxes = self.decoded_boxes(points, bbox_logits, angle_logits, keep)
        with torch.no_grad():
            teacher_boxes = self.decoded_boxes(points, teacher[1], teacher[2], keep)
        return loss_cls, self.loss_bckd_iou(student_boxes, teacher_boxes, weight=weight[keep], avg_factor=num_pos)

    def level_points(self, level: int, score_map: Tensor) -> Tensor:
        """(N·H·W, 3) x, y, stride of the level's points, in the flattened (n, h, w) order."""
        n, _, h, w = score_map.shape
        stride = self.strides[level]
        points = self.prior_generator.single_level_grid_priors(
            (h, w), level, dtype=score_map.dtype, device=score_map.device
        )
        points = torch.cat([points, points.new_full((points.size(0), 1), float(stride))], dim=1)
        return points.repeat(n, 1)


@ROTATED_HEADS.register_module()
class CrossKDRotatedFCOSHead(FCOSStudentHead):
    """CrossKD (Wang et al., CVPR 2024) on the rotated FCOS distribution head, as `CrossKDRotatedRetinaHead`.

    The student's tower features after its first k convs run through the teacher's remaining convs
    and predictors (with the teacher's per-level Scale and angle Scale); only these cross-head
    predictions mimic the teacher: `BinaryKDLoss` of the class scores on every point over the
    number of positives, and LD of the 5 cross-head distributions on the positives. The student's
    own head trains on the ground truth (plus LD/KD on it when configured).

    Args:
        cross_convs: k (0 … stacked_convs); default stacked_convs − 1.
        loss_cross_cls: default BinaryKDLoss(β=1, weight 1).
        loss_cross_ld: default KL(weight 10, T 5).
    """

    successor_keys = ("loss_crosskd_cls", "loss_crosskd_ld")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        cross_convs: int | None = None,
        loss_cross_cls: dict | None = None,
        loss_cross_ld: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        setup_cross_losses(self, cross_convs, loss_cross_cls, loss_cross_ld)

    def attach_teacher_head(self, teacher_head: nn.Module) -> None:
        """Keep a reference to the teacher's head (not a submodule: no parameters, no state dict)."""
        for name in ("feat_channels", "cls_out_channels", "reg_max", "centerness_on_reg"):
            mine, theirs = getattr(self, name), getattr(teacher_head, name, None)
            if mine != theirs:
                raise ValueError(f"CrossKD: the teacher head's {name} ({theirs}) differs from the student's ({mine})")
        if self.cross_convs > len(teacher_head.cls_convs):
            raise ValueError(
                f"CrossKD: cross_convs={self.cross_convs} but the teacher head has {len(teacher_head.cls_convs)} convs"
            )
        object.__setattr__(self, "teacher_head", teacher_head)

    def student_forward(self, x):
        """The towers run once: the student's own 4 outputs and the cross-head (cls, distance, angle) logits."""
        outs = multi_apply(self.forward_cross_single, x, self.scales, range(len(x)))
        return tuple(outs[:4]), tuple(outs[4:])

    def forward_cross_single(self, x: Tensor, scale, level: int):
        teacher = self.__dict__.get("teacher_head")
        if teacher is None:
            raise RuntimeError(
                "CrossKD needs the teacher's head: build the student as a "
                "KnowledgeDistillationRotatedSingleStageDetector (it attaches it)"
            )
        k = self.cross_convs
        cls_feat, cls_middle = run_tower(self.cls_convs, x, k)
        reg_feat, reg_middle = run_tower(self.reg_convs, x, k)
        cross_cls_feat, _ = run_tower(teacher.cls_convs[k:], cls_middle, 0)
        cross_reg_feat, _ = run_tower(teacher.reg_convs[k:], reg_middle, 0)
        return (
            *self.predict(self, cls_feat, reg_feat, scale),
            *self.predict(teacher, cross_cls_feat, cross_reg_feat, teacher.scales[level])[:3],
        )

    @staticmethod
    def predict(head, cls_feat: Tensor, reg_feat: Tensor, scale):
        """A head's predictors on tower features: (cls, distance logits, angle logits, centerness)."""
        angle = head.conv_angle(reg_feat)
        if head.is_scale_angle:
            angle = head.scale_angle(angle).float()
        centerness = head.conv_centerness(reg_feat if head.centerness_on_reg else cls_feat)
        return head.conv_cls(cls_feat), scale(head.conv_reg(reg_feat)).float(), angle, centerness

    def successor_terms(self, level, student, teacher, region, num_pos, cross_cls, cross_bbox, cross_angle):
        loss_cls = self.loss_cross_cls(
            flat_scores(cross_cls.float(), self.cls_out_channels),
            flat_scores(teacher[0], self.cls_out_channels),
            avg_factor=num_pos,
        )
        loss_ld = ld_term(
            self.loss_cross_ld,
            self.box_logits(cross_bbox.float(), cross_angle.float()),
            self.box_logits(*teacher[1:3]),
            region,
            self.bins,
        )
        return loss_cls, loss_ld
