"""The demo report's pictures: one val image as the ground truth, the baseline and the student see
it (side by side), and the three runs' training loss against the iteration (from `log.jsonl`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.dota.formats import TASK1_PREFIX, class_from_task1_name, read_label_file, read_task1_file
from rotld_cli.dota.polyiou import iou_poly_pairs
from rotld_cli.evaluation.visualize import draw_detections, find_image
from rotld_cli.fileio import atomic_path

FIGURES = "figures"
SCORE_THR = 0.3  # `rotld evaluate --save-vis`'s default
FOUND_IOU = 0.5  # a ground-truth object counts as found by a same-class box above SCORE_THR with IoU > this
TITLE_HEIGHT = 22
SCALE = 2  # the 256 px scenes drawn at 512 px: labels stay readable


def write_figures(work_dir: Path, runs: Sequence[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(title, path) of every figure written into `work_dir/figures/`; a figure whose inputs are
    missing (an interrupted run) is left out, never an error: the table is the report's core."""
    out = work_dir / FIGURES
    figures = []
    image = detections_side_by_side(work_dir, [r for r in runs if r[0] in ("baseline", "student")], out)
    if image is not None:
        image_id = image.stem.removeprefix("val_")
        title = f"Val image {image_id}: ground truth (dashed), baseline, student (score >= {SCORE_THR})"
        figures.append((title, image))
    logs = [(label, work_dir / "runs" / key / "log.jsonl") for key, label in runs]
    curves = loss_curves([(label, path) for label, path in logs if path.is_file()], out / "loss_curves.png")
    if curves is not None:
        figures.append(("Training loss", curves))
    return figures


def _merged(results: Path) -> dict[str, list[tuple[str, float, np.ndarray]]]:
    """Per image: the (class, score, polygon) detections of a merged Task1 folder."""
    by_image: dict[str, list[tuple[str, float, np.ndarray]]] = {}
    for path in sorted(results.glob(f"{TASK1_PREFIX}*.txt")):
        det = read_task1_file(path)
        name = class_from_task1_name(path)
        for image_id, score, poly in zip(det.image_ids, det.scores.tolist(), det.polys):
            by_image.setdefault(image_id, []).append((name, score, poly))
    return by_image


def _panel(image: np.ndarray, title: str, dets, gt: list[np.ndarray], classes: list[str]) -> np.ndarray:
    """The image enlarged, the ground truth dashed white (as `--save-vis` draws it), the detections
    scoring >= 0.3 in class colours, and a title strip."""
    big = cv2.resize(image, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    drawn = draw_detections(big, [(n, s, np.asarray(p) * SCALE) for n, s, p in dets], classes, SCORE_THR,
                            [np.asarray(p) * SCALE for p in gt])  # fmt: skip
    strip = np.full((TITLE_HEIGHT, drawn.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (4, TITLE_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, drawn])


def detections_side_by_side(work_dir: Path, runs: Sequence[tuple[str, str]], out_dir: Path) -> Path | None:
    """The first val image with ground truth: GT | each run's merged detections (score >= 0.3) over it."""
    ann_dir, image_dir = work_dir / "data" / "val" / "labelTxt", work_dir / "data" / "val" / "images"
    labelled = sorted(ann_dir.glob("*.txt")) if ann_dir.is_dir() else []
    if not labelled:
        return None
    image_id = labelled[0].stem
    path = find_image(image_dir, image_id)
    image = cv2.imread(str(path)) if path is not None else None
    if image is None:
        return None
    objects = read_label_file(labelled[0]).objects
    classes = sorted({o.name for o in objects})
    detections = {}
    for key, label in runs:
        merged = work_dir / "runs" / key / "results" / "merged"
        if not merged.is_dir():
            return None
        detections[label] = _merged(merged).get(image_id, [])
        classes += sorted({name for name, _, _ in detections[label]} - set(classes))
    gt = [o.poly for o in objects]
    panels = [_panel(image, f"ground truth: {len(gt)} objects", [], gt, classes)]
    truth = [(o.name, o.poly) for o in objects]
    panels += [_panel(image, f"{label}: {found_objects(truth, dets)} found", dets, gt, classes)
               for label, dets in detections.items()]
    final = out_dir / f"val_{image_id}.png"
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.hstack(panels)):
            raise OSError(f"{final}: the PNG encoder failed")
    return final


def found_objects(truth: Sequence[tuple[str, np.ndarray]], dets: Sequence[tuple[str, float, np.ndarray]],
                  score_thr: float = SCORE_THR, iou_thr: float = FOUND_IOU) -> int:
    """Ground-truth objects matched by a same-class detection scoring >= `score_thr` with polygon IoU >
    `iou_thr`: detections by descending score, each object matched once (the devkit's greedy rule)."""
    matched = [False] * len(truth)
    for name, _, poly in sorted((d for d in dets if d[1] >= score_thr), key=lambda d: -d[1]):
        candidates = [i for i, (gt_name, _) in enumerate(truth) if gt_name == name and not matched[i]]
        if not candidates:
            continue
        ious = iou_poly_pairs(np.array([truth[i][1] for i in candidates]).reshape(-1, 8),
                              np.tile(np.asarray(poly, dtype=np.float64).reshape(1, 8), (len(candidates), 1)))
        best = int(np.argmax(ious))
        if ious[best] > iou_thr:
            matched[candidates[best]] = True
    return sum(matched)


def found_in_val(work_dir: Path, key: str) -> tuple[int, int] | None:
    """(found, total) ground-truth objects over every val image for one run's merged detections."""
    ann_dir, merged = work_dir / "data" / "val" / "labelTxt", work_dir / "runs" / key / "results" / "merged"
    if not (ann_dir.is_dir() and merged.is_dir()):
        return None
    by_image = _merged(merged)
    found = total = 0
    for label in sorted(ann_dir.glob("*.txt")):
        truth = [(o.name, o.poly) for o in read_label_file(label).objects]
        total += len(truth)
        found += found_objects(truth, by_image.get(label.stem, []))
    return found, total


def read_losses(log: Path) -> tuple[list[int], list[float]]:
    """(iterations, total loss) of the training records of a run's `log.jsonl`."""
    iters, losses = [], []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("mode") == "train" and "loss" in record:
            iters.append(int(record["iter"]))
            losses.append(float(record["loss"]))
    return iters, losses


def loss_curves(logs: Sequence[tuple[str, Path]], out_path: Path) -> Path | None:
    """One line per run: the total training loss (LD and KD terms included for the student)."""
    series = [(label, *read_losses(path)) for label, path in logs]
    series = [s for s in series if s[1]]
    if not series:
        return None
    from matplotlib.figure import Figure

    from rotld_cli.evaluation.plots import save_figure

    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, iters, losses in series:
        ax.plot(iters, losses, linewidth=1.5, label=label, marker="o" if len(iters) < 20 else None, markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (log scale)")
    ax.set_yscale("log")
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_path)
