"""The rotated FCOS, rotated ATSS and Oriented R-CNN students: loss terms against formulas written out
here, the regions they read, and where the gradient goes (the student only).

Models come from the bundled synthetic recipes (the real compile path), shrunk to 16-channel FPN and
heads, random init, 128² images, against a teacher recipe shrunk the same way. The targets (labels)
come from each head's own mmrotate target code; the FCOS region is checked on a hand-placed gt, the
ATSS assigner against mmrotate's, the Oriented R-CNN RoI labels by their IoU, and the LD/KD/BCKD/CrossKD
arithmetic against the formulas below. Values are float32 sums over 10³–10⁴ terms taken in another
order than mmdet's, so they agree to 1e-4 relative.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from rotld_cli.engine import load_engine  # noqa: E402

load_engine()

IMG = 128
SMALL = {
    "fcos": ["model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.norm_groups=8"],
    "atss": ["model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.norm_groups=8"],
    "orcnn": ["model.neck.out_channels=16", "model.rpn.feat_channels=16", "model.roi_head.fc_out_channels=32"],
}


def build(tmp_path, recipe_name: str, overrides=()):
    """The recipe's detector (student: with its shrunk teacher), train mode, seeded init."""
    import mmcv
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.engine.train import quiet_init_logs
    from rotld_cli.recipes import load_recipe

    family = recipe_name.split("/")[0].removeprefix("synthetic-")
    shrink = ["model.backbone.pretrained=null", *SMALL[family]]
    teacher = tmp_path / f"teacher-{family}.yaml"
    teacher.write_text(f"base: synthetic-{family}/teacher-r34\n", encoding="utf-8")
    extra = [f"teacher.recipe={teacher}", "teacher.checkpoint=null"] if "student" in recipe_name else []
    recipe = load_recipe(recipe_name, [*shrink, *extra, *overrides])
    if "student" in recipe_name:  # the teacher recipe, shrunk the same way, through the one teacher check
        from rotld_cli.engine.config import model_dict

        teacher_model = model_dict(load_recipe(str(teacher), shrink))
        cfg = build_config(recipe, teacher_model=teacher_model)
    else:
        cfg = build_config(recipe)
    torch.manual_seed(0)
    model = build_detector(mmcv.Config(dict(model=cfg.model)).model)
    with quiet_init_logs():
        model.init_weights()
    model.train()
    return model


def batch(angle_version: str = "le90"):
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, IMG, IMG, generator=gen)
    meta = dict(
        img_shape=(IMG, IMG, 3),
        pad_shape=(IMG, IMG, 3),
        ori_shape=(IMG, IMG, 3),
        scale_factor=1.0,
        flip=False,
        batch_input_shape=(IMG, IMG),
    )
    gts = [
        torch.tensor([[40.0, 44.0, 36.0, 14.0, 0.3], [90.0, 80.0, 22.0, 20.0, 1.2]]),
        torch.tensor([[60.0, 60.0, 40.0, 20.0, 0.0]]),
    ]
    if angle_version == "oc":  # (0, π/2]: an axis-aligned box is θ = π/2 with w and h swapped
        gts[1] = torch.tensor([[60.0, 60.0, 20.0, 40.0, math.pi / 2]])
    return img, [dict(meta) for _ in range(2)], gts, [torch.tensor([0, 3]), torch.tensor([1])]


def kl_rows(student, teacher, T):
    """mmdet's KD loss per row, written out: mean over bins of q (log q − log p), × T²."""
    q = torch.softmax(teacher / T, dim=1)
    return (q * (torch.log(q) - torch.log_softmax(student / T, dim=1))).mean(dim=1) * T * T


def region_loss(weight, rows, region):
    """w · Σ r_a · row_a / max(#{r > 0}, 1)."""
    return weight * (rows * region).sum() / max(int((region > 0).sum()), 1)


def binary_kd(student_logits, teacher_logits):
    """Σ over rows and classes of |p − q| · −(q log p + (1 − q) log(1 − p))."""
    p, q = torch.sigmoid(student_logits), torch.sigmoid(teacher_logits)
    return ((p - q).abs() * -(q * torch.log(p) + (1 - q) * torch.log(1 - p))).sum()


