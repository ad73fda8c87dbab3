"""The differentiable rotated IoU and GIoU against shapely (an independent geometry library), and
their gradients against torch's gradcheck and against closed forms where edges nearly coincide.

The reference polygons are built by shapely itself (an axis-aligned box, rotated about its centre,
then translated), not from `box_corners`. GIoU's enclosing region is the convex hull of both
boxes (`rotated_iou`'s docstring): shapely's `convex_hull` of their union. Degenerate boxes
(zero width or height) have IoU 0 with anything, and the gradients stay finite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
shapely = pytest.importorskip("shapely")
pytest.importorskip("mmrotate")

from shapely import affinity, geometry  # noqa: E402

from rotld_cli.engine import load_engine  # noqa: E402

load_engine()

from rotld_cli.engine.models.rotated_iou import rotated_giou, rotated_iou  # noqa: E402


def shapely_box(cx: float, cy: float, w: float, h: float, theta: float):
    rect = geometry.box(-w / 2, -h / 2, w / 2, h / 2)
    return affinity.translate(affinity.rotate(rect, theta, origin=(0, 0), use_radians=True), cx, cy)


def reference(box1, box2) -> tuple[float, float]:
    """(IoU, GIoU) by shapely; IoU 0 where the union has no area."""
    a, b = shapely_box(*box1), shapely_box(*box2)
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    iou = inter / union if union > 0 else 0.0
    hull = a.union(b).convex_hull.area
    return iou, (iou - (hull - union) / hull if hull > 0 else iou)


def ours(boxes1, boxes2, dtype=torch.float64):
    a, b = torch.tensor(boxes1, dtype=dtype), torch.tensor(boxes2, dtype=dtype)
    return rotated_iou(a, b), rotated_giou(a, b)


def random_boxes(n: int, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    a = np.column_stack([rng.uniform(0, 300, (n, 2)), rng.uniform(1, 80, (n, 2)), rng.uniform(-4, 4, n)])
    b = np.column_stack([a[:, :2] + rng.normal(0, 30, (n, 2)), rng.uniform(1, 80, (n, 2)), rng.uniform(-4, 4, n)])
    return a.tolist(), b.tolist()


PI = math.pi
ADVERSARIAL = [
    ([0, 0, 2, 2, 0], [0, 0, 2, 2, 0]),  # identical
    ([10, 20, 6, 2, 0.3], [10, 20, 2, 6, 0.3 + PI / 2]),  # the same box, 'oc' w/h swap
    ([5, 5, 4, 4, 0.7], [5, 5, 4, 4, 0.7 + PI]),  # the same box, angle + π
    ([0, 0, 2, 2, 0], [2, 0, 2, 2, 0]),  # sharing an edge, no overlap
    ([0, 0, 2, 2, 0], [1, 0, 2, 2, 0]),  # half overlap, top and bottom edges coincide
    ([0, 0, 2, 2, 0], [0.5, 0, 1, 2, 0]),  # inside, sharing three edges
    ([0, 0, 2, 2, 0], [0.5 + 1e-7, 0, 1, 2, 0]),  # a right edge 1e-7 outside the other's
    ([0, 0, 2, 2, 0], [0.5 - 1e-7, 0, 1, 2, 0]),  # ... 1e-7 inside
    ([0, 0, 2, 2, 0], [0.5 + 1e-12, 1e-12, 1, 2, 0]),
    ([0, 0, 2, 2, 0.4], [0.5 * math.cos(0.4), 0.5 * math.sin(0.4), 1, 2, 0.4 + 1e-9]),  # rotated, nearly parallel
    ([0, 0, 4, 4, 0], [0, 0, 2, 2, 1.0]),  # nested
    ([0, 0, 4, 4, 0], [0, 0, 4, 4, PI / 4]),  # octagon
    ([0, 0, 2, 2, 0], [2, 2, 2, 2, 0]),  # touching at a corner
    ([0, 0, 2, 2, 0], [1 + math.sqrt(2) / 2, 0, 1, 1, PI / 4]),  # a corner on an edge
    ([0, 0, 2, 2, 0], [5, 0, 2, 2, 0.7]),  # disjoint
    ([0, 0, 0, 2, 0], [0, 0, 2, 2, 0]),  # zero width, inside
    ([0, 0, 2, 2, 0], [0, 0, 2, 0, 0.3]),  # zero height, across
    ([1, 0, 0, 0, 0], [0, 0, 2, 2, 0]),  # a point on an edge
    ([0, 0, 0, 0, 0], [0, 0, 2, 2, 0]),  # a point inside
    ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0]),  # two identical points
    ([0, 0, 0, 3, 0], [0, 0, 0, 3, 0]),  # two identical segments
    ([0, 0, 1e-9, 1e-9, 0], [0, 0, 2, 2, 0]),  # tiny inside
    ([0, 0, 1e-9, 2e-9, 0.2], [0, 0, 1e-9, 2e-9, 0.2]),  # tiny, identical
    FAR_TINY := ([0, 0, 1e-9, 1e-9, 0], [1e4, 0, 1e-9, 1e-9, 0]),  # tiny, far apart
    ([512.3, 700.1, 900, 3, 0.01], [512.3, 700.1, 3, 900, PI / 2 + 0.01]),  # long thin, same box
]


@pytest.mark.parametrize("box1, box2", ADVERSARIAL)
def test_iou_and_giou_match_shapely_on_adversarial_pairs(box1, box2):
    expected_iou, expected_giou = reference(box1, box2)
    for first, second in ((box1, box2), (box2, box1)):
        iou, giou = ours([first], [second])
        assert 0.0 <= float(iou) <= 1.0 and -1.0 <= float(giou) <= 1.0
        assert float(iou) == pytest.approx(expected_iou, abs=1e-9)
        assert float(giou) == pytest.approx(expected_giou, abs=1e-9)


def test_iou_and_giou_match_shapely_on_random_pairs():
    a, b = random_boxes(400, seed=0)
    iou, giou = ours(a, b)
    expected = np.array([reference(x, y) for x, y in zip(a, b)])
    assert (expected[:, 0] > 0).mean() > 0.3 and (expected[:, 0] == 0).sum() > 10, "overlapping and disjoint pairs"
    np.testing.assert_allclose(iou.numpy(), expected[:, 0], atol=1e-9)
    np.testing.assert_allclose(giou.numpy(), expected[:, 1], atol=1e-9)


def test_float32_stays_within_float_precision_on_adversarial_pairs():
    pairs = [pair for pair in ADVERSARIAL if pair != FAR_TINY]
    a, b = zip(*pairs)
    iou, giou = ours(list(a), list(b), dtype=torch.float32)
    expected = np.array([reference(x, y) for x, y in pairs])
    # float32 corners carry ~1e-7 of the pair's largest side: ~5e-6 of IoU for the 900 x 3 px box.
    np.testing.assert_allclose(iou.numpy(), expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(giou.numpy(), expected[:, 1], atol=1e-5)
    # 1e-9 px boxes 1e4 px apart have no float32 corners of their own; still disjoint, GIoU in [-1, 0].
    iou, giou = ours([FAR_TINY[0]], [FAR_TINY[1]], dtype=torch.float32)
    assert float(iou) == 0.0 and -1.0 <= float(giou) <= 0.0


@pytest.mark.parametrize("function", [rotated_iou, rotated_giou])
def test_gradients_match_finite_differences_in_general_position(function):
    a, b = random_boxes(24, seed=3)
    a = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (a, b), eps=1e-6, atol=1e-6)


def axis_aligned_iou(a, b):
    """IoU of axis-aligned (cx, cy, w, h, 0) boxes from interval overlaps, written out."""

    def overlap(c1, s1, c2, s2):
        return (torch.minimum(c1 + s1 / 2, c2 + s2 / 2) - torch.maximum(c1 - s1 / 2, c2 - s2 / 2)).clamp(min=0)

    inter = overlap(a[0], a[2], b[0], b[2]) * overlap(a[1], a[3], b[1], b[3])
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.parametrize("offset", [1e-6, 1e-7, -1e-7, 1e-9, -1e-12])
def test_gradient_next_to_coinciding_edges_matches_the_closed_form(offset):
    """b's right edge `offset` from a's, nothing else touching; the earlier version took b's corners
    as inside a within 1e-6 and returned ∂IoU/∂cx_b = 0 where b's overlap shrinks as it moves right."""
    a = torch.tensor([0.0, 0.0, 2.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5 + offset, 0.2, 1.0, 1.4, 0.0], dtype=torch.float64, requires_grad=True)
    ours_grad = torch.autograd.grad(rotated_iou(a[None], b[None]).sum(), (a, b))
    closed = axis_aligned_iou(a, b)
    closed_grad = torch.autograd.grad(closed, (a, b))
    assert rotated_iou(a[None], b[None]).item() == pytest.approx(closed.item(), abs=1e-12)
    for mine, theirs in zip(ours_grad, closed_grad):
        torch.testing.assert_close(mine[:4], theirs[:4], atol=1e-9, rtol=0)
    if offset > 0:  # b sticks out on the right: moving it right loses overlap
        assert float(ours_grad[1][0]) < -0.1


