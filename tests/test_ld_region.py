"""The LD/KD region and the IM mask (method.md §3.3, §3.5) against the seed's algorithm.

The brute force below is the seed's procedure written with Python loops and floats: per level
sort the anchors by centre distance and take 9, threshold 0.25 × (mean + unbiased std) of the 45
IoUs, keep the max IoU over the gts an anchor passes. The implementation is run in float64 so the
two agree to rounding.
"""

from __future__ import annotations

import importlib.util
import math
import re
import statistics

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.engine

FEATMAPS_128 = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
CROP = (256, 160, 128)  # x0, y0, side of a P1888 crop holding a row of large vehicles


@pytest.fixture(scope="module")
def region():
    from rotld_cli.engine import load_engine

    load_engine()
    from rotld_cli.engine.models import ld_region

    return ld_region


@pytest.fixture(scope="module")
def anchors_128(region):
    """The seed's anchors (RotatedAnchorGenerator, DOTA settings) of a 128² image, float64."""
    from mmrotate.core import build_prior_generator

    generator = build_prior_generator(
        dict(
            type="RotatedAnchorGenerator",
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[1.0, 0.5, 2.0],
            strides=[8, 16, 32, 64, 128],
        )
    )
    levels = generator.grid_priors(FEATMAPS_128, device="cpu")
    return torch.cat(levels).double(), [lvl.size(0) for lvl in levels]


@pytest.fixture(scope="module")
def real_gts(dota_samples):
    """OBBs ('oc') of the P1888 objects fully inside a 128² crop, in crop coordinates."""
    from mmrotate.core import poly2obb_np

    from rotld_cli.dota.formats import read_label_file

    x0, y0, side = CROP
    boxes = []
    for obj in read_label_file(dota_samples / "labelTxt" / "P1888.txt").objects:
        poly = np.asarray(obj.poly, dtype=np.float64).reshape(4, 2) - (x0, y0)
        if poly.min() >= 0 and poly.max() < side:
            boxes.append(poly2obb_np(poly.reshape(-1).astype(np.float32), "oc"))
    assert len(boxes) >= 4
    return torch.tensor(np.array(boxes), dtype=torch.float64)


def xyxy(box, mode):
    cx, cy, w, h = box[:4]
    if mode == "hbb":
        c, s = abs(math.cos(box[4])), abs(math.sin(box[4]))
        w, h = c * box[2] + s * box[3], s * box[2] + c * box[3]
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-6)


def brute_force(anchors, level_counts, gts, mode="seed"):
    """The seed's get_ld_region / get_im_region with loops (no ties in the inputs used here)."""
    boxes = [xyxy(a, "seed") for a in anchors.tolist()]
    gt_boxes = [xyxy(g, mode) for g in gts.tolist()]
    ious = [[iou(b, g) for g in gt_boxes] for b in boxes]
    thresholds = []
    for j, g in enumerate(gt_boxes):
        gx, gy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        candidates, start = [], 0
        for count in level_counts:
            level = range(start, start + count)
            by_distance = sorted(
                level,
                key=lambda i: math.hypot((boxes[i][0] + boxes[i][2]) / 2 - gx, (boxes[i][1] + boxes[i][3]) / 2 - gy),
            )
            candidates += [ious[i][j] for i in by_distance[:9]]
            start += count
        thresholds.append(statistics.mean(candidates) + statistics.stdev(candidates))
    ld = [
        max([ious[i][j] for j in range(len(gt_boxes)) if ious[i][j] >= 0.25 * thresholds[j]], default=0.0)
        for i in range(len(boxes))
    ]
    col_max = [max(ious[i][j] for i in range(len(boxes))) for j in range(len(gt_boxes))]
    im = [float(any(ious[i][j] > 0.5 * col_max[j] for j in range(len(gt_boxes)))) for i in range(len(boxes))]
    return torch.tensor(ld, dtype=torch.float64), torch.tensor(im, dtype=torch.float64)


def assert_matches_brute_force(region, anchors, counts, gts, mode="seed"):
    ld, im = region.distillation_regions(anchors, counts, gts, box_mode=mode)
    ld_ref, im_ref = brute_force(anchors, counts, gts, mode)
    assert torch.equal(ld > 0, ld_ref > 0)
    torch.testing.assert_close(ld, ld_ref, rtol=0, atol=1e-12)
    assert torch.equal(im, im_ref)
    return ld, im


def test_box_iou_is_mmdet_bbox_overlaps_bit_for_bit(region):
    from mmdet.core.bbox.iou_calculators import bbox_overlaps

    gen = torch.Generator().manual_seed(3)
    a = torch.rand(300, 4, generator=gen) * 100
    b = torch.rand(40, 4, generator=gen) * 100
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    assert torch.equal(region.box_iou(a, b), bbox_overlaps(a, b))


