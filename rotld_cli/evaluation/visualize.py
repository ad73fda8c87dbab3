"""Detections drawn on DOTA images, so a user can see what an AP number means.

Rotated boxes are drawn anti-aliased in one colour per class (a fixed palette over the class
list, so the same class has the same colour in every picture of a run), each with a small
`class score` label on a filled background; ground truth, when given, is drawn underneath as
thin dashed white outlines. Pure OpenCV + numpy: usable without the training engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.dota.formats import IMAGE_SUFFIXES, FormatError, Task1Detections, read_label_file
from rotld_cli.errors import RotldError
from rotld_cli.fileio import atomic_path

Colour = tuple[int, int, int]
Detection = tuple[str, float, Sequence[float]]  # class name, score, 8 polygon coordinates

# Trubetskoy's "20 simple, distinct colours" without white, black, grey and beige (too close to
# the white ground truth): 18 colours, so every DOTA v2.0 class has its own.
PALETTE_RGB: tuple[Colour, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
)
BOX_THICKNESS = 2
GT_COLOUR: Colour = (255, 255, 255)
GT_DASH = 6  # pixels drawn, then GT_GAP pixels skipped, along every ground-truth edge
GT_GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.35
FONT_THICKNESS = 1
LABEL_PAD = 1


def class_colours(classes: Sequence[str]) -> dict[str, Colour]:
    """BGR colour per class, by its index in `classes`: the vivid distinct colours first, then
    evenly spaced hues for longer lists. None is white (the ground truth's colour)."""
    colours = {}
    extra = len(classes) - len(PALETTE_RGB)
    for k, name in enumerate(classes):
        if k < len(PALETTE_RGB):
            r, g, b = PALETTE_RGB[k]
        else:
            hsv = np.array([[[round((k - len(PALETTE_RGB)) * 180 / extra), 255, 255]]], dtype=np.uint8)
            b, g, r = (int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        colours[name] = (b, g, r)
    return colours


def _points(poly: Sequence[float]) -> np.ndarray:
    return np.round(np.asarray(poly, dtype=np.float64).reshape(4, 2)).astype(np.int32)


def label_text(name: str, score: float) -> str:
    return f"{name} {score:.2f}"


def label_rect(text: str, anchor: tuple[int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of a label whose bottom-left corner is at `anchor`, moved into the image."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
    w = tw + 2 * LABEL_PAD
    h = th + baseline + 2 * LABEL_PAD
    x0 = min(max(anchor[0], 0), max(width - w, 0))
    y0 = min(max(anchor[1] - h + 1, 0), max(height - h, 0))
    return x0, y0, x0 + w - 1, y0 + h - 1


def _draw_label(image: np.ndarray, text: str, anchor: tuple[int, int], colour: Colour) -> None:
    x0, y0, x1, y1 = label_rect(text, anchor, image.shape[1], image.shape[0])
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness=cv2.FILLED)
    _, baseline = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
    b, g, r = colour
    ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
    origin = (x0 + LABEL_PAD, y1 - LABEL_PAD - baseline)
    cv2.putText(image, text, origin, FONT, FONT_SCALE, ink, FONT_THICKNESS, cv2.LINE_AA)


def _draw_dashed_polygon(image: np.ndarray, poly: Sequence[float], colour: Colour) -> None:
    """1-pixel dashes without anti-aliasing: crisp, where an anti-aliased 1-pixel line turns grey."""
    pts = np.asarray(poly, dtype=np.float64).reshape(4, 2)
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        length = float(np.hypot(*(b - a)))
        start = 0.0
        while start < length:
            end = min(start + GT_DASH, length)
            p = a + (b - a) * (start / length)
            q = a + (b - a) * (end / length)
            cv2.line(image, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), colour, 1, cv2.LINE_8)
            start += GT_DASH + GT_GAP


def draw_detections(
    image_bgr: np.ndarray,
    dets: Iterable[Detection],
    classes: Sequence[str],
    score_thr: float = 0.3,
    gt: Iterable[Sequence[float]] | None = None,
) -> np.ndarray:
    """A copy of `image_bgr` with the detections scoring >= `score_thr` (and the GT polygons) drawn.

    Higher scores are drawn last, so they stay on top; all labels are drawn after all boxes so a
    box never hides a label.
    """
    colours = class_colours(classes)
    canvas = np.ascontiguousarray(image_bgr).copy()
    for poly in gt or ():
        _draw_dashed_polygon(canvas, poly, GT_COLOUR)
    kept = []
    for name, score, poly in dets:
        if name not in colours:
            raise ValueError(f"class {name!r} is not one of the {len(classes)} classes")
        if score >= score_thr:
            kept.append((float(score), name, _points(poly)))
    kept.sort(key=lambda d: d[0])
    for _, name, pts in kept:
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], True, colours[name], BOX_THICKNESS, cv2.LINE_AA)
    for score, name, pts in kept:
        _draw_label(canvas, label_text(name, score), (int(pts[0, 0]), int(pts[0, 1])), colours[name])
    return canvas


