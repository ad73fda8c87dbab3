"""Rotated boxes -> Task1 polygons, value for value as MMRotate 0.3.4's `obb2poly_np` (engine-free).

Every Task1 file rotld writes (`evaluate CKPT`, `predict`, an exported ONNX model) gets its
polygons here, without importing MMRotate (an ONNX backend has no engine): the three angle
versions and `get_best_begin_point` are ported with the same arithmetic (checked against MMRotate
in tests/test_predict_engine.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rotld_cli.dota.formats import Task1Detections

ANGLE_VERSIONS = ("oc", "le135", "le90")
_NO_BETTER_START = 100000000.0  # get_best_begin_point_single's initial "force"


def _corners_oc(boxes: np.ndarray) -> np.ndarray:
    x, y, w, h, a = (boxes[:, i] for i in range(5))
    cosa, sina = np.cos(a), np.sin(a)
    wx, wy = w / 2 * cosa, w / 2 * sina
    hx, hy = -h / 2 * sina, h / 2 * cosa
    return np.stack([x - wx - hx, y - wy - hy, x + wx - hx, y + wy - hy,
                     x + wx + hx, y + wy + hy, x - wx + hx, y - wy + hy], axis=-1)  # fmt: skip


def _corners_le135(boxes: np.ndarray) -> np.ndarray:
    """MMRotate rotates each box with a 2x2 matrix product and stores float32 corners."""
    out = np.zeros((len(boxes), 8), dtype=np.float32)
    for i, (cx, cy, w, h, angle) in enumerate(boxes[:, :5]):
        rect = np.array([[-w / 2, w / 2, w / 2, -w / 2], [-h / 2, -h / 2, h / 2, h / 2]])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        poly = rot.dot(rect)
        out[i, 0::2] = poly[0, :4] + cx
        out[i, 1::2] = poly[1, :4] + cy
    return out.astype(np.float64)


def _corners_le90(boxes: np.ndarray) -> np.ndarray:
    center, w, h, theta = boxes[:, 0:2], boxes[:, 2:3], boxes[:, 3:4], boxes[:, 4:5]
    cos, sin = np.cos(theta), np.sin(theta)
    v1 = np.concatenate([w / 2 * cos, w / 2 * sin], axis=-1)
    v2 = np.concatenate([-h / 2 * sin, h / 2 * cos], axis=-1)
    return np.concatenate([center - v1 - v2, center + v1 - v2, center + v1 + v2, center - v1 + v2], axis=-1)


_CORNERS = {"oc": _corners_oc, "le135": _corners_le135, "le90": _corners_le90}


def best_begin_point(poly: list[float]) -> list[float]:
    """The rotation of the 4 corners closest to (xmin,ymin),(xmax,ymin),(xmax,ymax),(xmin,ymax)."""
    pts = [(poly[0], poly[1]), (poly[2], poly[3]), (poly[4], poly[5]), (poly[6], poly[7])]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    target = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    best, start = _NO_BETTER_START, 0
    for i in range(4):
        force = 0.0
        for k in range(4):
            px, py = pts[(i + k) % 4]
            force += math.sqrt(math.pow(px - target[k][0], 2) + math.pow(py - target[k][1], 2))
        if force < best:
            best, start = force, i
    return [v for k in range(4) for v in pts[(start + k) % 4]]


def rboxes_to_polygons(boxes: np.ndarray, angle_version: str) -> np.ndarray:
    """(n, 5+) [cx, cy, w, h, angle, ...] -> (n, 8) float64 polygons, MMRotate's corner order."""
    if angle_version not in _CORNERS:
        raise ValueError(f"angle version {angle_version!r}: expected one of {', '.join(ANGLE_VERSIONS)}")
    if not len(boxes):
        return np.zeros((0, 8))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1)
    corners = _CORNERS[angle_version](boxes)
    return np.array([best_begin_point(row) for row in corners.tolist()], dtype=np.float64).reshape(-1, 8)


def detections_to_task1(results: Sequence[Sequence[np.ndarray]], image_ids: Sequence[str], classes: Sequence[str],
                        angle_version: str = "oc") -> dict[str, Task1Detections]:
    """Per image, per class (n, 6) [cx, cy, w, h, angle, score] arrays -> Task1 detections per class."""
    out = {}
    for c, name in enumerate(classes):
        ids: list[str] = []
        rows = []
        for image_id, per_class in zip(image_ids, results):
            boxes = np.asarray(per_class[c], dtype=np.float64).reshape(-1, 6)
            ids.extend([image_id] * len(boxes))
            rows.append(boxes)
        boxes = np.concatenate(rows) if rows else np.zeros((0, 6))
        out[name] = Task1Detections(ids, boxes[:, 5].copy(), rboxes_to_polygons(boxes, angle_version))
    return out