def nhwc(score_map, width):
    return score_map.permute(0, 2, 3, 1).reshape(-1, width)


# ------------------------------------------------------------------------------------------
# Rotated FCOS


def fcos_labels(model, img, gts, labels):
    head = model.bbox_head
    sizes = [f.shape[-2:] for f in model.extract_feat(img)]
    points = head.prior_generator.grid_priors(sizes, dtype=torch.float32, device="cpu")
    return head.get_targets(points, gts, labels)[0], points


def test_fcos_region_is_the_points_in_the_centre_region_within_the_regress_range(tmp_path):
    model = build(tmp_path, "synthetic-fcos/baseline-r18")
    img, _, _, _ = batch()
    # One axis-aligned 40×20 gt centred at (60, 60). Level 1 (stride 8, points at (k + ½)·8): inside the
    # centre region |dx|, |dy| < 1.5·8 = 12 and inside the box |dy| < 10 are x, y ∈ {52, 60, 68}; their
    # largest side distance (≤ 28) is within level 1's range (−1, 64]. Level 2's candidates have side
    # distances below its lower bound 64, the others are outside the box.
    gts, labels = [torch.tensor([[60.0, 60.0, 40.0, 20.0, 0.0]])], [torch.tensor([2])]
    level_labels, points = fcos_labels(model, img[:1], gts, labels)
    positive = [(lvl < model.bbox_head.num_classes).nonzero().squeeze(1) for lvl in level_labels]
    assert [len(p) for p in positive] == [9, 0, 0, 0, 0]
    assert sorted(map(tuple, points[0][positive[0]].tolist())) == [
        (x, y) for x in (52.0, 60.0, 68.0) for y in (52.0, 60.0, 68.0)
    ]
    assert all(int(lab) == 2 for lab in level_labels[0][positive[0]])


def test_fcos_narrow_head_detects_on_one_small_image(tmp_path):
    """16-channel towers, batch 1, a 128² image: the top level is 1×1, where a GroupNorm group of a single
    channel has one value and no statistics (torch refuses it), so groups keep ≥ 2 channels."""
    model = build(tmp_path, "synthetic-fcos/baseline-r18").eval()
    img, metas, _, _ = batch()
    with torch.no_grad():
        (per_class,) = model.simple_test(img[:1], metas[:1], rescale=True)
    assert len(per_class) == 5
    assert model.bbox_head.cls_convs[0].gn.num_groups == 8


def fcos_rows(bbox_logits, angle_logits, bins):
    """(M·5, bins): the 4 side distributions then the angle's, per point."""
    sides = nhwc(bbox_logits, 4 * bins).reshape(-1, 4, bins)
    angle = nhwc(angle_logits, bins).reshape(-1, 1, bins)
    return torch.cat([sides, angle], dim=1).reshape(-1, bins)


def fcos_student_run(tmp_path, recipe_name: str):
    """A FCOS student's losses on `batch()`, its per-level labels and points, and both heads' outputs."""
    model = build(tmp_path, recipe_name)
    img, metas, gts, labels = batch()
    with torch.no_grad():
        losses = model.forward_train(img, metas, gts, labels)
        level_labels, points = fcos_labels(model, img, gts, labels)
        student = model.bbox_head(model.extract_feat(img))
        teacher = model.teacher_model.bbox_head(model.teacher_model.extract_feat(img))
    return losses, level_labels, points, student, teacher


def test_fcos_ld_and_kd_match_the_formulas_on_the_positives(tmp_path):
    losses, level_labels, _, student, teacher = fcos_student_run(tmp_path, "synthetic-fcos/student-r18-ld-kd")
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_ld", "loss_kd"}
    (s_cls, s_box, s_ang, _), (t_cls, t_box, t_ang, _) = student, teacher
    bins = 17  # reg_max 16
    assert s_box[0].shape[1] == 4 * bins
    with torch.no_grad():
        for level in range(5):
            region = (level_labels[level] < 5).float()
            ld_rows = (
                kl_rows(fcos_rows(s_box[level], s_ang[level], bins), fcos_rows(t_box[level], t_ang[level], bins), 5.0)
                .reshape(-1, 5)
                .sum(dim=1)
            )
            kd_rows = kl_rows(nhwc(s_cls[level], 5), nhwc(t_cls[level], 5), 5.0)
            assert float(losses["loss_ld"][level]) == pytest.approx(float(region_loss(10.0, ld_rows, region)), rel=1e-4)
            assert float(losses["loss_kd"][level]) == pytest.approx(float(region_loss(20.0, kd_rows, region)), rel=1e-4)
        assert sum(int((lvl < 5).sum()) for lvl in level_labels) > 0


