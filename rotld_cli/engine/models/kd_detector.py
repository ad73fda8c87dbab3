"""`KnowledgeDistillationRotatedSingleStageDetector`: a student that carries a frozen teacher (method.md §2).

The teacher is stored with `object.__setattr__`, so it is not a submodule: its parameters stay
out of `parameters()` (the optimizer and DDP never see them) and out of `state_dict()` (student
checkpoints hold no teacher weights). Because it is not a submodule, `nn.Module` would not move
it either; `_apply` is overridden so every device/dtype move of the student (`.cuda()`, `.cpu()`,
`.to()`, `.double()`, `.half()`, ...) reaches the teacher too. The seed only overrode `cuda()`.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from pathlib import Path
from typing import Any

import mmcv
import torch
from mmrotate.models.builder import ROTATED_DETECTORS, build_detector
from mmrotate.models.detectors.single_stage import RotatedSingleStageDetector
from torch import nn

from rotld_cli.errors import RotldError

YAML_SUFFIXES = (".yaml", ".yml")


def resolve_path(path: str | Path, config_dir: str | Path | None) -> Path:
    """A relative path in a config is relative to that config's directory when it is known."""
    path = Path(path).expanduser()
    if config_dir is not None and not path.is_absolute():
        path = Path(config_dir) / path
    return path


def _model_dict(config: Any, source: str) -> mmcv.ConfigDict:
    """Accept a full config (with a 'model' key) or a model dict (with a 'type' key).

    The result is a ConfigDict: mmrotate reads train_cfg/test_cfg by attribute.
    """
    if isinstance(config, mmcv.Config):
        config = config._cfg_dict
    if isinstance(config, dict) and "model" in config:
        return mmcv.ConfigDict(copy.deepcopy(config["model"]))
    if isinstance(config, dict) and "type" in config:
        return mmcv.ConfigDict(copy.deepcopy(config))
    raise RotldError(f"teacher_config {source}: expected a config with a 'model' key or a model dict with a 'type' key")


def _yaml_teacher_model_cfg(path: Path) -> dict:
    """rotld YAML recipes are translated by the engine's config module (imported only when needed)."""
    from rotld_cli.engine.config import teacher_model_cfg

    return teacher_model_cfg(path)


def teacher_model_cfg(teacher_config: Any, config_dir: str | Path | None = None) -> dict:
    """The teacher's model dict from a path (mmcv Python config or rotld YAML recipe) or a dict."""
    if not isinstance(teacher_config, (str, Path)):
        return _model_dict(teacher_config, "(dict)")
    path = resolve_path(teacher_config, config_dir)
    if not path.is_file():
        raise RotldError(f"teacher_config: file not found: {path}")
    if path.suffix.lower() in YAML_SUFFIXES:
        return _model_dict(_yaml_teacher_model_cfg(path), str(path))
    return _model_dict(mmcv.Config.fromfile(str(path)), str(path))


def load_teacher_checkpoint(model: nn.Module, path: Path) -> None:
    """Load weights only (compat's allowlist; full unpickling only under `trusted_checkpoints()`).

    Missing or unexpected keys warn, as mmcv's `load_checkpoint(strict=False)` did for the seed;
    a tensor whose shape does not fit the teacher is an error.
    """
    from rotld_cli.engine.compat import safe_torch_load

    if not path.is_file():
        raise RotldError(f"teacher_ckpt: file not found: {path}")
    try:
        checkpoint = safe_torch_load(torch.load, f"teacher_ckpt {path}", str(path), map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RotldError(f"teacher_ckpt {path}: not a readable PyTorch checkpoint ({detail})") from exc
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise RotldError(f"teacher_ckpt {path}: no state_dict found")
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:
        raise RotldError(
            f"teacher_ckpt {path}: does not fit the teacher model ({str(exc).splitlines()[-1].strip()})"
        ) from exc
    if missing or unexpected:
        warnings.warn(
            f"teacher_ckpt {path}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}",
            stacklevel=2,
        )


@ROTATED_DETECTORS.register_module()
class KnowledgeDistillationRotatedSingleStageDetector(RotatedSingleStageDetector):
    """Rotated single-stage student distilled from a frozen teacher run on the same batch.

    Args:
        teacher_config: path to the teacher's config (mmcv Python config or rotld YAML recipe), or
            a dict: the teacher's full config (with 'model') or its model dict.
        output_feature: accepted for seed configs; the teacher's features are always passed to
            the head (the seed's False path shifted the head's arguments).
        teacher_ckpt: teacher weights, loaded weights-only; None keeps the teacher as built.
        eval_teacher: keep the teacher in eval mode (BN running statistics) during training.
        config_dir: directory of the config that named teacher_config/teacher_ckpt; relative
            paths are resolved against it (against the working directory when None).
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
        self.eval_teacher = eval_teacher
        self.output_feature = output_feature
        self.teacher_model = build_detector(teacher_model_cfg(teacher_config, config_dir))
        if teacher_ckpt is not None:
            load_teacher_checkpoint(self.teacher_model, resolve_path(teacher_ckpt, config_dir))
        self.teacher_model.train(not eval_teacher)
        # Frozen: the optimizer never sees the teacher, and with requires_grad off no gradient is
        # computed for it even where the student's features run through its head (CrossKD).
        self.teacher_model.requires_grad_(False)
        attach = getattr(self.bbox_head, "attach_teacher_head", None)
        if attach is not None:
            attach(self.teacher_model.bbox_head)

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

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None):
        """Student features, teacher features and logits (no grad, same batch), then the LD head."""
        super(RotatedSingleStageDetector, self).forward_train(img, img_metas)
        x = self.extract_feat(img)
        with torch.no_grad():
            teacher_x = self.teacher_model.extract_feat(img)
            out_teacher = self.teacher_model.bbox_head(teacher_x)
        return self.bbox_head.forward_train(
            x, out_teacher, teacher_x, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore
        )
