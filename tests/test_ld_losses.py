"""Losses of the distribution and LD heads against method.md §1.3, §1.6, §3.4, §4, written out here.

Each expected value is computed from the raw tensors with plain torch ops (softmax, log_softmax,
the bins, the delta decoding, the region weights and normalisers), not with the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.engine

N, H, W, A, C, FEAT = 2, 2, 3, 9, 15, 8
M = N * H * W * A
BINS = torch.stack([torch.linspace(-2, 2, 9)] * 4 + [torch.linspace(-5, 2, 9)])  # (5, 9)


@pytest.fixture(scope="module")
def engine():
    from rotld_cli.engine import load_engine

    load_engine()


def make_head(**overrides):
    import mmcv
    from mmrotate.models.builder import build_head

    cfg = dict(
        type="LDRotatedRetinaHead",
        num_classes=C,
        in_channels=FEAT,
        feat_channels=FEAT,
        stacked_convs=1,
        reg_max=8,
        reg_decoded_bbox=True,
        anchor_generator=dict(
            type="RotatedAnchorGenerator",
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[1.0, 0.5, 2.0],
            strides=[8, 16, 32, 64, 128],
        ),
        bbox_coder=dict(
            type="DeltaXYWHAOBBoxCoder", angle_range="oc", norm_factor=None, edge_swap=False, proj_xy=False
        ),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type="GDLoss", loss_type="gwd", loss_weight=5.0),
        loss_ld=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10, T=5),
        loss_kd=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=20, T=5),
        loss_im=dict(type="IMLoss", loss_weight=2.0),
        imitation_method="finegrained",
        train_cfg=dict(
            assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            allowed_border=-1,
            pos_weight=-1,
            debug=False,
        ),
    )
    cfg.update(overrides)
    return build_head(mmcv.ConfigDict(cfg))


@pytest.fixture()
def level():
    """One FPN level of random student/teacher outputs, targets and regions."""
    gen = torch.Generator().manual_seed(11)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    anchors = torch.zeros(N, H * W * A, 5)
    anchors[..., :2] = torch.rand(N, H * W * A, 2, generator=gen) * 64
    anchors[..., 2:4] = 8 + torch.rand(N, H * W * A, 2, generator=gen) * 32
    labels = torch.full((N, H * W * A), C, dtype=torch.long)
    positives = torch.rand(N, H * W * A, generator=gen) < 0.2
    labels[positives] = torch.randint(0, C, (int(positives.sum()),), generator=gen)
    targets = anchors.clone()
    targets[..., :4] += randn(N, H * W * A, 4, scale=3.0)
    targets[..., 4] = torch.rand(N, H * W * A, generator=gen) * math.pi / 2
    ld = torch.rand(N, H * W * A, generator=gen) * (torch.rand(N, H * W * A, generator=gen) < 0.5)
    return dict(
        cls_score=randn(N, A * C, H, W, scale=2.0).requires_grad_(),
        bbox_pred=randn(N, A * 45, H, W, scale=2.0).requires_grad_(),
        anchors=anchors,
        labels=labels,
        label_weights=torch.ones(N, H * W * A),
        bbox_targets=targets,
        bbox_weights=positives[..., None].float().expand(-1, -1, 5).contiguous(),
        teacher_bbox_pred=randn(N, A * 45, H, W, scale=2.0),
        teacher_cls_score=randn(N, A * C, H, W, scale=2.0),
        x=randn(N, FEAT, H, W).requires_grad_(),
        teacher_x=randn(N, FEAT, H, W),
        ld_region=ld,
        im_region=torch.zeros(N, H * W * A),
        num_total_samples=int(positives.sum()),
    )


def flat(t, width):
    return t.permute(0, 2, 3, 1).reshape(-1, width)


def expected_deltas(bbox_pred):
    """softmax over each 9-bin block · its bins, blocks ordered dx|dy|dw|dh|dθ (§1.2, §1.3)."""
    return (F.softmax(flat(bbox_pred, 45).reshape(-1, 5, 9), dim=-1) * BINS).sum(-1)


def expected_decode(anchors, deltas):
    """DeltaXYWHAOBBoxCoder.decode with zero means, unit stds, 'oc' (§1.4)."""
    clip = abs(math.log(16 / 1000))
    dw, dh = deltas[:, 2].clamp(-clip, clip), deltas[:, 3].clamp(-clip, clip)
    return torch.stack(
        [
            anchors[:, 0] + anchors[:, 2] * deltas[:, 0],
            anchors[:, 1] + anchors[:, 3] * deltas[:, 1],
            anchors[:, 2] * dw.exp(),
            anchors[:, 3] * dh.exp(),
            anchors[:, 4] + deltas[:, 4],
        ],
        dim=1,
    )


def kd_rows(student, teacher, temperature):
    """KD_T per row: T² · mean over bins of softmax(t/T)·(log softmax(t/T) − log_softmax(s/T)) (§4.1)."""
    target = F.softmax(teacher / temperature, dim=-1)
    kl = target * (target.log() - F.log_softmax(student / temperature, dim=-1))
    return kl.mean(-1) * temperature**2


def expected_focal(cls_score, labels, label_weights, avg):
    logits = flat(cls_score, C)
    onehot = F.one_hot(labels.reshape(-1), C + 1)[:, :C].float()
    p = logits.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    focal_weight = (0.25 * onehot + 0.75 * (1 - onehot)) * pt.pow(2)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    return (bce * focal_weight * label_weights.reshape(-1, 1)).sum() / avg


def run(head, level):
    return dict(zip(("cls", "bbox", "ld", "kd", "im"), head.loss_single(**level)))


def test_integral_bins_and_layout(engine):
    from rotld_cli.engine.models.integral import Integral, IntegralAngle, integral_deltas

    integral, integral_angle = Integral(8), IntegralAngle(8)
    assert integral.project.tolist() == [-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2]
    assert integral_angle.project.tolist() == [-5, -4.125, -3.25, -2.375, -1.5, -0.625, 0.25, 1.125, 2]
    uniform = integral_deltas(torch.zeros(3, 45), integral, integral_angle)
    torch.testing.assert_close(uniform, torch.tensor([[0, 0, 0, 0, -1.5]]).expand(3, 5))
    peaked = torch.zeros(1, 45)
    for coord, bin_index in enumerate([6, 2, 4, 8, 0]):  # dx=1, dy=-1, dw=0, dh=2, dθ=-5
        peaked[0, coord * 9 + bin_index] = 40.0
    torch.testing.assert_close(
        integral_deltas(peaked, integral, integral_angle), torch.tensor([[1.0, -1.0, 0.0, 2.0, -5.0]])
    )
    logits = torch.randn(7, 45)
    torch.testing.assert_close(
        integral_deltas(logits, integral, integral_angle), (F.softmax(logits.reshape(7, 5, 9), -1) * BINS).sum(-1)
    )


def test_ld_and_kd_follow_the_formulas(engine, level):
    head = make_head()
    losses = run(head, level)
    ld = level["ld_region"].reshape(-1)
    n_ld = max(int((ld > 0).sum()), 1)
    ld_rows = kd_rows(
        flat(level["bbox_pred"], 45).reshape(-1, 9), flat(level["teacher_bbox_pred"], 45).reshape(-1, 9), 5
    ).reshape(-1, 5)
    expected_ld = 10 * (ld[:, None] * ld_rows).sum() / n_ld
    kd = kd_rows(flat(level["cls_score"], C), flat(level["teacher_cls_score"], C), 5)
    expected_kd = 20 * (ld * kd).sum() / n_ld
    torch.testing.assert_close(losses["ld"], expected_ld, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["kd"], expected_kd, rtol=1e-5, atol=0)
    assert losses["ld"] > 0 and losses["kd"] > 0


def test_ld_normaliser_is_the_region_count_of_the_level(engine, level):
    """Doubling the region's members (same weights elsewhere zero) changes N_ld, not just the sum."""
    head = make_head()
    level["ld_region"] = torch.zeros(N, H * W * A)
    level["ld_region"][0, 5] = 0.5
    one = run(head, level)["ld"]
    level["ld_region"][1, 7] = 0.5
    two = run(head, level)["ld"]
    row = lambda n, a: kd_rows(  # noqa: E731
        flat(level["bbox_pred"], 45).reshape(N, -1, 5, 9)[n, a],
        flat(level["teacher_bbox_pred"], 45).reshape(N, -1, 5, 9)[n, a],
        5,
    ).sum()
    torch.testing.assert_close(one, 10 * 0.5 * row(0, 5), rtol=1e-5, atol=0)
    torch.testing.assert_close(two, 10 * 0.5 * (row(0, 5) + row(1, 7)) / 2, rtol=1e-5, atol=0)