def test_fcos_binary_kd_on_every_point_is_divided_by_the_positives_of_all_levels(tmp_path):
    """`loss_kd: {type: binary, region: all}` (the RetinaNet table's LD+KD): every point, / #positives."""
    losses, level_labels, _, student, teacher = fcos_student_run(tmp_path, "synthetic-fcos/student-r18-ld-kd-binary")
    num_pos = sum(int((lvl < 5).sum()) for lvl in level_labels)
    s_cls, t_cls = student[0], teacher[0]
    assert num_pos > 0
    with torch.no_grad():
        for level in range(5):
            expected = binary_kd(nhwc(s_cls[level], 5), nhwc(t_cls[level], 5)) / num_pos
            assert float(losses["loss_kd"][level]) == pytest.approx(float(expected), rel=1e-4)


def decode_fcos(points, stride, bbox_logits, angle_logits, reg_max=16):
    """Expected distances (bins 0..reg_max, × stride) and angle (bins over [−π/2, π/2]), then the rotated
    distance coder written out: centre = point + R(θ) · ((r − l)/2, (b − t)/2), w = l + r, h = t + b."""
    bins = reg_max + 1
    d = (torch.softmax(nhwc(bbox_logits, 4 * bins).reshape(-1, 4, bins), 2) * torch.arange(bins.__float__())).sum(2)
    d = d * stride
    a = (torch.softmax(nhwc(angle_logits, bins), 1) * torch.linspace(-math.pi / 2, math.pi / 2, bins)).sum(1)
    left, top, right, bottom = d.unbind(1)
    ox, oy = (right - left) / 2, (bottom - top) / 2
    cx = points[:, 0] + ox * a.cos() - oy * a.sin()
    cy = points[:, 1] + ox * a.sin() + oy * a.cos()
    return torch.stack([cx, cy, left + right, top + bottom, a], dim=1)


def test_fcos_bckd_matches_the_formulas(tmp_path):
    from test_successor_losses import shapely_giou

    losses, level_labels, points, student, teacher = fcos_student_run(tmp_path, "synthetic-fcos/student-r18-bckd")
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_bckd_cls", "loss_bckd_iou"}
    num_pos = max(sum(int((lvl < 5).sum()) for lvl in level_labels), 1)
    (s_cls, s_box, s_ang, _), (t_cls, t_box, t_ang, _) = student, teacher
    with torch.no_grad():
        for level, stride in enumerate([8, 16, 32, 64, 128]):
            s, t = nhwc(s_cls[level], 5), nhwc(t_cls[level], 5)
            assert float(losses["loss_bckd_cls"][level]) == pytest.approx(float(binary_kd(s, t) / num_pos), rel=1e-4)
            weight = (torch.sigmoid(t) - torch.sigmoid(s)).abs().max(dim=1).values
            pts = points[level].repeat(2, 1)
            # BCKD's box term is 1 − GIoU (C: the convex hull of both boxes), as its authors' code
            giou = torch.tensor(shapely_giou(decode_fcos(pts, stride, s_box[level], s_ang[level]),
                                             decode_fcos(pts, stride, t_box[level], t_ang[level])))
            expected = 4.0 * (weight.double() * (1 - giou)).sum() / num_pos
            assert float(losses["loss_bckd_iou"][level]) == pytest.approx(float(expected), rel=1e-4)


