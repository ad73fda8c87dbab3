"""Head outputs → per-class rotated boxes: mmrotate's `_get_bboxes_single` for the distribution heads, in numpy.

Anchor heads (rotated RetinaNet, ATSS), per level: the top `nms_pre` anchors by their best class
score, the integral (softmax over the bins, dotted with the fixed projections) to 5 deltas,
`DeltaXYWHAOBBoxCoder.decode` (dw/dh clamp, centre clamp to the resized image). Rotated FCOS, per
level: the top `nms_pre` points by best score × centerness, the integrals to 4 side distances
(× stride) and θ, `DistanceAnglePointCoder.decode` (no clamp). Then all levels: undo the resize,
keep (prior, class) pairs scoring above `score_thr` (FCOS: then × centerness), class-aware rotated
NMS, the best `max_per_img` (method.md §1.3-1.7).
Arithmetic is float32 in torch's operation order; the NMS is rotld's own polygon NMS
(`dota.rotated_nms`, the merge step's), grouped by class instead of mmrotate's coordinate offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rotld_cli.deploy.metadata import AnchorSettings, CoderSettings, DetectionSettings, ModelMetadata, PointSettings
from rotld_cli.dota.rotated_nms import nms_quads


def base_anchors(stride: int, settings: AnchorSettings) -> np.ndarray:
    """mmdet `gen_single_level_base_anchors` (scale-major, base size = stride): (A, 4) x1y1x2y2 float32."""
    scales = (np.array([2 ** (i / settings.scales_per_octave) for i in range(settings.scales_per_octave)])
              * settings.octave_base_scale).astype(np.float32)
    ratios = np.asarray(settings.ratios, dtype=np.float32)
    center = np.float32(settings.center_offset * stride)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (np.float32(stride) * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (np.float32(stride) * h_ratios[:, None] * scales[None, :]).reshape(-1)
    half = np.float32(0.5)
    return np.stack([center - half * ws, center - half * hs, center + half * ws, center + half * hs], axis=-1)


def grid_anchors(feat_h: int, feat_w: int, stride: int, settings: AnchorSettings) -> np.ndarray:
    """`RotatedAnchorGenerator.single_level_grid_priors`: (feat_h*feat_w*A, 5) (cx, cy, w, h, 0), location-major."""
    shift_x = np.arange(feat_w, dtype=np.float32) * np.float32(stride)
    shift_y = np.arange(feat_h, dtype=np.float32) * np.float32(stride)
    xx, yy = np.tile(shift_x, feat_h), np.repeat(shift_y, feat_w)
    shifts = np.stack([xx, yy, xx, yy], axis=-1)
    boxes = (base_anchors(stride, settings)[None, :, :] + shifts[:, None, :]).reshape(-1, 4)
    xy = (boxes[:, 2:] + boxes[:, :2]) / np.float32(2)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([xy, wh, np.zeros((len(boxes), 1), dtype=np.float32)], axis=1)


def grid_points(feat_h: int, feat_w: int, stride: int, settings: PointSettings) -> np.ndarray:
    """`MlvlPointGenerator.single_level_grid_priors`: (feat_h*feat_w, 2) x, y, row-major (x fastest)."""
    xs = (np.arange(feat_w, dtype=np.float32) + np.float32(settings.offset)) * np.float32(stride)
    ys = (np.arange(feat_h, dtype=np.float32) + np.float32(settings.offset)) * np.float32(stride)
    return np.stack([np.tile(xs, feat_h), np.repeat(ys, feat_w)], axis=-1)


def integral(logits: np.ndarray, project: np.ndarray) -> np.ndarray:
    """softmax over the last axis, dotted with the bins: (..., reg_max+1) logits → (...) expected values."""
    logits = logits.astype(np.float32, copy=False)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ np.asarray(project, dtype=np.float32)


def integral_deltas(logits: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """(M, 5*(reg_max+1)) logits laid out dx|dy|dw|dh|dθ → (M, 5) expected deltas."""
    bins = meta.reg_max + 1
    xywh = integral(logits[:, : 4 * bins].reshape(-1, 4, bins), meta.integral_project)
    angle = integral(logits[:, 4 * bins : 5 * bins], meta.integral_angle_project)
    return np.concatenate([xywh, angle[:, None]], axis=1)


def norm_angle(angle: np.ndarray, angle_range: str) -> np.ndarray:
    """mmrotate `norm_angle`: identity for 'oc', wrapped to [-π/4, 3π/4) or [-π/2, π/2) for le135/le90."""
    if angle_range == "oc":
        return angle
    offset = {"le135": np.pi / 4, "le90": np.pi / 2}[angle_range]
    return ((angle + offset) % np.pi - offset).astype(angle.dtype)


def decode(anchors: np.ndarray, deltas: np.ndarray, max_shape: tuple[int, int] | None,
           coder: CoderSettings) -> np.ndarray:
    """`DeltaXYWHAOBBoxCoder.decode` (mmrotate `delta2bbox`, defaults): (M, 5) anchors + deltas → boxes."""
    deltas = deltas * np.asarray(coder.stds, dtype=np.float32) + np.asarray(coder.means, dtype=np.float32)
    dx, dy, dw, dh, da = (deltas[:, i] for i in range(5))
    px, py, pw, ph, pa = (anchors[:, i] for i in range(5))
    limit = np.float32(abs(np.log(coder.wh_ratio_clip)))
    dw, dh = np.clip(dw, -limit, limit), np.clip(dh, -limit, limit)
    gx, gy = px + pw * dx, py + ph * dy
    gw, gh = pw * np.exp(dw), ph * np.exp(dh)
    ga = norm_angle(pa + da, coder.angle_range)
    if max_shape is not None:
        gx = np.clip(gx, np.float32(0), np.float32(max_shape[1] - 1))
        gy = np.clip(gy, np.float32(0), np.float32(max_shape[0] - 1))
    return np.stack([gx, gy, gw, gh, ga], axis=-1).astype(np.float32)


def decode_distances(points: np.ndarray, distances: np.ndarray, angles: np.ndarray, angle_version: str) -> np.ndarray:
    """`DistanceAnglePointCoder.decode` (mmrotate `distance2obb`): (M, 2) points, (M, 4) left, top, right,
    bottom, (M,) θ → (M, 5) boxes: centre = point + R(θ)·((r − l)/2, (b − t)/2), w = l + r, h = t + b."""
    cos, sin = np.cos(angles), np.sin(angles)
    wh = distances[:, :2] + distances[:, 2:]
    ox, oy = (distances[:, 2] - distances[:, 0]) / 2, (distances[:, 3] - distances[:, 1]) / 2
    cx, cy = points[:, 0] + (cos * ox - sin * oy), points[:, 1] + (sin * ox + cos * oy)
    return np.stack([cx, cy, wh[:, 0], wh[:, 1], norm_angle(angles, angle_version)], axis=-1).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` rows with the highest best-class score, best first (torch.topk; ties by index)."""
    best = scores.max(axis=1)
    if k >= len(best):
        return np.argsort(-best, kind="stable")
    part = np.argpartition(-best, k - 1)[:k]
    return part[np.argsort(-best[part], kind="stable")]


