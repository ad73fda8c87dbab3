"""A config written the seed's way builds by type name with mmrotate's builder and trains a step.

The student config mirrors `configs/ld/rotated_retinanet_distribution_hbb_gwd_r18_r34_fpn_1x_dota_oc.py`
(after inheritance): LD T=5 weight 10, KD T=5 weight 20, IM weight 0, 'finegrained', reg_max 8,
GDLoss gwd weight 5, R-34 teacher with a `RotatedRetinaHeadDistribution` head. FPN width is 64
instead of 256 to keep the test fast. The training step runs on a real DOTA crop.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.engine

CROP = (256, 160, 256)  # x0, y0, side of a P1888 crop with a row of large vehicles

MODEL_TEMPLATE = """
def retinanet(depth, bbox_head):
    return dict(
        type='RotatedRetinaNet',
        backbone=dict(type='ResNet', depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      zero_init_residual=False, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
                      style='pytorch', init_cfg=None),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=64, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=bbox_head,
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                          ignore_iof_thr=-1, iou_calculator=dict(type='RBboxOverlaps2D')),
            allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=2000, min_bbox_size=0, score_thr=0.05, nms=dict(iou_thr=0.1), max_per_img=2000))


def head(type, **extra):
    return dict(
        type=type, num_classes=15, in_channels=64, stacked_convs=4, feat_channels=64, reg_max=8,
        reg_decoded_bbox=True, assign_by_circumhbbox='oc',
        anchor_generator=dict(type='RotatedAnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[1.0, 0.5, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHAOBBoxCoder', angle_range='oc', norm_factor=None, edge_swap=False,
                        proj_xy=False, target_means=(.0, .0, .0, .0, .0), target_stds=(1.0, 1.0, 1.0, 1.0, 1.0)),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GDLoss', loss_type='gwd', loss_weight=5.0),
        **extra)
"""

TEACHER_CONFIG = (
    MODEL_TEMPLATE
    + """
model = retinanet(34, head('RotatedRetinaHeadDistribution'))
optimizer = dict(type='SGD', lr=0.0025, momentum=0.9, weight_decay=0.0001)
"""
)

STUDENT_CONFIG = (
    MODEL_TEMPLATE
    + """
TEACHER = {teacher}
model = retinanet(18, head(
    'LDRotatedRetinaHead',
    loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=10, T=5),
    loss_kd=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=20, T=5),
    loss_im=dict(type='IMLoss', loss_weight=0),
    imitation_method='finegrained'))
model.update(type='KnowledgeDistillationRotatedSingleStageDetector', teacher_config=TEACHER,
             teacher_ckpt={ckpt}, output_feature=True{extra})
optimizer = dict(type='SGD', lr=0.0025, momentum=0.9, weight_decay=0.0001)
"""
)


@pytest.fixture(scope="module")
def engine():
    from rotld_cli.engine import load_engine

    load_engine()


def write_configs(
    folder, teacher="dict(model=retinanet(34, head('RotatedRetinaHeadDistribution')))", ckpt=None, extra=""
):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher_gwd_r34.py").write_text(TEACHER_CONFIG)
    student = folder / "ld_gwd_r18_r34.py"
    student.write_text(STUDENT_CONFIG.format(teacher=teacher, ckpt=repr(ckpt), extra=extra))
    return student


def build(path):
    import mmcv
    from mmrotate.models import build_detector

    return build_detector(mmcv.Config.fromfile(str(path)).model)


@pytest.fixture(scope="module")
def real_batch(dota_samples):
    """A 256² crop of P1888 (normalised like the seed's pipeline) with its OBBs ('oc') and labels."""
    import cv2
    from mmrotate.core import poly2obb_np

    from rotld_cli.dota.classes import DOTA_V1_0
    from rotld_cli.dota.formats import read_label_file

    x0, y0, side = CROP
    bgr = cv2.imread(str(dota_samples / "images" / "P1888.png"))[y0 : y0 + side, x0 : x0 + side]
    rgb = bgr[..., ::-1].astype(np.float32)
    rgb = (rgb - np.array([123.675, 116.28, 103.53], np.float32)) / np.array([58.395, 57.12, 57.375], np.float32)
    boxes, labels = [], []
    for obj in read_label_file(dota_samples / "labelTxt" / "P1888.txt").objects:
        poly = np.asarray(obj.poly, dtype=np.float32).reshape(4, 2) - np.array([x0, y0], np.float32)
        if poly.min() >= 0 and poly.max() < side:
            boxes.append(poly2obb_np(poly.reshape(-1), "oc"))
            labels.append(DOTA_V1_0.index(obj.name))
    assert len(boxes) >= 5
    meta = dict(
        img_shape=(side, side, 3), pad_shape=(side, side, 3), ori_shape=(side, side, 3), scale_factor=1.0, flip=False
    )
    return dict(
        img=torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None],
        img_metas=[meta],
        gt_bboxes=[torch.tensor(np.array(boxes), dtype=torch.float32)],
        gt_labels=[torch.tensor(labels)],
    )