def test_fcos_crosskd_runs_the_student_towers_through_the_teachers_head(tmp_path):
    model = build(tmp_path, "synthetic-fcos/student-r18-crosskd")
    head, teacher = model.bbox_head, model.teacher_model.bbox_head
    img, metas, gts, labels = batch()
    assert head.cross_convs == 1 and head.teacher_head is teacher
    with torch.no_grad():
        losses = model.forward_train(img, metas, gts, labels)
        assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_crosskd_cls", "loss_crosskd_ld"}
        level_labels, _ = fcos_labels(model, img, gts, labels)
        num_pos = max(sum(int((lvl < 5).sum()) for lvl in level_labels), 1)
        t_cls, t_box, t_ang, _ = teacher(model.teacher_model.extract_feat(img))
        for level, feat in enumerate(model.extract_feat(img)):
            # the student's first tower conv, then the teacher's second conv and predictors (its Scales too)
            cls_feat = teacher.cls_convs[1](head.cls_convs[0](feat))
            reg_feat = teacher.reg_convs[1](head.reg_convs[0](feat))
            cross_cls = teacher.conv_cls(cls_feat)
            cross_box = teacher.scales[level](teacher.conv_reg(reg_feat))
            cross_ang = teacher.scale_angle(teacher.conv_angle(reg_feat))
            expected_cls = binary_kd(nhwc(cross_cls, 5), nhwc(t_cls[level], 5)) / num_pos
            rows = kl_rows(fcos_rows(cross_box, cross_ang, 17), fcos_rows(t_box[level], t_ang[level], 17), 5.0)
            expected_ld = region_loss(10.0, rows.reshape(-1, 5).sum(1), (level_labels[level] < 5).float())
            assert float(losses["loss_crosskd_cls"][level]) == pytest.approx(float(expected_cls), rel=1e-4)
            assert float(losses["loss_crosskd_ld"][level]) == pytest.approx(float(expected_ld), rel=1e-4)


# ------------------------------------------------------------------------------------------
# Rotated ATSS


def test_atss_assigner_equals_mmrotates_where_that_runs_and_handles_small_levels(monkeypatch):
    """`ATSSObbAssigner` needs CUDA for its centre-in-gt test: here that op is replaced by a shapely
    reference (strict interior), and both assigners must agree anchor by anchor."""
    import numpy as np
    from mmrotate.core.bbox.assigners import atss_obb_assigner
    from shapely.geometry import Point, Polygon

    from rotld_cli.engine.models.atss import RotatedATSSAssigner

    def points_in_polygons(points, polygons):
        polys = [Polygon(np.asarray(p, dtype=np.float64).reshape(4, 2)) for p in polygons.tolist()]
        return torch.tensor([[float(poly.contains(Point(x, y))) for poly in polys] for x, y in points.tolist()])

    monkeypatch.setattr(atss_obb_assigner, "points_in_polygons", points_in_polygons)
    gen = torch.Generator().manual_seed(3)
    levels = [64, 16, 9]
    centres = torch.rand(sum(levels), 2, generator=gen) * 100
    sizes = torch.cat([torch.full((n, 2), 8.0 * 2**i) for i, n in enumerate(levels)])
    anchors = torch.cat([centres, sizes, torch.zeros(sum(levels), 1)], dim=1)
    gts = torch.tensor([[30.0, 40.0, 30.0, 12.0, 0.4], [70.0, 60.0, 16.0, 24.0, -0.9], [50.0, 52.0, 60.0, 50.0, 0.1]])
    gt_labels = torch.tensor([2, 0, 4])
    theirs = atss_obb_assigner.ATSSObbAssigner(topk=9, angle_version="le90").assign(
        anchors, levels, gts, None, gt_labels
    )
    ours = RotatedATSSAssigner(topk=9).assign(anchors, levels, gts, None, gt_labels)
    assert torch.equal(ours.gt_inds, theirs.gt_inds) and torch.equal(ours.labels, theirs.labels)
    assert int((ours.gt_inds > 0).sum()) >= 3
    # a level with fewer anchors than topk (the 1×1 top level of a 128² patch): mmrotate's topk fails there
    small = RotatedATSSAssigner(topk=9).assign(anchors[:65], [64, 1], gts, None, gt_labels)
    assert small.gt_inds.shape == (65,)


