"""`CrossKDRotatedRetinaHead`: cross-head distillation (Wang et al., CVPR 2024) for the rotated distribution head.

The student's cls and reg towers run as usual and their predictions train on the ground truth
only. In parallel, the student's tower features after its first k convs go through the teacher's
remaining convs (k+1 … S) and the teacher's predictors; only these cross-head predictions are
pulled towards the teacher's own predictions:

* loss_crosskd_cls: `BinaryKDLoss` (per-class BCE towards the teacher's sigmoid scores, QFL
  modulation β) weighted by the anchors' `label_weights` — every positive and negative anchor,
  not the ignored ones (IoU between the assigner's thresholds) nor those outside the image, as
  the authors' `pred_mimicking_loss_single` passes `label_weights` to its `loss_cls_kd`
  (jbwang1997/CrossKD, mmdet/models/detectors/crosskd_retinanet.py and crosskd_gfl.py) — and
  normalised by the number of positive anchors as the focal loss is;
* loss_crosskd_ld: LD (KL of each of the 5 delta distributions — dx, dy, dw, dh and dθ —
  temperature T) weighted by the valuable localization region and divided by N_ld, exactly the
  LD head's loss_ld but on the cross-head distributions. The angle is distilled as the fifth
  distribution, over the dθ bins, like the other four deltas.

The teacher's layers are the teacher's own modules (`attach_teacher_head`, called by the KD
detector), kept out of this module's parameters and state dict; the detector freezes them, so
gradient flows through them into the student's first k convs and its backbone, never into them.
k defaults to S − 1 (the teacher contributes its last tower conv and its predictors): the authors'
configs use `reused_teacher_head_idx=3` for their 4-conv heads, which this reproduces on the
seed's 4-conv towers.

The student's tower feature after conv k enters the teacher's conv k+1 as the student computed
it (after its ReLU). The authors' `reuse_teacher_head` first passes it through `align_scale`
(per-channel standardisation to the teacher's mean and std over batch and positions, then a ReLU):
the feature their `forward_crosskd_single` holds is taken with `activate=False`, but mmcv's
`ConvModule` builds its ReLU with `inplace=True`, so the following `cls_conv.activate(cls_feat)`
rectifies the held tensor too and `align_scale` sees the post-ReLU feature on both sides. rotld
does not rescale (see the README's Distillers section).
"""

from __future__ import annotations

from mmdet.core import multi_apply
from mmrotate.models.builder import ROTATED_HEADS, build_loss
from torch import Tensor, nn

from rotld_cli.engine.models.kd_terms_head import KDTermsHead
from rotld_cli.engine.models.ld_head import flat_scores

DEFAULT_LOSS_CROSS_CLS = dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0)
DEFAULT_LOSS_CROSS_LD = dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10.0, T=5.0)


def run_tower(convs: nn.ModuleList, x: Tensor, split: int) -> tuple[Tensor, Tensor]:
    """(output of all convs, output after the first `split` convs)."""
    feat, middle = x, x
    for index, conv in enumerate(convs):
        feat = conv(feat)
        if index + 1 == split:
            middle = feat
    return feat, middle


def setup_cross_losses(head: nn.Module, cross_convs: int | None, loss_cross_cls: dict | None,
                       loss_cross_ld: dict | None) -> None:
    """CrossKD's k (default stacked_convs − 1) and losses on a student head (anchor and point heads)."""
    k = max(head.stacked_convs - 1, 0) if cross_convs is None else cross_convs
    if not 0 <= k <= head.stacked_convs:
        raise ValueError(f"cross_convs must be in 0..{head.stacked_convs} (the head's stacked_convs), got {k}")
    head.cross_convs = k
    head.loss_cross_cls = build_loss(loss_cross_cls or dict(DEFAULT_LOSS_CROSS_CLS))
    head.loss_cross_ld = build_loss(loss_cross_ld or dict(DEFAULT_LOSS_CROSS_LD))


