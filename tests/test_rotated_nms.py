"""The blocked rotated NMS keeps exactly the boxes of the implementation it replaced (bench/reference_nms.py),
in the same order, on dense real scenes and stress cases; its cheap IoU routes agree with the exact ones."""

from __future__ import annotations

import numpy as np
import pytest

from bench.reference_nms import jittered_scene, random_quads, reference_nms_quads
from rotld_cli.deploy.postprocess import obb_corners
from rotld_cli.dota.formats import read_label_file
from rotld_cli.dota.merge import round_like_task1
from rotld_cli.dota.polyiou import ConvexQuads, QuadFrames, clip_iou, convex_iou, iou_bounds
from rotld_cli.dota.rotated_nms import nms_quads


def p0706(dota_samples) -> tuple[np.ndarray, np.ndarray]:
    """P0706's 536 labelled objects (a dense harbour scene) and their class indices."""
    objects = read_label_file(dota_samples / "labelTxt" / "P0706.txt").objects
    names = sorted({o.name for o in objects})
    return np.array([o.poly for o in objects]), np.array([names.index(o.name) for o in objects])


def assert_same_keep(polys, scores, groups, thr):
    expected = reference_nms_quads(polys, scores, groups, thr)
    got = nms_quads(polys, scores, groups, thr)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize(("copies", "jitter", "thr"), [(5, 2.0, 0.1), (20, 3.0, 0.1), (8, 1.0, 0.5)])
def test_dense_real_scene_keeps_what_the_reference_keeps(dota_samples, copies, jitter, thr):
    polys, classes = p0706(dota_samples)
    assert len(polys) == 536
    scene, scores, groups = jittered_scene(polys, classes, copies, jitter, seed=copies)
    assert_same_keep(scene, scores, groups, thr)  # per class
    assert_same_keep(scene, scores, None, thr)  # class-agnostic
    # as the merge sees them: Task1-rounded polygons (near-rectangles) with scores from a detector
    assert_same_keep(round_like_task1(scene), scores.astype(np.float32).astype(np.float64), groups, thr)


@pytest.mark.parametrize("seed", range(3))
def test_random_stress_keeps_what_the_reference_keeps(seed):
    # wild quads (self-intersecting, non-convex) and repeated corners go through the devkit's algorithm
    for n, extent, odd, thr in ((3000, 300, 0.03, 0.1), (1500, 1000, 0.05, 0.5), (6000, 256, 0.0, 0.1)):
        polys, scores, groups = random_quads(n, extent, seed, odd=odd)
        assert_same_keep(polys, scores, groups, thr)


def test_detector_boxes_with_exact_duplicates_and_shared_edges_keep_what_the_reference_keeps():
    rng = np.random.default_rng(5)
    n = 600
    boxes = np.column_stack([rng.uniform(0, 400, (n, 2)), rng.uniform(4, 60, (n, 2)), rng.uniform(-3, 3, n)])
    w, t = boxes[:, 2], boxes[:, 4]
    neighbour = boxes.copy()  # sharing a full edge
    neighbour[:, 0] += w * np.cos(t)
    neighbour[:, 1] += w * np.sin(t)
    half = boxes.copy()  # inside, sharing three edges' lines
    half[:, 2] = w / 2
    half[:, 0] -= w / 4 * np.cos(t)
    half[:, 1] -= w / 4 * np.sin(t)
    polys = np.concatenate([obb_corners(b) for b in (boxes, boxes, neighbour, half)])
    polys[n : 2 * n] = np.roll(polys[n : 2 * n], 2, axis=1)  # the same box from another corner
    scores = np.round(rng.uniform(size=len(polys)), 1)  # many ties: input order decides
    for thr in (0.1, 0.3, 0.5):
        assert_same_keep(polys, scores, rng.integers(0, 2, len(polys)), thr)
    grid = np.array([[x, y, x + 10, y, x + 10, y + 10, x, y + 10] for x in range(0, 50, 5) for y in range(0, 50, 5)],
                    dtype=float)  # fmt: skip
    # squares overlapping by half (IoU 1/3, exactly at the threshold: kept) or a quarter (IoU 1/7)
    for thr in (1 / 3, 1 / 7, 0.1):
        assert_same_keep(grid, np.ones(len(grid)), None, thr)


