"""The teacher of a distillation run: the one check that it can teach this student.

Why a separate step: a teacher that cannot teach this student (another detector family, a plain
head, another reg_max, other classes or angle convention, other anchors, point strides or FPN
width) would either crash at the first iteration or, worse, train the student towards noise.
`check_lines_up` is the only comparison: the recipe compiler runs it on a student's
`teacher.recipe`, and `check_teacher` runs it on a teacher checkpoint (what its weights and
metadata say first). Each mismatch is one line naming the field. The weights are then loaded
strictly into the teacher model, from the very file whose SHA-256 the run records; they never
enter the student's checkpoints.

torch is imported inside the functions: the recipe compiler calls `checked_teacher_recipe`
without the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotld_cli.engine.families import FAMILY_MODELS
from rotld_cli.errors import RotldError
from rotld_cli.recipes import FAMILIES, Recipe, display_path, load_recipe

if TYPE_CHECKING:
    import torch

COMMON_MATCH_KEYS = ("model.family", "model.head.reg_max", "data.classes", "model.angle_version")
FAMILY_MATCH_KEYS = {
    "retinanet": ("model.anchors", "model.neck.out_channels"),
    "atss": ("model.anchors", "model.neck.out_channels"),
    "fcos": ("model.fcos.strides", "model.neck.out_channels"),
    "orcnn": (),
}
"""What a teacher must share with its student, the family first: soft targets and features align anchor by
anchor (point by point for FCOS). An Oriented R-CNN teacher runs its own RoI head on the student's RoIs
over its own features, so only its bins, classes and angle convention must agree."""
REG_MAX_KEYS = {"orcnn": "model.roi_head.reg_max"}
"""Where a family keeps its reg_max when not in `model.head` (the RoI box head's distributions)."""

_MISMATCH = {
    "model.family": "{theirs} teacher cannot teach {mine} student (their outputs do not line up); train "
                    "the teacher with a recipe of the student's family",
    "model.head.reg_max": "reg_max {theirs} does not match the student's reg_max {mine}",
    "model.angle_version": "angle version {theirs!r} does not match the student's {mine!r}",
    "model.anchors": "anchors {theirs} do not match the student's {mine}",
    "model.fcos.strides": "point strides {theirs} do not match the student's {mine}",
    "model.neck.out_channels": "FPN width {theirs} does not match the student's {mine}",
}


def match_keys(student: Recipe) -> tuple[str, ...]:
    """The keys checked for this student's family, in the order they are checked."""
    return (*COMMON_MATCH_KEYS, *FAMILY_MATCH_KEYS[student.family])


@dataclass
class TeacherInfo:
    """What a distill run records about its teacher (never its weights)."""

    path: Path
    sha256: str
    model_cfg: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def _value(recipe: Recipe, key: str) -> Any:
    if key == "data.classes":
        return list(recipe.classes)
    if key == "model.family":
        return recipe.family
    if key == "model.head.reg_max":
        key = REG_MAX_KEYS.get(recipe.family, key)
    return recipe.get(key, None)


def check_lines_up(student: Recipe, teacher: Recipe, where: str, known: Mapping[str, Any] | None = None) -> None:
    """Refuse a teacher whose outputs would not line up with the student's: one line per mismatch.

    `known` holds what a checkpoint says about a key (its weights, its metadata); it wins over
    the teacher's recipe.
    """
    if teacher.is_student:
        raise RotldError(f"{where}: {teacher.label} is itself a student recipe")
    known = known or {}
    for key in match_keys(student):
        theirs, mine = known.get(key, _value(teacher, key)), _value(student, key)
        if key == "data.classes":
            theirs = list(theirs)
        if theirs != mine:
            if key == "data.classes":
                raise RotldError(f"{where}: {class_difference(theirs, mine)} (data.classes)")
            if key == "model.family":
                theirs, mine = (_a(FAMILIES[f].title if f in FAMILIES else str(f)) for f in (theirs, mine))
            raise RotldError(f"{where}: {_MISMATCH[key].format(theirs=theirs, mine=mine)} ({key})")
    from rotld_cli.engine.config import crosskd_teacher_mismatch

    problem = crosskd_teacher_mismatch(student, teacher)
    if problem is not None:
        raise RotldError(f"{where}: {problem}")


def checked_teacher_recipe(student: Recipe) -> Recipe:
    """The student's `teacher.recipe`, loaded and checked against the student."""
    path = student.get("teacher.recipe")
    where = f"{student.label}: teacher.recipe"
    if not Path(path).is_file():
        raise RotldError(f"{where}: {display_path(path)}: no such recipe file")
    teacher = load_recipe(path)
    if teacher.is_student:
        raise RotldError(f"{where}: {teacher.label} is itself a student recipe")
    check_lines_up(student, teacher, f"{where} {teacher.label}")
    return teacher


def check_teacher(student: Recipe, teacher_path: Path, teacher_recipe: str | None = None,
                  trust: bool = False) -> TeacherInfo:
    """Refuse a teacher checkpoint that cannot teach this student; every mismatch is one line naming the field.

    What the weights say comes first: a distribution head has the `bbox_head.integral.project`
    buffer, whose length is reg_max + 1 (a plain rotated RetinaNet head has none). Classes and the
    angle version come from the checkpoint's metadata, else from the teacher's recipe. That recipe
    (which builds the teacher model) is `--teacher-recipe`, else the one stored in the checkpoint,
    else the student's `teacher.recipe`; its anchors and FPN width must match the student's.
    """
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.engine.config import model_dict

    loaded = ckpt.load_checkpoint(teacher_path, what="--teacher", trust=trust)
    meta = loaded.get("meta") or {}
    state = {k.removeprefix("module."): v for k, v in loaded["state_dict"].items()}
    where = f"--teacher {teacher_path}"
    teacher = load_recipe(teacher_recipe) if teacher_recipe is not None else ckpt.stored_recipe(meta, teacher_path)
    if teacher is None:
        teacher = load_recipe(student.get("teacher.recipe"))
    family = weights_family(state) or teacher.family
    if family == "anchor":  # rotated RetinaNet and ATSS heads hold the same layers: the recipe tells them apart
        family = teacher.family if teacher.family in ("retinanet", "atss") else "retinanet"
    known: dict[str, Any] = {"model.family": family}
    if family == student.family:  # another family is refused on its family alone, before its bins are read
        head = ".".join(FAMILY_MODELS[family].distilled_head)
        project = state.get(f"{head}.integral.project")
        if project is None:
            raise RotldError(
                f"{where}: head is not a distribution head ({_plain_head(state)}: no {head}.integral.project); LD "
                "needs the teacher's box distributions: train it with `rotld train-teacher` and a recipe of the "
                f"{family} family"
            )
        known["model.head.reg_max"] = int(project.numel()) - 1
    if meta.get("classes"):
        known["data.classes"] = meta["classes"]
    if meta.get("angle_version"):
        known["model.angle_version"] = meta["angle_version"]
    check_lines_up(student, teacher, where, known)
    return TeacherInfo(path=teacher_path.resolve(), sha256=ckpt.sha256_file(teacher_path),
                       model_cfg=model_dict(teacher), state_dict=state)


def class_difference(teacher: list[str], student: list[str], limit: int = 6) -> str:
    """Which classes differ between a teacher and its student, in words: the names only one of them
    has, or, with the same names, the first label index where the order differs (the soft targets
    of class k would teach another class)."""

    def names(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f", ... ({len(items)})" if len(items) > limit else "")

    only_teacher = [c for c in teacher if c not in student]
    only_student = [c for c in student if c not in teacher]
    if only_teacher or only_student:
        parts = [f"only the teacher has {names(only_teacher)}" if only_teacher else "",
                 f"only the student has {names(only_student)}" if only_student else ""]  # fmt: skip
        detail = "; ".join(p for p in parts if p)
        return f"the teacher's {len(teacher)} classes differ from the student's {len(student)}: {detail}"
    k = next(i for i, (a, b) in enumerate(zip(teacher, student)) if a != b)
    return (f"the teacher has the student's classes in another order: label {k} is {teacher[k]!r} for the teacher, "
            f"{student[k]!r} for the student")  # fmt: skip


def weights_family(state: Mapping[str, Any]) -> str | None:
    """The family a state dict's layers belong to: 'orcnn', 'fcos', 'anchor' (rotated RetinaNet or ATSS:
    the same layers) or None (no head rotld knows)."""
    if any(key.startswith("roi_head.") for key in state):
        return "orcnn"
    if "bbox_head.conv_centerness.weight" in state:
        return "fcos"
    if "bbox_head.retina_reg.weight" in state:
        return "anchor"
    return None


def _plain_head(state: Mapping[str, Any]) -> str:
    kind = weights_family(state)
    if kind is None:
        return "no head rotld knows"
    return {"orcnn": "a plain Oriented R-CNN box head", "fcos": "a plain rotated FCOS head",
            "anchor": "a plain rotated RetinaNet head"}[kind]


def _a(title: str) -> str:
    return f"{'an' if title[:1].lower() in 'aeiou' else 'a'} {title}"



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
    return recipe.without_teacher()
