"""Differentiable IoU of rotated boxes in pure torch (BCKD's localization distillation, method.md §1.4 boxes).

mmcv 1.7's `box_iou_rotated` returns IoUs without a gradient (its output is written by the C++/CUDA
op, no autograd function), and `diff_iou_rotated_2d` has only a CUDA kernel, so neither can train a
student on CPU and the first cannot train it at all. This is the exact intersection of two convex
quadrilaterals: the corners of each box inside the other plus the 16 edge-edge crossings, put in
angular order around their mean and measured with the shoelace formula. The ordering is a
permutation (no gradient needed); the area is a polynomial of the vertices, so the gradient reaches
(cx, cy, w, h, θ) of both boxes.

IoU is a function of the rectangles only: (w, h, θ) and (h, w, θ + π/2) — the same box in the
'oc' convention's two spellings — give IoU 1, so this loss has no angle-boundary discontinuity.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-6  # in units of the larger box side (coordinates are normalised below)


def box_corners(boxes: Tensor) -> Tensor:
    """(..., 5) (cx, cy, w, h, θ) → (..., 4, 2) corners, counter-clockwise in (x, y) axes."""
    cx, cy, w, h, theta = boxes.unbind(-1)
    cos, sin = theta.cos()[..., None], theta.sin()[..., None]
    half_w = torch.stack([w, -w, -w, w], dim=-1) / 2
    half_h = torch.stack([h, h, -h, -h], dim=-1) / 2
    x = cx[..., None] + half_w * cos - half_h * sin
    y = cy[..., None] + half_w * sin + half_h * cos
    return torch.stack([x, y], dim=-1)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: Tensor, polygon: Tensor) -> Tensor:
    """(n, p, 2) points, (n, 4, 2) counter-clockwise convex polygons → (n, p) bool (boundary counts)."""
    edges = polygon.roll(-1, dims=1) - polygon  # (n, 4, 2)
    rel = points[:, :, None, :] - polygon[:, None, :, :]  # (n, p, 4, 2)
    return (_cross(edges[:, None], rel) >= -_EPS).all(dim=-1)


def _edge_crossings(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Crossing points of every edge of `a` with every edge of `b`: (n, 16, 2) points, (n, 16) valid."""
    r = (a.roll(-1, dims=1) - a)[:, :, None, :]  # (n, 4, 1, 2) edges of a
    s = (b.roll(-1, dims=1) - b)[:, None, :, :]  # (n, 1, 4, 2) edges of b
    offset = b[:, None, :, :] - a[:, :, None, :]  # (n, 4, 4, 2)
    den = _cross(r, s).expand(offset.shape[:-1])
    parallel = den.abs() < _EPS
    safe = torch.where(parallel, torch.ones_like(den), den)
    t = _cross(offset, s) / safe
    u = _cross(offset, r) / safe
    valid = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    points = a[:, :, None, :] + t[..., None] * r
    return points.reshape(a.size(0), 16, 2), valid.reshape(a.size(0), 16)


def _polygon_area(points: Tensor, valid: Tensor) -> Tensor:
    """Area of the convex hull of the valid points of each row (they are the vertices of a convex set)."""
    count = valid.sum(dim=1, keepdim=True)
    with torch.no_grad():
        centre = (points * valid[..., None]).sum(dim=1) / count.clamp(min=1)
        rel = points - centre[:, None, :]
        angle = torch.atan2(rel[..., 1], rel[..., 0])
        angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points sort last
        order = angle.argsort(dim=1)
    ordered = points.gather(1, order[..., None].expand_as(points))
    ranks = torch.arange(points.size(1), device=points.device)[None, :]
    # Invalid slots repeat the first vertex: repeated vertices add zero area to the shoelace sum.
    ordered = torch.where((ranks < count)[..., None], ordered, ordered[:, :1, :])
    return 0.5 * _cross(ordered, ordered.roll(-1, dims=1)).sum(dim=1).abs()


def rotated_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of aligned pairs of (n, 5) rotated boxes (cx, cy, w, h, θ in radians) → (n,), differentiable."""
    if boxes1.shape != boxes2.shape or boxes1.dim() != 2 or boxes1.size(-1) != 5:
        raise ValueError(f"expected two (n, 5) box tensors, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    if boxes1.size(0) == 0:
        return boxes1.new_zeros(0)
    # IoU is invariant to translation and uniform scale: centre on boxes1, unit = the largest side,
    # so the tolerances above are relative and float32 keeps its precision for 1024-px patches.
    with torch.no_grad():
        origin = boxes1[:, :2].clone()
        scale = torch.cat([boxes1[:, 2:4], boxes2[:, 2:4]], dim=1).abs().amax(dim=1).clamp(min=1e-6)

    def normalise(boxes: Tensor) -> Tensor:
        xy = (boxes[:, :2] - origin) / scale[:, None]
        return torch.cat([xy, boxes[:, 2:4] / scale[:, None], boxes[:, 4:]], dim=1)

    b1, b2 = normalise(boxes1), normalise(boxes2)
    c1, c2 = box_corners(b1), box_corners(b2)
    crossings, crossing_valid = _edge_crossings(c1, c2)
    points = torch.cat([c1, c2, crossings], dim=1)
    valid = torch.cat([_inside(c1, c2), _inside(c2, c1), crossing_valid], dim=1)
    inter = _polygon_area(points, valid)
    area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    return inter / (area1 + area2 - inter).clamp(min=_EPS)
