"""What a training run is asked to do: its options and its recipe, checked before the engine loads.

Why engine-free: a typo in a recipe, a bad `--set` or a missing `--teacher` must be reported in
well under a second, before torch, mmcv and the process launch. The CLI checks the request
with `training_recipe` first; `rotld_cli.engine.train` takes the same `TrainOptions` (and calls
the same check when used as a library).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotld_cli.checkpoints import check_checkpoint_file
from rotld_cli.dota.classes import read_classes_file
from rotld_cli.errors import UsageError
from rotld_cli.recipes import Recipe, checkpoint_every, load_recipe

if TYPE_CHECKING:
    from rotld_cli.engine.reporting import TrainReporter


@dataclass
class TrainOptions:
    """Everything `train-teacher` / `distill` take besides the recipe and the launch options."""

    overrides: list[str] = field(default_factory=list)
    classes_from: Path | None = None  # --classes-from: data.classes from a class list file
    work_dir: Path | None = None
    device: str | None = None
    resume: bool = False
    amp: bool = False
    seed: int | None = None
    deterministic: bool = False
    auto_scale_lr: bool = False
    pretrained: Path | None = None
    no_pretrained: bool = False
    validate: bool = True
    teacher: Path | None = None
    teacher_recipe: str | None = None
    trust_checkpoint: bool = False  # --teacher / --resume files may hold any pickled object (trusted files only)
    reporter: TrainReporter | None = None  # progress and tables (default: plain lines through `logging`)
    resume_from: Path | None = None  # continue from this checkpoint (--resume: the work dir's newest complete one)
    checkpoint_every: str | None = None  # runtime.checkpoint_every: N iterations, a duration (30m) or both
    keep: int | None = None  # runtime.checkpoint_keep: iteration checkpoints kept
    requeue: bool = False  # Slurm: requeue the job after a pre-emption signal; a start on a begun run resumes it


def training_recipe(recipe: str | Recipe, options: TrainOptions, student: bool) -> Recipe:
    """The run's recipe with `--set`, `--pretrained`/`--no-pretrained` applied, refused for the wrong command.

    A Recipe passes through (already checked by the caller). `student`: the recipe must have
    the teacher/distill sections (`rotld distill`), else it must not (`rotld train-teacher`).
    """
    if options.requeue and not os.environ.get("SLURM_JOB_ID"):
        raise UsageError("--requeue: not inside a Slurm job (SLURM_JOB_ID is not set); it requeues the job with "
                         "`scontrol requeue` after a pre-emption signal")
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, _overrides(options))
    if student and not recipe.is_student:
        raise UsageError(
            f"{recipe.label} has no teacher/distill sections: train it with `rotld train-teacher`, "
            "or pick a student recipe (`rotld recipes list`)"
        )
    if not student and recipe.is_student:
        raise UsageError(f"{recipe.label} is a student recipe (it has a teacher section): run it with `rotld distill`")
    if student:
        teacher_checkpoint(recipe, options)
    return recipe


def teacher_checkpoint(recipe: Recipe, options: TrainOptions) -> Path:
    """`--teacher`, else the recipe's `teacher.checkpoint`; one of them is required."""
    path: Any = options.teacher or recipe.get("teacher.checkpoint", None)
    if path is None:
        raise UsageError("--teacher: required (the teacher checkpoint, e.g. work_dirs/<teacher>/latest.pth)")
    return check_checkpoint_file(path, "--teacher")  # a missing or foreign file fails here, before the engine


def _overrides(options: TrainOptions) -> list[str]:
    overrides = list(options.overrides)
    if options.classes_from is not None:
        names = read_classes_file(options.classes_from)
        overrides.append(f"data.classes={json.dumps(list(names))}")  # a JSON list is a YAML flow list
    if options.pretrained is not None and options.no_pretrained:
        raise UsageError("--pretrained and --no-pretrained: choose one")
    if options.pretrained is not None:
        if not Path(options.pretrained).is_file():
            raise UsageError(f"--pretrained {options.pretrained}: no such file")
        overrides.append(f"model.backbone.pretrained={Path(options.pretrained).absolute()}")
    elif options.no_pretrained:
        overrides.append("model.backbone.pretrained=null")
    if options.checkpoint_every is not None:
        try:
            checkpoint_every(options.checkpoint_every)
        except ValueError as exc:
            raise UsageError(f"--checkpoint-every {exc}") from None
        overrides.append(f"runtime.checkpoint_every={options.checkpoint_every}")
    if options.keep is not None:
        if options.keep < 1:
            raise UsageError(f"--keep {options.keep}: must be >= 1")
        overrides.append(f"runtime.checkpoint_keep={options.keep}")
    return overrides
