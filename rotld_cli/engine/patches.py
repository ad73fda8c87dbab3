"""The one patch-inference loop: patch files -> a `Detector` in batches -> the caller's callback.

`rotld evaluate CKPT`, the demo (through it), the training-time evaluation and `bench/inference.py`
all run patches through `detect_patches`, so they read the same files the same way. An unreadable
patch (zero bytes, truncated, not an image) is reported with its reason and skipped, never fatal.
Decoding runs on `workers` threads (OpenCV releases the GIL) while the model works on the previous
batch. Progress goes to a callback: this module draws nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.compat_libs import silence_opencv_log
from rotld_cli.detector import DetectionsPerClass, Detector
from rotld_cli.dota.formats import IMAGE_SUFFIXES, Task1Detections, is_image_file, write_task1_files
from rotld_cli.dota.polygons import detections_to_task1
from rotld_cli.errors import RotldError

silence_opencv_log()  # a corrupt patch is reported once, by its caller, not also by libpng's warnings on stderr
PatchProgress = Callable[[int, int], None]
"""`on_progress(patches_done, patches_total)`, after every batch."""
BatchSink = Callable[[list[str], list[DetectionsPerClass]], None]
"""`on_batch(patch_ids, detections)`: one call per batch, in file order."""


@dataclass
class PatchRunStats:
    """Which patches ran, which could not be read (path, reason), and the wall time of the loop."""

    ran: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def patches_per_s(self) -> float:
        return len(self.ran) / self.seconds if self.seconds > 0 else 0.0


def read_patch(path: Path) -> np.ndarray | str:
    """The BGR uint8 image of a patch file, or why it cannot be read."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if data.size == 0:
        return "empty file"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # OpenCV's own warning is off: the reason is returned instead
    return "cannot decode the image" if image is None else image


def _decoded(paths: Sequence[Path], batch_size: int, workers: int) -> Iterator[list[tuple[Path, np.ndarray | str]]]:
    batches = [list(paths[k:k + batch_size]) for k in range(0, len(paths), batch_size)]
    if workers <= 0:
        for batch in batches:
            yield [(p, read_patch(p)) for p in batch]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.map(read_patch, batch) for batch in batches[:2]]
        for k, batch in enumerate(batches):
            images = list(pending[k])
            if k + 2 < len(batches):
                pending.append(pool.map(read_patch, batches[k + 2]))
            yield list(zip(batch, images))


def detect_patches(
    detector: Detector,
    paths: Sequence[Path],
    on_batch: BatchSink,
    *,
    batch_size: int = 1,
    workers: int = 0,
    on_progress: PatchProgress | None = None,
) -> PatchRunStats:
    """Run `detector` over `paths` (patch id = file stem) in batches of `batch_size`; results go
    to `on_batch`, unreadable files to the returned stats."""
    stats = PatchRunStats()
    started = time.perf_counter()
    done = 0
    for batch in _decoded(list(paths), max(1, batch_size), max(0, workers)):
        good = [(p, image) for p, image in batch if not isinstance(image, str)]
        stats.unreadable += [(str(p), image) for p, image in batch if isinstance(image, str)]
        if good:
            ids = [p.stem for p, _ in good]
            on_batch(ids, detector.detect([image for _, image in good]))
            stats.ran += ids
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(paths))
    stats.seconds = time.perf_counter() - started
    return stats


@dataclass
class SplitDetections:
    """Per-class patch detections of a split folder, what was skipped, and how fast it ran."""

    detections: dict[str, Task1Detections]
    classes: tuple[str, ...]
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def patches_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def split_patch_paths(split_dir: os.PathLike[str] | str) -> list[Path]:
    """The patch images of a split folder (or of its `images/`); none is a one-line error."""
    split_dir = Path(split_dir)
    image_dir = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
    paths = sorted(p for p in image_dir.iterdir() if is_image_file(p)) if image_dir.is_dir() else []
    if not paths:
        raise RotldError(
            f"{image_dir}: no patch images ({', '.join(IMAGE_SUFFIXES)}); point at a split folder written by "
            "`rotld prepare-dota`"
        )
    return paths


def detect_split(detector: Detector, split_dir: os.PathLike[str] | str, out_dir: os.PathLike[str] | str | None = None,
                 *, workers: int = 0, on_progress: PatchProgress | None = None) -> SplitDetections:
    """Any `Detector` over a split's patches -> Task1 detections per class (patch ids), written to `out_dir`
    if given: what `rotld evaluate --results DIR --ann-dir DIR` merges and scores."""
    outputs: list[DetectionsPerClass] = []
    stats = detect_patches(detector, split_patch_paths(split_dir), lambda ids, dets: outputs.extend(dets),
                           batch_size=getattr(detector, "batch_size", 1), workers=workers, on_progress=on_progress)
    detections = detections_to_task1(outputs, stats.ran, detector.classes, detector.angle_version)
    found = SplitDetections(detections, tuple(detector.classes), len(stats.ran), stats.unreadable, stats.seconds)
    if out_dir is not None:
        found.written = write_task1_files(out_dir, detections, detector.classes)
    return found
