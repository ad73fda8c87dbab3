"""Recipe -> mmcv Config: the compiled values are the seed's (method.md §5), and MMRotate builds them.

The dict tests need no engine (`compile_recipe` is pure Python); the `engine` tests build detectors
and datasets with mmrotate after `load_engine()` registered rotld's plugins.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml

from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.engine.config import compile_recipe, model_dict
from rotld_cli.errors import RotldError
from rotld_cli.recipes import RECIPES_DIR, bundled_recipes, img_scale, load_recipe

NO_DOWNLOAD = ["model.backbone.pretrained=null"]
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)

# method.md §1.4, §1.5, §5.1: the seed's effective head/anchors/coder/assigner/test settings
ANCHORS = dict(
    type="RotatedAnchorGenerator",
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[1.0, 0.5, 2.0],
    strides=[8, 16, 32, 64, 128],
)
CODER = dict(
    type="DeltaXYWHAOBBoxCoder",
    angle_range="oc",
    norm_factor=None,
    edge_swap=False,
    proj_xy=False,
    target_means=(0.0, 0.0, 0.0, 0.0, 0.0),
    target_stds=(1.0, 1.0, 1.0, 1.0, 1.0),
)
FOCAL = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
TRAIN_CFG = dict(
    assigner=dict(
        type="MaxIoUAssigner",
        pos_iou_thr=0.5,
        neg_iou_thr=0.4,
        min_pos_iou=0,
        ignore_iof_thr=-1,
        # the seed's RBboxOverlaps2D, computed only where it can be > 0 (same values: test_rotated_overlaps)
        iou_calculator=dict(type="SparseRBboxOverlaps2D"),
    ),
    allowed_border=-1,
    pos_weight=-1,
    debug=False,
)
TEST_CFG = dict(nms_pre=2000, min_bbox_size=0, score_thr=0.05, nms=dict(iou_thr=0.1), max_per_img=2000)
FPN = dict(
    type="FPN", in_channels=[64, 128, 256, 512], out_channels=256, start_level=1, add_extra_convs="on_input", num_outs=5
)


def backbone(depth: int, pretrained: str | None) -> dict:
    return dict(
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        zero_init_residual=False,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True,
        style="pytorch",
        init_cfg=None if pretrained is None else dict(type="Pretrained", checkpoint=pretrained),
    )


def head(kind: str, loss_bbox: dict, **extra) -> dict:
    return dict(
        type=kind,
        num_classes=15,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        reg_max=8,
        reg_decoded_bbox=True,
        assign_by_circumhbbox="oc",
        anchor_generator=ANCHORS,
        bbox_coder=CODER,
        loss_cls=FOCAL,
        loss_bbox=loss_bbox,
        **extra,
    )


GWD = dict(type="GDLoss", loss_type="gwd", loss_weight=5.0)
KLD = dict(type="GDLoss_v1", loss_type="kld", fun="log1p", tau=1.0, loss_weight=1.0)


def teacher_model(loss_bbox: dict) -> dict:
    return dict(
        type="RotatedRetinaNet",
        backbone=backbone(34, "torchvision://resnet34"),
        neck=FPN,
        bbox_head=head("RotatedRetinaHeadDistribution", loss_bbox),
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG,
    )


def test_dota1_gwd_student_compiles_to_exactly_the_seed_values(tmp_path):
    recipe = load_recipe("dota1/student-r18-gwd-ld-kd-1x")
    cfg = compile_recipe(recipe, work_dir=tmp_path / "w", teacher_checkpoint="t.pth")
    assert cfg["model"] == dict(
        type="KnowledgeDistillationRotatedSingleStageDetector",
        backbone=backbone(18, "torchvision://resnet18"),
        neck=FPN,
        bbox_head=head(
            "LDRotatedRetinaHead",
            GWD,
            loss_ld=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=10.0, T=5.0),
            loss_kd=dict(type="KnowledgeDistillationKLDivLoss", loss_weight=20.0, T=5.0),
            loss_im=dict(type="IMLoss", loss_weight=0.0),
            imitation_method="finegrained",
            ld_region_box="seed",
        ),
        teacher_config=dict(model=teacher_model(GWD)),
        teacher_ckpt="t.pth",
        output_feature=True,
        eval_teacher=True,
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG,
    )
    assert cfg["optimizer"] == dict(type="SGD", lr=0.0025, momentum=0.9, weight_decay=0.0001)
    assert cfg["optimizer_config"] == dict(grad_clip=dict(max_norm=35.0, norm_type=2))
    assert cfg["lr_config"] == dict(
        policy="step", step=[8, 11], gamma=0.1, warmup="linear", warmup_iters=500, warmup_ratio=1.0 / 3
    )
    assert cfg["runner"] == dict(type="EpochBasedRunner", max_epochs=12)
    assert cfg["checkpoint_config"] == dict(interval=12)
    assert cfg["evaluation"] == dict(interval=12, metric="mAP")
    assert cfg["log_config"] == dict(interval=50, hooks=[dict(type="TextLoggerHook")])
    assert cfg["workflow"] == [("train", 1)]
    assert (cfg["load_from"], cfg["resume_from"], cfg["seed"], cfg["gpu_ids"]) == (None, None, 0, [0])
    assert cfg["dist_params"] == dict(backend="nccl")
    assert cfg["angle_version"] == "oc"
    assert cfg["work_dir"] == str(tmp_path / "w")


def test_dota1_data_pipelines_and_paths():
    cfg = compile_recipe(load_recipe("dota1/teacher-r34-gwd-2x"))
    data = cfg["data"]
    root = RECIPES_DIR.parent.parent / "data" / "split_ss_dota1_0"  # the checkout top
    assert (data["samples_per_gpu"], data["workers_per_gpu"]) == (2, 2)  # total batch 2 on one device
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="RResize", img_scale=(1024, 1024)),
        dict(
            type="RRandomFlip",
            flip_ratio=[0.25, 0.25, 0.25],
            direction=["horizontal", "vertical", "diagonal"],
            version="oc",
        ),
        dict(type="Normalize", **NORM),
        dict(type="Pad", size_divisor=32),
        dict(type="DefaultFormatBundle"),
        dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(
            type="MultiScaleFlipAug",
            img_scale=(1024, 1024),
            flip=False,
            transforms=[
                dict(type="RResize"),
                dict(type="Normalize", **NORM),
                dict(type="Pad", size_divisor=32),
                dict(type="DefaultFormatBundle"),
                dict(type="Collect", keys=["img"]),
            ],
        ),
    ]
    for split, directory, pipeline in [
        ("train", "train", train_pipeline),
        ("val", "val", test_pipeline),
        ("test", "val", test_pipeline),
    ]:
        assert data[split] == dict(
            type="RotldDOTADataset",
            ann_file=f"{root / directory / 'annfiles'}/",
            img_prefix=f"{root / directory / 'images'}/",
            pipeline=pipeline,
            classes=list(DOTA_V1_0),
            version="oc",
            difficulty=100,
        ), split
    # the teacher's 2x schedule
    assert cfg["lr_config"]["step"] == [16, 22]
    assert cfg["runner"]["max_epochs"] == 24
    assert cfg["model"] == teacher_model(GWD)


def test_dota1_kld_recipes():
    teacher = compile_recipe(load_recipe("dota1/teacher-r34-kld-2x"))
    assert teacher["model"] == teacher_model(KLD)
    assert teacher["checkpoint_config"] == dict(interval=6)
    assert teacher["evaluation"] == dict(interval=6, metric="mAP")
    student = compile_recipe(load_recipe("dota1/student-r18-kld-ld-kd-1x"))
    bbox_head = student["model"]["bbox_head"]
    assert bbox_head["loss_bbox"] == KLD
    assert bbox_head["loss_ld"] == dict(type="KnowledgeDistillationKLDivLoss", loss_weight=15.0, T=5.0)
    assert bbox_head["loss_kd"] == dict(type="KnowledgeDistillationKLDivLoss", loss_weight=15.0, T=5.0)
    assert student["model"]["teacher_config"] == dict(model=teacher_model(KLD))
    assert student["model"]["teacher_ckpt"] is None
    assert (student["evaluation"]["interval"], student["runner"]["max_epochs"]) == (12, 12)


def test_baseline_is_the_distribution_head_without_a_teacher():
    cfg = compile_recipe(load_recipe("dota1/baseline-r18-gwd-1x"))
    assert cfg["model"] == dict(
        type="RotatedRetinaNet",
        backbone=backbone(18, "torchvision://resnet18"),
        neck=FPN,
        bbox_head=head("RotatedRetinaHeadDistribution", GWD),
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG,
    )


def test_teacher_checkpoint_from_the_recipe_and_the_argument():
    recipe = load_recipe("dota1/student-r18-gwd-ld-kd-1x", ["teacher.checkpoint=/ckpt/teacher.pth"])
    assert model_dict(recipe)["teacher_ckpt"] == "/ckpt/teacher.pth"
    assert model_dict(recipe, teacher_checkpoint="/other.pth")["teacher_ckpt"] == "/other.pth"


def test_a_checked_teacher_model_replaces_the_teacher_recipe():
    # a student whose teacher was trained with a narrower FPN: the bundled teacher.recipe no longer
    # matches, but the caller passes the teacher model it has checked itself
    student = load_recipe("dota1/student-r18-gwd-ld-kd-1x", ["model.neck.out_channels=128"])
    mismatch = r"FPN width 256 does not match the student's 128 \(model\.neck\.out_channels\)"
    with pytest.raises(RotldError, match=mismatch):
        compile_recipe(student)
    teacher = load_recipe("dota1/teacher-r34-gwd-2x", ["model.neck.out_channels=128"])
    cfg = compile_recipe(student, teacher_model=model_dict(teacher))
    assert cfg["model"]["teacher_config"] == dict(model=model_dict(teacher))
    assert cfg["model"]["teacher_config"]["model"]["neck"]["out_channels"] == 128
    plain = compile_recipe(student.without_teacher())["model"]
    assert plain["type"] == "RotatedRetinaNet"
    assert plain["bbox_head"]["type"] == "RotatedRetinaHeadDistribution"
    assert student.is_student and not student.without_teacher().is_student


def test_optional_schedule_parts_and_knobs():
    recipe = load_recipe(
        "dota1/baseline-r18-gwd-1x",
        [
            "schedule.grad_clip=null",
            "schedule.warmup=null",
            "model.backbone.pretrained=null",
            "model.backbone.depth=50",
            "data.classes=[ship, plane]",
            "data.img_scale=512",
        ],
    )
    cfg = compile_recipe(recipe)
    assert cfg["optimizer_config"] == dict(grad_clip=None)
    assert cfg["lr_config"] == dict(policy="step", step=[8, 11], gamma=0.1)
    assert cfg["model"]["backbone"]["init_cfg"] is None
    assert cfg["model"]["neck"]["in_channels"] == [256, 512, 1024, 2048]
    assert cfg["model"]["bbox_head"]["num_classes"] == 2
    assert cfg["data"]["train"]["classes"] == ["ship", "plane"]
    assert cfg["data"]["train"]["pipeline"][2] == dict(type="RResize", img_scale=(512, 512))
    assert cfg["data"]["val"]["pipeline"][1]["img_scale"] == (512, 512)


def test_synthetic_recipes_are_cpu_sized_and_teacher_student_line_up():
    teacher = compile_recipe(load_recipe("synthetic/teacher-r34-gwd"))["model"]
    student = compile_recipe(load_recipe("synthetic/student-r18-gwd-ld-kd"))
    model = student["model"]
    assert model["teacher_config"]["model"] == teacher
    assert model["neck"]["out_channels"] == teacher["neck"]["out_channels"] == 64
    # small synthetic objects: anchors from 16 px (octave_base_scale 2) instead of DOTA's 32 px
    assert model["bbox_head"]["anchor_generator"] == teacher["bbox_head"]["anchor_generator"] == {
        **ANCHORS,
        "octave_base_scale": 2,
    }
    assert model["bbox_head"]["stacked_convs"] == 2
    assert model["backbone"]["init_cfg"] is None and teacher["backbone"]["init_cfg"] is None  # no download
    assert model["backbone"]["frozen_stages"] == -1 and model["backbone"]["norm_eval"] is False
    assert student["data"]["train"]["pipeline"][2]["img_scale"] == (128, 128)  # the demo splits into 128² patches
    assert student["data"]["workers_per_gpu"] <= 1
    assert student["data"]["train"]["classes"] == ["plane", "small-vehicle", "large-vehicle", "ship", "storage-tank"]
    assert model["bbox_head"]["num_classes"] == teacher["bbox_head"]["num_classes"] == 5


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.neck.out_channels=128", "model.neck.out_channels"),
        ("model.head.reg_max=16", "model.head.reg_max"),
        ("model.anchors.octave_base_scale=8", "model.anchors"),
        ("data.classes=[ship]", "data.classes"),
    ],
)
def test_a_teacher_that_does_not_line_up_is_refused(override, key):
    recipe = load_recipe("dota1/student-r18-gwd-ld-kd-1x", [override])
    mismatch = rf"teacher\.recipe \S+teacher-r34-gwd-2x\.yaml: .* (not match|differ from) the student's .* \({key}\)"
    with pytest.raises(RotldError, match=mismatch):
        compile_recipe(recipe)


def test_a_student_cannot_be_a_teacher_and_the_teacher_recipe_must_exist(tmp_path):
    student = "dota1/student-r18-gwd-ld-kd-1x"
    recipe = load_recipe(student, [f"teacher.recipe={student}"])
    with pytest.raises(
        RotldError, match=r"teacher\.recipe: .*student-r18-gwd-ld-kd-1x\.yaml is itself a student recipe"
    ):
        compile_recipe(recipe)
    recipe = load_recipe(student, [f"teacher.recipe={tmp_path / 'nope.yaml'}"])
    with pytest.raises(RotldError, match=r"teacher\.recipe: .*nope\.yaml: no such recipe file"):
        compile_recipe(recipe)


# ------------------------------------------------------------------------------------------
# With the engine


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("torch")
    pytest.importorskip("mmrotate")
    from rotld_cli.engine import load_engine

    load_engine()
    from mmrotate.models import build_detector

    return build_detector


# The dataset folders repeat the dota1 models with another class list: one student of each is built.
DATASET_FOLDERS = {"dota15": "dota15/student-r18-gwd-crosskd-1x", "dota2": "dota2/student-r18-gwd-bckd-1x",
                   "hrsc": "hrsc/student-r18-gwd-ld-kd-6x", "dior": "dior/student-r18-gwd-ld-kd-1x"}
# Other families are built by their own tests (tests/test_families.py).
BUILT = [name for name, _, _ in bundled_recipes()
         if DATASET_FOLDERS.get(name.split("/")[0], name) == name and load_recipe(name).family == "retinanet"]


@pytest.mark.engine
def test_every_bundled_recipe_compiles_to_an_mmcv_config(engine):
    import mmcv

    from rotld_cli.engine.config import build_config

    for name, _, _ in bundled_recipes():
        recipe = load_recipe(name)
        cfg = build_config(recipe)
        assert isinstance(cfg, mmcv.Config), name
        assert _num_classes(cfg.model) == len(recipe.classes), name
        if recipe.is_student:
            assert _num_classes(cfg.model.teacher_config.model) == len(recipe.classes), name


def _num_classes(model) -> int:
    return (model.roi_head.bbox_head if "roi_head" in model else model.bbox_head).num_classes


@pytest.mark.engine
@pytest.mark.parametrize("name", BUILT)
def test_every_bundled_recipe_builds_with_mmrotate(engine, name):
    import mmcv
    import torch

    from rotld_cli.engine.config import build_config

    recipe = load_recipe(name, NO_DOWNLOAD)
    cfg = build_config(recipe)
    assert isinstance(cfg, mmcv.Config)
    model = engine(cfg.model)
    head_cfg = cfg.model.bbox_head
    from rotld_cli.engine.config import STUDENT_HEADS

    method = recipe.get("distill.method", "ld")
    expected_head = STUDENT_HEADS[method] if recipe.is_student else "RotatedRetinaHeadDistribution"
    assert type(model.bbox_head).__name__ == expected_head
    # 9 anchors per location; one sigmoid logit per class; (reg_max + 1) bins for each of the 5 box coordinates
    # the class counts of the datasets' lists, written out here (other folders: their recipe's list)
    counts = {"dota1": 15, "synthetic": 5, "dota15": 16, "dota2": 18, "hrsc": 1, "dior": 20}
    classes = counts.get(name.split("/")[0], len(recipe.classes))
    assert model.bbox_head.retina_cls.out_channels == 9 * classes
    for split in ("train", "val", "test"):  # the dataset gets the head's class list
        assert cfg.data[split].type == "RotldDOTADataset" and cfg.data[split].classes == list(recipe.classes)
    assert cfg.data.train.pipeline[2] == {"type": "RResize", "img_scale": img_scale(recipe)}
    assert model.bbox_head.retina_reg.out_channels == 9 * (head_cfg.reg_max + 1) * 5
    assert model.neck.fpn_convs[0].conv.out_channels == recipe.get("model.neck.out_channels")
    assert len(model.backbone.layer3) == {18: 2, 34: 6}[recipe.get("model.backbone.depth")]
    if recipe.is_student:
        teacher = model.teacher_model
        assert type(teacher).__name__ == "RotatedRetinaNet"
        assert len(teacher.backbone.layer3) == 6  # ResNet-34
        assert not any(key.startswith("teacher") for key in model.state_dict())
    x = torch.zeros(1, 3, 64, 64)
    feats = model.extract_feat(x)
    assert [f.shape[-1] for f in feats] == [8, 4, 2, 1, 1]


@pytest.mark.engine
def test_build_config_is_an_mmcv_config_that_dumps_and_reloads(engine, tmp_path):
    import mmcv

    from rotld_cli.engine.config import build_config

    cfg = build_config(load_recipe("dota1/student-r18-gwd-ld-kd-1x"), work_dir=tmp_path / "w")
    dumped = tmp_path / "cfg.py"
    cfg.dump(str(dumped))
    again = mmcv.Config.fromfile(str(dumped))
    assert again.model.bbox_head.loss_ld.loss_weight == 10.0
    assert again.lr_config.warmup_ratio == pytest.approx(1 / 3)
    assert again.data.train.type == "RotldDOTADataset"
    assert again.work_dir == str(tmp_path / "w")
    assert cfg.dump() == cfg.pretty_text  # Python text, never YAML with !!python/tuple tags


@pytest.mark.engine
def test_teacher_model_cfg_and_the_kd_detector_reading_a_yaml_teacher(engine):
    from mmcv import ConfigDict

    from rotld_cli.engine.config import teacher_model_cfg

    path = RECIPES_DIR / "synthetic" / "teacher-r34-gwd.yaml"
    assert teacher_model_cfg(path) == model_dict(load_recipe(path))
    with pytest.raises(RotldError, match="a student recipe cannot be a teacher"):
        teacher_model_cfg(RECIPES_DIR / "synthetic" / "student-r18-gwd-ld-kd.yaml")
    model_cfg = compile_recipe(load_recipe("synthetic/student-r18-gwd-ld-kd"))["model"]
    model_cfg["teacher_config"] = str(path)  # the plugin never compiles recipes: the config layer does
    with pytest.raises(RotldError, match=r"teacher-r34-gwd\.yaml: expected an mmcv \.py config"):
        engine(ConfigDict(model_cfg))
    model_cfg["teacher_config"] = dict(model=teacher_model_cfg(path))
    model = engine(ConfigDict(model_cfg))
    assert len(model.teacher_model.backbone.layer3) == 6


@pytest.mark.engine
def test_load_config_yaml_and_seed_style_python(engine, tmp_path):
    from rotld_cli.engine.config import build_config, load_config

    path = RECIPES_DIR / "dota1" / "baseline-r18-gwd-1x.yaml"
    cfg = load_config(path, ["schedule.lr=0.01"])
    assert cfg.optimizer.lr == 0.01
    assert cfg.model == build_config(load_recipe(path, ["schedule.lr=0.01"])).model
    py = tmp_path / "seed.py"
    py.write_text("optimizer = dict(type='SGD', lr=0.0025)\nrunner = dict(type='EpochBasedRunner', max_epochs=12)\n")
    cfg = load_config(py, ["runner.max_epochs=3", "optimizer.lr=0.1"])
    assert (cfg.runner.max_epochs, cfg.optimizer.lr) == (3, 0.1)
    with pytest.raises(RotldError, match="config file not found"):
        load_config(tmp_path / "missing.py")


def _dota_split(dota_samples: Path, split_dir: Path) -> list[tuple[str, int]]:
    """One real DOTA image as a split: images/P0706.png + annfiles/P0706.txt (labelTxt without headers)."""
    from rotld_cli.dota.formats import format_annfile_line, read_label_file, write_annfile

    (split_dir / "images").mkdir(parents=True)
    shutil.copy(dota_samples / "images" / "P0706.png", split_dir / "images" / "P0706.png")
    labels = read_label_file(dota_samples / "labelTxt" / "P0706.txt")
    write_annfile(
        split_dir / "annfiles" / "P0706.txt",
        [format_annfile_line(obj.poly, obj.name, obj.difficulty) for obj in labels.objects],
    )
    return [(obj.name, obj.poly) for obj in labels.objects]


@pytest.mark.engine
def test_compiled_data_config_loads_real_dota_patches(engine, dota_samples, tmp_path):
    import cv2
    import numpy as np
    from mmrotate.datasets import build_dataset

    from rotld_cli.engine.config import build_config

    objects = _dota_split(dota_samples, tmp_path / "split" / "train")
    shutil.copytree(tmp_path / "split" / "train", tmp_path / "split" / "val")
    recipe = load_recipe("dota1/baseline-r18-gwd-1x", [*NO_DOWNLOAD, f"data.root={tmp_path / 'split'}"])
    cfg = build_config(recipe)
    train = build_dataset(cfg.data.train)
    assert len(train) == 1
    ann = train.get_ann_info(0)
    # DOTADataset keeps boxes whose minAreaRect sides are both >= 2 px (method.md §5.2)
    kept = []
    for name, poly in objects:
        (_, _), (w, h), _ = cv2.minAreaRect(np.asarray(poly, dtype=np.float32).reshape(4, 2))
        if w >= 2 and h >= 2:
            kept.append(DOTA_V1_0.index(name))
    assert ann["labels"].tolist() == kept
    sample = train[0]
    img = sample["img"].data
    assert img.shape[0] == 3 and img.shape[1] % 32 == 0 and img.shape[2] % 32 == 0
    assert max(img.shape[1:]) <= math.ceil(1024 / 32) * 32
    val = build_dataset(cfg.data.val, dict(test_mode=True))
    assert len(val) == 1
    assert val.get_ann_info(0)["labels"].tolist() == kept
    # a class list given in the recipe reaches both the dataset's label map and the head
    reversed_classes = "[" + ", ".join(reversed(DOTA_V1_0)) + "]"
    cfg = build_config(load_recipe(recipe.source, [*recipe.overrides, f"data.classes={reversed_classes}"]))
    assert build_dataset(cfg.data.train).get_ann_info(0)["labels"].tolist() == [14 - k for k in kept]
    assert cfg.model.bbox_head.num_classes == 15


def test_bundled_recipe_files_are_plain_yaml():
    for path in RECIPES_DIR.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
