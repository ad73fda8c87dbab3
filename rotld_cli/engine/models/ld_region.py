"""The distillation regions of one image: LD/KD weights (method.md §3.3) and the IM mask (§3.5).

Pure torch, no mmcv. The seed sorts an anchors×gts distance matrix and builds several n×k
tensors (int64 indices among them); with 196,416 anchors and 1,000 gts that is 7.5 GB. Here the
gts are processed in chunks, so peak memory is O(n·chunk) whatever the number of gts, using the
equivalent vectorised form

    ld[a] = max_g IoU(a, g) · 1[IoU(a, g) ≥ 0.25 · thr_g],   thr_g = mean + std (unbiased)
            of the IoUs of the 9 anchors nearest to g's centre on each level (45 over 5 levels);
    im[a] = 1 if IoU(a, g) > 0.5 · max_a' IoU(a', g) for some g, else 0.

Speed: the gts are put in Z-order before chunking, so a chunk covers a small part of the image
and IoUs are computed only for the anchors touching it (any other anchor has IoU 0 with all of
the chunk's gts, which adds nothing to either region).

Fidelity notes:
* IoU, centres and distances use the seed's float32 operations in the seed's order (axis-aligned
  IoU as mmdet's `bbox_overlaps`, centres recomputed from the xyxy boxes), so values match bit
  for bit.
* The 9 nearest anchors come from `torch.topk(9, largest=False)` over *all* anchors of the level
  (one row per gt), the seed's call on its (anchors × gts) matrix. topk selects within each
  slice independently, so ties between equidistant grid points (a gt centre exactly between
  two anchor centres) are broken exactly as the seed's topk on the same device; torch documents
  no tie order (CPU and CUDA may differ, as they did for the seed).
* Means/stds are reduced over fewer columns than in the seed, which can change the last ulp of
  thr_g; an anchor is affected only if its IoU lies within that ulp of 0.25·thr_g.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BOX_MODES = ("seed", "hbb")
TOPK_PER_LEVEL = 9
LD_FACTOR = 0.25
IM_FACTOR = 0.5
IOU_EPS = 1e-6  # mmdet BboxOverlaps2D's union floor
DEFAULT_MAX_ELEMS = 1 << 22  # anchors × gts elements per chunk (16 MiB per float32 block)


def anchors_xyxy(anchors: Tensor) -> Tensor:
    """(n, ≥4) (cx, cy, w, h, ...) anchors → (n, 4) axis-aligned xyxy, as the seed builds them."""
    cx, cy, w, h = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def gt_xyxy(gt_bboxes: Tensor, box_mode: str = "seed") -> Tensor:
    """(k, 5) OBB gts → (k, 4) xyxy.

    'seed' ignores θ (cx ± w/2, cy ± h/2): for 'oc' boxes near θ = π/2 this is the object
    transposed, but it is what the paper's numbers were trained with. 'hbb' uses the
    circumscribed axis-aligned box.
    """
    if box_mode not in BOX_MODES:
        raise ValueError(f"ld_region_box must be one of {', '.join(BOX_MODES)}, got {box_mode!r}")
    if box_mode == "seed":
        return anchors_xyxy(gt_bboxes)
    cos, sin = gt_bboxes[:, 4].cos().abs(), gt_bboxes[:, 4].sin().abs()
    w, h = gt_bboxes[:, 2], gt_bboxes[:, 3]
    hbb = torch.stack([gt_bboxes[:, 0], gt_bboxes[:, 1], cos * w + sin * h, sin * w + cos * h], dim=1)
    return anchors_xyxy(hbb)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, eps: float = IOU_EPS) -> Tensor:
    """IoU of broadcast pairs of (..., 4) xyxy boxes, with mmdet `bbox_overlaps`' float32 arithmetic."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    overlap = torch.minimum(boxes1[..., 2], boxes2[..., 2])
    overlap.sub_(torch.maximum(boxes1[..., 0], boxes2[..., 0])).clamp_(min=0)
    height = torch.minimum(boxes1[..., 3], boxes2[..., 3])
    height.sub_(torch.maximum(boxes1[..., 1], boxes2[..., 1])).clamp_(min=0)
    overlap.mul_(height)
    del height
    union = area1 + area2
    union.sub_(overlap).clamp_(min=eps)
    return overlap.div_(union)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = IOU_EPS) -> Tensor:
    """(n, 4) × (k, 4) xyxy → (n, k) IoU, bit for bit mmdet's `bbox_overlaps` (BboxOverlaps2D)."""
    return pairwise_iou(boxes1[:, None, :], boxes2[None, :, :], eps)


