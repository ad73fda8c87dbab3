"""YAML recipes: load, inherit (`base:`), override (`--set a.b=c`), validate against a schema.

A recipe says *what* to train (model, data, schedule, runtime and, for a student, its teacher and
the distillation losses); `rotld_cli.engine.config` compiles it to the mmcv Config MMRotate runs.
Recipes are data, never code: they are parsed with a `yaml.SafeLoader` (no Python tags), every key
is checked against `SCHEMA`, and every error is one line naming the file (and line) and the key.

Paths written in a recipe file resolve relative to *that file's* directory, paths given with
`--set` relative to the current directory; the resolved recipe records absolute paths, so a
saved `work_dir/recipe.yaml` loads again from anywhere.

Pure Python + PyYAML: this module must not import torch/mmcv (it runs for `rotld recipes`).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Union

import yaml

from rotld_cli.dota.classes import NAMED_CLASS_LISTS
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.fileio import atomic_write_text

RECIPES_DIR = Path(__file__).resolve().parent / "recipes_data"  # package data: shipped in the wheel
"""The bundled recipes (`dota1/*.yaml`, `synthetic/*.yaml`; `_base/` holds shared bases)."""

RESOLVED_NAME = "recipe.yaml"
DISTILL_METHODS = ("ld", "crosskd", "bckd")
EVAL_PROTOCOLS = ("dota", "hrsc07", "hrsc12", "dior")
"""`rotld_cli.evaluation.protocols.PROTOCOLS`' names (kept here: recipes must not import the evaluation)."""
ANGLE_VERSIONS = ("oc", "le90", "le135")


@dataclass(frozen=True)
class Family:
    """A detector family: the `model` sections it reads and the distillers its heads implement."""

    name: str
    title: str
    sections: tuple[str, ...]
    methods: tuple[str, ...]
    angle_versions: tuple[str, ...]


FAMILIES = {
    "retinanet": Family("retinanet", "rotated RetinaNet", ("head", "anchors", "assigner"), DISTILL_METHODS, ("oc",)),
    "fcos": Family("fcos", "rotated FCOS", ("head", "fcos"), DISTILL_METHODS, ANGLE_VERSIONS),
    "atss": Family("atss", "rotated ATSS", ("head", "anchors", "atss"), DISTILL_METHODS, ("oc",)),
    "orcnn": Family("orcnn", "Oriented R-CNN", ("rpn", "roi_head"), ("ld",), ("le90",)),
}
"""`model.family` → what it reads. A recipe without the key is a rotated RetinaNet (every seed recipe)."""
FAMILY_SECTIONS = tuple(dict.fromkeys(name for family in FAMILIES.values() for name in family.sections))
"""The `model` sections that exist for some families only: required by those, refused by the others."""
RETINANET_ONLY_DISTILL = ("loss_im", "imitation_method", "ld_region_box")
"""The seed's region and feature-imitation keys: the other families distil on their own positives."""


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class Key:
    """One leaf of the schema: accepted types and constraints, and what it means."""

    types: tuple[type, ...]
    help: str
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    items: type | None = None  # element type of a list value
    minimum: float | None = None
    path: bool = False  # a file/dir path: resolved against the defining file (or the CWD for --set)
    bundled: bool = False  # a path that may also name a bundled recipe, e.g. `dota1/teacher-r34-gwd-2x`
    required: bool = True

    def type_name(self) -> str:
        names = []
        for t in self.types:
            names.append(f"list of {self.items.__name__}" if t is list and self.items else t.__name__)
        if self.nullable:
            names.append("null")
        return " or ".join(names)


@dataclass(frozen=True)
class Section:
    """A mapping of keys; an optional section may be absent as a whole (teacher, distill)."""

    keys: dict[str, Union[Key, Section]]
    help: str = ""
    optional: bool = False


def _int(help: str, minimum: float | None = None, **kw: Any) -> Key:
    return Key((int,), help, minimum=minimum, **kw)


def _float(help: str, minimum: float | None = None, **kw: Any) -> Key:
    return Key((float,), help, minimum=minimum, **kw)