def test_empty_region_gives_zero_distillation(engine, level):
    level["ld_region"] = torch.zeros(N, H * W * A)
    losses = run(make_head(), level)
    assert [float(losses[k].detach()) for k in ("ld", "kd", "im")] == [0.0, 0.0, 0.0]


def test_cls_and_decoded_gwd_bbox_losses(engine, level):
    from mmrotate.models.builder import build_loss

    losses = run(make_head(), level)
    avg = level["num_total_samples"]
    torch.testing.assert_close(
        losses["cls"],
        expected_focal(level["cls_score"], level["labels"], level["label_weights"], avg),
        rtol=1e-5,
        atol=0,
    )
    decoded = expected_decode(level["anchors"].reshape(-1, 5), expected_deltas(level["bbox_pred"]))
    gwd = build_loss(dict(type="GDLoss", loss_type="gwd", loss_weight=5.0))
    expected_bbox = gwd(
        decoded, level["bbox_targets"].reshape(-1, 5), level["bbox_weights"].reshape(-1, 5), avg_factor=avg
    )
    torch.testing.assert_close(losses["bbox"], expected_bbox, rtol=1e-5, atol=0)
    assert losses["bbox"] > 0


def test_undecoded_bbox_loss_is_on_the_integral_deltas(engine, level):
    """reg_decoded_bbox=False (broken in the seed's distribution head): L1 of deltas vs encoded targets."""
    head = make_head(reg_decoded_bbox=False, loss_bbox=dict(type="L1Loss", loss_weight=1.0))
    level["bbox_targets"] = torch.randn(N, H * W * A, 5) * 0.5
    losses = run(head, level)
    weights = level["bbox_weights"].reshape(-1, 5)
    expected = ((expected_deltas(level["bbox_pred"]) - level["bbox_targets"].reshape(-1, 5)).abs() * weights).sum()
    torch.testing.assert_close(losses["bbox"], expected / level["num_total_samples"], rtol=1e-5, atol=0)


