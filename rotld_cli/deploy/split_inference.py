"""Engine-free patch inference: an exported model over a split folder, written as Task1 files.

`detect_split_onnx` is to an `.onnx` file what `engine.infer.infer_split` is to a checkpoint:
patch-level `Task1_<class>.txt` files that `rotld evaluate --results DIR --ann-dir DIR` merges
and scores. Polygons are mmrotate's `obb2poly_np(..., 'oc')` (corners, then the DOTA
`get_best_begin_point` reordering), so the files match the engine's line for line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.deploy.onnx_detector import OnnxDetector
from rotld_cli.deploy.postprocess import obb_corners
from rotld_cli.detector import DetectionsPerClass, Detector
from rotld_cli.dota.formats import Task1Detections, write_task1_files
from rotld_cli.errors import RotldError

PATCH_SUFFIXES = (".png", ".bmp", ".tif", ".jpg")


def best_begin_point(polys: np.ndarray) -> np.ndarray:
    """mmrotate `get_best_begin_point`: start each quad at the corner sequence closest to its hbb's corners."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 4, 2)
    lo, hi = polys.min(axis=1), polys.max(axis=1)
    target = np.stack([lo, np.stack([hi[:, 0], lo[:, 1]], 1), hi, np.stack([lo[:, 0], hi[:, 1]], 1)], axis=1)
    rolled = np.stack([np.roll(polys, -k, axis=1) for k in range(4)], axis=1)  # (n, 4 starts, 4, 2)
    force = np.sqrt(((rolled - target[:, None]) ** 2).sum(axis=3)).sum(axis=2)
    return rolled[np.arange(len(polys)), force.argmin(axis=1)].reshape(-1, 8)


def to_task1(results: Sequence[DetectionsPerClass], image_ids: Sequence[str],
             classes: Sequence[str]) -> dict[str, Task1Detections]:
    """Per image, per class (n, 6) boxes → Task1 detections per class, polygons as mmrotate writes them."""
    out = {}
    for c, name in enumerate(classes):
        ids: list[str] = []
        boxes = []
        for image_id, per_class in zip(image_ids, results):
            found = np.asarray(per_class[c], dtype=np.float64).reshape(-1, 6)
            ids.extend([image_id] * len(found))
            boxes.append(found)
        stacked = np.concatenate(boxes) if boxes else np.zeros((0, 6))
        out[name] = Task1Detections(ids, stacked[:, 5].copy(), best_begin_point(obb_corners(stacked)))
    return out


@dataclass
class SplitDetections:
    detections: dict[str, Task1Detections]
    classes: tuple[str, ...]
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)


def detect_split(detector: Detector, split_dir: os.PathLike[str] | str, out_dir: os.PathLike[str] | str | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> SplitDetections:
    """Run any `Detector` over `split_dir/images`; unreadable patches are listed in `skipped`, not fatal."""
    split_dir = Path(split_dir)
    folder = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PATCH_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise RotldError(f"{folder}: no patch images; point at a split folder written by `rotld prepare-dota`")
    results, ids, skipped = [], [], []
    started = time.perf_counter()
    for done, path in enumerate(paths, start=1):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append((str(path), "cannot decode the image"))
        else:
            results.extend(detector.detect([image]))
            ids.append(path.stem)
        if on_progress is not None:
            on_progress(done, len(paths))
    seconds = time.perf_counter() - started
    classes = tuple(detector.classes)
    found = SplitDetections(to_task1(results, ids, classes), classes, len(ids), skipped, seconds)
    if out_dir is not None:
        found.written = write_task1_files(out_dir, found.detections, classes)
    return found


def detect_split_onnx(model: os.PathLike[str] | str, split_dir: os.PathLike[str] | str,
                      out_dir: os.PathLike[str] | str | None = None, *, threads: int | None = None,
                      on_progress: Callable[[int, int], None] | None = None) -> SplitDetections:
    """`rotld export`'s model over a split's patches → patch-level Task1 files in `out_dir` (engine-free)."""
    return detect_split(OnnxDetector.from_file(model, threads=threads), split_dir, out_dir, on_progress)
