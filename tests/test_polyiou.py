"""Polygon IoU: hand-computed values, and bit-equality with the port of the devkit's polyiou.cpp."""

from __future__ import annotations

import math

import numpy as np
import pytest
from devkit_reference import iou_poly as reference_iou
from devkit_reference import reset_static_buffer

from rotld_cli.dota.polyiou import ConvexQuads, convex_iou, convex_iou_pairs, iou_poly, iou_poly_pairs

UNIT = [0, 0, 1, 0, 1, 1, 0, 1]


def square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise-equal floats, NaN equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize(
    ("gt", "det", "expected"),
    [
        (UNIT, UNIT, 1.0),
        (UNIT, square(0.5, 0.5, 1), 0.25 / 1.75),  # quarter overlap
        (square(0, 0, 2), UNIT, 0.25),  # contained
        (UNIT, square(3, 3, 1), 0.0),  # disjoint
        (UNIT, square(1, 0, 1), 0.0),  # touching edges
        (UNIT, [0, 0, 1, 0, 1, 0.5, 0, 0.5], 0.5),  # bottom half
    ],
)
def test_hand_computed_values(gt, det, expected):
    assert iou_poly(gt, det) == pytest.approx(expected, abs=1e-12)
    assert reference_iou(gt, det) == pytest.approx(expected, abs=1e-12)


def test_vertex_order_and_orientation_do_not_matter():
    det = np.array(square(0.5, 0.25, 1.0))
    clockwise = det.reshape(4, 2)[::-1].reshape(-1)
    rotated = np.roll(det, 2)
    values = iou_poly_pairs(np.array([UNIT] * 3), np.stack([det, clockwise, rotated]))
    assert values == pytest.approx([0.375 / 1.625] * 3, abs=1e-12)


def test_two_degenerate_polygons_give_nan_like_the_devkit():
    point = [5, 5] * 4
    line = [0, 0, 2, 2, 4, 4, 6, 6]
    assert math.isnan(iou_poly(point, point))
    assert math.isnan(iou_poly(line, point))
    assert math.isnan(reference_iou(point, point))
    assert iou_poly(UNIT, point) == 0.0  # one degenerate quad: 0 / area


def test_bow_tie_uses_the_devkit_winding_sum():
    bow_tie = [0, 0, 2, 2, 2, 0, 0, 2]  # self-intersecting: two triangles of opposite orientation
    value = iou_poly(square(0, 0, 2), bow_tie)
    assert value == reference_iou(square(0, 0, 2), bow_tie)
    assert value == 0.0  # the triangles' signed areas cancel: 0 intersection, devkit-style


def _random_quads(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixed families: jittered rectangles, arbitrary (often self-intersecting) quads, small integer
    grids (collinear, repeated and degenerate points, exact ties), and large coordinates."""
    kind = rng.integers(0, 4, n)
    gt = np.empty((n, 8))
    det = np.empty((n, 8))
    for k in range(n):
        if kind[k] == 0:
            cx, cy, w, h, t = *rng.uniform(0, 1000, 2), *rng.uniform(2, 120, 2), rng.uniform(-3.2, 3.2)
            c, s = math.cos(t), math.sin(t)
            corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
            g = np.array([[cx + x * c - y * s, cy + x * s + y * c] for x, y in corners]).reshape(-1)
            gt[k] = np.round(g)
            det[k] = np.round(g + rng.normal(0, rng.choice([0.5, 3, 15]), 8), 2)
        elif kind[k] == 1:
            gt[k], det[k] = rng.uniform(0, 50, 8), rng.uniform(0, 50, 8)
        elif kind[k] == 2:
            gt[k], det[k] = rng.integers(0, 4, 8), rng.integers(0, 4, 8)
        else:
            base = rng.uniform(1e4, 2e4, 2)
            g = np.tile(base, 4) + rng.integers(-40, 40, 8)
            gt[k], det[k] = g, g + rng.integers(-3, 4, 8)
    return gt, det


def test_bit_identical_to_the_devkit_port_on_random_quads():
    rng = np.random.default_rng(20240611)
    gt, det = _random_quads(rng, 1200)
    reset_static_buffer()
    expected = np.array([reference_iou(g, d) for g, d in zip(gt, det)])
    got = iou_poly_pairs(gt, det)
    assert same(got, expected).all(), np.flatnonzero(~same(got, expected))[:5]
    assert np.isnan(expected).sum() > 0  # the degenerate family really produced NaN cases


def test_argument_order_is_gt_first():
    rng = np.random.default_rng(3)
    gt, det = _random_quads(rng, 300)
    swapped = iou_poly_pairs(det, gt)
    assert same(swapped, np.array([reference_iou(d, g) for g, d in zip(gt, det)])).all()


def test_convex_fast_path_stays_within_its_bound():
    rng = np.random.default_rng(11)
    gt, det = _random_quads(rng, 4000)
    exact = iou_poly_pairs(gt, det)
    fast, valid, bound = convex_iou_pairs(gt, det)
    assert valid.mean() > 0.2
    assert (np.abs(fast[valid] - exact[valid]) <= bound[valid]).all()
    # prepared quads give the same numbers as the pairwise form
    rows = np.arange(len(gt))
    fast2, valid2, _ = convex_iou(ConvexQuads.of(gt), rows, ConvexQuads.of(det), rows)
    assert same(fast2, fast).all() and (valid2 == valid).all()


def test_convex_fast_path_rejects_non_convex_and_degenerate_quads():
    arrow = [0, 0, 4, 0, 2, 1, 4, 4]  # reflex vertex
    _, valid, bound = convex_iou_pairs(np.array([UNIT, arrow, [1, 1] * 4]), np.array([UNIT, UNIT, UNIT]))
    assert valid.tolist() == [True, False, False]
    assert np.isinf(bound[1:]).all()