def test_im_mask_groups_the_nine_anchors_of_a_location(engine, level):
    """One anchor (a=4) of image 1 at (h=1, w=2) is in the IM region: only that location imitates."""
    location = 1 * W + 2
    level["im_region"][1, location * A + 4] = 1.0
    losses = run(make_head(), level)
    diff = level["x"][1, :, 1, 2] - level["teacher_x"][1, :, 1, 2]
    torch.testing.assert_close(losses["im"], 2.0 * diff.pow(2).mean(), rtol=1e-6, atol=0)
    level["im_region"][0, :A] = 1.0  # add image 0, location (0, 0)
    losses = run(make_head(), level)
    both = torch.stack([diff, level["x"][0, :, 0, 0] - level["teacher_x"][0, :, 0, 0]])
    torch.testing.assert_close(losses["im"], 2.0 * both.pow(2).mean(), rtol=1e-6, atol=0)


def test_gradients_reach_the_student_only(engine, level):
    """The teacher's logits and features are targets: even if they required grad, none flows back."""
    for name in ("teacher_cls_score", "teacher_bbox_pred", "teacher_x"):
        level[name].requires_grad_()
    level["im_region"][0, 3] = 1.0
    losses = run(make_head(), level)
    sum(losses.values()).backward()
    for name in ("cls_score", "bbox_pred", "x"):
        assert level[name].grad is not None and level[name].grad.abs().sum() > 0
    for name in ("teacher_cls_score", "teacher_bbox_pred", "teacher_x"):
        assert level[name].grad is None


def test_im_loss_is_weighted_mse(engine):
    from mmrotate.models.builder import build_loss

    loss = build_loss(dict(type="IMLoss", loss_weight=2.0))
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    value = loss(x, t)
    assert float(value.detach()) == pytest.approx(2.0 * (1 + 0 + 4 + 16) / 4)
    value.backward()
    assert t.grad is None and x.grad is not None


@pytest.mark.parametrize("method", ["gibox", "decouple", "finegrain"])
def test_broken_imitation_methods_are_refused_by_name(engine, method):
    with pytest.raises(ValueError, match=f"imitation_method.*'{method}'"):
        make_head(imitation_method=method)


def test_fitnet_behaves_as_finegrained(engine, level):
    level["im_region"][0, 10] = 1.0
    fine = run(make_head(), level)["im"]
    fitnet = run(make_head(imitation_method="fitnet"), level)["im"]
    assert float(fine.detach()) == float(fitnet.detach()) > 0
