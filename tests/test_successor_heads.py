"""CrossKD and BCKD heads inside the KD detector: loss values against formulas recomputed here from
the raw weights, and where the gradient goes (student only; through the teacher's head for CrossKD).

Tiny R-18 student / R-34 teacher (FPN 32, 2 convs per tower, random init, 256² images) as in
test_plugins_forward. Values are float32
sums over ~10⁵ anchor-class terms, so they are compared to 1e-6 relative. The targets (positives,
the LD region, anchors) come from the head's own
target code, which test_ld_region / test_plugins_forward cover; what is checked here is the new
arithmetic on top of them, including where the authors' code restricts it: CrossKD's and BCKD's
classification KD only on anchors with label_weights > 0 (not the assigner's ignored ones), BCKD's
GIoU term weighted by label_weights too, and both BCKD terms only on FPN levels holding a positive.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

import torch.nn.functional as F  # noqa: E402
from test_plugins_forward import batch, head_cfg, retina_cfg  # noqa: E402
from test_successor_losses import shapely_giou  # noqa: E402

from rotld_cli.engine import load_engine  # noqa: E402

load_engine()

LD = dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10.0, T=5.0)
OFF = dict(type="KnowledgeDistillationKLDivLoss", loss_weight=0.0, T=5.0)
CROSS_CLS_W, CROSS_LD_W, BCKD_CLS_W, BCKD_IOU_W = 1.5, 10.0, 2.0, 5.0


def build(head_type, **head_args):
    import mmcv
    from mmrotate.models import build_detector

    teacher = retina_cfg(34, head_cfg("RotatedRetinaHeadDistribution"))
    args = dict(loss_ld=OFF, loss_kd=OFF, loss_im=dict(type="IMLoss", loss_weight=0.0))
    args.update(head_args)
    student = retina_cfg(18, head_cfg(head_type, **args))
    student.update(type="KnowledgeDistillationRotatedSingleStageDetector", teacher_config=dict(model=teacher),
                   output_feature=True)
    torch.manual_seed(0)
    model = build_detector(mmcv.Config(dict(model=student)).model)
    model.train()
    return model


CROSSKD_ARGS = dict(loss_cross_cls=dict(type="BinaryKDLoss", beta=1.0, loss_weight=CROSS_CLS_W),
                    loss_cross_ld=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=CROSS_LD_W, T=5.0))


@pytest.fixture(scope="module")
def crosskd():
    return build("CrossKDRotatedRetinaHead", **CROSSKD_ARGS)


@pytest.fixture(scope="module")
def bckd():
    return build("BCKDRotatedRetinaHead",
                 loss_bckd_cls=dict(type="BinaryKDLoss", beta=1.0, loss_weight=BCKD_CLS_W),
                 loss_bckd_iou=dict(type="RotatedIoUKDLoss", loss_weight=BCKD_IOU_W))


def targets(model, img, metas, gts, labels):
    """Number of positives, per-level LD regions, anchors, labels and label weights (flat), from the
    head's own target code."""
    head = model.bbox_head
    sizes = [f.shape[-2:] for f in model.extract_feat(img)]
    anchors, valid = head.get_anchors(sizes, metas, device="cpu")
    out = head.get_targets(anchors, valid, gts, metas, gt_labels_list=labels, label_channels=head.cls_out_channels)
    per_level = [torch.cat([a[level] for a in anchors]) for level in range(len(sizes))]
    flat_labels = [level.reshape(-1) for level in out[0]]
    flat_weights = [level.reshape(-1) for level in out[1]]
    return out[4], out[-2], per_level, flat_labels, flat_weights


def binary_kd(student_logits, teacher_logits, anchor_weight=None):
    """Σ over anchors and classes of w_a |p − q| · −(q log p + (1 − q) log(1 − p)), written out."""
    p, q = torch.sigmoid(student_logits), torch.sigmoid(teacher_logits)
    per_anchor = ((p - q).abs() * -(q * torch.log(p) + (1 - q) * torch.log(1 - p))).sum(dim=1)
    return per_anchor.sum() if anchor_weight is None else (per_anchor * anchor_weight).sum()


def flat(score_map, width):
    return score_map.permute(0, 2, 3, 1).reshape(-1, width)


def conv_relu(module, x):
    return F.relu(F.conv2d(x, module.conv.weight, module.conv.bias, padding=1))


