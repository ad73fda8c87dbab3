"""Recipe -> mmcv Config with the standard mmdet 2.x keys that MMRotate 0.3.4 runs.

The mapping follows the seed's effective configs (method.md §5): every constant that a recipe
does not expose (coder, normalisation, FPN topology, pipeline order) is fixed here with the
seed's value. `compile_recipe` builds the plain dict (no mmcv needed); `build_config` wraps it.

`load_config` also accepts a seed-style `.py` config: mmcv executes such a file, so that is the
only path in rotld that runs code from a configuration (YAML recipes are data only).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from rotld_cli.engine.families import FAMILY_MODELS
from rotld_cli.errors import EngineMissingError, RotldError, UsageError
from rotld_cli.recipes import Recipe, display_path, img_scale, load_recipe

IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
FPN_IN_CHANNELS = {
    18: [64, 128, 256, 512],
    34: [64, 128, 256, 512],
    50: [256, 512, 1024, 2048],
    101: [256, 512, 1024, 2048],
}
STUDENT_HEADS = FAMILY_MODELS["retinanet"].student_heads
"""The rotated RetinaNet student head of each `distill.method` (`families.FAMILY_MODELS` has every family's)."""


# --------------------------------------------------------------------------------------------
# Public API


def build_config(
    recipe: Recipe,
    work_dir: str | os.PathLike[str] | None = None,
    teacher_checkpoint: str | None = None,
    teacher_model: dict[str, Any] | None = None,
):
    """The mmcv Config for `recipe` (a student's teacher recipe is compiled and checked too).

    `teacher_model` replaces the compiled `teacher.recipe` for a student whose teacher the caller
    has already checked (`engine.teacher.check_teacher`, e.g. from the recipe stored in the
    teacher's checkpoint); the caller then loads its weights, unless `teacher_checkpoint` is given.
    """
    mmcv = _mmcv()
    cfg = compile_recipe(recipe, work_dir=work_dir, teacher_checkpoint=teacher_checkpoint, teacher_model=teacher_model)
    return mmcv.Config(cfg)  # no filename: a `.yaml` one would make `cfg.dump()` emit YAML with Python tuples


def compile_recipe(
    recipe: Recipe,
    work_dir: str | os.PathLike[str] | None = None,
    teacher_checkpoint: str | None = None,
    teacher_model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config as a plain dict (the keys of an mmdet 2.x config file)."""
    get = recipe.get
    steps = get("schedule.lr_steps")
    clip = get("schedule.grad_clip")
    lr_config: dict[str, Any] = dict(policy="step", step=list(steps), gamma=get("schedule.lr_gamma"))
    if get("schedule.warmup") is not None:
        lr_config.update(
            warmup=get("schedule.warmup"),
            warmup_iters=get("schedule.warmup_iters"),
            warmup_ratio=get("schedule.warmup_ratio"),
        )
    if work_dir is None:
        work_dir = Path("work_dirs") / recipe.name.replace("/", "_")
    return dict(
        angle_version=get("model.angle_version"),
        model=model_dict(recipe, teacher_checkpoint=teacher_checkpoint, teacher_model=teacher_model),
        data=data_dict(recipe),
        optimizer=dict(
            type="SGD",
            lr=get("schedule.lr"),
            momentum=get("schedule.momentum"),
            weight_decay=get("schedule.weight_decay"),
        ),
        optimizer_config=dict(grad_clip=None if clip is None else dict(max_norm=clip, norm_type=2)),
        lr_config=lr_config,
        runner=dict(type="EpochBasedRunner", max_epochs=get("schedule.epochs")),
        checkpoint_config=dict(interval=get("runtime.checkpoint_interval")),
        evaluation=dict(interval=get("runtime.eval_interval"), metric="mAP"),
        log_config=dict(interval=get("runtime.log_interval"), hooks=[dict(type="TextLoggerHook")]),
        log_level="INFO",
        workflow=[("train", 1)],
        dist_params=dict(backend="nccl"),
        load_from=None,
        resume_from=None,
        opencv_num_threads=0,
        mp_start_method="fork",
        seed=get("runtime.seed"),
        gpu_ids=[0],
        work_dir=str(Path(work_dir).absolute()),
    )


def model_dict(
    recipe: Recipe, teacher_checkpoint: str | None = None, teacher_model: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `model` dict of the recipe's family (`families.py`), or its KD detector for a student."""
    get = recipe.get
    family = FAMILY_MODELS[recipe.family]
    depth = get("model.backbone.depth")
    pretrained = get("model.backbone.pretrained")
    backbone = dict(
        type="ResNet",
        depth=depth,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=get("model.backbone.frozen_stages"),
        zero_init_residual=False,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=get("model.backbone.norm_eval"),
        style="pytorch",
        init_cfg=None if pretrained is None else dict(type="Pretrained", checkpoint=pretrained),
    )
    width = get("model.neck.out_channels")
    parts = family.parts(recipe, width)
    neck = dict(type="FPN", in_channels=list(FPN_IN_CHANNELS[depth]), out_channels=width, num_outs=5,
                **parts.pop("neck"))
    train_cfg, test_cfg = parts.pop("train_cfg"), parts.pop("test_cfg")
    model: dict[str, Any] = dict(type=family.detector, backbone=backbone, neck=neck, **parts)
    if recipe.is_student:
        if teacher_model is None:  # the one teacher check (engine/teacher.py) on the student's teacher.recipe
            from rotld_cli.engine.teacher import checked_teacher_recipe

            teacher_model = model_dict(checked_teacher_recipe(recipe))
            ckpt = teacher_checkpoint if teacher_checkpoint is not None else get("teacher.checkpoint")
        else:  # a teacher the caller has checked: it loads the weights too (strictly, from the hashed file)
            ckpt = teacher_checkpoint
        distilled = model
        for key in family.distilled_head:
            distilled = distilled[key]
        distilled.update(_distill_args(recipe))
        if family.student_roi_head is not None:
            model["roi_head"]["type"] = family.student_roi_head
        model.update(
            type=family.student_detector,
            teacher_config=dict(model=copy.deepcopy(dict(teacher_model))),
            teacher_ckpt=None if ckpt is None else str(ckpt),
            output_feature=True,
            eval_teacher=True,
        )
    model["train_cfg"] = train_cfg
    model["test_cfg"] = test_cfg
    return model


def data_dict(recipe: Recipe) -> dict[str, Any]:
    """`data`: DOTADataset (rotld's `RotldDOTADataset`, which counts and names labels of classes outside
    `data.classes` instead of a KeyError) on `<root>/<split>/{annfiles,images}` (val/test read the patch annfiles)."""
    get = recipe.get
    scale = img_scale(recipe)
    angle = get("model.angle_version")
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="RResize", img_scale=scale),
        dict(
            type="RRandomFlip",
            flip_ratio=list(get("data.flip_ratio")),
            direction=list(get("data.flip_direction")),
            version=angle,
        ),
        dict(type="Normalize", **copy.deepcopy(IMG_NORM)),
        dict(type="Pad", size_divisor=32),
        dict(type="DefaultFormatBundle"),
        dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(
            type="MultiScaleFlipAug",
            img_scale=scale,
            flip=False,
            transforms=[
                dict(type="RResize"),
                dict(type="Normalize", **copy.deepcopy(IMG_NORM)),
                dict(type="Pad", size_divisor=32),
                dict(type="DefaultFormatBundle"),
                dict(type="Collect", keys=["img"]),
            ],
        ),
    ]
    root = Path(get("data.root"))

    def split(name: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
        directory = root / get(f"data.{name}")
        return dict(
            type="RotldDOTADataset",
            ann_file=str(directory / "annfiles") + os.sep,
            img_prefix=str(directory / "images") + os.sep,
            pipeline=pipeline,
            classes=list(recipe.classes),
            version=angle,
            difficulty=get("data.difficulty"),
        )

    return dict(
        samples_per_gpu=get("data.samples_per_gpu"),
        workers_per_gpu=get("data.workers_per_gpu"),
        train=split("train", train_pipeline),
        val=split("val", test_pipeline),
        test=split("test", copy.deepcopy(test_pipeline)),
    )


def teacher_model_cfg(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The compiled `model` of a teacher recipe (for a KD detector whose teacher_config is a YAML path).

    An `mmcv.ConfigDict`: MMRotate's heads read `train_cfg.assigner` by attribute.
    """
    recipe = load_recipe(path)
    if recipe.is_student:
        raise RotldError(f"{recipe.label}: a student recipe cannot be a teacher (it has a `teacher` section)")
    return _mmcv().ConfigDict(model_dict(recipe))


def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()):
    """A `.yaml/.yml` recipe (compiled by `build_config`) or a seed-style `.py` mmcv config.

    `.py` files are executed by mmcv: the only place where rotld runs code from a config, kept
    for the seed's configs. Their `--set` overrides go through mmcv's `merge_from_dict` (values
    parsed as YAML, no type checking).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".py":
        import yaml

        mmcv = _mmcv()
        if not Path(path).is_file():
            raise RotldError(f"{display_path(path)}: config file not found")
        cfg = mmcv.Config.fromfile(str(path))
        updates = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--set {item}: expected KEY=VALUE")
            updates[key.strip()] = yaml.safe_load(text)
        if updates:
            cfg.merge_from_dict(updates)
        _resolve_teacher_paths(cfg.get("model", {}), Path(path).resolve().parent)
        return cfg
    return build_config(load_recipe(path, overrides))


def _resolve_teacher_paths(model: dict, config_dir: Path) -> None:
    """Make a seed config's relative `teacher_config`/`teacher_ckpt` absolute; compile a YAML teacher.

    The seed resolved them against the CWD (it had to be launched from its repo root). We look
    beside the config first, then in the CWD, so both layouts work from anywhere.
    """
    for key in ("teacher_config", "teacher_ckpt"):
        value = model.get(key)
        if not isinstance(value, str) or Path(value).is_absolute():
            continue
        beside, in_cwd = config_dir / value, Path.cwd() / value
        model[key] = str(beside if beside.exists() or not in_cwd.exists() else in_cwd.resolve())
    teacher = model.get("teacher_config")
    if isinstance(teacher, str) and Path(teacher).suffix.lower() in (".yaml", ".yml") and Path(teacher).is_file():
        model["teacher_config"] = dict(model=teacher_model_cfg(Path(teacher)))  # the plugin never compiles recipes


# --------------------------------------------------------------------------------------------
# Pieces


def _kd_loss(recipe: Recipe) -> dict[str, Any]:
    """The LD head's classification KD: the seed's softmax KL, or the binary (sigmoid) KD."""
    get = recipe.get
    if get("distill.loss_kd.type", "softmax") == "binary":
        return dict(type="BinaryKDLoss", beta=get("distill.loss_kd.beta", 1.0),
                    loss_weight=get("distill.loss_kd.weight"))
    return dict(type="KnowledgeDistillationKLDivLoss", loss_weight=get("distill.loss_kd.weight"),
                T=get("distill.loss_kd.T"))


def _distill_args(recipe: Recipe) -> dict[str, Any]:
    """The student head's type and losses: LD's terms, plus the CrossKD or BCKD ones (`distill.method`)."""
    get = recipe.get
    args: dict[str, Any] = dict(
        loss_ld=dict(
            type="KnowledgeDistillationKLDivLoss", loss_weight=get("distill.loss_ld.weight"), T=get("distill.loss_ld.T")
        ),
        loss_kd=_kd_loss(recipe),
    )
    if recipe.family == "retinanet":  # the seed's region and feature imitation (the others: their positives)
        args.update(
            loss_im=dict(type="IMLoss", loss_weight=get("distill.loss_im.weight", 0.0)),
            imitation_method=get("distill.imitation_method", "finegrained"),
            ld_region_box=get("distill.ld_region_box", "seed"),
        )
    if get("distill.loss_kd.region", "ld") != "ld":  # the dense families (the recipe check refuses it for orcnn)
        args["kd_region"] = get("distill.loss_kd.region")
    method = get("distill.method", "ld")
    args["type"] = FAMILY_MODELS[recipe.family].student_heads[method]
    if method == "crosskd":
        args.update(
            cross_convs=get("distill.crosskd.cross_convs"),
            loss_cross_cls=dict(
                type="BinaryKDLoss",
                beta=get("distill.crosskd.loss_cls.beta"),
                loss_weight=get("distill.crosskd.loss_cls.weight"),
            ),
            loss_cross_ld=dict(
                type="KnowledgeDistillationKLDivLoss",
                loss_weight=get("distill.crosskd.loss_ld.weight"),
                T=get("distill.crosskd.loss_ld.T"),
            ),
        )
    elif method == "bckd":
        args.update(
            loss_bckd_cls=dict(
                type="BinaryKDLoss",
                beta=get("distill.bckd.loss_cls.beta"),
                loss_weight=get("distill.bckd.loss_cls.weight"),
            ),
            loss_bckd_iou=dict(type="RotatedIoUKDLoss", mode="giou", loss_weight=get("distill.bckd.loss_iou.weight")),
            iou_weight_thr=get("distill.bckd.loss_iou.weight_thr"),
        )
    return args


def crosskd_teacher_mismatch(student: Recipe, teacher: Recipe) -> str | None:
    """Why `teacher`'s head cannot finish the student's CrossKD towers (None when it can, or not CrossKD)."""
    if student.get("distill.method", "ld") != "crosskd":
        return None
    k = student.get("distill.crosskd.cross_convs")
    width_s, width_t = student.get("model.head.feat_channels"), teacher.get("model.head.feat_channels")
    if width_s != width_t:
        return (f"CrossKD feeds the student's head features to the teacher's head: model.head.feat_channels "
                f"differs (student {width_s}, teacher {width_t} in {teacher.label})")
    if k > teacher.get("model.head.stacked_convs"):
        return (f"distill.crosskd.cross_convs {k} exceeds the teacher's model.head.stacked_convs "
                f"({teacher.get('model.head.stacked_convs')} in {teacher.label})")
    return None


def _mmcv():
    try:
        import mmcv
    except ImportError as exc:
        raise EngineMissingError(str(exc)) from exc
    return mmcv
