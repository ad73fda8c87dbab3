"""`SparseRBboxOverlaps2D`: mmrotate's rotated IoU for the anchor assigner, computed only where it can be > 0.

Why: the assigner compares every anchor with every ground-truth box. mmcv's CPU `box_iou_rotated`
visits each (anchor, box) pair through three tensor indexings and one scalar write, so on the CPU
the bookkeeping of ~80k pairs per step (the demo's teacher: 8 patches of 128², 3069 anchors each)
cost ~15% of a training step, though almost every pair is far apart and has IoU 0. Here the
pairs whose axis-aligned extents cannot touch are answered 0 up front (vectorized), and mmcv's
own pair function runs on the rest (its `aligned` mode: the same `single_box_iou_rotated` on the
same float inputs), so every value is bit for bit mmrotate's `RBboxOverlaps2D`. On a GPU the dense
kernel is already parallel and is used as it is.

`rotld_cli.engine.config` names it as the assigner's calculator; it is registered in mmdet's
IOU_CALCULATORS (= mmrotate's ROTATED_IOU_CALCULATORS) like any plugin.
"""

from __future__ import annotations

import torch
from mmcv.ops import box_iou_rotated
from mmrotate.core.bbox.iou_calculators.builder import ROTATED_IOU_CALCULATORS
from mmrotate.core.bbox.iou_calculators.rotate_iou2d_calculator import RBboxOverlaps2D, rbbox_overlaps

EXTENT_SLACK = (1e-3, 1.0)
"""(relative, absolute px) growth of each extent, far above float32 rounding. mmcv's pair function
counts a corner inside the other box or an edge crossing only with exact comparisons (>= 0,
t in [0, 1]), so a pair answered 0 here has IoU exactly 0 in the dense kernel too."""


def rotated_extents(boxes: torch.Tensor) -> torch.Tensor:
    """(n, 5) (cx, cy, w, h, a) → (n, 4) x1, y1, x2, y2 of each box's axis-aligned extent, slightly grown."""
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a).abs(), torch.sin(a).abs()
    half_w = (w * cos + h * sin) / 2
    half_h = (w * sin + h * cos) / 2
    relative, absolute = EXTENT_SLACK
    half_w = half_w * (1 + relative) + absolute
    half_h = half_h * (1 + relative) + absolute
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def sparse_rbbox_overlaps(bboxes1: torch.Tensor, bboxes2: torch.Tensor, mode: str = "iou") -> torch.Tensor:
    """(m, n) rotated IoU/IoF, equal to mmrotate's `rbbox_overlaps(..., is_aligned=False)` bit for bit."""
    assert mode in ("iou", "iof")
    rows, cols = bboxes1.size(0), bboxes2.size(0)
    if rows * cols == 0:
        return rbbox_overlaps(bboxes1, bboxes2, mode, False)
    # as rbbox_overlaps: tiny boxes clamped to 1e-3 (their IoU is otherwise abnormal), no gradient
    boxes1 = bboxes1.detach().clone()
    boxes2 = bboxes2.detach().clone()
    boxes1[:, 2:4].clamp_(min=1e-3)
    boxes2[:, 2:4].clamp_(min=1e-3)
    ext1, ext2 = rotated_extents(boxes1), rotated_extents(boxes2)
    touch = ((ext1[:, None, 0] <= ext2[None, :, 2]) & (ext2[None, :, 0] <= ext1[:, None, 2])
             & (ext1[:, None, 1] <= ext2[None, :, 3]) & (ext2[None, :, 1] <= ext1[:, None, 3]))
    # a NaN/inf box compares False everywhere: hand it to the kernel, which answers as the dense one
    touch |= ~torch.isfinite(ext1).all(dim=1)[:, None] | ~torch.isfinite(ext2).all(dim=1)[None, :]
    ious = boxes1.new_zeros((rows, cols))
    i, j = touch.nonzero(as_tuple=True)
    if i.numel():
        ious[i, j] = box_iou_rotated(boxes1[i].contiguous(), boxes2[j].contiguous(), mode, aligned=True)
    return ious


@ROTATED_IOU_CALCULATORS.register_module()
class SparseRBboxOverlaps2D(RBboxOverlaps2D):
    """`RBboxOverlaps2D` that skips the pairs that cannot overlap on the CPU (same values)."""

    def __call__(self, bboxes1, bboxes2, mode="iou", is_aligned=False, version="oc"):
        # the CPU kernel is float32-only: anything else goes to the dense path and fails as it does there
        if is_aligned or bboxes1.device.type != "cpu" or bboxes1.dtype != torch.float32:
            return super().__call__(bboxes1, bboxes2, mode, is_aligned, version)
        assert bboxes1.size(-1) in (0, 5, 6) and bboxes2.size(-1) in (0, 5, 6)
        return sparse_rbbox_overlaps(bboxes1[..., :5].contiguous(), bboxes2[..., :5].contiguous(), mode)
