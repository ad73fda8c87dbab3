"""CrossKD and BCKD losses against formulas written out here, on small hand-checked cases.

* the binary KD loss: Σ_c |σ(s) − σ(t)|^β · BCE(σ(s), σ(t)) with math.log, one anchor at a time;
* the rotated IoU: boxes whose overlap is known in closed form, then mmcv's `box_iou_rotated`
  (an independent C++ implementation) on random pairs;
* the IoU loss: Σ w (1 − GIoU) / Σ w with shapely's GIoU (BCKD's default), Σ w (1 − IoU) / Σ w
  from mmcv's IoU with mode='iou';
* gradients reach the student's inputs only (the teacher's side is a constant target).
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import load_engine  # noqa: E402

load_engine()

from mmrotate.models.builder import build_loss  # noqa: E402

from rotld_cli.engine.models.rotated_iou import rotated_iou  # noqa: E402


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def binary_kd_by_hand(student: list[list[float]], teacher: list[list[float]], beta: float) -> list[float]:
    """Per anchor Σ_c |p − q|^β · −(q log p + (1 − q) log(1 − p)), p = σ(student), q = σ(teacher)."""
    out = []
    for row_s, row_t in zip(student, teacher):
        total = 0.0
        for s, t in zip(row_s, row_t):
            p, q = sigmoid(s), sigmoid(t)
            total += abs(p - q) ** beta * -(q * math.log(p) + (1 - q) * math.log(1 - p))
        out.append(total)
    return out


STUDENT = [[0.5, -1.0, 2.0], [-3.0, 0.0, 1.5]]
TEACHER = [[1.0, -2.0, 2.0], [-4.0, 0.7, -0.5]]


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_binary_kd_loss_matches_the_formula(beta):
    loss = build_loss(dict(type="BinaryKDLoss", beta=beta, loss_weight=3.0))
    weight = [0.25, 1.0]
    s = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(TEACHER, dtype=torch.float64, requires_grad=True)
    value = loss(s, t, weight=torch.tensor(weight, dtype=torch.float64), avg_factor=2.0)
    rows = binary_kd_by_hand(STUDENT, TEACHER, beta)
    expected = 3.0 * sum(w * r for w, r in zip(weight, rows)) / 2.0
    assert float(value.detach()) == pytest.approx(expected, abs=1e-6)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None, "the teacher's logits are a detached target"


def test_binary_kd_loss_is_zero_where_the_student_agrees():
    loss = build_loss(dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0))
    logits = torch.tensor(TEACHER)
    assert float(loss(logits, logits.clone())) == 0.0


def test_the_softmax_kd_cannot_see_the_level_of_sigmoid_scores_and_the_binary_kd_can():
    """Why the synthetic LD+KD students use the binary KD (README, Distillers and Detector families):
    lifting every class logit of the student by the same amount turns all its sigmoid scores up (a
    false detection everywhere), yet the seed's softmax KD gives the same loss and no gradient
    towards the teacher's level; the binary KD grows and pulls the logits back down."""
    softmax_kd = build_loss(dict(type="KnowledgeDistillationKLDivLoss", loss_weight=1.0, T=5.0))
    binary_kd = build_loss(dict(type="BinaryKDLoss", beta=1.0, loss_weight=1.0))
    teacher = torch.tensor(TEACHER, dtype=torch.float64)
    for loss, sees_the_level in ((softmax_kd, False), (binary_kd, True)):
        shifted = (teacher + 6.0).requires_grad_(True)  # same ratios, every score near 1
        value = loss(shifted, teacher)
        value.backward()
        row_sums = shifted.grad.sum(dim=1)  # the gradient along "all logits up"
        if sees_the_level:
            assert float(value) > 1.0 and bool((row_sums > 0).all())
        else:
            assert float(value) == pytest.approx(0.0, abs=1e-12)
            assert float(row_sums.abs().max()) == pytest.approx(0.0, abs=1e-12)


SQRT2 = math.sqrt(2.0)


@pytest.mark.parametrize(
    "box1, box2, expected",
    [
        ([0, 0, 2, 2, 0], [1, 0, 2, 2, 0], 2 / 6),  # half-overlapping squares: 2 / (4 + 4 − 2)
        ([0, 0, 2, 2, 0], [0, 0, 2, 2, math.pi / 4], 1 / SQRT2),  # octagon 8(√2 − 1) over 8 − 8(√2 − 1)
        ([10, 20, 6, 2, 0.3], [10, 20, 2, 6, 0.3 + math.pi / 2], 1.0),  # same box, 'oc' w/h swap
        ([0, 0, 2, 2, 0], [5, 0, 2, 2, 0.7], 0.0),  # disjoint
        ([0, 0, 4, 2, 0], [0, 0, 2, 4, 0], 4 / 12),  # cross: 2×2 core over 8 + 8 − 4
        ([0, 0, 4, 4, 0], [0, 0, 2, 2, 1.0], 4 / 16),  # contained
    ],
)
def test_rotated_iou_closed_forms(box1, box2, expected):
    iou = rotated_iou(torch.tensor([box1], dtype=torch.float64), torch.tensor([box2], dtype=torch.float64))
    assert float(iou) == pytest.approx(expected, abs=1e-6)