def test_crosskd_losses_match_the_formulas(crosskd):
    head, teacher = crosskd.bbox_head, crosskd.teacher_model
    img, metas, gts, labels = batch()
    assert head.cross_convs == 1  # default k = stacked_convs − 1
    with torch.no_grad():
        losses = crosskd.forward_train(img, metas, gts, labels)
        assert set(losses) == {"loss_cls", "loss_bbox", "loss_crosskd_cls", "loss_crosskd_ld"}
        num_pos, ld_regions, _, _, label_weights = targets(crosskd, img, metas, gts, labels)
        x = crosskd.extract_feat(img)
        t_cls, t_reg = teacher.bbox_head(teacher.extract_feat(img))
        bins, T = head.reg_max + 1, 5.0
        for level, feat in enumerate(x):
            # Student conv 1, then the teacher's conv 2 and predictors, from the raw weights.
            cls = F.conv2d(conv_relu(teacher.bbox_head.cls_convs[1], conv_relu(head.cls_convs[0], feat)),
                           teacher.bbox_head.retina_cls.weight, teacher.bbox_head.retina_cls.bias, padding=1)
            reg = F.conv2d(conv_relu(teacher.bbox_head.reg_convs[1], conv_relu(head.reg_convs[0], feat)),
                           teacher.bbox_head.retina_reg.weight, teacher.bbox_head.retina_reg.bias, padding=1)
            # The authors' loss_cls_kd gets label_weights: ignored anchors (IoU in [0.4, 0.5)) add nothing.
            lw = label_weights[level]
            expected_cls = CROSS_CLS_W * binary_kd(flat(cls, 15), flat(t_cls[level], 15), lw) / num_pos
            region = ld_regions[level].reshape(-1)
            s, t = flat(reg, bins), flat(t_reg[level], bins)
            q = torch.softmax(t / T, dim=1)
            kl_rows = (q * (torch.log(q) - torch.log_softmax(s / T, dim=1))).mean(dim=1) * T * T
            region_sum = (kl_rows.reshape(-1, 5).sum(dim=1) * region).sum()
            expected_ld = CROSS_LD_W * region_sum / max(int((region > 0).sum()), 1)
            assert float(losses["loss_crosskd_cls"][level]) == pytest.approx(float(expected_cls), rel=1e-6)
            assert float(losses["loss_crosskd_ld"][level]) == pytest.approx(float(expected_ld), rel=1e-6)
            if level == 0:  # the level with ignored anchors: counting them would change the value
                everywhere = CROSS_CLS_W * binary_kd(flat(cls, 15), flat(t_cls[level], 15)) / num_pos
                assert float(everywhere) > float(expected_cls) * (1 + 1e-4)
        assert sum(int((r > 0).sum()) for r in ld_regions) > 0, "the LD region must be non-empty to test anything"
        assert int((label_weights[0] == 0).sum()) > 0, "the batch must have ignored anchors to test the weights"


def test_crosskd_gradient_flows_through_the_teacher_head_into_the_student_only(crosskd):
    head, teacher = crosskd.bbox_head, crosskd.teacher_model
    img, metas, gts, labels = batch()
    losses = crosskd.forward_train(img, metas, gts, labels)
    cross = sum(losses["loss_crosskd_cls"]) + sum(losses["loss_crosskd_ld"])
    earlier = [head.cls_convs[0].conv.weight, head.reg_convs[0].conv.weight, crosskd.neck.fpn_convs[0].conv.weight,
               crosskd.backbone.layer4[0].conv1.weight]
    later = [head.cls_convs[1].conv.weight, head.retina_cls.weight, head.retina_reg.weight]
    grads = torch.autograd.grad(cross, earlier + later, allow_unused=True, retain_graph=True)
    for grad in grads[: len(earlier)]:
        assert grad is not None and grad.abs().sum() > 0
    # The student's own later layers get nothing from the cross-head terms: they see the ground truth only.
    assert all(grad is None for grad in grads[len(earlier):])
    assert all(not p.requires_grad for p in teacher.parameters())
    loss, _ = crosskd._parse_losses(losses)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()), "the teacher's head layers receive no gradient"
    assert all(p.grad is not None for p in later)
    crosskd.zero_grad()


def test_crosskd_keeps_the_teacher_head_out_of_the_student(crosskd):
    head_params = {id(p) for p in crosskd.parameters()}
    assert not head_params & {id(p) for p in crosskd.teacher_model.bbox_head.parameters()}
    assert not any("teacher" in key for key in crosskd.state_dict())
    assert crosskd.bbox_head.teacher_head is crosskd.teacher_model.bbox_head


def test_crosskd_refuses_a_teacher_head_it_cannot_feed():
    with pytest.raises(ValueError, match=r"cross_convs must be in 0\.\.2"):
        build("CrossKDRotatedRetinaHead", cross_convs=3)


