"""The KD detectors: a student that carries a frozen teacher (method.md §2), one- and two-stage.

The teacher is stored with `object.__setattr__`, so it is not a submodule: its parameters stay
out of `parameters()` (the optimizer and DDP never see them) and out of `state_dict()` (student
checkpoints hold no teacher weights). Because it is not a submodule, `nn.Module` would not move
it either; `_apply` is overridden so every device/dtype move of the student (`.cuda()`, `.cpu()`,
`.to()`, `.double()`, `.half()`, ...) reaches the teacher too. The seed only overrode `cuda()`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import mmcv
import torch
from mmcv.runner import load_checkpoint
from mmrotate.models.builder import ROTATED_DETECTORS, build_detector
from mmrotate.models.detectors.oriented_rcnn import OrientedRCNN
from mmrotate.models.detectors.single_stage import RotatedSingleStageDetector
from torch import nn

from rotld_cli.errors import RotldError

log = logging.getLogger(__name__)


def resolve_path(path: str | Path, config_dir: str | Path | None) -> Path:
    """A relative path in a config is relative to that config's directory when it is known."""
    path = Path(path).expanduser()
    if config_dir is not None and not path.is_absolute():
        path = Path(config_dir) / path
    return path


def build_teacher(teacher_config: Any, config_dir: str | Path | None = None) -> nn.Module:
    """The teacher as mmdet's KD detector builds it: a built model passes through, a config is built.

    `teacher_config` is a built detector, an mmcv Python config path, or a dict (a full config
    with 'model' or a model dict with 'type'). rotld YAML teacher recipes are compiled (and
    checked against the student) by the config layer before they get here.
    """
    if isinstance(teacher_config, nn.Module):
        return teacher_config
    source = "(dict)"
    if isinstance(teacher_config, (str, Path)):
        path = resolve_path(teacher_config, config_dir)
        if not path.is_file():
            raise RotldError(f"teacher_config: file not found: {teacher_config}")
        if path.suffix.lower() != ".py":
            raise RotldError(f"teacher_config {path}: expected an mmcv .py config (rotld recipes are compiled by "
                             "`rotld_cli.engine.config.load_config`)")
        teacher_config, source = mmcv.Config.fromfile(str(path)), str(path)
    if isinstance(teacher_config, mmcv.Config):
        teacher_config = teacher_config._cfg_dict
    if isinstance(teacher_config, dict) and "model" in teacher_config:
        teacher_config = teacher_config["model"]
    if not (isinstance(teacher_config, dict) and "type" in teacher_config):
        raise RotldError(
            f"teacher_config {source}: expected a config with a 'model' key or a model dict with a 'type' key"
        )
    return build_detector(mmcv.ConfigDict(copy.deepcopy(teacher_config)))  # builders may edit their config