def random_pairs(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.cat([torch.rand(n, 2, generator=gen) * 200, torch.rand(n, 2, generator=gen) * 60 + 2,
                   (torch.rand(n, 1, generator=gen) - 0.5) * 7], dim=1)
    b = torch.cat([a[:, :2] + torch.randn(n, 2, generator=gen) * 20, torch.rand(n, 2, generator=gen) * 60 + 2,
                   (torch.rand(n, 1, generator=gen) - 0.5) * 7], dim=1)
    return a, b


def test_rotated_iou_matches_mmcv_on_random_pairs():
    from mmcv.ops import box_iou_rotated

    a, b = random_pairs(3000)
    reference = box_iou_rotated(a, b, aligned=True)
    assert (reference > 0).float().mean() > 0.3, "the pairs must mostly overlap to test anything"
    assert torch.allclose(rotated_iou(a, b), reference, atol=2e-6)


def shapely_giou(a, b) -> list[float]:
    """GIoU with C = the convex hull of both boxes, by shapely's vectorised geometry functions."""
    import numpy as np
    import shapely

    def polygons(boxes):
        cx, cy, w, h, t = (boxes[:, i].double().numpy() for i in range(5))
        local = np.stack([np.stack([w, -w, -w, w], 1) / 2, np.stack([h, h, -h, -h], 1) / 2], axis=2)
        cos, sin = np.cos(t)[:, None], np.sin(t)[:, None]
        x = cx[:, None] + local[..., 0] * cos - local[..., 1] * sin
        y = cy[:, None] + local[..., 0] * sin + local[..., 1] * cos
        return shapely.polygons(np.stack([x, y], axis=2))

    pa, pb = polygons(a), polygons(b)
    inter = shapely.area(shapely.intersection(pa, pb))
    union = shapely.area(pa) + shapely.area(pb) - inter
    hull = shapely.area(shapely.convex_hull(shapely.union(pa, pb)))
    return (inter / union - (hull - union) / hull).tolist()


def test_rotated_giou_loss_matches_the_formula_and_trains_the_student_only():
    from mmcv.ops import box_iou_rotated

    a, b = random_pairs(64, seed=1)
    student = a.clone().requires_grad_(True)
    teacher = b.clone().requires_grad_(True)
    weight = torch.rand(64, generator=torch.Generator().manual_seed(2))
    loss = build_loss(dict(type="RotatedIoUKDLoss", loss_weight=5.0))  # mode 'giou' by default, as BCKD
    value = loss(student, teacher, weight=weight, avg_factor=float(weight.sum()))
    giou = torch.tensor(shapely_giou(a, b))
    assert (giou < 0).sum() > 5, "disjoint pairs too, where GIoU differs from IoU"
    expected = 5.0 * float((weight * (1 - giou)).sum() / weight.sum())
    assert float(value.detach()) == pytest.approx(expected, abs=1e-5)
    value.backward()
    assert teacher.grad is None
    # Every pair moves its student box, disjoint ones too (the hull term), the angle included.
    assert (student.grad.abs().sum(dim=1) > 0).all()
    assert (student.grad[:, 4] != 0).any(), "the angle receives gradient through the overlap"
    disjoint = box_iou_rotated(a, b, aligned=True) == 0
    assert disjoint.sum() > 5 and (student.grad[disjoint].abs().sum(dim=1) > 0).all()


def test_rotated_iou_mode_loss_matches_mmcv():
    from mmcv.ops import box_iou_rotated

    a, b = random_pairs(64, seed=1)
    weight = torch.rand(64, generator=torch.Generator().manual_seed(2))
    loss = build_loss(dict(type="RotatedIoUKDLoss", mode="iou", loss_weight=5.0))
    value = loss(a, b, weight=weight, avg_factor=float(weight.sum()))
    expected = 5.0 * float((weight * (1 - box_iou_rotated(a, b, aligned=True))).sum() / weight.sum())
    assert float(value) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="mode must be one of giou, iou"):
        build_loss(dict(type="RotatedIoUKDLoss", mode="diou"))