@dataclass
class Visualizations:
    """What `save_visualizations` wrote, and one message per image it had to skip."""

    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def find_image(image_dir: Path, image_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        path = image_dir / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def _detections_by_image(detections_by_class: dict[str, Task1Detections]) -> dict[str, list[Detection]]:
    by_image: dict[str, list[Detection]] = {}
    for name, det in detections_by_class.items():
        for image_id, score, poly in zip(det.image_ids, det.scores.tolist(), det.polys):
            by_image.setdefault(image_id, []).append((name, score, poly))
    return by_image


def save_visualizations(
    image_dir: os.PathLike[str] | str,
    detections_by_class: dict[str, Task1Detections],
    out_dir: os.PathLike[str] | str,
    classes: Sequence[str],
    score_thr: float = 0.3,
    ann_dir: os.PathLike[str] | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    image_ids: Sequence[str] | None = None,
) -> Visualizations:
    """Draw every image that has detections (or GT labels in `ann_dir`) into `out_dir/<id>.png`.

    `image_ids` restricts and orders the images (default: every id with detections or a label
    file, sorted). A missing or unreadable image, or a malformed label file, becomes a problem
    message instead of stopping the run (an unwritable `out_dir` does stop it, with a RotldError);
    `progress(done, total)` is called after every image.
    """
    unknown = sorted(set(detections_by_class) - set(classes))
    if unknown:
        raise RotldError(f"detections of unknown class(es) {', '.join(unknown)}; classes: {', '.join(classes)}")
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    ann = Path(ann_dir) if ann_dir is not None else None
    by_image = _detections_by_image(detections_by_class)
    if image_ids is None:
        labelled = {p.stem for p in ann.glob("*.txt")} if ann is not None else set()
        image_ids = sorted(set(by_image) | labelled)
    result = Visualizations()
    for done, image_id in enumerate(image_ids, start=1):
        _save_one(image_id, image_dir, out_dir, by_image.get(image_id, []), classes, score_thr, ann, result)
        if progress is not None:
            progress(done, len(image_ids))
    return result


def _save_one(image_id, image_dir, out_dir, dets, classes, score_thr, ann, result: Visualizations) -> None:
    path = find_image(image_dir, image_id)
    if path is None:
        result.problems.append(f"{image_dir / image_id}: no image ({', '.join(IMAGE_SUFFIXES)})")
        return
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        result.problems.append(f"{path}: cannot read the image")
        return
    gt = None
    label = ann / f"{image_id}.txt" if ann is not None else None
    if label is not None and label.is_file():
        try:
            gt = [obj.poly for obj in read_label_file(label).objects]
        except FormatError as exc:
            result.problems.append(f"{exc} (drawn without ground truth)")
    drawn = draw_detections(image, dets, classes, score_thr, gt)
    final = out_dir / f"{image_id}.png"
    try:
        with atomic_path(final) as tmp:
            if not cv2.imwrite(str(tmp), drawn):
                raise OSError("the PNG encoder failed")
    except OSError as exc:
        raise RotldError(f"{final}: cannot write: {exc.strerror or exc}") from None
    result.written.append(final)
