"""The plugins built through mmrotate's registries: a tiny R-18 student distilled from an R-34 teacher.

Random init (no downloads), FPN width 32, 256² images: shapes, gradients, the hidden teacher,
device/dtype moves, inference through the integrals and the head's initialisation.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.engine

FPN = 32
IMG = 256
LOSS_KEYS = {"loss_cls", "loss_bbox", "loss_ld", "loss_kd", "loss_im"}
TEST_CFG = dict(nms_pre=2000, min_bbox_size=0, score_thr=0.05, nms=dict(iou_thr=0.1), max_per_img=2000)


def head_cfg(head_type, **extra):
    return dict(
        type=head_type,
        num_classes=15,
        in_channels=FPN,
        feat_channels=FPN,
        stacked_convs=2,
        reg_max=8,
        reg_decoded_bbox=True,
        assign_by_circumhbbox="oc",
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
        **extra,
    )


def retina_cfg(depth, bbox_head):
    return dict(
        type="RotatedRetinaNet",
        backbone=dict(
            type="ResNet",
            depth=depth,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type="BN", requires_grad=True),
            norm_eval=True,
            style="pytorch",
            init_cfg=None,
        ),
        neck=dict(
            type="FPN",
            in_channels=[64, 128, 256, 512],
            out_channels=FPN,
            start_level=1,
            add_extra_convs="on_input",
            num_outs=5,
        ),
        bbox_head=bbox_head,
        train_cfg=dict(
            assigner=dict(
                type="MaxIoUAssigner",
                pos_iou_thr=0.5,
                neg_iou_thr=0.4,
                min_pos_iou=0,
                ignore_iof_thr=-1,
                iou_calculator=dict(type="RBboxOverlaps2D"),
            ),
            allowed_border=-1,
            pos_weight=-1,
            debug=False,
        ),
        test_cfg=TEST_CFG,
    )


def build_kd(**overrides):
    import mmcv
    from mmrotate.models import build_detector

    teacher = retina_cfg(34, head_cfg("RotatedRetinaHeadDistribution"))
    student = retina_cfg(
        18,
        head_cfg(
            "LDRotatedRetinaHead",
            loss_ld=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10, T=5),
            loss_kd=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=20, T=5),
            loss_im=dict(type="IMLoss", loss_weight=2.0),
        ),
    )
    student.update(
        type="KnowledgeDistillationRotatedSingleStageDetector", teacher_config=dict(model=teacher), output_feature=True
    )
    student.update(overrides)
    return build_detector(mmcv.Config(dict(model=student)).model)


def batch(num_images=2):
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(num_images, 3, IMG, IMG, generator=gen)
    meta = dict(img_shape=(IMG, IMG, 3), pad_shape=(IMG, IMG, 3), ori_shape=(IMG, IMG, 3), scale_factor=1.0, flip=False)
    gts = [
        torch.tensor([[100.0, 120.0, 60.0, 30.0, 0.3], [40.5, 50.2, 24.0, 12.0, 1.5]]),
        torch.tensor([[180.3, 70.9, 90.0, 40.0, 0.9]]),
    ][:num_images]
    labels = [torch.tensor([1, 3]), torch.tensor([7])][:num_images]
    return img, [dict(meta) for _ in range(num_images)], gts, labels


@pytest.fixture(scope="module")
def detector():
    from rotld_cli.engine import load_engine

    load_engine()
    return build_kd()


def test_forward_backward_reaches_the_student_only(detector):
    detector.train()
    img, metas, gts, labels = batch()
    losses = detector.forward_train(img, metas, gts, labels)
    assert set(losses) == LOSS_KEYS
    for key, per_level in losses.items():
        assert len(per_level) == 5, key
        assert all(torch.isfinite(v).all() for v in per_level), key
    assert all(float(losses[key][0].detach()) > 0 for key in LOSS_KEYS)
    loss, _ = detector._parse_losses(losses)
    loss.backward()
    for name in (
        "bbox_head.retina_reg.weight",
        "bbox_head.retina_cls.weight",
        "neck.fpn_convs.0.conv.weight",
        "backbone.layer4.0.conv1.weight",
    ):
        grad = dict(detector.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in detector.teacher_model.parameters())
    detector.zero_grad()


def test_teacher_is_hidden_from_parameters_and_state_dict(detector):
    student_params = {id(p) for p in detector.parameters()}
    assert not student_params & {id(p) for p in detector.teacher_model.parameters()}
    assert not any(key.startswith("teacher") for key in detector.state_dict())
    assert detector.teacher_model not in list(detector.modules())
    assert detector.teacher_model.backbone.depth == 34 and detector.backbone.depth == 18


def test_teacher_stays_in_eval_mode(detector):
    detector.train()
    assert detector.training and detector.bbox_head.training
    assert not detector.teacher_model.training and not detector.teacher_model.backbone.training
    detector.eval()
    assert not detector.teacher_model.training


def test_dtype_and_device_moves_reach_the_teacher():
    from rotld_cli.engine import load_engine

    load_engine()
    model = build_kd(output_feature=False, eval_teacher=False)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_teacher = {k: v.clone() for k, v in model.teacher_model.state_dict().items()}
    teacher_tensors = lambda: [*model.teacher_model.parameters(), *model.teacher_model.buffers()]  # noqa: E731
    model.double()
    assert {t.dtype for t in teacher_tensors() if t.is_floating_point()} == {torch.float64}
    model.to(torch.float32)
    assert {t.dtype for t in teacher_tensors() if t.is_floating_point()} == {torch.float32}
    model.to("meta")
    assert {t.device.type for t in teacher_tensors()} == {"meta"}
    model.to_empty(device="cpu")
    assert {t.device.type for t in teacher_tensors()} == {"cpu"}
    model.cpu()
    assert {t.device.type for t in teacher_tensors()} == {"cpu"}
    # eval_teacher=False: the teacher follows the student's mode; output_feature=False still trains
    model.load_state_dict(saved)
    model.teacher_model.load_state_dict(saved_teacher)
    model.train()
    assert model.teacher_model.training
    img, metas, gts, labels = batch(1)
    losses = model.forward_train(img, metas, gts, labels)
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v).all() for vs in losses.values() for v in vs)


def test_image_without_gts(detector):
    detector.train()
    img, metas, gts, labels = batch()
    gts[1], labels[1] = torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    losses = detector.forward_train(img, metas, gts, labels)
    assert all(torch.isfinite(v).all() for vs in losses.values() for v in vs)
    assert float(losses["loss_ld"][0].detach()) > 0


def test_simple_test_runs_the_student_only(detector, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the teacher ran at test time")

    import mmcv

    monkeypatch.setattr(detector.teacher_model, "extract_feat", fail)
    # an untrained head scores every anchor ~0.5: cap the candidates so rotated NMS stays quick on CPU
    monkeypatch.setattr(detector.bbox_head, "test_cfg", mmcv.ConfigDict(TEST_CFG, nms_pre=200, max_per_img=100))
    detector.eval()
    img, metas, _, _ = batch(1)
    with torch.no_grad():
        results = detector.simple_test(img, metas)
    assert len(results) == 1 and len(results[0]) == 15
    assert all(r.ndim == 2 and r.shape[1] == 6 for r in results[0])


def build_distribution_head():
    import mmcv
    from mmrotate.models.builder import build_head

    from rotld_cli.engine import load_engine

    load_engine()
    return build_head(mmcv.ConfigDict(head_cfg("RotatedRetinaHeadDistribution", test_cfg=TEST_CFG)))


def test_distribution_head_initialisation_and_checkpoint_names():
    head = build_distribution_head()
    head.init_weights()
    reg = head.retina_reg
    assert reg.out_channels == 9 * 9 * 5
    assert 0.008 < float(reg.weight.detach().std()) < 0.012 and float(reg.bias.detach().abs().max()) == 0.0
    prior_bias = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(head.retina_cls.bias, torch.full_like(head.retina_cls.bias, prior_bias))
    assert 0.008 < float(head.cls_convs[0].conv.weight.detach().std()) < 0.012
    state = head.state_dict()
    assert state["integral.project"].tolist() == torch.linspace(-2, 2, 9).tolist()
    assert state["integral_angle.project"].tolist() == torch.linspace(-5, 2, 9).tolist()


def test_inference_decodes_through_the_integrals():
    """One confident anchor whose bins are peaked decodes to anchor + bin values (§1.4, §1.7)."""
    head = build_distribution_head()
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    cls_scores = [torch.full((1, 9 * 15, h, w), -10.0) for h, w in sizes]
    bbox_preds = [torch.zeros(1, 9 * 45, h, w) for h, w in sizes]
    row, col, anchor, label = 2, 1, 4, 3
    cls_scores[0][0, anchor * 15 + label, row, col] = 5.0
    bins = [5, 6, 4, 5, 8]  # dx=0.5, dy=1.0, dw=0, dh=0.5, dθ=2.0
    for coord, b in enumerate(bins):
        bbox_preds[0][0, anchor * 45 + coord * 9 + b, row, col] = 40.0
    metas = [dict(img_shape=(64, 64, 3), scale_factor=1.0)]
    ((dets, labels),) = head.get_bboxes(cls_scores, bbox_preds, metas)
    assert dets.shape == (1, 6) and labels.tolist() == [label]
    base = head.anchor_generator.grid_priors(sizes, device="cpu")[0].reshape(4, 4, 9, 5)[row, col, anchor]
    cx, cy, w, h, _ = base.tolist()
    expected = [cx + 0.5 * w, cy + 1.0 * h, w, h * math.exp(0.5), 2.0, 1 / (1 + math.exp(-5.0))]
    torch.testing.assert_close(dets[0], torch.tensor(expected), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("box_mode", ["seed", "hbb"])
def test_region_targets_are_the_per_image_regions_split_by_level(detector, box_mode):
    from rotld_cli.engine.models.ld_region import distillation_regions

    head = detector.bbox_head
    head.ld_region_box = box_mode
    _, metas, gts, _ = batch()
    gts[1] = torch.zeros(0, 5)
    sizes = [(IMG // s, IMG // s) for s in (8, 16, 32, 64, 128)]
    anchor_list, flag_list = head.get_anchors(sizes, metas, device="cpu")
    ld_levels, im_levels = head.get_region_targets(anchor_list, flag_list, gts, metas)
    head.ld_region_box = "seed"
    counts = [a.size(0) for a in anchor_list[0]]
    assert [t.shape for t in ld_levels] == [(2, c) for c in counts] == [t.shape for t in im_levels]
    ld, im = distillation_regions(torch.cat(anchor_list[0]), counts, gts[0], box_mode=box_mode)
    assert torch.equal(torch.cat([t[0] for t in ld_levels]), ld) and ld.max() > 0
    assert torch.equal(torch.cat([t[0] for t in im_levels]), im) and im.max() > 0
    assert not any(t[1].any() for t in [*ld_levels, *im_levels])


def test_unknown_region_box_is_refused(detector):
    import mmcv
    from mmrotate.models.builder import build_head

    with pytest.raises(ValueError, match=r"ld_region_box.*'obb'"):
        build_head(mmcv.ConfigDict(head_cfg("LDRotatedRetinaHead", ld_region_box="obb")))
