"""`rotld evaluate CKPT`: a checkpoint's `EngineDetector` over a split's patches (the one patch loop,
`engine/patches.py`), its detections into the evaluator (`evaluation/evaluator.py`), files and report.

This is the only part of `rotld evaluate` that needs the engine (torch, MMRotate), so the
result-file path (`rotld_cli/evaluation/`) stays importable without it. The evaluator receives the
patch detections exactly as the patch-level Task1 files written here hold them: `rotld evaluate
CKPT` and `rotld evaluate --results OUT/patch_results` give the same numbers by construction, and
what is evaluated is exactly what a user can re-evaluate or submit. The demo evaluates its models
through `evaluate_checkpoint` too.

Everything that can be checked without running the model (split folder, labels of every image the
patches come from, image folder for the pictures, option ranges, the checkpoint against its recipe)
is checked before inference, so a bad input fails in seconds, not after an hour of GPU time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli.checkpoints import check_checkpoint_file
from rotld_cli.dota.formats import IMAGE_SUFFIXES, TASK1_PREFIX, as_written, class_from_task1_name, is_image_file
from rotld_cli.dota.merge import split_patch_id
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.evaluation.evaluator import DotaEvaluator, EvalProgress, Evaluation
from rotld_cli.evaluation.pictures import PictureOptions, check_pictures, save_pictures
from rotld_cli.evaluation.report import EvaluationReport, PatchRun
from rotld_cli.evaluation.results import (
    EvaluateOptions,
    class_set,
    evaluated_image_ids,
    evaluation_rules,
    validate_options,
    write_task1_folder,
)
from rotld_cli.evaluation.run import default_out_dir, write_outputs

PATCH_RESULTS = "patch_results"
MERGED = "merged"
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


@dataclass
class CheckpointEvalOptions:
    """`rotld evaluate CKPT --split-dir DIR [...]`; `ann_dir=None` (the test split) only merges and writes."""

    checkpoint: Path
    split_dir: Path
    ann_dir: Path | None = None
    out_dir: Path | None = None
    recipe: str | None = None
    imageset: Path | None = None
    device: str | None = None
    batch_size: int | None = None  # None: 1 on the CPU (batching only adds memory traffic there), 4 with a GPU
    workers: int | None = None  # None: 0 on the CPU (decoding competes with the model), 4 with a GPU
    skip_empty_patches: bool = False
    score_thr: float | None = None
    nms_iou: float | None = None
    max_per_img: int | None = None
    metric: str | None = None  # None: the protocol's
    protocol: str | None = None  # None: the model's recipe's `data.protocol` (default dota)
    merge_iou: float = 0.1
    zip_path: Path | None = None
    seed_compat: bool = False
    pictures: PictureOptions = field(default_factory=PictureOptions)
    plot: bool = False
    strict_ground_truth: bool = False  # --strict: stop at a bad label line (default: skip and count it)


@dataclass
class PatchSelection:
    """The patches to run, and the images of the evaluation (those every listed patch was cut from)."""

    paths: list[Path]
    total: int
    skipped_empty: int
    image_ids: list[str]


@dataclass
class CheckpointEvaluation:
    """The report (the `--json` object, also in `out_dir/report.json`) and what it was computed from."""

    report: EvaluationReport
    out_dir: Path
    evaluation: Evaluation


def image_of(patch_id: str) -> str:
    """The full image a patch was cut from (`P0003__1024__0___824` -> `P0003`); other names are images."""
    parsed = split_patch_id(patch_id)
    return parsed[0] if parsed is not None else patch_id


def device_defaults(device: str, batch_size: int | None, workers: int | None) -> tuple[int, int]:
    """(batch size, loader processes) unless given: batches of 4 and 4 decoding processes feed a GPU;
    on the CPU, batch 1 and decoding in the main process were measured fastest (bench/inference.py)."""
    gpu = device == "cuda"
    if batch_size is None:
        batch_size = 4 if gpu else 1
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if gpu else 0
    return batch_size, workers


def _check_options(options: CheckpointEvalOptions) -> None:
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.workers is not None and options.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {options.workers}")
    if options.score_thr is not None and not 0.0 <= options.score_thr < 1.0:
        raise UsageError(f"--score-thr must be in [0, 1), got {options.score_thr}")
    if options.nms_iou is not None and not 0.0 < options.nms_iou <= 1.0:
        raise UsageError(f"--nms-iou must be in (0, 1], got {options.nms_iou}")
    if options.max_per_img is not None and options.max_per_img < 1:
        raise UsageError(f"--max-per-img must be at least 1, got {options.max_per_img}")
    if options.imageset is not None and options.ann_dir is None:
        raise UsageError("--imageset needs --ann-dir (it selects labelled images to evaluate)")
    if options.plot and options.ann_dir is None:
        raise UsageError("--plot needs --ann-dir (the curves are computed against the ground truth)")
    check_checkpoint_file(options.checkpoint)


def select_patches(options: CheckpointEvalOptions) -> PatchSelection:
    """Every patch image of `split_dir/images` (of the `--imageset` images when given), minus
    those whose annfile is empty with `--skip-empty-patches` (the seed's protocol, method.md §7.1)."""
    split_dir = options.split_dir
    if not split_dir.is_dir():
        raise UsageError(f"--split-dir {split_dir}: not a directory")
    image_dir = split_dir / "images"
    if not image_dir.is_dir():
        raise UsageError(
            f"--split-dir {split_dir}: no images/ folder (give a split written by `rotld prepare-dota`, e.g. OUT/val)"
        )
    paths = sorted(p for p in image_dir.iterdir() if is_image_file(p))
    if not paths:
        raise RotldError(f"--split-dir {split_dir}: no patch images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    if options.imageset is not None:
        wanted = evaluated_image_ids(
            EvaluateOptions(results=split_dir, ann_dir=options.ann_dir, imageset=options.imageset)
        )
        keep = set(wanted)
        paths = [p for p in paths if image_of(p.stem) in keep]
        if not paths:
            raise RotldError(f"--split-dir {split_dir}: no patch of the --imageset images (e.g. {wanted[0]})")
        image_ids = wanted
    else:
        image_ids = list(dict.fromkeys(image_of(p.stem) for p in paths))
        if options.ann_dir is not None:
            evaluated_image_ids(EvaluateOptions(results=split_dir, ann_dir=options.ann_dir, image_ids=image_ids))
    total = len(paths)
    if options.skip_empty_patches:
        ann = split_dir / "annfiles"
        if not ann.is_dir():
            raise UsageError(f"--skip-empty-patches: no {ann} (the annfiles prepare-dota writes beside images/)")
        paths = [p for p in paths if _has_objects(ann / f"{p.stem}.txt")]
    return PatchSelection(paths, total, total - len(paths), image_ids)


def _has_objects(annfile: Path) -> bool:
    """MMRotate's DOTADataset never loads a patch whose annfile is empty or absent."""
    try:
        return annfile.stat().st_size > 0 and bool(annfile.read_bytes().strip())
    except OSError:
        return False


def _clear_stale_task1(folder: Path, classes: tuple[str, ...]) -> None:
    """Task1 files of other classes, left by an earlier run of another model, would be read back."""
    if not folder.is_dir():
        return
    for path in folder.glob(f"{TASK1_PREFIX}*.txt"):
        if class_from_task1_name(path) not in classes:
            path.unlink()


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RotldError(f"--out {out_dir}: cannot create: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK):
        raise RotldError(f"--out {out_dir}: not writable")


def load_model(checkpoint: Path, device: str, recipe_ref: str | None, batch_size: int = 1) -> Any:
    """`EngineDetector.from_checkpoint`, with a one-line error when the weights do not fit the recipe's model."""
    from rotld_cli.engine.detector import EngineDetector

    try:
        detector = EngineDetector.from_checkpoint(checkpoint, device=device, batch_size=batch_size,
                                                  recipe_ref=recipe_ref)  # fmt: skip
    except RuntimeError as exc:  # torch's load_state_dict: a multi-line "size mismatch for ..." report
        match = _SIZE_MISMATCH.search(str(exc))
        if match is None:
            raise
        raise _mismatch_error(checkpoint, recipe_ref, *match.groups()) from None
    trained_on = detector.meta.get("classes")
    if isinstance(trained_on, (list, tuple)) and tuple(trained_on) != detector.classes:
        raise RotldError(
            f"{checkpoint}: trained on classes {_names(trained_on)}, but {_recipe_name(recipe_ref)} has "
            f"{_names(detector.classes)}"
        )
    return detector


def _recipe_name(recipe_ref: str | None) -> str:
    return f"--recipe {recipe_ref}" if recipe_ref is not None else "the recipe stored in it"


def _names(classes) -> str:
    return f"[{', '.join(classes)}] ({len(classes)})"


def _mismatch_error(checkpoint: Path, recipe_ref: str | None, key: str, theirs: str, ours: str) -> RotldError:
    from rotld_cli.engine import checkpoints as ckpt
    from rotld_cli.recipes import load_recipe

    trained_on = ckpt.load_checkpoint(checkpoint).get("meta", {}).get("classes")
    wanted = load_recipe(recipe_ref).classes if recipe_ref is not None else None
    if isinstance(trained_on, (list, tuple)) and wanted is not None and tuple(trained_on) != tuple(wanted):
        return RotldError(
            f"{checkpoint}: trained on classes {_names(trained_on)}, "
            f"but {_recipe_name(recipe_ref)} has {_names(wanted)}"
        )
    return RotldError(
        f"{checkpoint}: does not match {_recipe_name(recipe_ref)}: {key} has shape [{theirs}] in the checkpoint "
        f"but [{ours}] in the recipe's model (a different head, neck or class list)"
    )


def apply_test_settings(test_cfg: Any, options: CheckpointEvalOptions) -> dict[str, Any]:
    """Override the recipe's test settings on the built head; returns the settings in effect."""
    if options.score_thr is not None:
        test_cfg.score_thr = options.score_thr
    if options.nms_iou is not None:
        test_cfg.nms.iou_thr = options.nms_iou
    if options.max_per_img is not None:
        test_cfg.max_per_img = options.max_per_img
    return {
        "score_thr": float(test_cfg.score_thr),
        "nms_iou": float(test_cfg.nms.iou_thr),
        "max_per_img": int(test_cfg.max_per_img),
        "nms_pre": int(test_cfg.get("nms_pre", -1)),
    }


def evaluate_checkpoint(options: CheckpointEvalOptions, progress: EvalProgress | None = None) -> CheckpointEvaluation:
    """Inference on every selected patch -> the evaluator -> `patch_results/`, `merged/` (+ zip),
    report and pictures. The evaluation is `rotld evaluate --results`'s, on the values the patch
    files hold, so evaluating `OUT/patch_results` again gives the same numbers."""
    progress = progress or EvalProgress()
    _check_options(options)
    validate_options(
        EvaluateOptions(
            results=options.split_dir, ann_dir=options.ann_dir, metric=options.metric, merge_iou=options.merge_iou,
            protocol=options.protocol or "dota", seed_compat=options.seed_compat,
        )
    )
    selection = select_patches(options)
    out_dir = options.out_dir or default_out_dir(options.checkpoint)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    pictures = PictureOptions(
        options.pictures.vis_dir,
        options.pictures.image_dir,
        options.pictures.vis_score_thr,
        out_dir if options.plot else None,
    )
    check_pictures(pictures, options.ann_dir)

    from rotld_cli.engine import load_engine  # the engine loads only once the inputs are known to be usable

    load_engine()
    from rotld_cli.dota.polygons import detections_to_task1
    from rotld_cli.engine.devices import pick_device
    from rotld_cli.engine.patches import detect_patches

    device = pick_device(options.device)
    batch_size, workers = device_defaults(device, options.batch_size, options.workers)
    detector = load_model(options.checkpoint, device, options.recipe, batch_size)
    test_cfg = apply_test_settings(detector.test_cfg, options)
    classes = detector.classes
    _prepare_out_dir(out_dir)
    patch_dir, merged_dir = out_dir / PATCH_RESULTS, out_dir / MERGED
    evaluate_options = EvaluateOptions(
        results=patch_dir, ann_dir=options.ann_dir, image_ids=selection.image_ids, model_classes=classes,
        metric=options.metric, merge_iou=options.merge_iou, save_merged=None, zip_path=options.zip_path,
        seed_compat=options.seed_compat, protocol=options.protocol or detector.recipe.get("data.protocol", "dota"),
    )  # fmt: skip
    protocol, metric = evaluation_rules(evaluate_options)  # the recipe's protocol may fix the metric
    evaluator = DotaEvaluator(
        class_set(evaluate_options), selection.image_ids, options.ann_dir, metric=metric,
        merge_iou=options.merge_iou, seed_compat=options.seed_compat, strict_ground_truth=options.strict_ground_truth,
        protocol=protocol,
    )  # fmt: skip

    if options.ann_dir is not None:
        evaluator.ground_truth()  # a label file that stops --strict does so before the inference

    def on_batch(ids: list[str], outputs: list) -> None:
        dets = detections_to_task1(outputs, ids, classes, detector.angle_version)
        evaluator.process({name: as_written(det) for name, det in dets.items()})

    stats = detect_patches(detector, selection.paths, on_batch, batch_size=batch_size, workers=workers,
                           on_progress=progress.patches)  # fmt: skip
    for folder in (patch_dir, merged_dir):
        _clear_stale_task1(folder, classes)
    write_task1_folder(patch_dir, evaluator.detections(), classes, "patch", protocol.name)
    evaluation = evaluator.evaluate(progress.classes)
    evaluate_options.save_merged = merged_dir
    write_outputs(evaluation, evaluate_options)
    report = evaluation.report
    report.run = PatchRun(
        checkpoint=str(options.checkpoint), recipe=detector.recipe.label, split_dir=str(options.split_dir),
        patch_results=str(patch_dir), total=selection.total, run=len(stats.ran), skipped_empty=selection.skipped_empty,
        unreadable=stats.unreadable, device=device, batch_size=batch_size, seconds=stats.seconds, test_cfg=test_cfg,
    )  # fmt: skip
    report.out = str(out_dir)
    report.pictures = save_pictures(evaluation, pictures, options.ann_dir, progress.drawing)
    report.write_files(out_dir)
    return CheckpointEvaluation(report, out_dir, evaluation)
