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

PAPER_COLUMNS = ("AP", "AP50", "AP70", "AP90")


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
        None, "--dota-version", help="--results mode: class list of the mean, v1.0 (default), v1.5 or v2.0."
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="--results mode: comma-separated classes of the mean (CKPT mode: the model's classes)."
    ),
    metric: str = typer.Option("voc07", "--metric", help="voc07: 11-point AP (the devkit's); area: area under PR."),
    no_merge: bool = typer.Option(False, "--no-merge", help="Evaluate patch ids as given instead of merging them."),
    merge_iou: float = typer.Option(0.1, "--merge-iou", help="IoU of the merge's per-image, per-class rotated NMS."),
    save_merged: Optional[Path] = typer.Option(
        None, "--save-merged", help="--results mode: write the evaluated (merged) Task1 files here."
    ),
    zip_path: Optional[Path] = typer.Option(None, "--zip", help="Write a DOTA server submission zip (all classes)."),
    strict: bool = typer.Option(True, "--strict/--lenient", help="Stop at the first bad line, or skip and count."),
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
            no_merge=no_merge, save_merged=save_merged, classes=classes, dota_version=dota_version, lenient=not strict
        )
        _refuse("--results evaluation", results_only)
        if split_dir is None:
            raise UsageError(
                "--split-dir DIR is required with a checkpoint (the patches: a split folder written by "
                "`rotld prepare-dota`, e.g. OUT/val)"
            )
        report = _evaluate_checkpoint(
            checkpoint, split_dir, ann_dir, out, recipe, imageset, device, batch_size, workers, skip_empty_patches,
            score_thr, nms_iou, max_per_img, metric, merge_iou, zip_path, seed_compat, pictures, plot, show_progress,
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
            results, ann_dir, imageset, dota_version, classes, metric, no_merge, merge_iou, save_merged, zip_path,
            strict, seed_compat, pictures, plot, out, show_progress,
        )  # fmt: skip
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _render(report)


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
    merge_iou,
    zip_path,
    seed_compat,
    pictures,
    plot,
    show_progress,
) -> dict:
    from rotld_cli.engine.checkpoint_eval import CheckpointEvalOptions, evaluate_checkpoint

    options = CheckpointEvalOptions(
        checkpoint=checkpoint, split_dir=split_dir, ann_dir=ann_dir, out_dir=out, recipe=recipe, imageset=imageset,
        device=device, batch_size=batch_size, workers=workers,
        skip_empty_patches=skip_empty_patches, score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img,
        metric=metric, merge_iou=merge_iou, zip_path=zip_path, seed_compat=seed_compat, pictures=pictures, plot=plot,
        show_progress=show_progress,
    )  # fmt: skip
    return evaluate_checkpoint(options).report


def _evaluate_results(
    results,
    ann_dir,
    imageset,
    dota_version,
    classes,
    metric,
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
) -> dict:
    from rotld_cli import ui
    from rotld_cli.evaluation import EvaluateOptions, default_out_dir, evaluate_result_files, evaluated_classes

    options = EvaluateOptions(
        results=results, ann_dir=ann_dir, imageset=imageset, dota_version=dota_version or "v1.0",
        classes=None if classes is None else tuple(c.strip() for c in classes.split(",") if c.strip()),
        metric=metric, merge=not no_merge, merge_iou=merge_iou, save_merged=save_merged, zip_path=zip_path,
        strict=strict, seed_compat=seed_compat,
    )  # fmt: skip
    if plot:
        out = out or default_out_dir(results)
        pictures.plot_dir = out
    if not show_progress:
        return evaluate_result_files(options, pictures, out)
    with ui.progress(transient=True) as bar:
        task = bar.add_task("reading results", total=len(evaluated_classes(options)))
        return evaluate_result_files(
            options,
            pictures,
            out,
            lambda what, done: bar.update(task, advance=done, description=what),
            show_progress=True,
        )