def box_centres(xyxy: Tensor) -> Tensor:
    """Centres recomputed from xyxy ((x1 + x2) / 2), as the seed does, so distances tie identically."""
    return torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2.0, (xyxy[:, 1] + xyxy[:, 3]) / 2.0], dim=1)


def _spread_bits(v: Tensor) -> Tensor:
    """Insert a zero bit after each of the 16 low bits (for Morton codes)."""
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555


def spatial_order(points: Tensor) -> Tensor:
    """Z-order (Morton) permutation of (k, 2) points: consecutive gts are close to each other."""
    lo = points.min(dim=0).values
    span = (points.max(dim=0).values - lo).max().clamp(min=1e-6)
    cells = ((points - lo) / span * 65535).long().clamp_(0, 65535)
    return (_spread_bits(cells[:, 0]) | (_spread_bits(cells[:, 1]) << 1)).argsort()


def _thresholds(boxes, points, gts, gt_points, level_bounds, topk):
    """thr_g = mean + unbiased std of the IoUs of the `topk` anchors nearest to each gt, per level."""
    nearest = []
    for lo, hi in level_bounds:
        if hi == lo:
            continue
        dist = (points[None, lo:hi, 0] - gt_points[:, None, 0]).pow_(2)
        dist.add_((points[None, lo:hi, 1] - gt_points[:, None, 1]).pow_(2)).sqrt_()
        nearest.append(dist.topk(min(topk, hi - lo), dim=1, largest=False).indices + lo)
        del dist
    candidate_iou = pairwise_iou(boxes[torch.cat(nearest, dim=1)], gts[:, None, :])
    return candidate_iou.mean(dim=1) + candidate_iou.std(dim=1)


def _touching(boxes: Tensor, gts: Tensor) -> Tensor:
    """Indices of the boxes that overlap the extent of `gts`: every other box has IoU 0 with all."""
    x1, y1 = gts[:, 0].min(), gts[:, 1].min()
    x2, y2 = gts[:, 2].max(), gts[:, 3].max()
    inside = (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1)
    return inside.nonzero().squeeze(1)


def distillation_regions(
    anchors: Tensor,
    num_level_anchors: Sequence[int],
    gt_bboxes: Tensor,
    box_mode: str = "seed",
    topk: int = TOPK_PER_LEVEL,
    ld_factor: float = LD_FACTOR,
    im_factor: float = IM_FACTOR,
    max_elems: int = DEFAULT_MAX_ELEMS,
) -> tuple[Tensor, Tensor]:
    """LD/KD weights and IM mask of one image's anchors.

    Args:
        anchors: (n, 5) anchors (cx, cy, w, h, θ) of all levels, concatenated level by level.
        num_level_anchors: anchors per level; they sum to n.
        gt_bboxes: (k, 5) OBB gts (cx, cy, w, h, θ).
        box_mode: 'seed' (θ ignored) or 'hbb' (circumscribed box), see `gt_xyxy`.
        max_elems: bound on n × gts-per-chunk; peak memory is a small multiple of 4·max_elems bytes.

    Returns:
        (ld, im): (n,) float tensors; ld ∈ [0, 1] is the soft region weight, im ∈ {0, 1}.
    """
    n = anchors.size(0)
    if sum(num_level_anchors) != n:
        raise ValueError(f"num_level_anchors sums to {sum(num_level_anchors)}, but there are {n} anchors")
    ld = anchors.new_zeros(n)
    im = anchors.new_zeros(n)
    if n == 0 or gt_bboxes.size(0) == 0:
        return ld, im
    boxes = anchors_xyxy(anchors)
    points = box_centres(boxes)
    gts = gt_xyxy(gt_bboxes.to(anchors.dtype), box_mode)
    gts = gts[spatial_order(box_centres(gts))]  # a chunk of nearby gts touches few anchors
    gt_points = box_centres(gts)
    level_bounds, start = [], 0
    for count in num_level_anchors:
        level_bounds.append((start, start + count))
        start += count
    chunk = max(1, max_elems // n)
    for g0 in range(0, gts.size(0), chunk):
        chunk_gts = gts[g0 : g0 + chunk]
        thr = _thresholds(boxes, points, chunk_gts, gt_points[g0 : g0 + chunk], level_bounds, topk)
        near = _touching(boxes, chunk_gts)
        if near.numel() == 0:
            continue
        iou = box_iou(chunk_gts, boxes[near])  # (gts, near anchors); IoU is 0 elsewhere
        im_hit = (iou > im_factor * iou.max(dim=1, keepdim=True).values).any(dim=0)
        im[near[im_hit]] = 1.0
        iou.masked_fill_((iou >= ld_factor * thr[:, None]).logical_not_(), 0.0)
        ld[near] = torch.maximum(ld[near], iou.max(dim=0).values)
    return ld, im