def test_region_on_real_gts_matches_the_seed_algorithm(region, anchors_128, real_gts):
    anchors, counts = anchors_128
    ld, im = assert_matches_brute_force(region, anchors, counts, real_gts)
    assert 0 < int((ld > 0).sum()) < anchors.size(0)
    assert float(ld.max()) <= 1.0
    assert 0 < int(im.sum()) < int((ld > 0).sum())


def test_region_with_the_circumscribed_box(region, anchors_128, real_gts):
    anchors, counts = anchors_128
    ld_seed, _ = region.distillation_regions(anchors, counts, real_gts, box_mode="seed")
    ld_hbb, _ = assert_matches_brute_force(region, anchors, counts, real_gts, mode="hbb")
    assert not torch.equal(ld_seed, ld_hbb)


def test_seed_box_ignores_the_angle(region, anchors_128):
    """θ = π/2 in 'oc' means w is the vertical extent, yet the seed box lies horizontally."""
    anchors, counts = anchors_128
    upright = torch.tensor([[60.3, 61.7, 80.0, 12.0, math.pi / 2]], dtype=torch.float64)
    flat = upright.clone()
    flat[0, 4] = 0.0
    ld_upright, _ = region.distillation_regions(anchors, counts, upright)
    ld_flat, _ = region.distillation_regions(anchors, counts, flat)
    assert torch.equal(ld_upright, ld_flat)
    ld_hbb, _ = region.distillation_regions(anchors, counts, upright, box_mode="hbb")
    assert not torch.equal(ld_upright, ld_hbb)


def test_single_gt(region, anchors_128):
    anchors, counts = anchors_128
    gt = torch.tensor([[37.3, 90.6, 41.0, 17.5, 0.4]], dtype=torch.float64)
    ld, im = assert_matches_brute_force(region, anchors, counts, gt)
    assert ld.max() > 0 and im.sum() > 0


def test_no_gts_gives_zero_regions(region, anchors_128):
    anchors, counts = anchors_128
    ld, im = region.distillation_regions(anchors, counts, anchors.new_zeros(0, 5))
    assert ld.shape == im.shape == (anchors.size(0),)
    assert not ld.any() and not im.any()


def test_levels_with_fewer_than_nine_anchors(region):
    """min(9, n_level) candidates per level: here 9 + 4 + 1 = 14 IoUs set the threshold."""
    gen = torch.Generator().manual_seed(7)
    anchors = torch.zeros(25, 5, dtype=torch.float64)
    anchors[:, :2] = torch.rand(25, 2, generator=gen, dtype=torch.float64) * 64
    anchors[:, 2:4] = 8 + torch.rand(25, 2, generator=gen, dtype=torch.float64) * 40
    gts = torch.tensor([[20.2, 30.1, 25.0, 14.0, 0.3], [45.7, 12.9, 10.0, 30.0, 1.2]], dtype=torch.float64)
    assert_matches_brute_force(region, anchors, [20, 4, 1], gts)


def test_anchor_count_mismatch_is_refused(region, anchors_128):
    anchors, counts = anchors_128
    with pytest.raises(ValueError, match="sums to"):
        region.distillation_regions(anchors, [*counts[:-1], 1], anchors[:1])


def test_unknown_box_mode_is_refused(region):
    with pytest.raises(ValueError, match="ld_region_box"):
        region.gt_xyxy(torch.zeros(1, 5), "obb")


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("ld_region_memory", repo_root / "bench" / "ld_region_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ties_and_chunking_match_the_seed_implementation(region, bench):
    """gts centred between anchor centres tie in distance; topk must break them as the seed did."""
    anchors, counts = bench.rotated_anchors(256)
    gts = bench.random_gts(256, 24, seed=5)
    gts[:, :2] = (gts[:, :2] / 8).floor() * 8 + 4  # every gt on a stride-8 midpoint
    ld_ref, im_ref = bench.seed_regions(anchors, counts, gts)
    for max_elems in (1, 50_000, 1 << 22):  # one gt per chunk, a few, all at once
        ld, im = region.distillation_regions(anchors, counts, gts, max_elems=max_elems)
        assert torch.equal(ld, ld_ref)
        assert torch.equal(im, im_ref)


def test_bench_quick_runs_and_outputs_are_identical(bench, capsys):
    """The benchmark runs and both implementations agree; the memory ratio it prints is a
    measurement (it depends on what the process already holds), so no test asserts its value."""
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "outputs identical: True" in out
    assert re.search(r"memory ratio seed/rotld: \d+\.\dx", out)