def test_atss_ld_region_is_its_positives_and_the_terms_match_the_formulas(tmp_path):
    model = build(tmp_path, "synthetic-atss/student-r18-ld-kd")
    head, teacher = model.bbox_head, model.teacher_model
    img, metas, gts, labels = batch("oc")
    with torch.no_grad():
        losses = model.forward_train(img, metas, gts, labels)
        assert set(losses) == {"loss_cls", "loss_bbox", "loss_ld", "loss_kd"}
        sizes = [f.shape[-2:] for f in model.extract_feat(img)]
        anchors, valid = head.get_anchors(sizes, metas, device="cpu")
        targets = head.get_targets(anchors, valid, gts, metas, gt_labels_list=labels, label_channels=5)
        level_labels, ld_regions = targets[0], targets[-2]
        s_cls, s_reg = head(model.extract_feat(img))
        t_cls, t_reg = teacher.bbox_head(teacher.extract_feat(img))
        assert head.num_anchors == 1
        for level in range(5):
            region = (level_labels[level].reshape(-1) < 5).float()
            assert torch.equal(ld_regions[level].reshape(-1), region)  # the ATSS positives, weight 1
            rows = kl_rows(nhwc(s_reg[level], 45).reshape(-1, 9), nhwc(t_reg[level], 45).reshape(-1, 9), 5.0)
            expected_ld = region_loss(10.0, rows.reshape(-1, 5).sum(1), region)
            expected_kd = region_loss(20.0, kl_rows(nhwc(s_cls[level], 5), nhwc(t_cls[level], 5), 5.0), region)
            assert float(losses["loss_ld"][level]) == pytest.approx(float(expected_ld), rel=1e-4)
            assert float(losses["loss_kd"][level]) == pytest.approx(float(expected_kd), rel=1e-4)
        assert sum(int((lvl < 5).sum()) for lvl in level_labels) > 0


def test_atss_binary_kd_student_puts_kd_on_every_anchor_over_the_positives(tmp_path):
    """`student-r18-ld-kd-binary` (the RetinaNet table's LD+KD): binary KD on every anchor the ATSS
    assigner does not ignore, / the number of positives; LD stays on the positives."""
    model = build(tmp_path, "synthetic-atss/student-r18-ld-kd-binary")
    head, teacher = model.bbox_head, model.teacher_model
    img, metas, gts, labels = batch("oc")
    with torch.no_grad():
        losses = model.forward_train(img, metas, gts, labels)
        sizes = [f.shape[-2:] for f in model.extract_feat(img)]
        anchors, valid = head.get_anchors(sizes, metas, device="cpu")
        targets = head.get_targets(anchors, valid, gts, metas, gt_labels_list=labels, label_channels=5)
        level_labels, level_weights = targets[0], targets[1]
        num_pos = sum(int((lvl < 5).sum()) for lvl in level_labels)
        s_cls = head(model.extract_feat(img))[0]
        t_cls = teacher.bbox_head(teacher.extract_feat(img))[0]
        assert num_pos > 0
        for level in range(5):
            kept = level_weights[level].reshape(-1) > 0
            expected = binary_kd(nhwc(s_cls[level], 5)[kept], nhwc(t_cls[level], 5)[kept]) / num_pos
            assert float(losses["loss_kd"][level]) == pytest.approx(float(expected), rel=1e-4)