def test_seed_style_config_builds_by_name_and_trains_one_step(engine, tmp_path, real_batch):
    import mmcv
    from mmcv.runner import build_optimizer

    path = write_configs(tmp_path)
    model = build(path)
    model.init_weights()
    head = model.bbox_head
    assert type(model).__name__ == "KnowledgeDistillationRotatedSingleStageDetector"
    assert type(head).__name__ == "LDRotatedRetinaHead" and head.reg_max == 8 and head.imitation_method == "finegrained"
    assert (head.loss_ld.T, head.loss_ld.loss_weight, head.loss_kd.T, head.loss_kd.loss_weight) == (5, 10, 5, 20)
    assert (
        head.loss_im.loss_weight == 0
        and type(head.loss_bbox).__name__ == "GDLoss"
        and head.loss_bbox.loss_weight == 5.0
    )
    assert type(model.teacher_model.bbox_head).__name__ == "RotatedRetinaHeadDistribution"
    assert model.teacher_model.backbone.depth == 34

    optimizer = build_optimizer(model, mmcv.Config.fromfile(str(path)).optimizer)
    student_before = model.bbox_head.retina_reg.weight.detach().clone()
    teacher_before = [p.detach().clone() for p in model.teacher_model.parameters()]
    model.train()
    outputs = model.train_step(dict(real_batch, img_metas=[dict(m) for m in real_batch["img_metas"]]), optimizer)
    optimizer.zero_grad()
    outputs["loss"].backward()
    optimizer.step()
    log = outputs["log_vars"]
    assert {"loss_cls", "loss_bbox", "loss_ld", "loss_kd", "loss_im", "loss"} <= set(log)
    assert log["loss_ld"] > 0 and log["loss_kd"] > 0 and log["loss_bbox"] > 0 and log["loss_im"] == 0
    assert np.isfinite(log["loss"])
    assert not torch.equal(model.bbox_head.retina_reg.weight.detach(), student_before)
    assert all(torch.equal(p, q) for p, q in zip(model.teacher_model.parameters(), teacher_before))


def test_teacher_config_path_is_relative_to_the_config(engine, tmp_path, monkeypatch):
    from rotld_cli.errors import RotldError

    path = write_configs(
        tmp_path / "configs", teacher="'teacher_gwd_r34.py'", extra=f", config_dir={str(tmp_path / 'configs')!r}"
    )
    monkeypatch.chdir(tmp_path)  # the seed resolved against the working directory: this would fail
    assert build(path).teacher_model.backbone.depth == 34
    orphan = write_configs(tmp_path / "orphan", teacher="'teacher_gwd_r34.py'")
    with pytest.raises(RotldError, match=r"teacher_config: file not found: teacher_gwd_r34\.py"):
        build(orphan)


def test_teacher_config_from_a_yaml_recipe(engine, tmp_path, monkeypatch):
    import mmcv
    from mmrotate.models import build_detector

    from rotld_cli.engine import config
    from rotld_cli.errors import RotldError

    teacher_model = mmcv.Config.fromfile(str(write_configs(tmp_path).parent / "teacher_gwd_r34.py")).model
    calls = []
    monkeypatch.setattr(config, "teacher_model_cfg", lambda p: calls.append(p) or teacher_model.to_dict())
    (tmp_path / "teacher.yaml").write_text("model: r34\n")
    path = write_configs(tmp_path, teacher="'teacher.yaml'", extra=f", config_dir={str(tmp_path)!r}")
    # the config layer compiles a YAML teacher; the plugin itself never compiles recipes
    assert build_detector(config.load_config(path).model).teacher_model.backbone.depth == 34
    assert calls == [tmp_path / "teacher.yaml"]
    with pytest.raises(RotldError, match=r"teacher\.yaml: expected an mmcv \.py config"):
        build(path)


def test_bad_teacher_dict_is_refused(engine, tmp_path):
    from rotld_cli.errors import RotldError

    with pytest.raises(RotldError, match="'model' key"):
        build(write_configs(tmp_path, teacher="dict(depth=34)"))


def test_teacher_checkpoint_loads_weights_only(engine, tmp_path, caplog):
    from rotld_cli.errors import RotldError

    source = build(write_configs(tmp_path / "a")).teacher_model.state_dict()
    torch.save(
        {"meta": {"epoch": 24, "CLASSES": ("plane",)}, "state_dict": {f"module.{k}": v for k, v in source.items()}},
        tmp_path / "r34.pth",
    )
    loaded = build(
        write_configs(tmp_path, ckpt="r34.pth", extra=f", config_dir={str(tmp_path)!r}")
    ).teacher_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items())

    partial = {k: v for k, v in source.items() if k.startswith("backbone.")}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with caplog.at_level("WARNING", logger="rotld_cli.engine.models.kd_detector"):
        build(write_configs(tmp_path, ckpt="partial.pth", extra=f", config_dir={str(tmp_path)!r}"))
    assert "missing keys in source state_dict" in caplog.text

    torch.save({"state_dict": source, "meta": {"hook": types.SimpleNamespace(x=1)}}, tmp_path / "pickled.pth")
    with pytest.raises(RotldError, match=r"pickled\.pth: holds Python objects that a safe load refuses "
                                         r"\(types\.SimpleNamespace\); pass --trust-checkpoint"):
        build(write_configs(tmp_path, ckpt="pickled.pth", extra=f", config_dir={str(tmp_path)!r}"))


def test_unreadable_teacher_checkpoint_is_one_clear_error(engine, tmp_path):
    from rotld_cli.errors import RotldError

    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RotldError, match=r"teacher_ckpt \S*broken\.pth: "):
        build(write_configs(tmp_path, ckpt="broken.pth", extra=f", config_dir={str(tmp_path)!r}"))
