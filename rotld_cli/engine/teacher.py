"""The teacher of a distillation run: checked against the student before anything is built.

Why a separate step: a teacher that cannot teach this student (a plain head, another reg_max,
other classes or angle convention, other anchors) would either crash at the first iteration
or, worse, train the student towards noise. Each mismatch is one line naming the field. The
weights are then loaded strictly into the teacher model, from the very file whose SHA-256 the
run records; they never enter the student's checkpoints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rotld_cli.engine import checkpoints as ckpt
from rotld_cli.engine.checkpoints import stored_recipe
from rotld_cli.errors import RotldError
from rotld_cli.recipes import Recipe, load_recipe


@dataclass
class TeacherInfo:
    """What a distill run records about its teacher (never its weights)."""

    path: Path
    sha256: str
    model_cfg: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def check_teacher(student: Recipe, teacher_path: Path, teacher_recipe: str | None = None) -> TeacherInfo:
    """Refuse a teacher that cannot teach this student; every mismatch is one line naming the field.

    What the weights say comes first: a distribution head has the `bbox_head.integral.project`
    buffer, whose length is reg_max + 1 (a plain rotated RetinaNet head has none). Classes and the
    angle version come from the checkpoint's metadata, else from the teacher's recipe. That recipe
    (which builds the teacher model) is `--teacher-recipe`, else the one stored in the checkpoint,
    else the student's `teacher.recipe`; its anchors and FPN width must match the student's, since
    soft targets and features are compared anchor by anchor.
    """
    from rotld_cli.engine.config import crosskd_teacher_mismatch, model_dict

    loaded = ckpt.load_checkpoint(teacher_path, what="--teacher")
    meta = loaded.get("meta") or {}
    state = {k.removeprefix("module."): v for k, v in loaded["state_dict"].items()}
    where = f"--teacher {teacher_path}"
    student_cfg = model_dict(without_teacher(student))
    head_s = student_cfg["bbox_head"]
    project = state.get("bbox_head.integral.project")
    if project is None:
        kind = "a plain rotated RetinaNet head" if "bbox_head.retina_reg.weight" in state else "no RetinaNet head"
        raise RotldError(
            f"{where}: head is not a distribution head ({kind}: no bbox_head.integral.project); LD needs the "
            "teacher's box distributions: train it with `rotld train-teacher` and a distribution-head recipe"
        )
    reg_t, reg_s = int(project.numel()) - 1, int(head_s.get("reg_max", 8))
    if reg_t != reg_s:
        raise RotldError(f"{where}: reg_max {reg_t} does not match the student's reg_max {reg_s} (model.head.reg_max)")
    teacher = load_recipe(teacher_recipe) if teacher_recipe is not None else stored_recipe(meta, teacher_path)
    if teacher is None:
        teacher = load_recipe(student.get("teacher.recipe"))
    classes_t, classes_s = list(meta.get("classes") or teacher.classes), list(student.classes)
    if classes_t != classes_s:
        raise RotldError(f"{where}: classes {_short_list(classes_t)} do not match the student's classes "
                         f"{_short_list(classes_s)} (data.classes)")
    angle_t = meta.get("angle_version") or teacher.get("model.angle_version")
    angle_s = student.get("model.angle_version")
    if angle_t != angle_s:
        raise RotldError(
            f"{where}: angle version {angle_t!r} does not match the student's {angle_s!r} (model.angle_version)"
        )
    teacher_cfg = model_dict(without_teacher(teacher))
    head_t = teacher_cfg["bbox_head"]
    if head_t["anchor_generator"] != head_s["anchor_generator"]:
        raise RotldError(f"{where}: anchors {head_t['anchor_generator']} do not match the student's "
                         f"{head_s['anchor_generator']} (model.anchors)")
    width_t, width_s = teacher_cfg["neck"]["out_channels"], student_cfg["neck"]["out_channels"]
    if width_t != width_s:
        raise RotldError(
            f"{where}: FPN width {width_t} does not match the student's {width_s} (model.neck.out_channels)"
        )
    problem = crosskd_teacher_mismatch(student, teacher)
    if problem is not None:
        raise RotldError(f"{where}: {problem}")
    return TeacherInfo(path=teacher_path.resolve(), sha256=ckpt.sha256_file(teacher_path), model_cfg=teacher_cfg,
                       state_dict=state)


def _short_list(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_teacher_weights(model: Any, teacher: TeacherInfo) -> None:
    """Strict: a teacher checkpoint that does not fit the teacher model would silently teach noise."""
    try:
        result = model.teacher_model.load_state_dict(teacher.state_dict, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise RotldError(f"--teacher {teacher.path}: the weights do not fit the teacher's recipe ({detail})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        kind = "lacks" if missing else "has an unexpected"
        raise RotldError(
            f"--teacher {teacher.path}: the checkpoint {kind} weight {first!r} for the teacher model "
            f"({len(missing)} missing, {len(unexpected)} unexpected); is it a checkpoint of this teacher recipe?"
        )


def without_teacher(recipe: Recipe) -> Recipe:
    """A copy of a student recipe without its teacher/distill sections (its plain model)."""
    clone = copy.copy(recipe)
    clone.data = {k: v for k, v in recipe.data.items() if k not in ("teacher", "distill")}
    return clone
