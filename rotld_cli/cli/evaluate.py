"""`rotld evaluate`: DOTA Task1 AP at IoU 0.50:0.05:0.95 with the DOTA devkit's rules.

One mode today: `--results DIR` (Task1 files, patch-level ones are merged first). The optional
CKPT argument is reserved for checkpoint evaluation (inference + merge + AP), a later mode of the
same command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.errors import NotAvailableError, UsageError

PAPER_COLUMNS = ("AP", "AP50", "AP70", "AP90")


@app.command("evaluate", help="Evaluate Task1 detections with the DOTA devkit's rules at IoU 0.50:0.95.")
def evaluate_cmd(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="A checkpoint to evaluate (not available yet; use --results)."
    ),
    results: Optional[Path] = typer.Option(None, "--results", help="Folder of Task1_<class>.txt files."),
    ann_dir: Optional[Path] = typer.Option(None, "--ann-dir", help="Ground truth: a DOTA labelTxt folder."),
    imageset: Optional[Path] = typer.Option(
        None, "--imageset", help="Image ids to evaluate (default: every label file)."
    ),
    dota_version: str = typer.Option("v1.0", "--dota-version", help="Class list of the mean: v1.0, v1.5 or v2.0."),
    metric: str = typer.Option("voc07", "--metric", help="voc07: 11-point AP (the devkit's); area: area under PR."),
    no_merge: bool = typer.Option(False, "--no-merge", help="Evaluate patch ids as given instead of merging them."),
    merge_iou: float = typer.Option(0.1, "--merge-iou", help="IoU of the merge's per-image, per-class rotated NMS."),
    save_merged: Optional[Path] = typer.Option(
        None, "--save-merged", help="Write the evaluated (merged) Task1 files here."
    ),
    zip_path: Optional[Path] = typer.Option(None, "--zip", help="Write a DOTA server submission zip (all classes)."),
    strict: bool = typer.Option(True, "--strict/--lenient", help="Stop at the first bad line, or skip and count."),
    seed_compat: bool = typer.Option(
        False, "--seed-compat", help="Reproduce the seed script's accumulator bug (inflated AP55..AP95), labelled."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (fractions in [0, 1])."),
) -> None:
    if results is None:
        if checkpoint is not None:
            raise NotAvailableError(
                "checkpoint evaluation is not available yet; evaluate result files with --results DIR"
            )
        raise UsageError("pass --results DIR (a folder of Task1_<class>.txt files) and --ann-dir DIR")
    if checkpoint is not None:
        raise UsageError("give either a checkpoint or --results, not both")
    if ann_dir is None:
        raise UsageError("--ann-dir DIR (the labelTxt ground truth) is required with --results")

    from rotld_cli import ui
    from rotld_cli.evaluation import EvaluateOptions, evaluate_results

    options = EvaluateOptions(
        results=results,
        ann_dir=ann_dir,
        imageset=imageset,
        dota_version=dota_version,
        metric=metric,
        merge=not no_merge,
        merge_iou=merge_iou,
        save_merged=save_merged,
        zip_path=zip_path,
        strict=strict,
        seed_compat=seed_compat,
    )
    if as_json or not ui.is_interactive():
        report = evaluate_results(options)
    else:
        from rotld_cli.dota.classes import classes_for

        with ui.progress(transient=True) as bar:
            task = bar.add_task("reading results", total=len(classes_for(dota_version)))
            report = evaluate_results(options, lambda what, done: bar.update(task, advance=done, description=what))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _render(report)


def _pct(value: float) -> str:
    return f"{100.0 * value:.2f}"


def _render(report: dict) -> None:
    from rotld_cli import ui

    rows = [
        [name, c["num_gt"], c["num_det"], _pct(c["AP50"]), _pct(c["AP75"]), _pct(c["AP"])]
        for name, c in report["per_class"].items()
    ]
    rows.append(["mean", "", "", _pct(report["AP50"]), _pct(report["AP75"]), _pct(report["AP"])])
    metric = "VOC07 11-point" if report["metric"] == "voc07" else "area under PR"
    title = f"DOTA {report['dota_version']} Task1, {report['num_images']} images, {metric} AP (%)"
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
    if report["missing_classes"]:
        ui.warn(f"no result file for {', '.join(report['missing_classes'])}: AP 0")
    skipped = report["skipped"]
    if skipped["lines"]:
        ui.warn(f"--lenient: skipped {skipped['lines']} line(s); first problem: {skipped['problems'][0]}")
    if "saved" in report:
        ui.info(f"Task1 files written to {report['saved']}")
    if "zip" in report:
        ui.info(f"submission zip written to {report['zip']}")