@ROTATED_HEADS.register_module()
class CrossKDRotatedRetinaHead(KDTermsHead):
    """Student head distilled through the teacher's head (CrossKD).

    Args:
        cross_convs: k, how many of the student's tower convs precede the teacher's layers
            (0 … stacked_convs); default stacked_convs − 1.
        loss_cross_cls: classification loss of the cross-head scores; default BinaryKDLoss(β=1, w=1).
        loss_cross_ld: LD loss of the cross-head distributions; default KL(w=10, T=5).
        loss_ld / loss_kd / loss_im: optional LD-head terms on the student's own head (LD+CrossKD).
    """

    successor_keys = ("loss_crosskd_cls", "loss_crosskd_ld")
    reads_ld_region = True

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
        checks = {
            "feat_channels": (self.feat_channels, getattr(teacher_head, "feat_channels", None)),
            "num_anchors": (self.num_anchors, getattr(teacher_head, "num_anchors", None)),
            "cls_out_channels": (self.cls_out_channels, getattr(teacher_head, "cls_out_channels", None)),
            "reg_max": (self.reg_max, getattr(teacher_head, "reg_max", None)),
        }
        for name, (mine, theirs) in checks.items():
            if mine != theirs:
                raise ValueError(f"CrossKD: the teacher head's {name} ({theirs}) differs from the student's ({mine})")
        teacher_convs = len(teacher_head.cls_convs)
        if self.cross_convs > teacher_convs:
            raise ValueError(f"CrossKD: cross_convs={self.cross_convs} but the teacher head has {teacher_convs} convs")
        object.__setattr__(self, "teacher_head", teacher_head)

    def forward_cross_single(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One level: the student's (cls, reg) predictions and the cross-head (cls, reg) predictions."""
        teacher = self.__dict__.get("teacher_head")
        if teacher is None:
            raise RuntimeError(
                "CrossKD needs the teacher's head: build the student as a "
                "KnowledgeDistillationRotatedSingleStageDetector (it attaches it)"
            )
        k = self.cross_convs
        cls_feat, cls_middle = run_tower(self.cls_convs, x, k)
        reg_feat, reg_middle = run_tower(self.reg_convs, x, k)
        cross_cls, _ = run_tower(teacher.cls_convs[k:], cls_middle, 0)
        cross_reg, _ = run_tower(teacher.reg_convs[k:], reg_middle, 0)
        return (
            self.retina_cls(cls_feat),
            self.retina_reg(reg_feat),
            teacher.retina_cls(cross_cls),
            teacher.retina_reg(cross_reg),
        )

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
        """Student and cross-head forward in one pass over the towers, then all losses."""
        cls_scores, bbox_preds, cross_cls, cross_reg = multi_apply(self.forward_cross_single, x)
        losses = self.loss(
            cls_scores,
            bbox_preds,
            gt_bboxes,
            gt_labels,
            out_teacher,
            x,
            teacher_x,
            img_metas,
            gt_bboxes_ignore=gt_bboxes_ignore,
            extra_levels=(cross_cls, cross_reg),
        )
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(cls_scores, bbox_preds, img_metas, cfg=proposal_cfg)

    def successor_terms(
        self, cls_score, bbox_pred, teacher_cls_score, teacher_bbox_pred, level, cross_cls, cross_reg, num_total_samples
    ):
        """Cross-head classification (anchors with label_weights > 0), cross-head LD (valuable localization region)."""
        loss_cls = self.loss_cross_cls(
            flat_scores(cross_cls.float(), self.cls_out_channels),
            flat_scores(teacher_cls_score, self.cls_out_channels),
            weight=level.label_weights,
            avg_factor=num_total_samples,
        )
        loss_ld = self.region_ld_loss(self.loss_cross_ld, cross_reg.float(), teacher_bbox_pred, level.ld_region)
        return loss_cls, loss_ld
