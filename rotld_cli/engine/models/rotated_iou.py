"""Differentiable IoU and GIoU of rotated boxes in pure torch (BCKD's localization distillation).

mmcv 1.7's `box_iou_rotated` returns IoUs without a gradient (its output is written by the C++/CUDA
op, no autograd function), and `diff_iou_rotated_2d` and `convex_giou` have only CUDA kernels, so
none of them can train a student on CPU and the first cannot train it at all.

Intersection: box 1 is clipped by the four half-planes of box 2 (Sutherland–Hodgman), which keeps
the vertices in boundary order, so the area is the shoelace sum of the clipped polygon. Exact
signs, no tolerance: a vertex on a clip line stays, a crossing point is added only where an edge
goes strictly from one side to the other (t = d_i / (d_i − d_j), d_i and d_j of opposite signs, so
the denominator never vanishes). The earlier version (corner-in-box tests and edge crossings with
a 1e-6 tolerance, then an angular sort) took a point up to 1e-6 outside for inside and gave a
wrong gradient there (zero along an edge 1e-6 from its twin, −0.75 expected), and a zero-size box
clipped nothing, so its IoU came out as 3.0. Now the intersection is clamped to
[0, min(area1, area2)] — a box of zero area has intersection 0 whatever the clipping of its
degenerate edges gives — and an empty union gives IoU 0, with finite gradients everywhere.

GIoU (Rezatofighi et al., CVPR 2019) needs the smallest enclosing convex region C of the two boxes;
for rotated boxes that is the convex hull of their 8 corners, the enclosing region of mmcv's
`convex_giou` (mmrotate's `ConvexGIoULoss`): GIoU = IoU − (area(C) − area(A ∪ B)) / area(C), in
[−1, 1]. The hull's vertex order is found by gift wrapping without gradient (a permutation), its
area is the shoelace sum of the ordered corners, so the gradient reaches (cx, cy, w, h, θ) of both
boxes through it. For axis-aligned boxes this C can be smaller than the enclosing axis-aligned box
of mmdet's `bbox_overlaps(mode='giou')`, so the two GIoUs can differ there.

IoU and GIoU are functions of the rectangles only: (w, h, θ) and (h, w, θ + π/2) — the same box in
the 'oc' convention's two spellings — give IoU 1, so these losses have no angle-boundary
discontinuity. Widths and heights below 0 are treated as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_SCALE = 1e-6  # pixels: the normalising unit of two boxes whose sides are all (near) zero


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


def polygon_area(points: Tensor, count: Tensor) -> Tensor:
    """Shoelace area of (n, k, 2) polygons whose first `count` points are the vertices in boundary order.

    Slots past `count` repeat the first vertex, adding zero area; the absolute value makes the
    orientation irrelevant."""
    ranks = torch.arange(points.size(1), device=points.device)[None, :]
    closed = torch.where((ranks < count[:, None])[..., None], points, points[:, :1, :])
    return 0.5 * _cross(closed, closed.roll(-1, dims=1)).sum(dim=1).abs()


def _clip_half_plane(poly: Tensor, count: Tensor, start: Tensor, end: Tensor) -> tuple[Tensor, Tensor]:
    """One Sutherland–Hodgman step: keep the part of each polygon left of (or on) the line start → end.

    poly (n, k, 2) with `count` vertices in boundary order; returns (n, k', 2) and the new counts."""
    n, k = poly.shape[:2]
    slots = torch.arange(k, device=poly.device)[None, :]
    valid = slots < count[:, None]
    following = torch.where(slots + 1 < count[:, None], slots + 1, torch.zeros_like(slots))
    nxt = poly.gather(1, following[..., None].expand(n, k, 2))
    d = _cross((end - start)[:, None, :], poly - start[:, None, :])  # > 0: left of the line
    d_next = d.gather(1, following)
    den = d - d_next
    # Strict sign change only; a denominator under sqrt(tiny) would overflow den² in the backward.
    crosses = valid & (((d > 0) & (d_next < 0)) | ((d < 0) & (d_next > 0)))
    crosses = crosses & (den.abs() > torch.finfo(den.dtype).tiny ** 0.5)
    t = d / torch.where(crosses, den, torch.ones_like(den))
    crossing = poly + t[..., None] * (nxt - poly)
    # Candidates in boundary order: vertex 0, crossing on edge 0→1, vertex 1, ...
    candidates = torch.stack([poly, crossing], dim=2).reshape(n, 2 * k, 2)
    keep = torch.stack([valid & (d >= 0), crosses], dim=2).reshape(n, 2 * k)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # kept first, order kept
    new_count = keep.sum(dim=1)
    width = max(int(new_count.max()), 1) if n else 1
    order = order[:, :width]
    return candidates.gather(1, order[..., None].expand(n, width, 2)), new_count


def _intersection_area(corners1: Tensor, corners2: Tensor) -> Tensor:
    """Area of the intersection of (n, 4, 2) counter-clockwise quadrilaterals: corners1 clipped by corners2."""
    poly = corners1
    count = torch.full((corners1.size(0),), 4, dtype=torch.long, device=corners1.device)
    for edge in range(4):
        poly, count = _clip_half_plane(poly, count, corners2[:, edge], corners2[:, (edge + 1) % 4])
    return polygon_area(poly, count)


@torch.no_grad()
def _hull_order(points: Tensor) -> Tensor:
    """(n, p, 2) → (n, p) indices of the convex hull's vertices counter-clockwise (gift wrapping),
    padded with the first vertex once the wrap is back at the start; collinear and repeated points
    are skipped."""
    n, p = points.shape[:2]
    rows = torch.arange(n, device=points.device)
    x, y = points[..., 0], points[..., 1]
    by_y = y.argsort(dim=1, stable=True)
    start = by_y.gather(1, x.gather(1, by_y).argsort(dim=1, stable=True))[:, 0]  # lowest x, then lowest y
    order = [start]
    current, closed = start, torch.zeros(n, dtype=torch.bool, device=points.device)
    for _ in range(p - 1):
        origin = points[rows, current]
        best = (current + 1) % p
        for k in range(p):
            to_best = points[rows, best] - origin
            to_k = points[:, k] - origin
            turn = _cross(to_best, to_k)
            farther = (to_k * to_k).sum(-1) > (to_best * to_best).sum(-1)
            best = torch.where((turn < 0) | ((turn == 0) & farther), torch.full_like(best, k), best)
        closed = closed | (points[rows, best] == points[rows, start]).all(dim=-1)  # a duplicate closes too
        order.append(torch.where(closed, start, best))
        current = best
    return torch.stack(order, dim=1)


def convex_hull_area(points: Tensor) -> Tensor:
    """Area of the convex hull of each row of (n, p, 2) points, differentiable w.r.t. the points."""
    order = _hull_order(points)
    hull = points.gather(1, order[..., None].expand(*order.shape, 2))
    return polygon_area(hull, torch.full_like(order[:, 0], order.size(1)))


def _normalised_corners(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Corners and areas of both boxes, centred on box 1 and in units of the pair's largest side.

    IoU and GIoU are invariant to translation and uniform scale; this keeps float32 precise for
    1024-px patches and tiny boxes alike."""
    if boxes1.shape != boxes2.shape or boxes1.dim() != 2 or boxes1.size(-1) != 5:
        raise ValueError(f"expected two (n, 5) box tensors, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    sizes1, sizes2 = boxes1[:, 2:4].clamp(min=0), boxes2[:, 2:4].clamp(min=0)
    with torch.no_grad():
        origin = boxes1[:, :2].clone()
        scale = torch.cat([sizes1, sizes2], dim=1).amax(dim=1).clamp(min=MIN_SCALE)

    def normalise(boxes: Tensor, sizes: Tensor) -> Tensor:
        xy = (boxes[:, :2] - origin) / scale[:, None]
        return torch.cat([xy, sizes / scale[:, None], boxes[:, 4:]], dim=1)

    b1, b2 = normalise(boxes1, sizes1), normalise(boxes2, sizes2)
    return box_corners(b1), box_corners(b2), b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]


def _iou_parts(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(IoU, union, corners1, corners2) in normalised units; IoU 0 where the union is empty."""
    c1, c2, area1, area2 = _normalised_corners(boxes1, boxes2)
    inter = _intersection_area(c1, c2)
    inter = torch.minimum(inter, torch.minimum(area1, area2))  # a zero-area box overlaps nothing
    with torch.no_grad():  # circumcircles apart: disjoint, whatever rounding made of far-off tiny corners
        radii = (c1[:, 0] - c1[:, 2]).norm(dim=-1) / 2 + (c2[:, 0] - c2[:, 2]).norm(dim=-1) / 2
        apart = (c1.mean(dim=1) - c2.mean(dim=1)).norm(dim=-1) > radii * (1 + 1e-3)
    inter = torch.where(apart, torch.zeros_like(inter), inter)
    union = area1 + area2 - inter
    nonempty = union > 0
    iou = torch.where(nonempty, inter / torch.where(nonempty, union, torch.ones_like(union)), torch.zeros_like(union))
    return iou.clamp(0, 1), union, c1, c2


def rotated_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of aligned pairs of (n, 5) rotated boxes (cx, cy, w, h, θ in radians) → (n,) in [0, 1]."""
    if boxes1.size(0) == 0 and boxes1.shape == boxes2.shape:
        return boxes1.new_zeros(0)
    return _iou_parts(boxes1, boxes2)[0]


def rotated_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of aligned pairs of (n, 5) rotated boxes → (n,) in [−1, 1]; C = convex hull of the 8 corners."""
    if boxes1.size(0) == 0 and boxes1.shape == boxes2.shape:
        return boxes1.new_zeros(0)
    iou, union, c1, c2 = _iou_parts(boxes1, boxes2)
    hull = torch.maximum(convex_hull_area(torch.cat([c1, c2], dim=1)), union)  # C ⊇ A ∪ B
    nonempty = hull > 0
    gap = (hull - union) / torch.where(nonempty, hull, torch.ones_like(hull))
    return iou - torch.where(nonempty, gap, torch.zeros_like(gap))
