"""`LDRotatedRetinaHead`: the student head, RetinaNet losses plus LD, KD and IM (method.md §3).

Per FPN level it returns
* loss_cls / loss_bbox: the distribution head's focal and box losses (§1.6);
* loss_ld: KL between student and teacher distributions of each of the 5 deltas, weighted by the
  valuable localization region and divided by N_ld = max(#{ld > 0}, 1) over the batch (§3.4);
* loss_kd: KL between class logits with the same weights and normaliser;
* loss_im: MSE between student and teacher features at the locations of the IM region (§3.5).

Departures from the seed, all bug fixes (§9.2): the default imitation method is 'finegrained'
(the seed's 'gibox' raised NameError, and 'decouple' compared mismatched features, so both are
refused at construction); the IM mask groups the 9 anchors of each location
(`reshape(N, HW, A)`, the seed scrambled them); an image without gts gets zero regions instead
of a crash; the regions are computed in bounded memory (see `ld_region`).
"""

from __future__ import annotations

import torch
from mmcv.runner import force_fp32
from mmdet.core import images_to_levels, multi_apply, unmap
from mmrotate.core import rotated_anchor_inside_flags
from mmrotate.models.builder import ROTATED_HEADS, build_loss
from torch import Tensor

from rotld_cli.engine.models.distill_terms import checked_kd_region, flat_scores, ld_term, region_kd_term
from rotld_cli.engine.models.distribution_head import RotatedRetinaHeadDistribution
from rotld_cli.engine.models.integral import NUM_COORDS
from rotld_cli.engine.models.ld_region import BOX_MODES, distillation_regions

IMITATION_METHODS = ("finegrained", "fitnet")  # identical in the seed: both use the fine-grained mask
UNSUPPORTED_IMITATION = {
    "gibox": "the seed's 'gibox' branch calls an undefined get_gi_region and crashes (NameError)",
    "decouple": "the seed's 'decouple' branch compares location features with anchor indices",
}
LOSS_KEYS = ("loss_cls", "loss_bbox", "loss_ld", "loss_kd", "loss_im")
DEFAULT_LOSS_LD = dict(type="KnowledgeDistillationKLDivLoss", loss_weight=0.25, T=10)
DEFAULT_LOSS_KD = dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10, T=2)
DEFAULT_LOSS_IM = dict(type="IMLoss", loss_weight=2.0)


def check_imitation_method(method: str) -> None:
    """Refuse the seed's broken or misspelt imitation methods with a message naming the option."""
    if method in UNSUPPORTED_IMITATION:
        raise ValueError(
            f"imitation_method={method!r} is not supported: {UNSUPPORTED_IMITATION[method]}; "
            f"use one of {', '.join(IMITATION_METHODS)}"
        )
    if method not in IMITATION_METHODS:
        raise ValueError(f"imitation_method must be one of {', '.join(IMITATION_METHODS)}, got {method!r}")


