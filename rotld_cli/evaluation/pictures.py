"""What an evaluation draws: detections on the full images (`--save-vis`) and the figures
(`--plot`: PR curves at IoU 0.5 and 0.75 from the evaluator's own curves, AP against IoU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotld_cli.errors import UsageError
from rotld_cli.evaluation.evaluator import Evaluation
from rotld_cli.evaluation.report import MAX_LISTED_PROBLEMS


@dataclass
class PictureOptions:
    """`--save-vis DIR` (drawn detections, full images from `image_dir`) and `--plot` (figures into `plot_dir`)."""

    vis_dir: Path | None = None
    image_dir: Path | None = None
    vis_score_thr: float = 0.3
    plot_dir: Path | None = None

    @property
    def wanted(self) -> bool:
        return self.vis_dir is not None or self.plot_dir is not None


def resolve_image_dir(pictures: PictureOptions, ann_dir: Path | None) -> Path | None:
    """The full images to draw on: `--image-dir`, else the `images/` folder beside `--ann-dir`
    (DOTA's `val/images` beside `val/labelTxt`). Checked before any long work."""
    if pictures.vis_dir is None:
        return None
    if not 0.0 <= pictures.vis_score_thr <= 1.0:
        raise UsageError(f"--vis-score-thr must be in [0, 1], got {pictures.vis_score_thr}")
    if pictures.image_dir is not None:
        if not pictures.image_dir.is_dir():
            raise UsageError(f"--image-dir {pictures.image_dir}: not a directory")
        return pictures.image_dir
    if ann_dir is None:
        raise UsageError("--save-vis: pass --image-dir DIR (the full images; without --ann-dir it cannot be derived)")
    derived = ann_dir.parent / "images"
    if not derived.is_dir():
        raise UsageError(f"--save-vis: no {derived} beside --ann-dir; pass --image-dir DIR (the full images)")
    return derived


def check_pictures(pictures: PictureOptions, ann_dir: Path | None) -> None:
    """Every picture option checked before the evaluation starts."""
    resolve_image_dir(pictures, ann_dir)
    if pictures.plot_dir is not None and ann_dir is None:
        raise UsageError("--plot needs --ann-dir (the curves are computed against the ground truth)")


def save_pictures(
    evaluation: Evaluation,
    pictures: PictureOptions,
    ann_dir: Path | None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Draw and plot what `pictures` asks for; returns the report's `pictures` entry (paths, problems)."""
    out: dict[str, Any] = {}
    image_dir = resolve_image_dir(pictures, ann_dir)
    if image_dir is not None:
        from rotld_cli.evaluation.visualize import save_visualizations

        drawn = save_visualizations(
            image_dir, evaluation.detections, pictures.vis_dir, evaluation.classes,
            score_thr=pictures.vis_score_thr, ann_dir=ann_dir, image_ids=evaluation.image_ids, progress=progress,
        )  # fmt: skip
        out["visualizations"] = {
            "dir": str(pictures.vis_dir),
            "written": len(drawn.written),
            "problems": drawn.problems[:MAX_LISTED_PROBLEMS],
        }
    if pictures.plot_dir is not None:
        if evaluation.ground_truth is None:
            raise UsageError("--plot needs --ann-dir (the curves are computed against the ground truth)")
        out["plots"] = [str(p) for p in save_plots(evaluation, pictures.plot_dir)]
    return out


def save_plots(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """`pr_curves_iou50.png`, `pr_curves_iou75.png` (one panel per class) and `ap_vs_iou.png`."""
    from rotld_cli.evaluation.plots import ap_by_iou_from_report, plot_ap_vs_iou, plot_pr_curves

    written = []
    for thr, curves in evaluation.curves.items():
        name = f"pr_curves_iou{round(thr * 100)}.png"
        title = f"Precision/recall at IoU {thr:.2f}"
        written.append(plot_pr_curves(curves, out_dir / name, title, classes=evaluation.classes))
    report = evaluation.report
    _, per_class = ap_by_iou_from_report(report.to_json())
    mean, _ = ap_by_iou_from_report(report.devkit if report.devkit is not None else report.means)
    title = f"AP vs IoU threshold (mean over {report.class_set})"
    written.append(plot_ap_vs_iou(per_class, out_dir / "ap_vs_iou.png", title, mean=mean, classes=evaluation.classes))
    return written