SCHEMA = Section(
    {
        "description": Key((str,), "one line shown by `rotld recipes list`", required=False),
        "model": Section(
            {
                "family": Key(
                    (str,),
                    "detector family: retinanet (default), fcos, atss or orcnn (Oriented R-CNN)",
                    choices=tuple(FAMILIES),
                    required=False,
                ),
                "angle_version": Key(
                    (str,), "angle convention of boxes, coder and flips", choices=ANGLE_VERSIONS
                ),
                "backbone": Section(
                    {
                        "depth": _int("ResNet depth", choices=(18, 34, 50, 101)),
                        "pretrained": Key(
                            (str,),
                            "backbone init: `torchvision://resnetNN`, a local checkpoint path, or null (random init)",
                            nullable=True,
                            path=True,
                        ),
                        "frozen_stages": _int("ResNet stages frozen during training (-1: none)", minimum=-1),
                        "norm_eval": Key((bool,), "keep BatchNorm in eval mode (running stats) while training"),
                    },
                    "ResNet backbone",
                ),
                "neck": Section(
                    {"out_channels": _int("FPN width; teacher and student must share it", minimum=1)},
                    "FPN neck (start_level 1, extra convs on input, 5 outputs)",
                ),
                "head": Section(
                    {
                        "feat_channels": _int("width of the head's conv towers", minimum=1),
                        "stacked_convs": _int("convs per head tower", minimum=0),
                        "norm_groups": _int(
                            "GroupNorm groups in the tower convs (0: none, the paper's head; a head trained from "
                            "scratch needs it)",
                            minimum=0,
                            required=False,
                        ),
                        "reg_max": _int("distribution bins per box coordinate = reg_max + 1", minimum=1),
                        "reg_decoded_bbox": Key((bool,), "apply loss_bbox to decoded boxes (required for GWD/KLD)"),
                        "loss_cls": Section(
                            {
                                "gamma": _float("focal loss gamma", minimum=0),
                                "alpha": _float("focal loss alpha", minimum=0),
                                "weight": _float("focal loss weight", minimum=0),
                            },
                            "sigmoid focal loss",
                        ),
                        "loss_bbox": Section(
                            {
                                "type": Key(
                                    (str,),
                                    "gwd: GDLoss(gwd, log1p, tau 0); kld: GDLoss_v1(kld, log1p, tau 1)",
                                    choices=("gwd", "kld"),
                                ),
                                "weight": _float("loss weight (paper: gwd 5.0, kld 1.0)", minimum=0),
                            },
                            "box regression loss",
                        ),
                    },
                    "the one-stage families' distribution head (retinanet, fcos, atss)",
                    optional=True,
                ),
                "anchors": Section(
                    {
                        "octave_base_scale": _int("anchor base scale (x stride)", minimum=1),
                        "scales_per_octave": _int("anchor scales per location", minimum=1),
                        "ratios": Key((list,), "anchor aspect ratios", items=float, minimum=0),
                        "strides": Key((list,), "anchor strides of the 5 FPN levels", items=int, minimum=1),
                    },
                    "RotatedAnchorGenerator (retinanet, atss)",
                    optional=True,
                ),
                "assigner": Section(
                    {
                        "pos_iou_thr": _float("IoU for a positive anchor", minimum=0),
                        "neg_iou_thr": _float("IoU below which an anchor is negative", minimum=0),
                        "min_pos_iou": _float("minimum IoU of a gt's best anchor", minimum=0),
                    },
                    "MaxIoUAssigner on the circumscribed horizontal boxes (retinanet)",
                    optional=True,
                ),
                "atss": Section(
                    {"topk": _int("candidates per level: the anchors nearest to each gt's centre", minimum=1)},
                    "ATSS assignment: IoU threshold mean + std of each gt's candidates, centre inside the gt (atss)",
                    optional=True,
                ),
                "fcos": Section(
                    {
                        "strides": Key((list,), "point strides of the 5 FPN levels", items=int, minimum=1),
                        "regress_ranges": Key(
                            (list,),
                            "upper bounds of the largest side distance on levels 1-4 (level 5: no bound)",
                            items=int,
                            minimum=1,
                        ),
                        "center_sampling": Key((bool,), "positives only near each gt's centre"),
                        "center_sample_radius": _float("centre region half-size, in strides", minimum=0),
                        "centerness_on_reg": Key((bool,), "centerness predicted from the regression tower"),
                        "centerness_weight": _float("centerness loss weight", minimum=0),
                    },
                    "rotated FCOS points and targets (fcos); distances are in stride units (norm_on_bbox)",
                    optional=True,
                ),
                "rpn": Section(
                    {
                        "feat_channels": _int("width of the RPN conv", minimum=1),
                        "anchor_scales": Key((list,), "anchor scales (x stride)", items=int, minimum=1),
                        "anchor_ratios": Key((list,), "anchor aspect ratios", items=float, minimum=0),
                        "strides": Key((list,), "anchor strides of the 5 FPN levels", items=int, minimum=1),
                        "proposals": _int("proposals kept per image (nms_pre and max_per_img)", minimum=1),
                        "nms_iou_thr": _float("proposal NMS IoU threshold", minimum=0),
                        "num_samples": _int("anchors sampled per image for the RPN losses", minimum=1),
                    },
                    "Oriented R-CNN's oriented RPN (orcnn): midpoint-offset deltas of horizontal anchors",
                    optional=True,
                ),
                "roi_head": Section(
                    {
                        "fc_out_channels": _int("width of the two shared fully connected layers", minimum=1),
                        "reg_max": _int("distribution bins per box delta = reg_max + 1", minimum=1),
                        "num_samples": _int("RoIs sampled per image for the RoI losses", minimum=1),
                        "pos_fraction": _float("fraction of positive RoIs in a sample", minimum=0),
                        "pos_iou_thr": _float("rotated IoU for a positive RoI", minimum=0),
                    },
                    "Oriented R-CNN's RoI box head (orcnn): the five deltas as discrete distributions",
                    optional=True,
                ),
                "test": Section(
                    {
                        "nms_pre": _int("top-k anchors per level before NMS", minimum=0),
                        "min_bbox_size": _int("minimum box size (unused by the head)", minimum=0),
                        "score_thr": _float("score threshold", minimum=0),
                        "nms_iou_thr": _float("rotated NMS IoU threshold", minimum=0),
                        "max_per_img": _int("detections kept per patch", minimum=1),
                    },
                    "inference",
                ),
            },
            "the detector",
        ),
        "data": Section(
            {
                "root": Key((str,), "split-patch root holding <split>/images and <split>/annfiles", path=True),
                "train": Key((str,), "training split directory under root"),
                "val": Key((str,), "validation split directory under root (evaluation hook)"),
                "test": Key((str,), "test split directory under root (`rotld evaluate`)"),
                "classes": Key(
                    (str, list),
                    f"class names in label order, or a named list ({', '.join(NAMED_CLASS_LISTS)}); "
                    "`--classes-from FILE` replaces it",
                    items=str,
                ),
                "img_scale": Key(
                    (int, list),
                    "RResize target: N (N x N; DOTA patches are already this size) or [long, short] (keep ratio)",
                    items=int,
                    minimum=32,
                ),
                "flip_ratio": Key((list,), "probability of each flip direction", items=float, minimum=0),
                "flip_direction": Key((list,), "flip directions (horizontal, vertical, diagonal)", items=str),
                "samples_per_gpu": _int("images per GPU (or per CPU process) per step", minimum=1),
                "workers_per_gpu": _int("data-loading worker processes per GPU", minimum=0),
                "difficulty": _int("DOTADataset keeps objects with difficulty <= this (100: all)", minimum=0),
                "protocol": Key(
                    (str,),
                    "`rotld evaluate`'s default protocol for this model (dota: the DOTA devkit; hrsc07/hrsc12, dior: "
                    "as MMRotate evaluates HRSC2016 / DIOR-R)",
                    choices=EVAL_PROTOCOLS,
                    required=False,
                ),
            },
            "DOTA-style split patches",
        ),
        "schedule": Section(
            {
                "epochs": _int("training epochs", minimum=1),
                "lr": _float("SGD learning rate for a total batch of base_batch", minimum=0),
                "base_batch": _int("total batch the lr is set for (--auto-scale-lr scales from it)", minimum=1),
                "momentum": _float("SGD momentum", minimum=0),
                "weight_decay": _float("SGD weight decay", minimum=0),
                "lr_steps": Key((list,), "epochs after which lr is multiplied by lr_gamma", items=int, minimum=1),
                "lr_gamma": _float("step decay factor", minimum=0),
                "warmup": Key((str,), "warmup policy", nullable=True, choices=("linear", "constant", "exp")),
                "warmup_iters": _int("warmup iterations", minimum=0),
                "warmup_ratio": _float("lr at the start of warmup, as a fraction of lr", minimum=0),
                "grad_clip": _float("gradient clipping max L2 norm (null: no clipping)", minimum=0, nullable=True),
            },
            "optimisation",
        ),
        "runtime": Section(
            {
                "eval_interval": _int("evaluate every N epochs", minimum=1),
                "checkpoint_interval": _int("checkpoint every N epochs", minimum=1),
                "log_interval": _int("log every N iterations", minimum=1),
                "seed": _int("random seed (null: random)", nullable=True, minimum=0),
                "checkpoint_every": Key(
                    (int, str),
                    "also checkpoint inside epochs: every N iterations (2000), after a duration of training "
                    "(30m, 2h, 90s) or whichever comes first (2000,30m); null or 0: only at epoch ends",
                    nullable=True,
                    required=False,
                ),
                "checkpoint_keep": _int("iteration checkpoints kept (the newest; epoch ones follow "
                                        "checkpoint_interval)", minimum=1, required=False),
            },
            "runner",
        ),
        "teacher": Section(
            {
                "recipe": Key(
                    (str,),
                    "the teacher's recipe: a path or a bundled name; its model must match the student's",
                    path=True,
                    bundled=True,
                ),
                "checkpoint": Key(
                    (str,),
                    "the trained teacher's weights (`rotld distill --teacher`)",
                    nullable=True,
                    path=True,
                    required=False,
                ),
            },
            "students only: the frozen teacher",
            optional=True,
        ),
        "distill": Section(
            {
                "loss_ld": Section(
                    {"weight": _float("LD loss weight", minimum=0), "T": _float("LD temperature", minimum=1)},
                    "localization distillation (KL of box distributions)",
                ),
                "loss_kd": Section(
                    {
                        "weight": _float("KD loss weight", minimum=0),
                        "T": _float("KD temperature (softmax KD)", minimum=1),
                        "type": Key(
                            (str,),
                            "softmax: KL of the softmax over the class logits (the seed's); binary: per-class "
                            "BCE towards the teacher's sigmoid scores (absolute scores, as the detector thresholds)",
                            choices=("softmax", "binary"),
                            required=False,
                        ),
                        "beta": _float("binary KD's modulation |p_s - p_t|^beta", minimum=0, required=False),
                        "region": Key(
                            (str,),
                            "where KD applies: ld (the valuable localization region's weights, / N_ld, the "
                            "seed's) or all (every anchor the assigner does not ignore, / number of positives)",
                            choices=("ld", "all"),
                            required=False,
                        ),
                    },
                    "classification distillation",
                ),
                "loss_im": Section(
                    {"weight": _float("feature imitation weight", minimum=0)},
                    "feature imitation (retinanet)",
                    optional=True,
                ),
                "imitation_method": Key(
                    (str,),
                    "feature-imitation region (retinanet; the seed's 'gibox'/'decouple' crash)",
                    choices=("finegrained", "fitnet"),
                    required=False,
                ),
                "ld_region_box": Key(
                    (str,),
                    "gt box of the LD region (retinanet): seed (cx,cy,w,h ignoring the angle) or hbb (circumscribed "
                    "box); the other families distil on their own positives",
                    choices=("seed", "hbb"),
                    required=False,
                ),
                "method": Key(
                    (str,),
                    "distiller: ld (LD+KD head, default), crosskd (cross-head KD) or bckd (binary cls + rotated "
                    "GIoU); with crosskd/bckd the loss_ld/loss_kd/loss_im terms above run only when weight > 0",
                    choices=DISTILL_METHODS,
                    required=False,
                ),
                "crosskd": Section(
                    {
                        "cross_convs": _int(
                            "k: student tower convs before the teacher's remaining head layers", minimum=0
                        ),
                        "loss_cls": Section(
                            {
                                "weight": _float("cross-head classification KD weight", minimum=0),
                                "beta": _float("QFL modulation |p_s - p_t|^beta", minimum=0),
                            },
                            "binary (per-class sigmoid) KD of the cross-head scores on anchors with label weight > 0",
                        ),
                        "loss_ld": Section(
                            {
                                "weight": _float("cross-head LD weight", minimum=0),
                                "T": _float("temperature", minimum=1),
                            },
                            "LD of the cross-head box distributions on the valuable localization region",
                        ),
                    },
                    "method crosskd: the student's head features run through the teacher's head",
                    optional=True,
                ),
                "bckd": Section(
                    {
                        "loss_cls": Section(
                            {
                                "weight": _float("binary classification distillation weight", minimum=0),
                                "beta": _float("QFL modulation |p_s - p_t|^beta", minimum=0),
                            },
                            "per-class BCE towards the teacher's sigmoid scores on anchors with label weight > 0",
                        ),
                        "loss_iou": Section(
                            {
                                "weight": _float("rotated-GIoU localization distillation weight", minimum=0),
                                "weight_thr": _float(
                                    "skip anchors whose weight max_c |p_t - p_s| * label_weight is <= this "
                                    "(0: all with a non-zero weight, as the authors)",
                                    minimum=0,
                                ),
                            },
                            "1 - rotated GIoU of decoded student/teacher boxes, weighted by max_c |p_t - p_s| "
                            "* label_weight",
                        ),
                    },
                    "method bckd: binary classification + GIoU localization distillation, on FPN levels "
                    "holding a positive anchor",
                    optional=True,
                ),
            },
            "students only: distillation losses",
            optional=True,
        ),
    }
)


