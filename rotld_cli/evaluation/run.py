"""`rotld evaluate --results`: a Task1 result folder through the evaluator, plus what it writes
(merged Task1 files, the server zip, pictures, `report.json`/`report.md`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rotld_cli.evaluation.evaluator import DotaEvaluator, Evaluation, Progress
from rotld_cli.evaluation.pictures import PictureOptions, check_pictures, save_pictures
from rotld_cli.evaluation.report import EvaluationReport, Problems
from rotld_cli.evaluation.results import (
    EvaluateOptions,
    drop_unknown_images,
    evaluated_image_ids,
    evaluation_rules,
    predicted_images,
    read_results,
    validate_options,
    write_submission_zip,
    write_task1_folder,
)


def predict_folder_images(options: EvaluateOptions) -> tuple[EvaluateOptions, str | None]:
    """A folder `rotld predict` wrote is evaluated on the images it holds (its manifest lists them), not
    on every label file of `--ann-dir`: an image never predicted is not an image without detections.
    `--imageset` chooses otherwise. Returns the options and a note when label files are left out."""
    if options.ann_dir is None or options.image_ids is not None or options.imageset is not None:
        return options, None
    images = predicted_images(options.results)
    if images is None:
        return options, None
    options = replace(options, image_ids=images, images_from=f"the images predicted into {options.results}")
    labelled = sum(1 for _ in options.ann_dir.glob("*.txt"))
    if labelled <= len(images):
        return options, None
    return options, (f"evaluated the {len(images)} image(s) rotld predict wrote into {options.results}, not all "
                     f"{labelled} label files of {options.ann_dir} (--imageset FILE to choose the images)")


def evaluate(options: EvaluateOptions, on_progress: Progress | None = None) -> Evaluation:
    """Read and check the result files, evaluate them, write `--save-merged` and `--zip`."""
    classes = validate_options(options)
    options, images_note = predict_folder_images(options)
    protocol, metric = evaluation_rules(options)
    image_ids = evaluated_image_ids(options) if options.ann_dir is not None else []
    skipped, ignored = Problems(), []
    dets = read_results(options, classes, skipped, ignored)
    if options.ann_dir is not None:
        dets = drop_unknown_images(dets, set(image_ids), options, skipped)
    evaluator = DotaEvaluator(
        classes, image_ids, options.ann_dir, metric=metric, merge=options.merge, merge_iou=options.merge_iou,
        seed_compat=options.seed_compat, strict_ground_truth=options.strict_ground_truth, protocol=protocol,
    )  # fmt: skip
    evaluator.process(dets)
    evaluation = evaluator.evaluate(on_progress)
    report = evaluation.report
    report.skipped, report.ignored_classes, report.images_note = skipped, ignored, images_note
    write_outputs(evaluation, options)
    return evaluation


def write_outputs(evaluation: Evaluation, options: EvaluateOptions) -> None:
    """The merged Task1 files (`--save-merged`, with rotld's manifest) and the submission zip."""
    report = evaluation.report
    if options.save_merged is not None:
        write_task1_folder(options.save_merged, evaluation.detections, report.classes, "merged", report.protocol)
        report.saved = str(options.save_merged)
    if options.zip_path is not None:
        write_submission_zip(options.zip_path, evaluation.detections, report.classes)
        report.zip = str(options.zip_path)


def evaluate_results(options: EvaluateOptions, on_progress: Progress | None = None) -> dict:
    """The report of a Task1 result folder as JSON (fractions in [0, 1])."""
    return evaluate(options, on_progress).report.to_json()


def default_out_dir(source: Path) -> Path:
    """`work/epoch_12.pth` -> `work/epoch_12-eval/`, `runs/results/` -> `runs/results-eval/`: beside the input."""
    return source.parent / f"{source.stem if source.is_file() else source.name}-eval"


def evaluate_result_files(
    options: EvaluateOptions,
    pictures: PictureOptions | None = None,
    out_dir: Path | None = None,
    on_progress: Progress | None = None,
    drawing: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """`rotld evaluate --results`: the report, plus pictures and `report.json`/`report.md` in `out_dir`."""
    pictures = pictures or PictureOptions()
    validate_options(options)
    check_pictures(pictures, options.ann_dir)
    evaluation = evaluate(options, on_progress)
    report = evaluation.report
    if pictures.wanted:
        report.pictures = save_pictures(evaluation, pictures, options.ann_dir, drawing)
    if out_dir is not None:
        report.out = str(out_dir)
        report.write_files(out_dir)
    return report