class TeacherHolder:
    """A detector that carries a frozen teacher (method.md §2): the part every rotld KD detector shares.

    Args (of `init_teacher`):
        teacher_config: the built teacher, the path of its mmcv Python config, or a dict: its full
            config (with 'model') or its model dict (rotld passes the teacher it has checked).
        teacher_ckpt: teacher weights, loaded with mmcv's `load_checkpoint` (weights only, through
            rotld's safe loader); None keeps the teacher as built.
        eval_teacher: keep the teacher in eval mode (BN running statistics) during training.
        config_dir: directory of the config that named teacher_config/teacher_ckpt; relative
            paths are resolved against it (against the working directory when None).
    """

    def init_teacher(self, teacher_config: Any, teacher_ckpt: str | Path | None, eval_teacher: bool,
                     config_dir: str | Path | None) -> None:
        self.eval_teacher = eval_teacher
        self.teacher_model = build_teacher(teacher_config, config_dir)
        if teacher_ckpt is not None:
            try:  # mmcv's loader, routed through rotld's one safe loader (engine/compat.py)
                load_checkpoint(self.teacher_model, str(resolve_path(teacher_ckpt, config_dir)), map_location="cpu",
                                logger=log)
            except (RotldError, OSError, RuntimeError) as exc:
                raise RotldError(f"teacher_ckpt {exc}".splitlines()[0]) from exc
        self.teacher_model.train(not eval_teacher)
        # Frozen: the optimizer never sees the teacher, and with requires_grad off no gradient is
        # computed for it even where the student's features run through its head (CrossKD).
        self.teacher_model.requires_grad_(False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "teacher_model":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        """Every device/dtype move (cuda, cpu, to, half, double, ...) goes through here."""
        teacher = self.__dict__.get("teacher_model")
        if teacher is not None:
            teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        """The teacher stays in eval mode when eval_teacher, else follows the student."""
        super().train(mode)
        self.teacher_model.train(mode and not self.eval_teacher)
        return self


@ROTATED_DETECTORS.register_module()
class KnowledgeDistillationRotatedSingleStageDetector(TeacherHolder, RotatedSingleStageDetector):
    """Rotated single-stage student (any rotld family head) distilled from a frozen teacher on the same batch.

    `output_feature` is accepted for seed configs; the teacher's features are always passed to the
    head (the seed's False path shifted the head's arguments). See `TeacherHolder` for the rest.
    """

    def __init__(
        self,
        backbone: dict,
        neck: dict,
        bbox_head: dict,
        teacher_config: Any,
        output_feature: bool = False,
        teacher_ckpt: str | Path | None = None,
        eval_teacher: bool = True,
        train_cfg: dict | None = None,
        test_cfg: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
        config_dir: str | Path | None = None,
    ) -> None:
        super().__init__(backbone, neck, bbox_head, train_cfg, test_cfg, pretrained, init_cfg)
        self.output_feature = output_feature
        self.init_teacher(teacher_config, teacher_ckpt, eval_teacher, config_dir)
        attach = getattr(self.bbox_head, "attach_teacher_head", None)
        if attach is not None:
            attach(self.teacher_model.bbox_head)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None):
        """Student features, teacher features and outputs (no grad, same batch), then the student head."""
        super(RotatedSingleStageDetector, self).forward_train(img, img_metas)
        x = self.extract_feat(img)
        with torch.no_grad():
            teacher_x = self.teacher_model.extract_feat(img)
            out_teacher = self.teacher_model.bbox_head(teacher_x)
        return self.bbox_head.forward_train(
            x, out_teacher, teacher_x, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore
        )


@ROTATED_DETECTORS.register_module()
class KnowledgeDistillationOrientedRCNN(TeacherHolder, OrientedRCNN):
    """Oriented R-CNN student: its own RPN and RoI sampling; its RoI head (a `KDOrientedStandardRoIHead`)
    is distilled from the frozen teacher's RoI head run on the same RoIs (`orcnn.py`)."""

    def __init__(self, backbone: dict, rpn_head: dict, roi_head: dict, train_cfg: dict, test_cfg: dict,
                 teacher_config: Any, neck: dict | None = None, teacher_ckpt: str | Path | None = None,
                 eval_teacher: bool = True, output_feature: bool = True, pretrained: str | None = None,
                 init_cfg: dict | None = None, config_dir: str | Path | None = None) -> None:
        super().__init__(backbone, rpn_head, roi_head, train_cfg, test_cfg, neck=neck, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.init_teacher(teacher_config, teacher_ckpt, eval_teacher, config_dir)
        attach = getattr(self.roi_head, "attach_teacher_head", None)
        if attach is None:
            raise RotldError("KnowledgeDistillationOrientedRCNN needs a KDOrientedStandardRoIHead roi_head")
        attach(self.teacher_model.roi_head)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None, gt_masks=None,
                      proposals=None, **kwargs):
        """The student's two-stage step, with the teacher's features (no grad) for its RoI head."""
        with torch.no_grad():
            teacher_x = self.teacher_model.extract_feat(img)
        return super().forward_train(img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore, gt_masks, proposals,
                                     teacher_x=teacher_x, **kwargs)