@ROTATED_HEADS.register_module()
class LDRotatedRetinaHead(RotatedRetinaHeadDistribution):
    """Student head distilled from a `RotatedRetinaHeadDistribution` teacher.

    Args:
        loss_ld: localization distillation loss (KL over each delta distribution); default
            KnowledgeDistillationKLDivLoss(loss_weight=0.25, T=10), the seed's head default.
        loss_kd: classification distillation loss (KL over the class logits); default weight 10, T=2.
        loss_im: feature imitation loss; default IMLoss(loss_weight=2.0).
        imitation_method: 'finegrained' (default) or 'fitnet' (same behaviour, as in the seed).
        ld_region_box: how the LD/IM region sees an OBB gt: 'seed' (cx ± w/2, cy ± h/2, θ
            ignored, as the paper trained) or 'hbb' (circumscribed axis-aligned box).
    """

    loss_keys = LOSS_KEYS

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        loss_ld: dict | None = None,
        loss_kd: dict | None = None,
        loss_im: dict | None = None,
        imitation_method: str = "finegrained",
        ld_region_box: str = "seed",
        kd_region: str = "ld",
        **kwargs,
    ) -> None:
        check_imitation_method(imitation_method)
        if ld_region_box not in BOX_MODES:
            raise ValueError(f"ld_region_box must be one of {', '.join(BOX_MODES)}, got {ld_region_box!r}")
        super().__init__(num_classes, in_channels, **kwargs)
        self.imitation_method = imitation_method
        self.ld_region_box = ld_region_box
        self.kd_region = checked_kd_region(kd_region)
        self.loss_ld = build_loss(loss_ld or dict(DEFAULT_LOSS_LD))
        self.loss_kd = build_loss(loss_kd or dict(DEFAULT_LOSS_KD))
        self.loss_im = build_loss(loss_im or dict(DEFAULT_LOSS_IM))

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
        """Student forward + losses against the teacher's (cls logits, reg logits) and features."""
        outs = self(x)
        losses = self.loss(
            *outs, gt_bboxes, gt_labels, out_teacher, x, teacher_x, img_metas, gt_bboxes_ignore=gt_bboxes_ignore
        )
        if proposal_cfg is None:
            return losses
        return losses, self.get_bboxes(*outs, img_metas, cfg=proposal_cfg)

    def get_targets(
        self,
        anchor_list,
        valid_flag_list,
        gt_bboxes_list,
        img_metas,
        gt_bboxes_ignore_list=None,
        gt_labels_list=None,
        label_channels=1,
        unmap_outputs=True,
        return_sampling_results=False,
    ):
        """RetinaNet targets (mmrotate's), then the per-level LD and IM regions appended last."""
        targets = super().get_targets(
            anchor_list,
            valid_flag_list,
            gt_bboxes_list,
            img_metas,
            gt_bboxes_ignore_list=gt_bboxes_ignore_list,
            gt_labels_list=gt_labels_list,
            label_channels=label_channels,
            unmap_outputs=unmap_outputs,
            return_sampling_results=return_sampling_results,
        )
        if targets is None:
            return None
        regions = self.get_region_targets(anchor_list, valid_flag_list, gt_bboxes_list, img_metas,
                                          labels_list=targets[0])
        return (*targets, *regions)

    @torch.no_grad()
    def get_region_targets(self, anchor_list, valid_flag_list, gt_bboxes_list, img_metas, labels_list=None):
        """Per-level (N, anchors_in_level) LD weights and IM masks from the original OBB gts.

        `labels_list`: the per-level assigned labels (read by heads whose region is their positives)."""
        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        ld_per_image, im_per_image = [], []
        for anchors, flags, gt_bboxes, img_meta in zip(anchor_list, valid_flag_list, gt_bboxes_list, img_metas):
            flat_anchors, flat_flags = torch.cat(anchors), torch.cat(flags)
            inside = rotated_anchor_inside_flags(
                flat_anchors, flat_flags, img_meta["img_shape"][:2], self.train_cfg.allowed_border
            )
            level_inside = [int(f.sum()) for f in torch.split(inside, num_level_anchors)]
            ld, im = distillation_regions(flat_anchors[inside], level_inside, gt_bboxes, self.ld_region_box)
            ld_per_image.append(unmap(ld, flat_anchors.size(0), inside))
            im_per_image.append(unmap(im, flat_anchors.size(0), inside))
        return images_to_levels(ld_per_image, num_level_anchors), images_to_levels(im_per_image, num_level_anchors)

    def loss_single(
        self,
        cls_score,
        bbox_pred,
        anchors,
        labels,
        label_weights,
        bbox_targets,
        bbox_weights,
        teacher_bbox_pred,
        teacher_cls_score,
        x,
        teacher_x,
        ld_region,
        im_region,
        num_total_samples,
    ):
        """All five losses of one level; anchors are flattened in (n, h, w, a) order."""
        loss_cls, loss_bbox = super().loss_single(
            cls_score, bbox_pred, anchors, labels, label_weights, bbox_targets, bbox_weights, num_total_samples
        )
        loss_ld = self.region_ld_loss(self.loss_ld, bbox_pred, teacher_bbox_pred, ld_region)
        loss_kd = self.region_kd_loss(cls_score, teacher_cls_score, ld_region, label_weights, num_total_samples)
        loss_im = self.imitation_loss(x, teacher_x, im_region, bbox_pred)
        return loss_cls, loss_bbox, loss_ld, loss_kd, loss_im

    def region_ld_loss(self, loss_ld, bbox_pred: Tensor, teacher_bbox_pred: Tensor, ld_region: Tensor) -> Tensor:
        """`loss_ld` on the 5 delta distributions of each anchor, weighted by the region, / N_ld (§3.4)."""
        width = (self.reg_max + 1) * NUM_COORDS
        return ld_term(loss_ld, flat_scores(bbox_pred, width), flat_scores(teacher_bbox_pred, width), ld_region,
                       self.reg_max + 1)

    def region_kd_loss(self, cls_score: Tensor, teacher_cls_score: Tensor, ld_region: Tensor, label_weights: Tensor,
                       num_total_samples: float) -> Tensor:
        """KD on the class logits: with the LD region's weights and normaliser (§3.4, `kd_region='ld'`), or on
        every anchor the assigner does not ignore, divided by the number of positives (`kd_region='all'`)."""
        student = flat_scores(cls_score, self.cls_out_channels)
        teacher = flat_scores(teacher_cls_score, self.cls_out_channels)
        kept = (label_weights.reshape(-1) > 0).float()
        return region_kd_term(self.loss_kd, student, teacher, ld_region, self.kd_region, num_total_samples, kept)

    def imitation_loss(self, x: Tensor, teacher_x: Tensor, im_region: Tensor, bbox_pred: Tensor) -> Tensor:
        """IM loss at the locations where any of the A anchors is in the IM region."""
        n, channels, h, w = x.shape
        location_mask = (im_region.reshape(n, h * w, self.num_anchors).amax(dim=-1) > 0).reshape(-1)
        if not bool(location_mask.any()):
            return bbox_pred.sum() * 0
        student = x.permute(0, 2, 3, 1).reshape(-1, channels)[location_mask]
        teacher = teacher_x.permute(0, 2, 3, 1).reshape(-1, channels)[location_mask]
        return self.loss_im(student, teacher)

    @force_fp32(apply_to=("cls_scores", "bbox_preds"))
    def loss(
        self,
        cls_scores,
        bbox_preds,
        gt_bboxes,
        gt_labels,
        out_teacher,
        x,
        teacher_x,
        img_metas,
        gt_bboxes_ignore=None,
        extra_levels=(),
    ):
        """Losses of all levels: dict of `loss_keys`, each a list with one scalar per level.

        `extra_levels`: more per-level lists (a subclass's own inputs, e.g. CrossKD's cross-head
        predictions), passed to `loss_single` after `im_region`.
        """
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        assert len(featmap_sizes) == self.anchor_generator.num_levels
        device = cls_scores[0].device
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, img_metas, device=device)
        label_channels = self.cls_out_channels if self.use_sigmoid_cls else 1
        targets = self.get_targets(
            anchor_list,
            valid_flag_list,
            gt_bboxes,
            img_metas,
            gt_bboxes_ignore_list=gt_bboxes_ignore,
            gt_labels_list=gt_labels,
            label_channels=label_channels,
        )
        if targets is None:
            return None
        labels_list, label_weights_list, bbox_targets_list, bbox_weights_list, num_total_pos, num_total_neg = targets[
            :6
        ]
        ld_region_list, im_region_list = targets[-2:]
        num_total_samples = num_total_pos + num_total_neg if self.sampling else num_total_pos

        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        all_anchor_list = images_to_levels([torch.cat(anchors) for anchors in anchor_list], num_level_anchors)
        teacher_cls_scores, teacher_bbox_preds = out_teacher
        losses = multi_apply(
            self.loss_single,
            cls_scores,
            bbox_preds,
            all_anchor_list,
            labels_list,
            label_weights_list,
            bbox_targets_list,
            bbox_weights_list,
            teacher_bbox_preds,
            teacher_cls_scores,
            x,
            teacher_x,
            ld_region_list,
            im_region_list,
            *extra_levels,
            num_total_samples=num_total_samples,
        )
        return dict(zip(self.loss_keys, losses))
