"""Rotated ATSS on rotld's distribution head: the assigner, the teacher/baseline head, its students.

* `RotatedATSSAssigner`: MMRotate 0.3.4's `ATSSObbAssigner` (adaptive training sample selection,
  Zhang et al., CVPR 2020) in plain torch. Two departures, both so it runs where rotld trains:
  mmcv's `points_in_polygons` (the "anchor centre inside the gt" test) has only a CUDA kernel, so the
  test is done here in the gt's own frame (|x'| < w/2 and |y'| < h/2 after rotating by −θ; a centre
  exactly on the border counts as outside, where the CUDA ray casting depends on the crossing
  order); and as in mmdet's `ATSSAssigner` a level keeps min(topk, its anchors) candidates, where
  `ATSSObbAssigner` fails on a level smaller than topk (the 1×1 top level of a 128² patch).
* `RotatedATSSHeadDistribution`: `RotatedRetinaHeadDistribution` with the ATSS targets of
  mmrotate's `RotatedATSSHead` (one anchor per location; same layers, integrals and inference).
* Students: `LDRotatedATSSHead`, `CrossKDRotatedATSSHead`, `BCKDRotatedATSSHead` are the RetinaNet
  students on the ATSS targets. LD, KD and CrossKD's LD read the head's own positives (ATSS's
  adaptive positives, weight 1) instead of the seed's valuable localization region: ATSS's
  threshold mean + std over the k nearest anchors per level already is the region the LD paper
  builds its "main distillation region" from, so a second, anchor-IoU region would be redundant.
"""

from __future__ import annotations

import torch
from mmdet.core.bbox.assigners.assign_result import AssignResult
from mmdet.core.bbox.assigners.base_assigner import BaseAssigner
from mmrotate.core.bbox.builder import ROTATED_BBOX_ASSIGNERS
from mmrotate.core.bbox.iou_calculators import build_iou_calculator
from mmrotate.models.builder import ROTATED_HEADS
from mmrotate.models.dense_heads.rotated_atss_head import RotatedATSSHead
from torch import Tensor

from rotld_cli.engine.models.bckd_head import BCKDRotatedRetinaHead
from rotld_cli.engine.models.crosskd_head import CrossKDRotatedRetinaHead
from rotld_cli.engine.models.distill_terms import positive_region
from rotld_cli.engine.models.distribution_head import RotatedRetinaHeadDistribution
from rotld_cli.engine.models.kd_terms_head import KDTermsHead

NO_MATCH = -100000000.0


def centres_inside(points: Tensor, boxes: Tensor) -> Tensor:
    """(n, 2) points, (k, 5) rotated boxes → (n, k) bool: the point strictly inside the box."""
    offset = points[:, None, :] - boxes[None, :, :2]
    cos, sin = boxes[:, 4].cos(), boxes[:, 4].sin()
    along_w = offset[..., 0] * cos + offset[..., 1] * sin
    along_h = -offset[..., 0] * sin + offset[..., 1] * cos
    return (along_w.abs() < boxes[:, 2] / 2) & (along_h.abs() < boxes[:, 3] / 2)


@ROTATED_BBOX_ASSIGNERS.register_module()
class RotatedATSSAssigner(BaseAssigner):
    """ATSS for rotated anchors: per level the `topk` anchors nearest to each gt's centre are its
    candidates; those with IoU ≥ mean + std of the candidates' IoUs and centre inside the gt are
    positives; an anchor claimed by several gts goes to the one with the highest IoU."""

    def __init__(self, topk: int, iou_calculator: dict | None = None) -> None:
        self.topk = topk
        self.iou_calculator = build_iou_calculator(iou_calculator or dict(type="RBboxOverlaps2D"))

    def assign(self, bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore=None, gt_labels=None):
        num_gt, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
        overlaps = self.iou_calculator(bboxes, gt_bboxes)
        assigned = overlaps.new_zeros((num_bboxes,), dtype=torch.long)
        if num_gt == 0 or num_bboxes == 0:
            labels = None if gt_labels is None else overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
            return AssignResult(num_gt, assigned, overlaps.new_zeros((num_bboxes,)), labels=labels)
        distances = (bboxes[:, None, :2] - gt_bboxes[None, :, :2]).pow(2).sum(-1).sqrt()
        candidates, start = [], 0
        for count in num_level_bboxes:
            if count:
                nearest = distances[start : start + count].topk(min(self.topk, count), dim=0, largest=False).indices
                candidates.append(nearest + start)
            start += count
        candidate_idxs = torch.cat(candidates, dim=0)  # (candidates, gts)
        gt_range = torch.arange(num_gt, device=bboxes.device)
        candidate_overlaps = overlaps[candidate_idxs, gt_range]
        threshold = candidate_overlaps.mean(0) + candidate_overlaps.std(0)
        inside = centres_inside(bboxes[:, :2], gt_bboxes)[candidate_idxs, gt_range]
        is_pos = (candidate_overlaps >= threshold[None, :]) & inside
        # The positives' IoU with their gt; -inf elsewhere, then each anchor takes its best gt.
        claimed = overlaps.new_full((num_bboxes, num_gt), NO_MATCH)
        pos_anchor, pos_gt = candidate_idxs[is_pos], gt_range.expand_as(candidate_idxs)[is_pos]
        claimed[pos_anchor, pos_gt] = overlaps[pos_anchor, pos_gt]
        max_overlaps, argmax = claimed.max(dim=1)
        matched = max_overlaps != NO_MATCH
        assigned[matched] = argmax[matched] + 1
        labels = None
        if gt_labels is not None:
            labels = assigned.new_full((num_bboxes,), -1)
            labels[matched] = gt_labels[argmax[matched]]
        return AssignResult(num_gt, assigned, max_overlaps, labels=labels)


@ROTATED_HEADS.register_module()
class RotatedATSSHeadDistribution(RotatedRetinaHeadDistribution, RotatedATSSHead):
    """The distribution head with mmrotate's ATSS targets (`RotatedATSSHead._get_targets_single`)."""


class PositiveRegionMixin:
    """The LD/KD region of an ATSS student: its own positives (weight 1), from the assigned labels."""

    num_classes: int

    @torch.no_grad()
    def get_region_targets(self, anchor_list, valid_flag_list, gt_bboxes_list, img_metas, labels_list=None):
        regions = [positive_region(labels, self.num_classes).reshape(labels.shape) for labels in labels_list]
        return regions, [region.clone() for region in regions]


@ROTATED_HEADS.register_module()
class LDRotatedATSSHead(PositiveRegionMixin, KDTermsHead, RotatedATSSHead):
    """LD + KD on the ATSS positives; each term runs when its weight is > 0 (feature imitation is
    the RetinaNet family's)."""

    def successor_terms(self, *args, **kwargs) -> tuple:
        return ()


@ROTATED_HEADS.register_module()
class CrossKDRotatedATSSHead(PositiveRegionMixin, CrossKDRotatedRetinaHead, RotatedATSSHead):
    """CrossKD on the ATSS targets; its cross-head LD reads the ATSS positives."""


@ROTATED_HEADS.register_module()
class BCKDRotatedATSSHead(PositiveRegionMixin, BCKDRotatedRetinaHead, RotatedATSSHead):
    """BCKD on the ATSS targets (dense: every anchor; the positives set its normaliser)."""