def test_atss_crosskd_and_bckd_read_the_atss_targets(tmp_path):
    """The RetinaNet successors on ATSS: CrossKD's cross-head LD on the ATSS positives, BCKD over the
    ATSS positives' count."""
    img, metas, gts, labels = batch("oc")
    for name in ("synthetic-atss/student-r18-crosskd", "synthetic-atss/student-r18-bckd"):
        model = build(tmp_path, name)
        head, teacher = model.bbox_head, model.teacher_model.bbox_head
        with torch.no_grad():
            losses = model.forward_train(img, metas, gts, labels)
            feats = model.extract_feat(img)
            sizes = [f.shape[-2:] for f in feats]
            anchors, valid = head.get_anchors(sizes, metas, device="cpu")
            level_labels = head.get_targets(anchors, valid, gts, metas, gt_labels_list=labels, label_channels=5)[0]
            num_pos = sum(int((lvl < 5).sum()) for lvl in level_labels)
            t_cls, t_reg = teacher(model.teacher_model.extract_feat(img))
            for level, feat in enumerate(feats):
                region = (level_labels[level].reshape(-1) < 5).float()
                if "crosskd" in name:
                    cross_reg = teacher.retina_reg(teacher.reg_convs[1](head.reg_convs[0](feat)))
                    rows = kl_rows(nhwc(cross_reg, 45).reshape(-1, 9), nhwc(t_reg[level], 45).reshape(-1, 9), 5.0)
                    expected = region_loss(10.0, rows.reshape(-1, 5).sum(1), region)
                    assert float(losses["loss_crosskd_ld"][level]) == pytest.approx(float(expected), rel=1e-4)
                elif region.sum() > 0:  # the levels with positives (the RetinaNet BCKD's own rules elsewhere)
                    s_cls, _ = head(feats)
                    expected = binary_kd(nhwc(s_cls[level], 5), nhwc(t_cls[level], 5)) / num_pos
                    assert float(losses["loss_bckd_cls"][level]) == pytest.approx(float(expected), rel=1e-4)
        assert num_pos > 0


# ------------------------------------------------------------------------------------------
# Oriented R-CNN


def test_orcnn_teacher_roi_head_predicts_for_the_students_rois_and_the_terms_match(tmp_path):
    model = build(tmp_path, "synthetic-orcnn/student-r18-ld-kd")
    roi_head, teacher = model.roi_head, model.teacher_model.roi_head
    seen = {}
    student_forward, teacher_forward = roi_head._bbox_forward, teacher._bbox_forward

    def record(name, forward):
        def wrapped(x, rois):
            out = forward(x, rois)
            seen[name] = (rois, out["cls_score"], out["bbox_pred"])
            return out

        return wrapped

    roi_head._bbox_forward = record("student", student_forward)
    teacher._bbox_forward = record("teacher", teacher_forward)
    img, metas, gts, labels = batch()
    torch.manual_seed(1)
    losses = model.forward_train(img, metas, gts, labels)
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_ld", "loss_kd"} <= set(losses)
    s_rois, s_cls, s_reg = seen["student"]
    t_rois, t_cls, t_reg = seen["teacher"]
    assert torch.equal(s_rois, t_rois), "the teacher's RoI head must predict for the student's sampled RoIs"
    assert not t_cls.requires_grad and s_cls.requires_grad
    # the sampled RoIs' labels: gts are added as proposals, so positives exist
    with torch.no_grad():
        reg_max = model.roi_head.bbox_head.reg_max
        labels_per_roi = _roi_labels(model, s_rois, gts, labels)
        region = (labels_per_roi < 5).float()
        n_pos = int(region.sum())
        rows = kl_rows(s_reg.reshape(-1, reg_max + 1), t_reg.reshape(-1, reg_max + 1), 5.0).reshape(-1, 5).sum(1)
        expected_ld = region_loss(1.0, rows, region)
        expected_kd = region_loss(1.0, kl_rows(s_cls, t_cls, 5.0), torch.ones(len(s_cls)))
    assert n_pos > 0 and s_cls.shape[1] == 6  # 5 classes + background
    assert float(losses["loss_ld"]) == pytest.approx(float(expected_ld), rel=1e-4)
    assert float(losses["loss_kd"]) == pytest.approx(float(expected_kd), rel=1e-4)


def _roi_labels(model, rois, gts, labels):
    """Each sampled RoI's label by rotated IoU with the gts (≥ 0.5: the gt's class, else background 5)."""
    from mmcv.ops import box_iou_rotated

    out = torch.full((len(rois),), 5, dtype=torch.long)
    for image, (gt, lab) in enumerate(zip(gts, labels)):
        mine = rois[:, 0] == image
        iou = box_iou_rotated(rois[mine, 1:], gt)
        best, which = iou.max(dim=1)
        out[mine] = torch.where(best >= 0.5, lab[which], torch.full_like(which, 5))
    return out


# ------------------------------------------------------------------------------------------
# Gradients: the student only


