"""Base of the successor distillers' heads: the student's own losses, optional LD terms, then its own.

CrossKD and BCKD replace LD+KD, but a recipe may keep LD beside them (`ld-crosskd`). Here an LD
head term (loss_ld, loss_kd, loss_im) runs only when its config is given with a weight > 0, so a
pure CrossKD/BCKD student neither pays for nor reports terms it does not train with, and the LD
region is computed only when a term reads it. Subclasses add `successor_keys` and
`successor_terms`, which get the level's targets as a `LevelTargets` beside the predictions: the
anchors, the assigned `labels` and `label_weights` (0 for ignored anchors and anchors outside the
image; the authors of CrossKD and BCKD restrict their terms with them) and the LD region.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rotld_cli.engine.models.distill_terms import term_enabled
from rotld_cli.engine.models.distribution_head import RotatedRetinaHeadDistribution
from rotld_cli.engine.models.ld_head import LDRotatedRetinaHead

LD_TERMS = (("ld", "loss_ld"), ("kd", "loss_kd"), ("im", "loss_im"))


class LevelTargets(NamedTuple):
    """One FPN level's targets over the batch, flat in the scores' (n, h, w, a) anchor order."""

    anchors: Tensor  # (N, A_level, 5)
    labels: Tensor  # (M,) class index, num_classes for background
    label_weights: Tensor  # (M,) float, 0 for ignored anchors and anchors outside the image
    ld_region: Tensor  # (N, A_level) LD weights (zeros unless a term reads them)


class KDTermsHead(LDRotatedRetinaHead):
    """LD head whose LD/KD/IM terms are opt-in; subclasses append their own per-level terms."""

    successor_keys: tuple[str, ...] = ()
    reads_ld_region = False  # a successor term weighted by the valuable localization region

    def __init__(self, num_classes: int, in_channels: int, loss_ld=None, loss_kd=None, loss_im=None, **kwargs) -> None:
        configs = dict(loss_ld=loss_ld, loss_kd=loss_kd, loss_im=loss_im)
        super().__init__(num_classes, in_channels, **configs, **kwargs)
        self.ld_terms = tuple(term for term, key in LD_TERMS if term_enabled(configs[key]))

    @property
    def loss_keys(self) -> tuple[str, ...]:
        own = tuple(key for term, key in LD_TERMS if term in self.ld_terms)
        return ("loss_cls", "loss_bbox", *own, *self.successor_keys)

    def get_region_targets(self, anchor_list, valid_flag_list, gt_bboxes_list, img_metas, labels_list=None):
        """The LD/IM regions when a term reads them; zeros otherwise (no IoU work)."""
        if self.reads_ld_region or self.ld_terms:
            return super().get_region_targets(anchor_list, valid_flag_list, gt_bboxes_list, img_metas,
                                              labels_list=labels_list)
        zeros = [
            anchor_list[0][level].new_zeros(len(anchor_list), anchor_list[0][level].size(0))
            for level in range(len(anchor_list[0]))
        ]
        return zeros, [z.clone() for z in zeros]

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
        *extra,
        num_total_samples,
    ):
        """Ground-truth losses, the enabled LD terms, then the subclass's terms (one level)."""
        terms = list(
            RotatedRetinaHeadDistribution.loss_single(
                self,
                cls_score,
                bbox_pred,
                anchors,
                labels,
                label_weights,
                bbox_targets,
                bbox_weights,
                num_total_samples,
            )
        )
        if "ld" in self.ld_terms:
            terms.append(self.region_ld_loss(self.loss_ld, bbox_pred, teacher_bbox_pred, ld_region))
        if "kd" in self.ld_terms:
            terms.append(
                self.region_kd_loss(cls_score, teacher_cls_score, ld_region, label_weights, num_total_samples)
            )
        if "im" in self.ld_terms:
            terms.append(self.imitation_loss(x, teacher_x, im_region, bbox_pred))
        terms.extend(
            self.successor_terms(
                cls_score,
                bbox_pred,
                teacher_cls_score.float(),
                teacher_bbox_pred.float(),
                LevelTargets(anchors, labels.reshape(-1), label_weights.reshape(-1).float(), ld_region),
                *extra,
                num_total_samples=num_total_samples,
            )
        )
        return tuple(terms)

    def successor_terms(
        self, cls_score, bbox_pred, teacher_cls_score, teacher_bbox_pred, level: LevelTargets, *extra, num_total_samples
    ):
        """One level's distillation terms (a tuple, in `successor_keys` order)."""
        raise NotImplementedError
