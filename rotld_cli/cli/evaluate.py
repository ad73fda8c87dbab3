"""`rotld evaluate`: DOTA Task1 AP at IoU 0.50:0.95 with the DOTA devkit's rules, of a checkpoint or of result files.

Two modes of one command:
* `rotld evaluate CKPT --split-dir OUT/val --ann-dir DOTA/val/labelTxt`: run the model on every
  patch, write patch-level and merged Task1 files, evaluate, write `report.json`/`report.md`
  into `--out` (default `<ckpt stem>-eval/` beside the checkpoint). Without `--ann-dir` (the
  test split) it only merges and writes, e.g. the `--zip` for the DOTA server.
* `rotld evaluate --results DIR --ann-dir DIR`: evaluate Task1 files (patch ids are merged first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.errors import UsageError


@app.command(
    "evaluate",
    help="Evaluate a checkpoint on a split's patches, or Task1 result files, with the DOTA devkit's rules "
    "(AP at IoU 0.50:0.95).",
)
def evaluate_cmd(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="A checkpoint (train-teacher, distill or publish-model output) to run on --split-dir's patches."
    ),
    split_dir: Optional[Path] = typer.Option(
        None, "--split-dir", help="CKPT mode: the patches, a split folder of `rotld prepare-dota` (e.g. OUT/val)."
    ),
    results: Optional[Path] = typer.Option(None, "--results", help="Folder of Task1_<class>.txt files."),
    ann_dir: Optional[Path] = typer.Option(
        None, "--ann-dir", help="Ground truth: the labelTxt folder of the full images. Absent: merge and write, no AP."
    ),
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help="CKPT mode: the model's recipe (default: the one stored in the checkpoint)."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Outputs: patch_results/, merged/, report.json, report.md, plots "
        "(CKPT mode default: <ckpt stem>-eval/ beside the checkpoint; --results mode: only when given or --plot).",
    ),
    imageset: Optional[Path] = typer.Option(
        None, "--imageset", help="Image ids to evaluate (default: every label file; CKPT mode: the patches' images)."
    ),
    skip_empty_patches: bool = typer.Option(
        False, "--skip-empty-patches", help="CKPT mode: do not run patches with an empty annfile (the seed's protocol)."
    ),
    score_thr: Optional[float] = typer.Option(None, "--score-thr", help="CKPT mode: override the recipe's score_thr."),
    nms_iou: Optional[float] = typer.Option(None, "--nms-iou", help="CKPT mode: override the recipe's NMS IoU."),
    max_per_img: Optional[int] = typer.Option(
        None, "--max-per-img", help="CKPT mode: override the recipe's max detections per patch."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="CKPT mode: cuda, cpu or auto (default: auto)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="CKPT mode: patches per forward (default: 1 on the CPU, 4 with a GPU)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="CKPT mode: image-decoding processes (default: 0 on the CPU, 4 with a GPU)."
    ),
    dota_version: Optional[str] = typer.Option(
        None, "--dota-version", help="--results mode: the mean over DOTA v1.0, v1.5 or v2.0's classes."
    ),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        help="--results mode: comma-separated classes of the mean, or dota1.0 / dota1.5 / dota2.0. Default: the "
        "model's classes (CKPT mode, or a folder rotld wrote), else DOTA v1.0's 15 (the devkit's mean).",
    ),
    protocol: Optional[str] = typer.Option(
        None,
        "--protocol",
        help="Whose AP: dota (the DOTA devkit), hrsc07 / hrsc12 (HRSC2016 as MMRotate: VOC07 / area AP at IoU "
        "0.50:0.95), dior (DIOR-R as MMRotate: VOC07 AP50). Default: the model's recipe's (CKPT mode, or a folder "
        "rotld wrote), else dota.",
    ),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="dota protocol: voc07 (11-point AP, the devkit's, default) or area (under the PR curve)."
    ),
    no_merge: bool = typer.Option(False, "--no-merge", help="Evaluate patch ids as given instead of merging them."),
    merge_iou: float = typer.Option(0.1, "--merge-iou", help="IoU of the merge's per-image, per-class rotated NMS."),
    save_merged: Optional[Path] = typer.Option(
        None, "--save-merged", help="--results mode: write the evaluated (merged) Task1 files here."
    ),
    zip_path: Optional[Path] = typer.Option(None, "--zip", help="Write a DOTA server submission zip (all classes)."),
    strict: Optional[bool] = typer.Option(
        None,
        "--strict/--lenient",
        help="--strict: stop at the first bad line; --lenient: skip and count bad lines. Default: a bad result line "
        "stops, a bad ground-truth line is skipped, counted and reported (exit 1 at the end).",
    ),
    seed_compat: bool = typer.Option(
        False, "--seed-compat", help="Reproduce the seed script's accumulator bug (inflated AP55..AP95), labelled."
    ),
    save_vis: Optional[Path] = typer.Option(
        None, "--save-vis", help="Draw the merged detections (and dashed GT) on the full images, as PNGs in DIR."
    ),
    image_dir: Optional[Path] = typer.Option(
        None, "--image-dir", help="The full images for --save-vis (default: the images/ folder beside --ann-dir)."
    ),
    vis_score_thr: float = typer.Option(
        0.3, "--vis-score-thr", help="--save-vis draws the detections scoring at least this."
    ),
    plot: bool = typer.Option(
        False, "--plot", help="Save PR curves per class (IoU 0.5, 0.75) and AP against IoU as PNGs into --out."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (fractions in [0, 1])."),
) -> None:
    from rotld_cli import ui
    from rotld_cli.evaluation import PictureOptions

    if checkpoint is not None and results is not None:
        raise UsageError("give either a checkpoint or --results, not both")
    if checkpoint is None and results is None:
        raise UsageError(
            "pass a checkpoint with --split-dir DIR, or --results DIR (a folder of Task1_<class>.txt files)"
        )
    show_progress = not as_json and ui.is_interactive()
    pictures = PictureOptions(vis_dir=save_vis, image_dir=image_dir, vis_score_thr=vis_score_thr)
    if checkpoint is not None:
        results_only = dict(
            no_merge=no_merge, save_merged=save_merged, classes=classes, dota_version=dota_version,
            lenient=strict is False,
        )
        _refuse("--results evaluation", results_only)
        if split_dir is None:
            raise UsageError(
                "--split-dir DIR is required with a checkpoint (the patches: a split folder written by "
                "`rotld prepare-dota`, e.g. OUT/val)"
            )
        report = _evaluate_checkpoint(
            checkpoint, split_dir, ann_dir, out, recipe, imageset, device, batch_size, workers, skip_empty_patches,
            score_thr, nms_iou, max_per_img, metric, protocol, merge_iou, zip_path, seed_compat, pictures, plot,
            show_progress, strict is True,
        )  # fmt: skip
    else:
        checkpoint_only = dict(
            split_dir=split_dir,
            recipe=recipe,
            skip_empty_patches=skip_empty_patches,
            score_thr=score_thr,
            nms_iou=nms_iou,
            max_per_img=max_per_img,
            device=device,
            batch_size=batch_size,
            workers=workers,
        )
        _refuse("checkpoint evaluation (CKPT --split-dir DIR)", checkpoint_only)
        if ann_dir is None and save_merged is None and zip_path is None:
            raise UsageError(
                "--ann-dir DIR (the labelTxt ground truth) is required with --results, "
                "unless you only merge (--save-merged DIR or --zip FILE)"
            )
        report = _evaluate_results(
            results, ann_dir, imageset, dota_version, classes, metric, protocol, no_merge, merge_iou, save_merged,
            zip_path, strict, seed_compat, pictures, plot, out, show_progress,
        )  # fmt: skip
    if report.run is not None:
        for path, reason in report.run.unreadable:  # on stderr, with --json too
            ui.warn(f"{path}: skipped ({reason})")
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _render(report)
    if report.gt_skipped.lines:
        raise typer.Exit(1)  # the numbers are printed, but a label file needs fixing


def _refuse(mode: str, given: dict) -> None:
    """Options of the other mode are errors, not silently ignored."""
    for name, value in given.items():
        if value is not None and value is not False:
            raise UsageError(f"--{name.replace('_', '-')} applies to {mode} only")


def _evaluate_checkpoint(
    checkpoint,
    split_dir,
    ann_dir,
    out,
    recipe,
    imageset,
    device,
    batch_size,
    workers,
    skip_empty_patches,
    score_thr,
    nms_iou,
    max_per_img,
    metric,
    protocol,
    merge_iou,
    zip_path,
    seed_compat,
    pictures,
    plot,
    show_progress,
    strict_ground_truth,
):
    from rotld_cli.engine.checkpoint_eval import CheckpointEvalOptions, evaluate_checkpoint

    options = CheckpointEvalOptions(
        checkpoint=checkpoint, split_dir=split_dir, ann_dir=ann_dir, out_dir=out, recipe=recipe, imageset=imageset,
        device=device, batch_size=batch_size, workers=workers,
        skip_empty_patches=skip_empty_patches, score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img,
        metric=metric, protocol=protocol, merge_iou=merge_iou, zip_path=zip_path, seed_compat=seed_compat,
        pictures=pictures, plot=plot, strict_ground_truth=strict_ground_truth,
    )  # fmt: skip
    with Bars(show_progress, f"detect {split_dir.name}") as bars:
        return evaluate_checkpoint(options, bars.progress()).report


def _evaluate_results(
    results,
    ann_dir,
    imageset,
    dota_version,
    classes,
    metric,
    protocol,
    no_merge,
    merge_iou,
    save_merged,
    zip_path,
    strict,
    seed_compat,
    pictures,
    plot,
    out,
    show_progress,
):
    from rotld_cli.evaluation import EvaluateOptions, class_set, default_out_dir, evaluate_result_files

    options = EvaluateOptions(
        results=results, ann_dir=ann_dir, imageset=imageset, dota_version=dota_version,
        classes=None if classes is None else tuple(c.strip() for c in classes.split(",") if c.strip()),
        metric=metric, protocol=protocol, merge=not no_merge, merge_iou=merge_iou, save_merged=save_merged,
        zip_path=zip_path,
        strict=strict, seed_compat=seed_compat,
    )  # fmt: skip
    if plot:
        out = out or default_out_dir(results)
        pictures.plot_dir = out
    with Bars(show_progress, "reading results", len(class_set(options).classes)) as bars:
        progress = bars.progress()
        return evaluate_result_files(options, pictures, out, progress.classes, progress.drawing)


class Bars:
    """The Rich bars of one evaluation (patches, classes, drawing), each started on its first
    callback and stopped on exit; with `show=False` the callbacks are None and nothing is drawn."""

    def __init__(self, show: bool, patches_label: str, classes_total: int | None = None) -> None:
        self.show = show
        self.patches_label = patches_label
        self.classes_total = classes_total
        self.bars: dict[str, tuple] = {}

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar, _ in self.bars.values():
            bar.stop()

    def _update(self, key: str, label: str, total: int | None, **fields) -> None:
        from rotld_cli import ui

        if key not in self.bars:
            for other, _ in self.bars.values():  # one live display at a time
                other.stop()
            bar = ui.progress(transient=True)
            bar.start()
            self.bars[key] = (bar, bar.add_task(label, total=total))
        bar, task = self.bars[key]
        bar.update(task, **fields)

    def progress(self):
        from rotld_cli.evaluation.evaluator import EvalProgress

        if not self.show:
            return EvalProgress()
        return EvalProgress(
            patches=lambda done, total: self._update("patches", self.patches_label, total, completed=done),
            classes=lambda what, done: self._update("classes", "reading results", self.classes_total, advance=done,
                                                    description=what),
            drawing=lambda done, total: self._update("drawing", "drawing", total, completed=done),
        )  # fmt: skip


def _render(report) -> None:
    from rotld_cli import ui
    from rotld_cli.evaluation.table import TERMINAL_COLUMNS, detections_table, per_class_table, summary_table

    if report.run is not None:
        ui.info(report.run.describe())
        ui.info(f"patch-level Task1 files written to {report.run.patch_results}")
    if report.evaluated:
        source = f"{report.run.recipe}: " if report.run is not None else ""
        title = f"{source}{report.num_images} images, AP (%), {report.protocol_rules}"
        if report.merged:
            title += ", patches merged"
        print_table(per_class_table(report, TERMINAL_COLUMNS), title)
        print_table(summary_table(report))
        if report.devkit is not None:
            ui.warn(
                "--seed-compat: AP55..AP95 and AP carry the seed script's accumulator bug; the correct values are "
                + ", ".join(f"{k} {100 * report.devkit[k]:.2f}" for k in ("AP", "AP50", "AP70", "AP90"))
            )
    else:
        print_table(detections_table(report))
    if report.evaluated and report.missing_classes and report.run is None:
        ui.warn(f"no detections for {', '.join(report.missing_classes)}: AP 0")
    for note in report.notes():
        ui.warn(note)
    if report.saved is not None:
        ui.info(f"Task1 files written to {report.saved}")
    if report.zip is not None:
        ui.info(f"submission zip written to {report.zip}")
    _render_pictures(report.pictures)
    if report.out is not None:
        ui.info(f"report written to {Path(report.out) / 'report.json'} and report.md")


def print_table(table, title: str | None = None) -> None:
    from rotld_cli import ui

    ui.console.print(ui.table(title or table.title, list(table.columns), [list(r) for r in table.rows]))


def _render_pictures(pictures: dict) -> None:
    from rotld_cli import ui

    if "visualizations" in pictures:
        vis = pictures["visualizations"]
        ui.info(f"{vis['written']} pictures drawn into {vis['dir']}")
        for problem in vis["problems"]:
            ui.warn(problem)
    if "plots" in pictures:
        ui.info("plots: " + ", ".join(pictures["plots"]))