def obb_corners(boxes: np.ndarray) -> np.ndarray:
    """(n, 5+) (cx, cy, w, h, θ, ...) → (n, 8) corner polygons in float64, mmrotate's 'oc' corner order."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x, y, w, h, a = (boxes[:, i] for i in range(5))
    cosa, sina = np.cos(a), np.sin(a)
    wx, wy = w / 2 * cosa, w / 2 * sina
    hx, hy = -h / 2 * sina, h / 2 * cosa
    return np.stack([x - wx - hx, y - wy - hy, x + wx - hx, y + wy - hy,
                     x + wx + hx, y + wy + hy, x - wx + hx, y - wy + hy], axis=-1)


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, settings: DetectionSettings,
                   score_factors: np.ndarray | None = None) -> list[np.ndarray]:
    """mmrotate `multiclass_nms_rotated` + `rbbox2result`: (M, 5) boxes, (M, C) scores → C arrays (n, 6).

    Pairs (prior, class) above `score_thr`, their scores then × `score_factors` (FCOS's centerness,
    applied after the threshold as mmrotate does), NMS within each class, then the `max_per_img` best
    over all classes; each class's boxes come out best first.
    """
    num_classes = scores.shape[1]
    rows, labels = np.nonzero(scores > np.float32(settings.score_thr))
    kept_scores = scores[rows, labels]
    if score_factors is not None:
        kept_scores = kept_scores * score_factors[rows]
    keep = nms_quads(obb_corners(boxes[rows]), kept_scores, labels, settings.iou_thr)
    keep = keep[np.argsort(-kept_scores[keep], kind="stable")]
    if settings.max_per_img > 0:
        keep = keep[: settings.max_per_img]
    dets = np.concatenate([boxes[rows[keep]], kept_scores[keep, None]], axis=1).astype(np.float32)
    return [dets[labels[keep] == c] for c in range(num_classes)]


def detections_single(level_scores: Sequence[np.ndarray], level_logits: Sequence[np.ndarray],
                      img_shape: tuple[int, int], scale_factor: np.ndarray, meta: ModelMetadata) -> list[np.ndarray]:
    """One image's head maps → per class (n, 6) [cx, cy, w, h, θ, score] in the input image's pixels.

    `level_scores[l]` is (H_l, W_l, A*C) sigmoid scores and `level_logits[l]` (H_l, W_l, A*5*(reg_max+1))
    distribution logits, both NHWC (the graph's outputs for one image); `img_shape` is the resized,
    unpadded (h, w) and `scale_factor` the resize's (w, h, w, h) factors.
    """
    num_classes, cfg = len(meta.classes), meta.test_cfg
    all_boxes, all_scores = [], []
    for stride, scores, logits in zip(meta.strides, level_scores, level_logits):
        feat_h, feat_w = scores.shape[:2]
        anchors = grid_anchors(feat_h, feat_w, stride, meta.anchors)
        scores = scores.reshape(-1, num_classes)
        logits = logits.reshape(len(scores), -1)
        if 0 < cfg.nms_pre < len(scores):
            chosen = top_k(scores, cfg.nms_pre)
            anchors, scores, logits = anchors[chosen], scores[chosen], logits[chosen]
        all_boxes.append(decode(anchors, integral_deltas(logits, meta), img_shape, meta.coder))
        all_scores.append(scores)
    boxes = np.concatenate(all_boxes)
    boxes[:, :4] = boxes[:, :4] / scale_factor.astype(np.float32)
    return multiclass_nms(boxes, np.concatenate(all_scores).astype(np.float32), cfg)


def point_detections_single(level_scores: Sequence[np.ndarray], level_logits: Sequence[np.ndarray],
                            level_centerness: Sequence[np.ndarray], img_shape: tuple[int, int],
                            scale_factor: np.ndarray, meta: ModelMetadata) -> list[np.ndarray]:
    """Rotated FCOS: one image's head maps → per class (n, 6) [cx, cy, w, h, θ, score] (`RotatedFCOSHead`).

    `level_scores[l]` (H_l, W_l, C) sigmoid scores, `level_logits[l]` (H_l, W_l, 5*(reg_max+1)) distance
    and angle logits (left|top|right|bottom|θ), `level_centerness[l]` (H_l, W_l, 1) sigmoid centerness.
    """
    num_classes, cfg, bins = len(meta.classes), meta.test_cfg, meta.reg_max + 1
    all_boxes, all_scores, all_centerness = [], [], []
    for stride, scores, logits, centerness in zip(meta.strides, level_scores, level_logits, level_centerness):
        feat_h, feat_w = scores.shape[:2]
        points = grid_points(feat_h, feat_w, stride, meta.points)
        scores = scores.reshape(-1, num_classes)
        logits = logits.reshape(len(scores), -1)
        centerness = centerness.reshape(-1)
        if 0 < cfg.nms_pre < len(scores):
            chosen = top_k(scores * centerness[:, None], cfg.nms_pre)
            points, scores, logits, centerness = points[chosen], scores[chosen], logits[chosen], centerness[chosen]
        distances = integral(logits[:, : 4 * bins].reshape(-1, 4, bins), meta.integral_project) * np.float32(stride)
        angles = integral(logits[:, 4 * bins : 5 * bins], meta.integral_angle_project)
        all_boxes.append(decode_distances(points, distances, angles, meta.coder.angle_range))
        all_scores.append(scores)
        all_centerness.append(centerness)
    boxes = np.concatenate(all_boxes)
    boxes[:, :4] = boxes[:, :4] / scale_factor.astype(np.float32)
    return multiclass_nms(boxes, np.concatenate(all_scores).astype(np.float32), cfg,
                          np.concatenate(all_centerness).astype(np.float32))