def _pct(value: float) -> str:
    return f"{100.0 * value:.2f}"


def _render(report: dict) -> None:
    from rotld_cli import ui

    if "checkpoint" in report:
        _render_inference(report)
    if report.get("evaluated", True):
        _render_ap(report)
    else:
        rows = [[name, c["num_det"]] for name, c in report["per_class"].items()]
        title = f"{report['num_images']} images, detections merged and written (no --ann-dir: no AP)"
        ui.console.print(ui.table(title, ["class", "detections"], rows))
    if report["missing_classes"] and "checkpoint" not in report:
        ui.warn(f"no result file for {', '.join(report['missing_classes'])}: AP 0")
    if report.get("ignored_classes"):
        ui.info(f"--classes: result files of {', '.join(report['ignored_classes'])} left out")
    skipped = report["skipped"]
    if skipped["lines"]:
        ui.warn(f"--lenient: skipped {skipped['lines']} line(s); first problem: {skipped['problems'][0]}")
    if "saved" in report:
        ui.info(f"Task1 files written to {report['saved']}")
    if "zip" in report:
        ui.info(f"submission zip written to {report['zip']}")
    _render_pictures(report.get("pictures", {}))
    if "out" in report:
        ui.info(f"report written to {Path(report['out']) / 'report.json'} and report.md")


def _render_inference(report: dict) -> None:
    from rotld_cli import ui

    patches, inference = report["patches"], report["inference"]
    line = (
        f"{patches['run']} of {patches['total']} patches in {inference['seconds']:.1f} s "
        f"({inference['patches_per_s']:.1f} patches/s on {inference['device']})"
    )
    if patches["skipped_empty"]:
        line += f", {patches['skipped_empty']} without objects skipped (--skip-empty-patches)"
    if patches["unreadable"]:
        line += f", {len(patches['unreadable'])} unreadable skipped (warned above)"
    ui.info(line)
    ui.info(f"patch-level Task1 files written to {report['patch_results']}")


def _render_ap(report: dict) -> None:
    from rotld_cli import ui

    rows = [
        [name, c["num_gt"], c["num_det"], _pct(c["AP50"]), _pct(c["AP75"]), _pct(c["AP"])]
        for name, c in report["per_class"].items()
    ]
    rows.append(["mean", "", "", _pct(report["AP50"]), _pct(report["AP75"]), _pct(report["AP"])])
    metric = "VOC07 11-point" if report["metric"] == "voc07" else "area under PR"
    title = f"DOTA {report['dota_version']} Task1, {report['num_images']} images, {metric} AP (%)"
    if "checkpoint" in report:
        title = f"{report['recipe']}: {len(report['classes'])} classes, {report['num_images']} images, {metric} AP (%)"
    if report["merged"]:
        title += ", patches merged"
    ui.console.print(ui.table(title, ["class", "GTs", "detections", "AP50", "AP75", "AP50:95"], rows))
    label = "seed script values (accumulator bug reproduced)" if report["seed_compat"] else "paper form"
    ui.console.print(ui.table(f"Summary, {label}", list(PAPER_COLUMNS), [[_pct(report[k]) for k in PAPER_COLUMNS]]))
    if report["seed_compat"]:
        true = report["devkit"]
        ui.warn(
            "--seed-compat: AP55..AP95 and AP carry the seed script's accumulator bug; the correct values are "
            + ", ".join(f"{k} {_pct(true[k])}" for k in PAPER_COLUMNS)
        )


def _render_pictures(pictures: dict) -> None:
    from rotld_cli import ui

    if "visualizations" in pictures:
        vis = pictures["visualizations"]
        ui.info(f"{vis['written']} pictures drawn into {vis['dir']}")
        for problem in vis["problems"]:
            ui.warn(problem)
    if "plots" in pictures:
        ui.info("plots: " + ", ".join(pictures["plots"]))