@pytest.mark.parametrize(
    "name",
    [
        "synthetic-fcos/student-r18-ld-kd",
        "synthetic-fcos/student-r18-crosskd",
        "synthetic-atss/student-r18-bckd",
        "synthetic-orcnn/student-r18-ld-kd",
    ],
)
def test_distillation_gradients_reach_the_student_only(tmp_path, name):
    model = build(tmp_path, name)
    img, metas, gts, labels = batch("oc" if "atss" in name else "le90")
    losses = model.forward_train(img, metas, gts, labels)
    distill = [key for key in losses if key.startswith(("loss_ld", "loss_kd", "loss_bckd", "loss_crosskd"))]
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if k in distill)
    total.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher_model.parameters())
    assert not any(key.startswith("teacher") for key in model.state_dict())
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "the distillation terms train the student"


# ------------------------------------------------------------------------------------------
# Inference outside the engine (the ONNX runner's numpy post-processing)


def test_fcos_numpy_postprocess_equals_the_heads_get_bboxes_on_random_maps():
    """`point_detections_single` vs `RotatedFCOSHeadDistribution.get_bboxes` (top-k by score × centerness,
    integrals, distance decode, rescale, threshold, × centerness, class-wise NMS, cap)."""
    import numpy as np
    from mmcv import ConfigDict
    from mmrotate.models import build_head

    from rotld_cli.deploy.metadata import DetectionSettings, ModelMetadata, PointSettings
    from rotld_cli.deploy.parity import compare_detections
    from rotld_cli.deploy.postprocess import point_detections_single

    head = build_head(
        dict(
            type="RotatedFCOSHeadDistribution",
            num_classes=3,
            in_channels=8,
            feat_channels=8,
            stacked_convs=1,
            reg_max=16,
            strides=[8, 16, 32, 64, 128],
            norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
            bbox_coder=dict(type="DistanceAnglePointCoder", angle_version="le90"),
        )
    )
    cfg = ConfigDict(nms_pre=60, score_thr=0.2, nms=dict(iou_thr=0.5), max_per_img=40)
    gen = torch.Generator().manual_seed(0)
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    cls = [torch.randn(1, 3, h, w, generator=gen) * 3 for h, w in sizes]
    box = [torch.randn(1, 68, h, w, generator=gen) * 3 for h, w in sizes]
    ang = [torch.randn(1, 17, h, w, generator=gen) * 3 for h, w in sizes]
    ctr = [torch.randn(1, 1, h, w, generator=gen) for h, w in sizes]
    img_shape, scale = (90, 120, 3), np.array([0.5, 0.25, 0.5, 0.25], dtype=np.float32)
    ((boxes, labels),) = head.get_bboxes(
        cls, box, ang, ctr, [{"img_shape": img_shape, "scale_factor": scale}], cfg=cfg, rescale=True
    )
    theirs = [boxes[labels == c].numpy() for c in range(3)]
    meta = ModelMetadata(
        classes=["a", "b", "c"],
        angle_version="le90",
        reg_max=16,
        integral_project=head.integral.project.tolist(),
        integral_angle_project=head.integral_angle.project.tolist(),
        num_anchors=1,
        test_cfg=DetectionSettings(nms_pre=60, score_thr=0.2, iou_thr=0.5, max_per_img=40),
        family="fcos",
        points=PointSettings(strides=[8, 16, 32, 64, 128], offset=0.5),
    )
    meta.coder.angle_range = "le90"
    nhwc_maps = [
        [m[0].permute(1, 2, 0).numpy() for m in maps]
        for maps in (
            [c.sigmoid() for c in cls],
            [torch.cat([b, a], 1) for b, a in zip(box, ang)],
            [c.sigmoid() for c in ctr],
        )
    ]
    ours = point_detections_single(*nhwc_maps, img_shape[:2], scale, meta)
    assert sum(len(t) for t in theirs) == 40  # the cap is reached: ordering across classes matters
    report = compare_detections([theirs], [ours], meta.classes, 0.2)
    assert report.ok, report.problems
    assert report.max_box_diff < 1e-3 and report.max_score_diff < 1e-6