# --------------------------------------------------------------------------------------------
# The resolved recipe


@dataclass
class Recipe:
    """A resolved recipe: the nested dict plus where it came from."""

    data: dict[str, Any]
    source: Path | None
    files: list[Path] = field(default_factory=list)  # merge order: the deepest base first, `source` last
    overrides: list[str] = field(default_factory=list)
    name: str = ""

    _MISSING = object()

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        """`recipe.get('model.head.reg_max')`; KeyError naming the key unless a default is given."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is Recipe._MISSING:
                    raise KeyError(dotted)
                return default
            node = node[part]
        return node

    @property
    def is_student(self) -> bool:
        return "teacher" in self.data

    @property
    def family(self) -> str:
        """`model.family`; a recipe without it is a rotated RetinaNet (the seed's and every earlier recipe)."""
        return str(self.data.get("model", {}).get("family") or "retinanet")

    @property
    def classes(self) -> tuple[str, ...]:
        return resolve_classes(self.data["data"]["classes"])

    @property
    def label(self) -> str:
        """How errors and reports name this recipe."""
        return display_path(self.source) if self.source is not None else self.name

    def to_yaml(self) -> str:
        return dump_yaml(self.data)

    def without_teacher(self) -> Recipe:
        """A copy that is the student's plain detector (no teacher/distill): for inference and checks."""
        data = {key: copy.deepcopy(value) for key, value in self.data.items() if key not in ("teacher", "distill")}
        return replace(self, data=data, files=list(self.files), overrides=list(self.overrides))


def resolve_classes(value: str | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return NAMED_CLASS_LISTS[value]
    return tuple(value)


def img_scale(recipe: Recipe) -> tuple[int, int]:
    """`data.img_scale` as MMRotate's RResize takes it: (N, N), or (long, short)."""
    value = recipe.get("data.img_scale")
    return (value, value) if isinstance(value, int) else (value[0], value[1])


# --------------------------------------------------------------------------------------------
# Public API


def load_recipe(path_or_name: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Load a recipe file (or bundled name), apply its `base:` chain and `--set` overrides, validate."""
    top = find_recipe(path_or_name)
    files: list[Path] = []
    data = _load_chain(top, [], files)
    recipe = Recipe(data=data, source=top, files=files, overrides=list(overrides), name=_recipe_name(top))
    _prune_removed(recipe.data, SCHEMA)  # before --set: `--set model.anchors.x=...` starts from no section
    for item in overrides:
        _apply_override(recipe.data, item)
    _prune_removed(recipe.data, SCHEMA)
    _check_required(recipe.data, SCHEMA, "", recipe.label)
    _check_semantics(recipe)
    recipe.data = _canonical(recipe.data, SCHEMA)
    return recipe


def bundled_recipes() -> list[tuple[str, Path, str]]:
    """`(name, path, description)` of every bundled recipe (not the `_base/` files), sorted by name."""
    out = []
    if not RECIPES_DIR.is_dir():
        return out
    for path in sorted(RECIPES_DIR.glob("*/*.yaml")):
        if path.parent.name.startswith("_"):
            continue
        raw = _parse_file(path)
        out.append((_recipe_name(path), path, str(raw.get("description", ""))))
    return out


def bundled_by_family() -> list[tuple[str, str, Path, str]]:
    """`(family, name, path, description)` of every bundled recipe, grouped by `model.family` (in
    `FAMILIES` order), then by name. The family is the resolved recipe's, so it does not depend on the
    folder a recipe lives in (`dota1/`, `synthetic-fcos/`, a dataset folder, ...)."""
    rows = [(load_recipe(path).family, name, path, text) for name, path, text in bundled_recipes()]
    order = list(FAMILIES)
    return sorted(rows, key=lambda row: (order.index(row[0]), row[1]))


def find_recipe(path_or_name: str | os.PathLike[str]) -> Path:
    """A recipe file path (absolute) from a path or a bundled name such as `dota1/teacher-r34-gwd-2x`."""
    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    bundled = _bundled_path(text)
    if bundled is not None:
        return bundled
    names = [name for name, _, _ in bundled_recipes()]
    hint = _did_you_mean(text, names)
    raise RotldError(f"recipe not found: {text}{hint} (see `rotld recipes list`)")


def save_resolved(recipe: Recipe, work_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved recipe to `work_dir/recipe.yaml` (atomically); it loads back as is."""
    out = Path(work_dir) / RESOLVED_NAME
    header = [f"# rotld recipe {recipe.name}, resolved (bases merged, --set applied, absolute paths)."]
    header += [f"# from: {p}" for p in recipe.files]
    header += [f"# --set {item}" for item in recipe.overrides]
    atomic_write_text(out, "\n".join(header) + "\n" + recipe.to_yaml())
    return out


def scaled_lr(recipe: Recipe, total_batch: int) -> float:
    """Linear scaling rule (`--auto-scale-lr`): lr × total_batch / base_batch."""
    if total_batch < 1:
        raise UsageError(f"--auto-scale-lr: total batch must be >= 1, got {total_batch}")
    return recipe.get("schedule.lr") * total_batch / recipe.get("schedule.base_batch")


class _RecipeDumper(yaml.SafeDumper):
    """Block style for sections, flow style for lists (`ratios: [1.0, 0.5, 2.0]`)."""


_RecipeDumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(
        data, Dumper=_RecipeDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120
    )


def describe_schema(section: Section = SCHEMA, prefix: str = "") -> list[tuple[str, str, str]]:
    """`(dotted key, type, meaning)` for every key, in schema order (documentation, reports)."""
    rows: list[tuple[str, str, str]] = []
    for name, spec in section.keys.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, Section):
            rows.append((dotted, "section" + (" (optional)" if spec.optional else ""), spec.help))
            rows.extend(describe_schema(spec, dotted + "."))
        else:
            kind = spec.type_name() + (f" in {list(spec.choices)}" if spec.choices else "")
            rows.append((dotted, kind, spec.help))
    return rows


def display_path(path: Path | str) -> str:
    """A path relative to the CWD when it lies below it (shorter errors), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Loading and inheritance


class _StrictSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (no Python tags) that also refuses duplicate keys, which YAML silently merges."""


def _construct_mapping(loader: _StrictSafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            continue  # an unhashable key: construct_mapping below reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RotldError(f"{display_path(path)}: cannot read recipe ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise RotldError(f"{display_path(path)}: not a UTF-8 text file") from None
    try:
        data = yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise RotldError(located(display_path(path), line, f"invalid recipe YAML: {problem}")) from None
    if not isinstance(data, dict):
        raise RotldError(f"{display_path(path)}: a recipe must be a YAML mapping of sections, got {_kind(data)}")
    return data


def _key_lines(path: Path) -> dict[str, int]:
    """Line of every dotted key in a file (for error messages); composing builds no objects."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            lines[dotted] = key_node.start_mark.line + 1
            walk(value_node, dotted + ".")

    try:
        walk(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), "")
    except (OSError, yaml.YAMLError):
        pass
    return lines


def _load_chain(path: Path, stack: list[Path], files: list[Path]) -> dict[str, Any]:
    """The file merged over its bases; `base:` is one recipe or a list, merged in order (later wins).

    A list lets a recipe take its data and schedule from one recipe and its model from another, e.g.
    a rotated FCOS student on exactly the RetinaNet students' data: `base: [data recipe, fcos model]`.
    """
    if path in stack:
        cycle = " -> ".join(display_path(p) for p in [*stack[stack.index(path) :], path])
        raise RotldError(f"{display_path(stack[-1])}: base: inheritance cycle {cycle}")
    raw = _parse_file(path)
    base_ref = raw.pop("base", None)
    lines = _key_lines(path)
    where = display_path(path)
    _validate_tree(raw, SCHEMA, "", lambda key: located(where, lines.get(key), key))
    _resolve_paths(raw, SCHEMA, path.parent)
    merged: dict[str, Any] = {}
    if base_ref is not None:
        refs = base_ref if isinstance(base_ref, list) else [base_ref]
        if not refs or not all(isinstance(ref, str) and ref for ref in refs):
            raise RotldError(
                located(where, lines.get("base"), "base: expected a recipe path or bundled name, or a list of them")
            )
        for ref in refs:
            base_path = _resolve_base(ref, path, lines.get("base"))
            merged = deep_merge(merged, _load_chain(base_path, [*stack, path], files))
    files.append(path)
    return deep_merge(merged, raw)


def _prune_removed(tree: dict[str, Any], section: Section) -> None:
    """Drop the optional sections set to null (`anchors: null` removes a base's anchors)."""
    for key in list(tree):
        spec = section.keys.get(key)
        if isinstance(spec, Section):
            if tree[key] is None:
                del tree[key]
            else:
                _prune_removed(tree[key], spec)


def _resolve_base(ref: str, child: Path, line: int | None) -> Path:
    candidate = (child.parent / Path(ref).expanduser()).resolve()
    if candidate.is_file():
        return candidate
    bundled = _bundled_path(ref)
    if bundled is not None:
        return bundled
    names = [name for name, _, _ in bundled_recipes()]
    raise RotldError(
        located(display_path(child), line, f"base: {ref}: no such file or bundled recipe{_did_you_mean(ref, names)}")
    )


def _bundled_path(name: str) -> Path | None:
    stem = name[:-5] if name.endswith(".yaml") else name
    if not stem or stem.startswith(("/", ".")) or ".." in Path(stem).parts:
        return None
    candidate = RECIPES_DIR / f"{stem}.yaml"
    return candidate.resolve() if candidate.is_file() else None


def _recipe_name(path: Path) -> str:
    try:
        return path.resolve().relative_to(RECIPES_DIR).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new dict: mappings merge key by key, everything else (lists included) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Validation


def _validate_tree(tree: dict[str, Any], section: Section, prefix: str, where: Any) -> None:
    """Unknown keys and wrong types; `where(dotted)` gives the 'file:line: key' prefix of an error."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        spec = section.keys.get(key) if isinstance(key, str) else None
        if spec is None:
            raise RotldError(f"{where(dotted)}: unknown key{_suggest(str(key), section, prefix)}")
        if isinstance(spec, Section):
            if value is None and spec.optional:
                continue  # `section: null` removes what a base set (pruned after merging)
            if not isinstance(value, dict):
                null = " or null (to remove it)" if spec.optional else ""
                raise RotldError(f"{where(dotted)}: expected a section (mapping){null}, got {_kind(value)}")
            _validate_tree(value, spec, dotted + ".", where)
        else:
            tree[key] = _check_value(value, spec, lambda d=dotted: where(d))


def _check_value(value: Any, spec: Key, where: Any) -> Any:
    """The value, normalised (int → float where a float is expected), or a RotldError naming the type."""
    if value is None:
        if spec.nullable:
            return None
        raise RotldError(f"{where()}: expected {spec.type_name()}, got null")
    checked = _coerce(value, spec.types, spec.items)
    if checked is _INVALID:
        raise RotldError(f"{where()}: expected {spec.type_name()}, got {_kind(value)} {_short(value)}")
    if spec.choices is not None and checked not in spec.choices:
        options = ", ".join(repr(c) for c in spec.choices)
        raise RotldError(
            f"{where()}: {_short(checked)} is not one of {options}{_did_you_mean(str(checked), spec.choices)}"
        )
    if spec.minimum is not None:
        numbers = checked if isinstance(checked, list) else [checked]
        for number in numbers:
            if isinstance(number, (int, float)) and number < spec.minimum:
                raise RotldError(f"{where()}: must be >= {spec.minimum:g}, got {number}")
    return checked


_INVALID = object()


def _coerce(value: Any, types: tuple[type, ...], items: type | None) -> Any:
    for t in types:
        if t is list:
            if isinstance(value, list) and items is not None:
                converted = [_coerce(v, (items,), None) for v in value]
                if all(v is not _INVALID for v in converted):
                    return converted
            elif isinstance(value, list):
                return value
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif isinstance(value, t):
            return value
    return _INVALID


def _check_required(tree: dict[str, Any], section: Section, prefix: str, label: str) -> None:
    for key, spec in section.keys.items():
        dotted = f"{prefix}{key}"
        if key in tree:
            if isinstance(spec, Section):
                _check_required(tree[key], spec, dotted + ".", label)
            continue
        if isinstance(spec, Section):
            if not spec.optional:
                raise RotldError(f"{label}: {dotted}: missing section (set it in the recipe or one of its bases)")
        elif spec.required:
            raise RotldError(
                f"{label}: {dotted}: missing key (set it in the recipe, a base, or with --set {dotted}=...)"
            )
        elif spec.path or spec.nullable:
            tree[key] = None


def _blame(recipe: Recipe, keys: tuple[str, ...]) -> tuple[str, type[RotldError]]:
    """Who set a key that breaks a constraint: the last `--set` touching it (a usage error), else the recipe."""
    for item in reversed(recipe.overrides):
        key = item.partition("=")[0].strip()
        if any(key == k or k.startswith(key + ".") or key.startswith(k + ".") for k in keys):
            return f"--set {item}", UsageError
    return recipe.label, RotldError


def _check_semantics(recipe: Recipe) -> None:
    """Constraints between keys, named against the `--set` option that broke one, else the top recipe file."""
    get = recipe.get

    def fail(keys: tuple[str, ...], message: str) -> NoReturn:
        where, error = _blame(recipe, keys)
        raise error(f"{where}: {keys[0]}: {message}")

    if ("teacher" in recipe.data) != ("distill" in recipe.data):
        have, missing = ("teacher", "distill") if "teacher" in recipe.data else ("distill", "teacher")
        fail((missing,), f"missing section (a recipe with {have} is a student and needs both)")
    classes = get("data.classes")
    if isinstance(classes, str) and classes not in NAMED_CLASS_LISTS:
        names = ", ".join(NAMED_CLASS_LISTS)
        fail(("data.classes",), f"unknown class list {classes!r}{_did_you_mean(classes, NAMED_CLASS_LISTS)}; "
                                f"use one of {names} or a list")  # fmt: skip
    if isinstance(classes, list) and (not classes or len(set(classes)) != len(classes)):
        fail(("data.classes",), "expected a non-empty list of distinct class names")
    if isinstance(classes, list) and any(not c or any(ch.isspace() for ch in c) for c in classes):
        fail(("data.classes",), "class names are label-line tokens: no whitespace")
    scale = get("data.img_scale")
    if isinstance(scale, list) and (len(scale) != 2 or scale[0] < scale[1]):
        fail(("data.img_scale",), f"expected N or [long, short] with long >= short, got {scale}")
    flips, directions = get("data.flip_ratio"), get("data.flip_direction")
    if len(flips) != len(directions):
        fail(("data.flip_ratio", "data.flip_direction"),
             f"{len(flips)} ratios for {len(directions)} flip_direction entries")
    if sum(flips) > 1.0 + 1e-9:
        fail(("data.flip_ratio",), f"the ratios sum to {sum(flips):g} > 1")
    bad = [d for d in directions if d not in ("horizontal", "vertical", "diagonal")]
    if bad:
        fail(("data.flip_direction",), f"unknown direction {bad[0]!r} (horizontal, vertical, diagonal)")
    steps = get("schedule.lr_steps")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        fail(("schedule.lr_steps",), f"must be strictly increasing, got {steps}")
    family = FAMILIES[recipe.family]
    _check_family_sections(recipe, family, fail)
    if get("model.angle_version") not in family.angle_versions:
        fail(("model.angle_version", "model.family"), f"{get('model.angle_version')} is not supported by the "
             f"{family.name} family (use {', '.join(family.angle_versions)})")
    for key in ("model.anchors.strides", "model.fcos.strides", "model.rpn.strides"):
        strides = get(key, None)
        if strides is not None and len(strides) != 5:
            fail((key,), f"the FPN has 5 levels, got {strides}")
    ranges = get("model.fcos.regress_ranges", None)
    if ranges is not None and (len(ranges) != 4 or any(b <= a for a, b in zip(ranges, ranges[1:]))):
        fail(("model.fcos.regress_ranges",), f"expected 4 increasing bounds (levels 1-4), got {ranges}")
    if "assigner" in recipe.data["model"] and get("model.assigner.neg_iou_thr") > get("model.assigner.pos_iou_thr"):
        fail(("model.assigner.neg_iou_thr", "model.assigner.pos_iou_thr"), "must not exceed pos_iou_thr")
    groups, width = get("model.head.norm_groups", 0), get("model.head.feat_channels", 0)
    if groups and (width % groups or width // groups < 2):
        fail(("model.head.norm_groups", "model.head.feat_channels"),
             f"{groups} GroupNorm groups need feat_channels ({width}) to be a multiple of them with at least 2 "
             "channels per group (the 1x1 top FPN level has one value per channel)")
    if recipe.family == "fcos" and not get("model.head.reg_decoded_bbox"):
        fail(("model.head.reg_decoded_bbox",), "the fcos family applies loss_bbox to decoded boxes: set it to true")
    method = get("distill.method", "ld") if "distill" in recipe.data else "ld"
    if method not in family.methods:
        fail(("distill.method",), f"{method} is not available for the {recipe.family} family "
             f"(use {', '.join(family.methods)})")
    if method != "ld" and method not in recipe.data["distill"]:
        fail((f"distill.{method}", "distill.method"), f"missing section (distill.method is {method})")
    try:
        checkpoint_every(get("runtime.checkpoint_every", None))
    except ValueError as exc:
        fail(("runtime.checkpoint_every",), str(exc))
    cross, tower = get("distill.crosskd.cross_convs", 0), get("model.head.stacked_convs", 0)
    if method == "crosskd" and cross > tower:
        fail(("distill.crosskd.cross_convs", "model.head.stacked_convs"),
             f"{cross} exceeds model.head.stacked_convs ({tower})")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def checkpoint_every(value: int | str | None) -> tuple[int | None, float | None]:
    """`runtime.checkpoint_every` as (iterations, seconds); (None, None) when off.

    `2000` -> every 2000 iterations; `30m` / `2h` / `90s` -> after that much training time since
    the last checkpoint; `2000,30m` -> whichever comes first. ValueError names what is wrong.
    """
    if value is None or value == 0 or (isinstance(value, str) and value.strip().lower() in ("", "0", "off")):
        return None, None
    iters: list[int] = []
    seconds: list[float] = []
    for part in str(value).replace(" ", "").lower().split(","):
        unit = part[-1:]
        if part.isdigit():
            iters.append(int(part))
        elif unit in _DURATION_UNITS and _is_positive_number(part[:-1]):
            seconds.append(float(part[:-1]) * _DURATION_UNITS[unit])
        else:
            iters.append(0)  # not a valid part: refused below
    if len(iters) <= 1 and len(seconds) <= 1 and all(n >= 1 for n in iters):
        return (iters[0] if iters else None), (seconds[0] if seconds else None)
    raise ValueError(
        f"{_short(value)} is not N iterations (2000), a duration (90s, 30m, 2h), both (2000,30m) or off"
    )


def _is_positive_number(text: str) -> bool:
    try:
        return 0 < float(text) < float("inf")
    except ValueError:
        return False


def _check_family_sections(recipe: Recipe, family: Family, fail: Any) -> None:
    """Each family's own `model` sections are required, another family's are refused (one line each)."""
    model = recipe.data["model"]
    for name in FAMILY_SECTIONS:
        key = f"model.{name}"
        if name in family.sections and name not in model:
            fail((key, "model.family"), f"missing section (the {family.name} family needs it)")
        if name not in family.sections and name in model:
            fail((key, "model.family"), f"not used by the {family.name} family; remove it (`{name}: null` "
                 "removes a section a base recipe set)")
    if family.name != "retinanet" and "distill" in recipe.data:
        for name in RETINANET_ONLY_DISTILL:
            if name in recipe.data["distill"]:
                fail((f"distill.{name}", "model.family"), f"only the retinanet family uses it (the {family.name} "
                     "family distils on its own positives); remove it")
    kd = recipe.data.get("distill", {}).get("loss_kd") or {}
    if family.name == "orcnn" and (kd.get("type", "softmax") != "softmax" or "region" in kd):
        key = "distill.loss_kd.type" if kd.get("type", "softmax") != "softmax" else "distill.loss_kd.region"
        fail((key, "model.family"), "the orcnn family's KD is the softmax KL of the C + 1 RoI class logits on every "
             "sampled RoI (a softmax classifier, no region to choose); remove it")


def _canonical(tree: dict[str, Any], section: Section) -> dict[str, Any]:
    """Keys in schema order, so resolved recipes read the same whatever the files' order."""
    out: dict[str, Any] = {}
    for key, spec in section.keys.items():
        if key in tree:
            out[key] = _canonical(tree[key], spec) if isinstance(spec, Section) else tree[key]
    return out


# --------------------------------------------------------------------------------------------
# Paths


def _resolve_paths(tree: dict[str, Any], section: Section, base_dir: Path) -> None:
    for key, value in tree.items():
        spec = section.keys[key]
        if isinstance(spec, Section):
            if value is not None:  # a removed section
                _resolve_paths(value, spec, base_dir)
        elif spec.path and isinstance(value, str):
            tree[key] = _resolve_path(value, base_dir, spec.bundled)


def _resolve_path(value: str, base_dir: Path, bundled: bool) -> str:
    if "://" in value:  # torchvision://resnet34, https://...: not a local path
        return value
    candidate = base_dir / Path(value).expanduser()
    if bundled and not candidate.exists():
        found = _bundled_path(value)
        if found is not None:
            return str(found)
    return os.path.normpath(str(candidate.absolute()))


# --------------------------------------------------------------------------------------------
# --set overrides


def _apply_override(data: dict[str, Any], item: str) -> None:
    """`a.b=c`: c parsed as YAML and checked against the schema type of `a.b`."""
    key, sep, text = item.partition("=")
    key = key.strip()
    option = f"--set {item}"
    if not sep or not key:
        raise UsageError(f"{option}: expected KEY=VALUE, e.g. --set schedule.lr=0.005")
    if key == "base" or key.startswith("base."):
        raise UsageError(f"{option}: `base` cannot be overridden; load the other recipe instead")
    parts = key.split(".")
    section: Section = SCHEMA
    for i, part in enumerate(parts):
        spec = section.keys.get(part)
        prefix = ".".join(parts[:i])
        if spec is None:
            raise UsageError(f"{option}: {key}: unknown key{_suggest(part, section, prefix + '.' if prefix else '')}")
        if i < len(parts) - 1:
            if not isinstance(spec, Section):
                raise UsageError(f"{option}: {'.'.join(parts[: i + 1])} is a value, not a section")
            section = spec
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{option}: invalid YAML value ({getattr(exc, 'problem', None) or exc})") from None
    leaf = parts[-1]
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    where = lambda: f"{option}: {key}"  # noqa: E731
    if isinstance(spec, Section):
        if value is None and spec.optional:
            node[leaf] = None  # removed, like `section: null` in a file
            return
        if not isinstance(value, dict):
            raise UsageError(f"{where()}: is a section; expected a mapping such as {{key: value}}, got {_kind(value)}")
        try:
            _validate_tree(value, spec, key + ".", lambda d: f"{option}: {d}")
        except RotldError as exc:
            raise UsageError(str(exc)) from None
        _resolve_paths(value, spec, Path.cwd())
        node[leaf] = deep_merge(node.get(leaf, {}), value)
        return
    if isinstance(value, (int, float, bool)) and not isinstance(value, spec.types) and str in spec.types:
        value = text.strip()  # `--set data.train=2017` means the string the user typed
    try:
        value = _check_value(value, spec, where)
    except RotldError as exc:
        raise UsageError(str(exc)) from None
    if spec.path and isinstance(value, str):
        value = _resolve_path(value, Path.cwd(), spec.bundled)
    node[leaf] = value


# --------------------------------------------------------------------------------------------
# Messages


def _suggest(key: str, section: Section, prefix: str) -> str:
    """' (did you mean ...?)': a sibling first, else a key of the same name anywhere in the schema."""
    close = difflib.get_close_matches(key, list(section.keys), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    leaves = [dotted for dotted, _, _ in describe_schema()]
    same = [d for d in leaves if d.rsplit(".", 1)[-1] == key]
    if same:
        return f" (did you mean {same[0]!r}?)"
    anywhere = difflib.get_close_matches(f"{prefix}{key}", leaves, n=1, cutoff=0.75)
    return f" (did you mean {anywhere[0]!r}?)" if anywhere else ""


def _did_you_mean(word: str, options: Iterable[Any]) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