def test_a_box_with_a_nan_corner_does_not_switch_the_nms_off():
    # the reference's sweep keyed every box by the extent of all of them: one NaN made every key NaN,
    # no pair was found and every box was kept
    polys = np.array([[0, 0, 10, 0, 10, 10, 0, 10], [1, 1, 11, 1, 11, 11, 1, 11], [np.nan] * 8], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    assert nms_quads(polys, scores, None, 0.1).tolist() == [0, 2]
    assert nms_quads(polys[:2], scores[:2], None, 0.1).tolist() == [0]


def test_clip_iou_equals_convex_iou_on_degenerate_pairs():
    rng = np.random.default_rng(3)
    n = 4000
    boxes = np.column_stack([rng.uniform(0, 5000, (n, 2)), rng.uniform(1, 200, (n, 2)), rng.uniform(-4, 4, n)])
    w, h, t = boxes[:, 2], boxes[:, 3], boxes[:, 4]
    a = obb_corners(boxes)
    edge = boxes.copy()
    edge[:, 0] += w * np.cos(t) - h / 2 * np.sin(t)  # sharing half an edge
    edge[:, 1] += w * np.sin(t) + h / 2 * np.cos(t)
    inner = boxes.copy()
    inner[:, 2] = w / 2
    inner[:, 0] -= w / 4 * np.cos(t)
    inner[:, 1] -= w / 4 * np.sin(t)
    for other in (a, np.roll(a, 2, axis=1), round_like_task1(a), obb_corners(edge), obb_corners(inner)):
        quads = ConvexQuads.of(np.concatenate([a, other]))
        first, second = np.arange(n), np.arange(n, 2 * n)
        ok = quads.convex[first] & quads.convex[second]
        first, second = first[ok], second[ok]
        expected = convex_iou(quads, first, quads, second)[0]
        assert np.abs(clip_iou(quads, first, quads, second) - expected).max() < 1e-11
        assert np.abs(clip_iou(quads, second, quads, first) - expected).max() < 1e-11
    # hand-computed: half-overlapping unit squares 1/3, a quarter 1/7, inside 1/4, touching 0
    squares = ConvexQuads.of(np.array([[0, 0, 2, 0, 2, 2, 0, 2], [1, 0, 3, 0, 3, 2, 1, 2], [1, 1, 3, 1, 3, 3, 1, 3],
                                       [0, 0, 1, 0, 1, 1, 0, 1], [2, 0, 4, 0, 4, 2, 2, 2]], dtype=float))  # fmt: skip
    got = clip_iou(squares, np.zeros(4, dtype=int), squares, np.arange(1, 5))
    assert got == pytest.approx([1 / 3, 1 / 7, 1 / 4, 0.0], abs=1e-15)


def test_iou_bounds_hold_for_labelled_quads(dota_samples):
    polys, _ = p0706(dota_samples)  # hand-drawn quads: convex, rarely rectangles
    scene, _, _ = jittered_scene(polys, np.zeros(len(polys), dtype=int), 10, 3.0, seed=1)
    quads = ConvexQuads.of(scene)
    rng = np.random.default_rng(0)
    first = rng.integers(0, len(scene), 50000)
    second = np.clip(first + rng.integers(-25, 25, first.size), 0, len(scene) - 1)  # mostly near-duplicates
    ok = quads.convex[first] & quads.convex[second]
    first, second = first[ok], second[ok]
    iou = convex_iou(quads, first, quads, second)[0]
    lower, upper = iou_bounds(QuadFrames.of(quads), first, second)
    assert (lower <= iou + 1e-12).all() and (iou <= upper + 1e-12).all()
    assert ((lower > 0.5) | (upper < 0.1)).mean() > 0.5  # they settle most pairs without clipping