@pytest.mark.parametrize("offset", [1e-7, -1e-7])
def test_gradient_next_to_coinciding_rotated_edges_matches_shapely_differences(offset):
    """As above in a frame rotated by 0.4 rad, against central differences of shapely's IoU and GIoU
    with a step far below the offset (so both sides see the same configuration)."""
    theta, step = 0.4, 1e-10
    a = [3.0, -1.0, 2.0, 2.0, theta]
    shift = 0.5 + offset
    b = [3.0 + shift * math.cos(theta), -1.0 + shift * math.sin(theta), 1.0, 1.2, theta]
    b_tensor = torch.tensor([b], dtype=torch.float64, requires_grad=True)
    a_tensor = torch.tensor([a], dtype=torch.float64)
    for index, function in enumerate((rotated_iou, rotated_giou)):
        (grad,) = torch.autograd.grad(function(a_tensor, b_tensor).sum(), b_tensor)
        numeric = []
        for i in range(5):
            plus, minus = list(b), list(b)
            plus[i] += step
            minus[i] -= step
            numeric.append((reference(a, plus)[index] - reference(a, minus)[index]) / (2 * step))
        torch.testing.assert_close(grad[0], torch.tensor(numeric, dtype=torch.float64), atol=1e-4, rtol=0)


def test_degenerate_boxes_give_zero_iou_and_finite_gradients():
    """A zero-size box gave IoU 3.0 before: its degenerate edges clipped nothing."""
    a = torch.tensor(
        [[0, 0, 0, 0, 0], [0, 0, 0, 2, 0.1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1e-30, 1e-30, 0]],
        dtype=torch.float32,
        requires_grad=True,
    )
    b = torch.tensor(
        [[0, 0, 2, 2, 0], [0, 0, 2, 2, 0], [0, 0, 2, 2, 0], [0, 0, 0, 0, 0], [0, 0, 2, 2, 0]],
        dtype=torch.float32,
        requires_grad=True,
    )
    for index, function in enumerate((rotated_iou, rotated_giou)):
        value = function(a, b)
        expected = torch.tensor([reference(x, y)[index] for x, y in zip(a.tolist(), b.tolist())])
        torch.testing.assert_close(value.detach(), expected, atol=1e-6, rtol=0)
        grads = torch.autograd.grad(value.sum(), (a, b))
        assert all(torch.isfinite(g).all() for g in grads)
    assert (rotated_iou(a, b)[:4] == 0).all()


def test_negative_sizes_count_as_zero():
    iou, giou = ours([[0, 0, -2, 2, 0]], [[0, 0, 2, 2, 0]])
    assert float(iou) == 0.0 and float(giou) == pytest.approx(reference([0, 0, 0, 2, 0], [0, 0, 2, 2, 0])[1])


def test_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected two \(n, 5\) box tensors"):
        rotated_iou(torch.zeros(3, 5), torch.zeros(2, 5))
