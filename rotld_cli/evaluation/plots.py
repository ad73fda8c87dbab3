"""Evaluation figures: per-class precision/recall curves and AP against the IoU threshold.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`, rendered by Agg),
never through pyplot: nothing needs a display, no global backend is switched under the caller,
and no figure lingers in a pyplot registry. Class colours are the ones `rotld_cli.evaluation.visualize`
draws on the images. Every file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rotld_cli.dota.formats import Task1Detections
from rotld_cli.evaluation.metrics import ClassGroundTruth, PRCurve, evaluate_class_curves
from rotld_cli.evaluation.visualize import class_colours
from rotld_cli.fileio import atomic_path

GRID_COLUMNS = 5
DPI = 100


def _rgb(classes: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    return {name: (r / 255, g / 255, b / 255) for name, (b, g, r) in class_colours(classes).items()}


def _colour_order(names: Sequence[str], classes: Sequence[str] | None) -> list[str]:
    """The class list the palette is indexed by: `classes`, then any name it lacks."""
    order = list(classes or ())
    return order + [n for n in names if n not in set(order)]


def save_figure(fig, out_path: os.PathLike[str] | str) -> Path:
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out_path


def pr_curves_from_metrics(
    dets: Mapping[str, Task1Detections],
    gts: Mapping[str, ClassGroundTruth],
    image_ids: Sequence[str],
    iou_thr: float = 0.5,
    use_07_metric: bool = True,
) -> dict[str, PRCurve]:
    """Per class (in `gts` order): the devkit's recall and precision at `iou_thr`, and its AP.

    For curves outside an evaluation (the evaluator already returns its curves: `Evaluation.curves`).
    `gts[c].offsets` indexes `image_ids`; the marks come from `metrics.evaluate_class_curves`, so
    the AP equals that module's. A class without detections or non-difficult GT gets empty arrays, AP 0.
    """
    index = {image_id: k for k, image_id in enumerate(image_ids)}
    curves: dict[str, PRCurve] = {}
    for name, gt in gts.items():
        det = dets.get(name)
        if det is None or len(det) == 0 or gt.npos == 0:
            curves[name] = (np.zeros(0), np.zeros(0), 0.0)
            continue
        det_image = np.fromiter((index[i] for i in det.image_ids), dtype=np.int64, count=len(det))
        _, by_thr = evaluate_class_curves(det.scores, det_image, det.polys, gt, [iou_thr], use_07_metric, [iou_thr])
        curves[name] = by_thr[iou_thr]
    return curves


def plot_pr_curves(
    curves: Mapping[str, PRCurve], out_path: os.PathLike[str] | str, title: str, classes: Sequence[str] | None = None
) -> Path:
    """One subplot per class: precision against recall, its monotone envelope and the AP.

    The envelope (grey, dashed) is the precision the VOC AP integrates. `classes` (default: the
    keys of `curves`) fixes the colours, as on the drawn images.
    """
    from matplotlib.figure import Figure

    names = list(curves)
    cols = max(1, min(GRID_COLUMNS, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(3.0 * cols, 2.6 * rows + 0.6), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    colours = _rgb(_colour_order(names, classes))
    for ax, name in zip(axes, names):
        recall, precision, ap = curves[name]
        recall = np.asarray(recall, dtype=np.float64)
        precision = np.asarray(precision, dtype=np.float64)
        ax.set_title(f"{name}  AP {100 * ap:.1f}", fontsize=9)
        if recall.size:
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ax.plot(recall, envelope, color="0.4", linewidth=0.8, linestyle="--")
            ax.plot(recall, precision, color=colours[name], linewidth=1.5)
        else:
            ax.text(0.5, 0.5, "no detections or no GT", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.grid(True, linewidth=0.3)
        ax.tick_params(labelsize=7)
    for k in range(len(names), len(axes)):
        axes[k].set_axis_off()
        if k >= cols:
            axes[k - cols].tick_params(labelbottom=True)  # shared x: the axes above shows the recall ticks
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    return save_figure(fig, out_path)


def _threshold_of(name: str) -> float | None:
    """'AP50' -> 0.5, 'AP85' -> 0.85; other keys -> None."""
    if name.startswith("AP") and name[2:].isdigit():
        return int(name[2:]) / 100
    return None


def ap_by_iou_from_report(report: Mapping) -> tuple[dict[float, float], dict[str, dict[float, float]]]:
    """(mean AP, per-class AP) by IoU threshold from an evaluation report's JSON."""
    mean = {t: float(v) for k, v in report.items() if (t := _threshold_of(k)) is not None}
    per_class = {
        name: {t: float(v) for k, v in aps.items() if (t := _threshold_of(k)) is not None}
        for name, aps in report.get("per_class", {}).items()
    }
    return mean, per_class


def plot_ap_vs_iou(
    ap_by_threshold: Mapping[float, float] | Mapping[str, Mapping[float, float]],
    out_path: os.PathLike[str] | str,
    title: str = "AP vs IoU threshold",
    mean: Mapping[float, float] | None = None,
    classes: Sequence[str] | None = None,
) -> Path:
    """AP (%) against the IoU threshold: the mean as a thick line, each class as a thin one.

    `ap_by_threshold` is either {threshold: AP} (the mean alone) or {class: {threshold: AP}};
    with classes, the mean line is their class mean at each threshold unless `mean` is given.
    `classes` (default: the classes given) fixes the colours, as on the drawn images.
    """
    from matplotlib.figure import Figure

    per_class: dict[str, dict[float, float]] = {}
    if ap_by_threshold and all(isinstance(v, Mapping) for v in ap_by_threshold.values()):
        per_class = {str(k): dict(v) for k, v in ap_by_threshold.items()}
        if mean is None:
            thresholds = sorted({t for aps in per_class.values() for t in aps})
            mean = {t: float(np.mean([aps.get(t, 0.0) for aps in per_class.values()])) for t in thresholds}
    elif mean is None:
        mean = dict(ap_by_threshold)
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.subplots()
    colours = _rgb(_colour_order(list(per_class), classes))
    for name, aps in per_class.items():
        xs = sorted(aps)
        ax.plot(xs, [100 * aps[t] for t in xs], color=colours[name], linewidth=1.0, label=name)
    xs = sorted(mean)
    ax.plot(xs, [100 * mean[t] for t in xs], color="black", linewidth=2.5, marker="o", label="mean")
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (%)")
    ax.set_title(title)
    ax.set_xticks(np.round(np.arange(0.5, 0.951, 0.05), 2))
    ax.set_xlim(0.48, 0.97)
    ax.set_ylim(0.0, 100.0)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, out_path)