def test_ld_crosskd_adds_ld_on_the_students_own_head():
    model = build("CrossKDRotatedRetinaHead", loss_ld=LD, **CROSSKD_ARGS)
    with torch.no_grad():
        losses = model.forward_train(*batch())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_ld", "loss_crosskd_cls", "loss_crosskd_ld"}
    assert float(sum(losses["loss_ld"])) > 0


def decode(anchors, logits, reg_max=8):
    """Integral deltas (softmax · bins) and the 'oc' delta coder, written out."""
    bins = reg_max + 1
    prob = torch.softmax(logits.reshape(-1, 5, bins), dim=2)
    xywh_bins, angle_bins = torch.linspace(-2, 2, bins), torch.linspace(-5, 2, bins)
    d = torch.cat([(prob[:, :4] * xywh_bins).sum(2), (prob[:, 4:] * angle_bins).sum(2)], dim=1)
    clip = abs(math.log(16 / 1000))
    return torch.stack([
        anchors[:, 0] + anchors[:, 2] * d[:, 0],
        anchors[:, 1] + anchors[:, 3] * d[:, 1],
        anchors[:, 2] * d[:, 2].clamp(-clip, clip).exp(),
        anchors[:, 3] * d[:, 3].clamp(-clip, clip).exp(),
        anchors[:, 4] + d[:, 4],
    ], dim=1)


def test_bckd_losses_match_the_formulas(bckd):
    head, teacher = bckd.bbox_head, bckd.teacher_model
    img, metas, gts, labels = batch()
    with torch.no_grad():
        losses = bckd.forward_train(img, metas, gts, labels)
        assert set(losses) == {"loss_cls", "loss_bbox", "loss_bckd_cls", "loss_bckd_iou"}
        num_pos, _, anchors, level_labels, label_weights = targets(bckd, img, metas, gts, labels)
        s_cls, s_reg = head(bckd.extract_feat(img))
        t_cls, t_reg = teacher.bbox_head(teacher.extract_feat(img))
        kept, empty_levels = 0, 0
        for level in range(5):
            if not bool((level_labels[level] < 15).any()):  # no positive on this level: the authors skip it
                empty_levels += 1
                assert float(losses["loss_bckd_cls"][level]) == 0.0
                assert float(losses["loss_bckd_iou"][level]) == 0.0
                assert float(binary_kd(flat(s_cls[level], 15), flat(t_cls[level], 15))) > 0, "would count otherwise"
                continue
            lw = label_weights[level]
            expected_cls = BCKD_CLS_W * binary_kd(flat(s_cls[level], 15), flat(t_cls[level], 15), lw) / num_pos
            assert float(losses["loss_bckd_cls"][level]) == pytest.approx(float(expected_cls), rel=1e-6)
            # BCKD's weight: the largest teacher-student score gap over the classes, times label_weights.
            gap = (torch.sigmoid(flat(t_cls[level], 15)) - torch.sigmoid(flat(s_cls[level], 15))).abs().max(1).values
            weight = gap * lw
            keep = weight > 0
            kept += int(keep.sum())
            assert int(((gap > 0) & (lw == 0)).sum()) > 0, "ignored anchors with a score gap must be on this level"
            boxes_s = decode(anchors[level][keep], flat(s_reg[level], 45)[keep])
            boxes_t = decode(anchors[level][keep], flat(t_reg[level], 45)[keep])
            giou = torch.tensor(shapely_giou(boxes_s, boxes_t))
            expected_iou = BCKD_IOU_W * (weight[keep].double() * (1 - giou)).sum() / num_pos
            assert float(losses["loss_bckd_iou"][level]) == pytest.approx(float(expected_iou), rel=1e-5)
        assert kept > 0 and empty_levels > 0


def test_bckd_gradient_reaches_the_student_only(bckd):
    head = bckd.bbox_head
    losses = bckd.forward_train(*batch())
    params = [head.retina_reg.weight, head.reg_convs[0].conv.weight, head.retina_cls.weight]
    g_reg, g_tower, g_cls = torch.autograd.grad(sum(losses["loss_bckd_iou"]), params, allow_unused=True,
                                                retain_graph=True)
    assert g_reg.abs().sum() > 0 and g_tower.abs().sum() > 0 and g_cls is None
    loss, _ = bckd._parse_losses(losses)
    loss.backward()
    assert all(p.grad is None for p in bckd.teacher_model.parameters())
    bckd.zero_grad()
