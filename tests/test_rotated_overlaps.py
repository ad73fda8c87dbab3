"""The assigner's sparse rotated IoU equals mmrotate's dense `RBboxOverlaps2D` bit for bit.

Anchors of the demo's generator against real DOTA boxes and random rotated boxes (tiny, thin,
touching, far apart, large coordinates), in both modes, plus the kernel calls it saves.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import load_engine  # noqa: E402

load_engine()

from mmrotate.core.bbox.iou_calculators import RBboxOverlaps2D, build_iou_calculator  # noqa: E402

from rotld_cli.engine.models import rotated_overlaps  # noqa: E402
from rotld_cli.engine.models.rotated_overlaps import SparseRBboxOverlaps2D  # noqa: E402


def random_boxes(n: int, seed: int, span: float = 256.0, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * span + offset
    size = torch.rand(n, 2, generator=g) * 60 + 0.5
    size[: n // 8] = torch.rand(n // 8, 2, generator=g) * 1e-3  # degenerate: clamped to 1e-3 by both
    size[n // 8: n // 4, 1] = 1.5  # thin, like a vehicle seen from above
    angle = (torch.rand(n, 1, generator=g) - 0.5) * math.pi
    return torch.cat([centre, size, angle], dim=1)


def demo_anchors() -> torch.Tensor:
    from mmrotate.core.anchor import build_prior_generator

    generator = build_prior_generator(dict(type="RotatedAnchorGenerator", octave_base_scale=2, scales_per_octave=3,
                                           ratios=[1.0, 0.5, 2.0], strides=[8, 16, 32, 64, 128]))
    return torch.cat(generator.grid_priors([(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], device="cpu"))


@pytest.mark.parametrize("mode", ["iou", "iof"])
def test_equals_the_dense_calculator_on_anchors_and_random_boxes(mode: str) -> None:
    gts = random_boxes(40, seed=1)
    for first, second in ((gts, demo_anchors()), (random_boxes(300, 2), random_boxes(200, 3)),
                          (random_boxes(50, 4, offset=20000.0), random_boxes(60, 5, offset=20000.0))):
        dense = RBboxOverlaps2D()(first, second, mode)
        sparse = SparseRBboxOverlaps2D()(first, second, mode)
        assert sparse.shape == dense.shape and sparse.dtype == dense.dtype
        assert torch.equal(sparse, dense)
        assert (dense > 0).any() and (dense == 0).any()  # both kinds of pairs were compared


def test_touching_and_nearly_touching_pairs() -> None:
    """Edges that meet, corners that meet at 45°, a gap of 1e-4 px: all as the dense kernel says."""
    square = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0]])
    others = torch.tensor([
        [14.0, 10.0, 4.0, 4.0, 0.0],  # shares an edge
        [14.0001, 10.0, 4.0, 4.0, 0.0],  # 1e-4 px apart
        [12.0 + math.sqrt(2), 12.0 + math.sqrt(2), 4.0, 4.0, math.pi / 4],  # corner on corner
        [11.0, 11.0, 1.0, 1.0, 0.3],  # inside
        [40.0, 40.0, 4.0, 4.0, 0.1],  # far
    ])
    assert torch.equal(SparseRBboxOverlaps2D()(square, others), RBboxOverlaps2D()(square, others))


def test_real_dota_objects_against_anchors_and_each_other(dota_samples) -> None:
    """Real DOTA objects (the largest label file, as the trainer's oc boxes) vs anchors and themselves."""
    import numpy as np
    from mmrotate.core.anchor import build_prior_generator
    from mmrotate.core.bbox.transforms import poly2obb_np

    from rotld_cli.dota.formats import read_label_file

    label = max(sorted((dota_samples / "labelTxt").glob("*.txt")), key=lambda p: len(read_label_file(p).objects))
    obbs = [poly2obb_np(np.asarray(o.poly, dtype=np.float32), "oc") for o in read_label_file(label).objects]
    gts = torch.tensor([o for o in obbs if o is not None], dtype=torch.float32)
    assert len(gts) >= 20, label
    gts = gts[:40]  # the dense reference visits every pair at ~3 µs each
    strides = [32, 64, 128]  # the coarse levels over 1024² (12k anchors): the dense side stays ~1 s
    generator = build_prior_generator(dict(type="RotatedAnchorGenerator", octave_base_scale=1, scales_per_octave=3,
                                           ratios=[1.0, 0.5, 2.0], strides=strides))
    anchors = torch.cat(generator.grid_priors([(1024 // s, 1024 // s) for s in strides], device="cpu"))
    for other in (anchors, gts):
        dense = RBboxOverlaps2D()(gts, other)
        assert torch.equal(SparseRBboxOverlaps2D()(gts, other), dense)
        assert (dense > 0).sum() > len(gts)


def test_empty_inputs_and_score_columns() -> None:
    boxes = random_boxes(10, 6)
    with_scores = torch.cat([boxes, torch.rand(10, 1)], dim=1)
    assert torch.equal(SparseRBboxOverlaps2D()(with_scores, boxes), RBboxOverlaps2D()(with_scores, boxes))
    empty = boxes.new_zeros((0, 5))
    assert SparseRBboxOverlaps2D()(empty, boxes).shape == RBboxOverlaps2D()(empty, boxes).shape == (0, 10)
    assert SparseRBboxOverlaps2D()(boxes, empty).shape == (10, 0)
    aligned = SparseRBboxOverlaps2D()(boxes, boxes.flip(0), is_aligned=True)
    assert torch.equal(aligned, RBboxOverlaps2D()(boxes, boxes.flip(0), is_aligned=True))


def test_far_pairs_skip_the_kernel(monkeypatch) -> None:
    """Only the pairs whose extents touch reach mmcv's kernel: for anchors that is a small fraction."""
    seen = []
    kernel = rotated_overlaps.box_iou_rotated

    def counting(b1, b2, mode, aligned):
        seen.append(len(b1))
        return kernel(b1, b2, mode, aligned)

    monkeypatch.setattr(rotated_overlaps, "box_iou_rotated", counting)
    gts, anchors = random_boxes(40, seed=1), demo_anchors()
    ious = SparseRBboxOverlaps2D()(gts, anchors)
    assert seen and seen[0] < ious.numel() // 5
    assert seen[0] >= int((ious > 0).sum())


def test_registered_for_configs() -> None:
    assert isinstance(build_iou_calculator(dict(type="SparseRBboxOverlaps2D")), SparseRBboxOverlaps2D)


def test_non_finite_boxes_answer_as_the_dense_kernel() -> None:
    """A NaN or inf box compares False with every extent: it goes to the kernel, not to a silent 0."""
    boxes = random_boxes(20, 7)
    bad = boxes.clone()
    bad[3, 2] = float("nan")
    bad[5, 0] = float("inf")
    for first, second in ((bad, boxes), (boxes, bad)):
        dense = RBboxOverlaps2D()(first, second)
        assert not torch.isfinite(dense).all()
        torch.testing.assert_close(SparseRBboxOverlaps2D()(first, second), dense, rtol=0, atol=0, equal_nan=True)
