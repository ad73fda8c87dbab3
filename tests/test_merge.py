"""Patch -> full-image merge: patch ids, shifting, rotated NMS semantics, Task1 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from rotld_cli.dota.formats import Task1Detections
from rotld_cli.dota.merge import merge_class, round_like_task1, split_patch_id
from rotld_cli.dota.polyiou import iou_poly_pairs
from rotld_cli.dota.rotated_nms import nms_quads


def square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


@pytest.mark.parametrize(
    ("patch_id", "expected"),
    [
        ("P0003__1024__824___0", ("P0003", 824, 0)),
        ("P0003__0.5__0___412", ("P0003", 0, 412)),
        ("P0003__1024__1648___2472", ("P0003", 1648, 2472)),
        ("img_a__1024__10___20", ("img_a", 10, 20)),
        ("P0003", None),
        ("P0003__1024", None),
    ],
)
def test_split_patch_id(patch_id, expected):
    assert split_patch_id(patch_id) == expected


def test_round_like_task1_equals_python_formatting():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-5000, 5000, 20000),
            np.round(rng.uniform(0, 5000, 2000), 2) + 824,  # patch coordinates shifted by an origin
            np.arange(-200, 200) / 8.0,  # exact binary halves: x.125, x.375, ...
            [0.005, 0.015, 0.025, 1.005, 2.675, -0.001, -2.675, 1e7 + 0.005],
        ]
    )
    expected = np.array([float(f"{v:.2f}") for v in values])
    got = round_like_task1(values)
    assert (got == expected).all(), values[got != expected][:5]


def _iou_matrix(polys: np.ndarray) -> np.ndarray:
    """IoUs by shapely for valid (simple) quads, by the devkit's algorithm for the others."""
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    valid = shapely.is_valid(shapes)
    a, b = np.meshgrid(np.arange(len(polys)), np.arange(len(polys)), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    odd = ~(valid[a] & valid[b])
    iou = np.empty(a.size)
    sa, sb = shapes[a[~odd]], shapes[b[~odd]]
    inter = shapely.area(shapely.intersection(sa, sb))
    iou[~odd] = inter / (shapely.area(sa) + shapely.area(sb) - inter)
    iou[odd] = iou_poly_pairs(polys[a[odd]], polys[b[odd]])
    return iou.reshape(len(polys), len(polys))


def _naive_nms(polys, scores, groups, thr):
    """The greedy loop of mmcv's nms_rotated, one box at a time (IoU > thr suppresses)."""
    iou = _iou_matrix(polys)
    order = np.lexsort((-scores, groups))
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if groups[j] == groups[i] and iou[i, j] > thr:
                suppressed[j] = True
    return np.array(keep, dtype=np.int64)


@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_the_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n = int(rng.integers(1, 100))
        c, w, h, t = rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, n), rng.uniform(5, 80, n), rng.uniform(-3, 3, n)
        dx = np.stack([w / 2 * np.cos(t), w / 2 * np.sin(t)], 1)
        dy = np.stack([-h / 2 * np.sin(t), h / 2 * np.cos(t)], 1)
        polys = np.round(np.stack([c + dx + dy, c - dx + dy, c - dx - dy, c + dx - dy], 1).reshape(n, 8), 2)
        polys[rng.uniform(size=n) < 0.05] = rng.uniform(0, 300, 8)  # some non-convex / self-intersecting
        scores = np.round(rng.uniform(size=n), 1)  # many equal scores
        groups = rng.integers(0, 3, n)
        thr = float(rng.choice([0.1, 0.3, 0.5]))
        assert nms_quads(polys, scores, groups, thr).tolist() == _naive_nms(polys, scores, groups, thr).tolist()


def test_nms_keeps_boxes_at_or_below_the_threshold():
    # IoU of these two squares is 1/3: suppressed at 0.1, kept at 1/3 (needs > thr)
    polys = np.array([square(0, 0, 10), square(5, 0, 10)], dtype=float)
    assert nms_quads(polys, np.array([0.9, 0.8]), None, 0.1).tolist() == [0]
    assert nms_quads(polys, np.array([0.9, 0.8]), None, 1 / 3).tolist() == [0, 1]
    assert nms_quads(polys, np.array([0.8, 0.9]), None, 0.1).tolist() == [1]


def test_merge_shifts_and_removes_overlap_duplicates():
    # one object at (900, 100)-(940, 140) of image P1 seen by patches x=0 and x=824
    dets = Task1Detections(
        ["P1__1024__0___0", "P1__1024__824___0", "P1__1024__824___0", "P2__1024__0___824"],
        np.array([0.8, 0.9, 0.3, 0.5]),
        np.array(
            [
                square(900, 100, 40),
                square(76.2, 100.1, 40),  # the same object, from the second patch
                square(500, 500, 20),  # another object
                square(10, 10, 20),  # another image: never suppressed by P1's boxes
            ],
            dtype=float,
        ),
    )
    merged = merge_class(dets, 0.1)
    assert merged.image_ids == ["P1", "P1", "P2"]
    assert merged.scores.tolist() == [0.9, 0.3, 0.5]
    assert merged.polys.tolist() == [square(900.2, 100.1, 40), square(1324, 500, 20), square(10, 834, 20)]


def test_merge_full_image_ids_are_left_in_place():
    dets = Task1Detections(
        ["P7", "P7"], np.array([0.5, 0.6]), np.array([square(0, 0, 10), square(1, 0, 10)], dtype=float)
    )
    merged = merge_class(dets, 0.1)
    assert merged.image_ids == ["P7"]
    assert merged.scores.tolist() == [0.6]
    assert merged.polys.tolist() == [square(1, 0, 10)]
