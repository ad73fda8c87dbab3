"""Predict on whole images: windows as prepare-dota cuts them, batched detection, one merge.

Per image: the windows of `dota.split.sliding_windows` (same sizes, gaps, rates, padding), read
one batch at a time, go through `Detector.detect`; every box becomes its MMRotate polygon rounded
as a Task1 file stores it, shifted to the image by its window origin, and the boxes of all windows
are merged with the rotated NMS of `rotld evaluate`'s merge (`dota.rotated_nms.nms_quads`, per
class unless class-agnostic, rounded with `dota.merge.round_like_task1`), in the order the patch
files of prepare-dota would be read. So `predict` then `evaluate --results` equals `evaluate CKPT`.

Pixels come from an image source (`images.open_image`: OpenCV for PNG/JPEG/BMP, rasterio for every
raster GDAL opens); a window that is entirely nodata is skipped and counted. After the images, the
Task1 files and any result writers (`maps.write_map_outputs`: GeoJSON, GeoPackage) are rebuilt
from all the per-image JSONs made with the run's model and settings.

Two rules of the product live here, stated in the README and `rotld predict -h`:
* A detection whose centre lies outside the image ([0, width] x [0, height]) comes from the
  padding of a window past the border; it is dropped before the merge (and counted).
* An image is resumed (not predicted again) when its JSON was made with the same model, the same
  result-shaping settings and the same source file: the same path, and the same size and
  modification time, or else the same SHA-256 of the bytes (a copied or touched file resumes, a
  replaced one does not).

Engine-free: the model arrives as a `Detector`; progress goes to callbacks, not to a UI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.checkpoints import sha256_file
from rotld_cli.detector import Detector, empty_detections
from rotld_cli.dota.merge import round_like_task1
from rotld_cli.dota.polygons import ANGLE_VERSIONS, rboxes_to_polygons
from rotld_cli.dota.prepare import ImageReadError
from rotld_cli.dota.rotated_nms import nms_quads
from rotld_cli.dota.split import SplitParams, patch_name, sliding_windows
from rotld_cli.errors import UsageError
from rotld_cli.fileio import atomic_write_text
from rotld_cli.predict.images import image_size, open_image
from rotld_cli.predict.outputs import RESULT_FORMAT, claim_out_dir, read_result, rebuild_task1, result_path
from rotld_cli.predict.pixels import PixelOptions

ResultWriter = Callable[[Path, Sequence[str]], tuple[list[Path], list[str]]]
"""Writes outputs rebuilt from the finished images' JSONs (out dir, image ids) -> (files, notes)."""

VIS_DIR = "vis"


@dataclass(frozen=True)
class PredictOptions:
    """How windows are cut, merged and filtered; everything here is recorded in each image's JSON."""

    split: SplitParams = field(default_factory=SplitParams)
    merge_iou: float = 0.1
    score_thr: float = 0.0
    max_per_img: int | None = None
    class_agnostic: bool = False
    batch_size: int = 1
    save_vis: bool = False
    vis_score_thr: float = 0.3
    pixels: PixelOptions = field(default_factory=PixelOptions)  # bands, scaling of non-8-bit images
    redo: bool = False  # recompute images already done

    def validate(self) -> None:
        if not 0.0 < self.merge_iou <= 1.0:
            raise UsageError(f"--merge-iou must be in (0, 1], got {self.merge_iou}")
        if not 0.0 <= self.score_thr < 1.0:
            raise UsageError(f"--score-thr must be in [0, 1), got {self.score_thr}")
        if self.max_per_img is not None and self.max_per_img < 1:
            raise UsageError(f"--max-per-img must be at least 1, got {self.max_per_img}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.vis_score_thr <= 1.0:
            raise UsageError(f"--vis-score-thr must be in [0, 1], got {self.vis_score_thr}")
        self.pixels.validate()

    def settings(self, model: dict) -> dict:
        """What makes a finished image's result reusable: the model and every result-shaping option."""
        split = asdict(self.split)
        del split["iof_thr"]  # assigns labels to patches; no effect on detection
        return {
            "model": model,
            "split": json.loads(json.dumps(split)),
            "merge_iou": self.merge_iou,
            "score_thr": self.score_thr,
            "max_per_img": self.max_per_img,
            "class_agnostic": self.class_agnostic,
            "pixels": self.pixels.settings(),
        }


@dataclass
class Merged:
    """One image's final detections: polygons as Task1 stores them, their rotated boxes, class, score."""

    polys: np.ndarray  # (n, 8)
    rboxes: np.ndarray  # (n, 5) cx, cy, w, h, angle in image pixels
    labels: np.ndarray  # (n,) class index
    scores: np.ndarray  # (n,)
    outside: int = 0  # window detections dropped before the merge: centre outside the image


@dataclass
class ImageOutcome:
    path: Path
    image_id: str
    windows: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    problem: str | None = None
    no_picture: bool = False  # --save-vis, but the image is read by windows: too large to draw
    drawn: int | None = None  # --save-vis: boxes drawn on the picture (None: no picture)
    best_score: float | None = None  # the image's best detection score (for a picture without boxes)
    outside: int = 0  # detections dropped: centre outside the image
    replaced: str | None = None  # the source whose result this image's JSON held before (same id, other file)
    windows_nodata: int = 0  # windows skipped: every pixel nodata
    notes: list[str] = field(default_factory=list)  # warnings about this image (e.g. predicted in pixels)


@dataclass
class PredictSummary:
    out_dir: Path
    outcomes: list[ImageOutcome]
    classes: tuple[str, ...]
    seconds: float
    written: list[Path] = field(default_factory=list)
    task1_images: list[str] = field(default_factory=list)  # the images the Task1 files hold
    left_out: list[tuple[str, str]] = field(default_factory=list)  # JSONs in OUT not in them, and why
    model_settings: dict = field(default_factory=dict)  # the model's own test settings, as run
    vis_score_thr: float = 0.3
    map_files: list[Path] = field(default_factory=list)
    writer_notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [o.problem for o in self.outcomes if o.problem]

    def to_dict(self) -> dict:
        done = [o for o in self.outcomes if not o.problem]
        run = [o for o in done if not o.resumed]
        windows = sum(o.windows for o in run)
        per_class = {name: sum(o.counts.get(name, 0) for o in done) for name in self.classes}
        return {
            "out": str(self.out_dir),
            "images": len(self.outcomes),
            "predicted": len(run),
            "resumed": len(done) - len(run),
            "failed": len(self.outcomes) - len(done),
            "windows": windows,
            "detections": per_class,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(len(run) / self.seconds, 3) if self.seconds > 0 else 0.0,
            "windows_per_s": round(windows / self.seconds, 3) if self.seconds > 0 else 0.0,
            "outside_image": sum(o.outside for o in run),
            "windows_nodata": sum(o.windows_nodata for o in run),
            "problems": self.problems,
            "no_picture": [o.image_id for o in self.outcomes if o.no_picture],
            "pictures_without_boxes": [o.image_id for o in self.outcomes if o.drawn == 0],
            "replaced": {o.image_id: o.replaced for o in self.outcomes if o.replaced},
            "model_test_cfg": self.model_settings,
            "task1_files": [str(p) for p in self.written],
            "task1_images": len(self.task1_images),
            "left_out_of_task1": [{"file": f, "reason": r} for f, r in self.left_out],
            "map_files": [str(p) for p in self.map_files],
            "warnings": [n for o in self.outcomes for n in o.notes] + self.writer_notes,
        }


class Callbacks:
    """Progress hooks (no-ops); the CLI overrides them to draw its bar."""

    def planned(self, images: int, windows: int) -> None: ...

    def windows_done(self, count: int) -> None: ...

    def image_done(self, outcome: ImageOutcome, planned_windows: int) -> None: ...


def image_windows(width: int, height: int, params: SplitParams) -> np.ndarray:
    """The windows prepare-dota cuts from a width x height image, in its patch files' sorted order."""
    windows = sliding_windows(width, height, params.window_specs(), params.img_rate_thr)
    names = [patch_name("", w) for w in windows]
    return windows[sorted(range(len(windows)), key=names.__getitem__)]


def detect_windows(
    detector: Detector,
    reader,
    windows: np.ndarray,
    params: SplitParams,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[list[np.ndarray]], int]:
    """Per window, per class (n, 6) boxes in window pixels; and how many windows were skipped (nodata).

    Windows are read one batch at a time, the next batch in a thread while the model runs on this
    one (file reads, GDAL and OpenCV release the GIL), so at most two batches of pixels are held.
    They are read row by row (top to bottom, left to right; a striped file's strips are decoded once
    per row of windows, not once per window) and their boxes returned in `windows`' order. A window
    the reader gives as None (entirely nodata) is not detected on: it has no boxes."""
    padding = params.padding_value if params.padding else None
    order = np.lexsort((windows[:, 0], windows[:, 1])) if len(windows) else np.zeros(0, dtype=np.int64)
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    results: list = [None] * len(windows)
    skipped = 0

    def read(chunk: np.ndarray) -> list[np.ndarray | None]:
        return [reader.read(windows[i], padding) for i in chunk]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            pixels = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(read, chunks[index + 1])
            kept = [i for i, p in zip(chunk, pixels) if p is not None]
            for i, boxes in zip(kept, detector.detect([p for p in pixels if p is not None]) if kept else []):
                results[i] = boxes
            for i, p in zip(chunk, pixels):
                if p is None:
                    results[i] = empty_detections(len(detector.classes))
                    skipped += 1
            del pixels
            if on_batch is not None:
                on_batch(len(chunk))
    return results, skipped  # type: ignore[return-value]


def merge_windows(
    windows: np.ndarray,
    per_window: Sequence[Sequence[np.ndarray]],
    angle_version: str,
    options: PredictOptions,
    size: tuple[int, int] | None = None,
) -> Merged:
    """Window detections -> image detections, as `rotld evaluate` merges patch Task1 files.

    With the image's `size` (width, height), detections centred outside it (in a window's padding)
    are dropped first."""
    polys, rboxes, labels, scores = [], [], [], []
    outside = 0
    for window, per_class in zip(windows, per_window):
        x, y = float(window[0]), float(window[1])
        for label, boxes in enumerate(per_class):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
            if size is not None and len(boxes):
                cx, cy = boxes[:, 0] + x, boxes[:, 1] + y
                inside = (cx >= 0) & (cx <= size[0]) & (cy >= 0) & (cy <= size[1])
                outside += int((~inside).sum())
                boxes = boxes[inside]
            if not len(boxes):
                continue
            # the patch file's polygon (%.2f), shifted by the patch origin: evaluate's merge input
            polys.append(round_like_task1(rboxes_to_polygons(boxes, angle_version)) + np.tile([x, y], 4))
            rboxes.append(boxes[:, :5] + np.array([x, y, 0.0, 0.0, 0.0]))
            labels.append(np.full(len(boxes), label, dtype=np.int64))
            scores.append(boxes[:, 5])
    if not polys:
        return Merged(np.zeros((0, 8)), np.zeros((0, 5)), np.zeros(0, dtype=np.int64), np.zeros(0), outside)
    polys, rboxes = np.concatenate(polys), np.concatenate(rboxes)
    labels, scores = np.concatenate(labels), np.concatenate(scores)
    groups = np.zeros_like(labels) if options.class_agnostic else labels
    keep = nms_quads(polys, scores, groups, options.merge_iou)
    keep = keep[scores[keep] >= options.score_thr]
    if options.max_per_img is not None and len(keep) > options.max_per_img:  # the best, in merge order
        keep = keep[np.sort(np.argsort(-scores[keep], kind="stable")[: options.max_per_img])]
    return Merged(round_like_task1(polys[keep]), rboxes[keep], labels[keep], scores[keep], outside)


def source_identity(path: Path) -> dict:
    """What a resumed result is checked against: the resolved path, the size and modification time."""
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def same_source(stored: dict | None, path: Path) -> bool:
    """The stored source is this file: same path and size, and same modification time or same SHA-256."""
    if not isinstance(stored, dict):
        return False
    try:
        now = source_identity(path)
    except OSError:
        return False
    if stored.get("path") != now["path"] or stored.get("bytes") != now["bytes"]:
        return False
    return stored.get("mtime_ns") == now["mtime_ns"] or stored.get("sha256") == sha256_file(path)


def result_json(
    path: Path,
    image_id: str,
    size: tuple[int, int],
    windows: int,
    seconds: float,
    merged: Merged,
    classes: Sequence[str],
    settings: dict,
    source: dict,
    reading: dict | None = None,
) -> dict:
    """The per-image JSON: polygons (Task1 values), rotated boxes, class and score of every detection;
    `source`: the file's identity (what resume compares); `reading`: how the pixels were read and where
    the image lies (`reading_record`)."""
    detections = [
        {
            "class": classes[label],
            "score": score,
            "polygon": poly,
            "rbox": dict(zip(("cx", "cy", "w", "h", "angle"), rbox)),
        }
        for poly, rbox, label, score in zip(
            merged.polys.tolist(), merged.rboxes.tolist(), merged.labels.tolist(), merged.scores.tolist()
        )
    ]
    return {
        "format": RESULT_FORMAT,
        "image": str(path.resolve()),
        "source": source,
        "image_id": image_id,
        "width": size[0],
        "height": size[1],
        "windows": windows,
        "seconds": round(seconds, 4),
        "classes": list(classes),
        "settings": settings,
        "outside_image": merged.outside,
        **(reading or {}),
        "detections": detections,
    }


def reading_record(reader, windows_nodata: int) -> dict:
    """What the JSON keeps of the reading: the georeference (null: pixel coordinates), the pixel rules
    applied, the windows skipped as nodata and the warnings about it (a resumed image keeps them)."""
    georef = reader.georef
    return {
        "georef": georef.to_dict() if georef is not None else None,
        "pixels": reader.describe(),
        "windows_nodata": windows_nodata,
        "notes": list(reader.notes),
    }


def is_finished(data: dict | None, settings: dict, path: Path) -> bool:
    """A stored result is the image at `path`'s when it was made with the same settings from the same file."""
    return data is not None and data.get("settings") == settings and same_source(data.get("source"), path)


def _counts(detections: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for det in detections:
        counts[det["class"]] = counts.get(det["class"], 0) + 1
    return counts


def predict_image(
    detector: Detector,
    path: Path,
    out_dir: Path,
    options: PredictOptions,
    settings: dict,
    callbacks: Callbacks,
) -> ImageOutcome:
    """Detect, merge and write one image's JSON (last, atomically); a bad image becomes a problem."""
    started = time.perf_counter()
    outcome = ImageOutcome(path, path.stem)
    try:
        source = source_identity(path)
        reader = open_image(path, options.pixels, options.split.padding_value)
    except (ImageReadError, OSError) as exc:
        outcome.problem = str(exc) if isinstance(exc, ImageReadError) else f"{path}: {exc.strerror or exc}"
        return outcome
    try:
        windows = image_windows(reader.width, reader.height, options.split)
        per_window, outcome.windows_nodata = detect_windows(
            detector, reader, windows, options.split, options.batch_size, callbacks.windows_done
        )
        outcome.notes = list(reader.notes)
        size = (reader.width, reader.height)
        merged = merge_windows(windows, per_window, detector.angle_version, options, size)
        outcome.seconds = time.perf_counter() - started
        outcome.windows = len(windows)
        source["sha256"] = sha256_file(path)
        data = result_json(
            path, path.stem, size, len(windows), outcome.seconds, merged, detector.classes, settings, source,
            reading_record(reader, outcome.windows_nodata),
        )
        if options.save_vis:
            _picture(reader, data, out_dir, detector.classes, options.vis_score_thr, outcome)
    except ImageReadError as exc:
        outcome.problem = str(exc)
        return outcome
    finally:
        reader.close()
    atomic_write_text(result_path(out_dir, path.stem), json.dumps(data))
    outcome.counts = _counts(data["detections"])
    outcome.outside = merged.outside
    return outcome


def redraw_picture(path: Path, data: dict, out_dir: Path, classes: Sequence[str], options: PredictOptions,
                   outcome: ImageOutcome) -> None:
    """--save-vis on a resumed image: its picture from the stored detections (no detection runs)."""
    try:
        reader = open_image(path, options.pixels, options.split.padding_value)
    except ImageReadError as exc:
        outcome.problem = str(exc)
        return
    try:
        _picture(reader, data, out_dir, classes, options.vis_score_thr, outcome)
    except ImageReadError as exc:
        outcome.problem = str(exc)
    finally:
        reader.close()


def _picture(reader, data: dict, out_dir: Path, classes: Sequence[str], score_thr: float,
             outcome: ImageOutcome) -> None:
    scores = [d["score"] for d in data["detections"]]
    outcome.best_score = max(scores) if scores else None
    drawn = _save_vis(reader, data, out_dir / VIS_DIR / f"{outcome.image_id}.png", classes, score_thr)
    outcome.no_picture = drawn is None
    outcome.drawn = drawn


def _save_vis(reader, data: dict, final: Path, classes: Sequence[str], score_thr: float) -> int | None:
    """The image with its detections drawn: how many (None: a window-read image, too large to draw)."""
    import cv2

    from rotld_cli.evaluation.visualize import draw_detections
    from rotld_cli.fileio import atomic_path

    pixels = reader.whole()
    if pixels is None:
        return None
    dets = [(d["class"], d["score"], d["polygon"]) for d in data["detections"]]
    drawn = draw_detections(pixels, dets, classes, score_thr)
    with atomic_path(final) as tmp:
        if not cv2.imwrite(str(tmp), drawn):
            raise ImageReadError(f"{final}: cannot write the picture")
    return sum(score >= score_thr for _, score, _ in dets)


def plan_windows(paths: Sequence[Path], params: SplitParams) -> dict[Path, int]:
    """Windows per image from the file headers (nothing decoded), for the progress bar's total."""
    counts = {}
    for path in paths:
        try:
            width, height = image_size(path)
        except ImageReadError:
            counts[path] = 0  # reported when the image is opened
            continue
        counts[path] = len(sliding_windows(width, height, params.window_specs(), params.img_rate_thr))
    return counts


def predict(
    detector: Detector,
    paths: Sequence[Path],
    out_dir: Path,
    options: PredictOptions,
    model: dict,
    callbacks: Callbacks | None = None,
    writers: Sequence[ResultWriter] = (),
) -> PredictSummary:
    """Every image not already done with these settings -> its JSON; then the Task1 files and the
    `writers`' outputs (GeoJSON, GeoPackage) from all the JSONs in `out_dir` made with these settings
    (those of earlier runs on other images too)."""
    if detector.angle_version not in ANGLE_VERSIONS:
        raise UsageError(f"the model's angle version {detector.angle_version!r} is not one of {ANGLE_VERSIONS}")
    claim_out_dir(out_dir, paths, detector.classes)
    callbacks = callbacks or Callbacks()
    settings = options.settings(model)
    started = time.perf_counter()
    outcomes: list[ImageOutcome] = []
    todo: list[Path] = []
    replaced: dict[Path, str] = {}
    for path in paths:
        json_path = result_path(out_dir, path.stem)
        data = read_result(json_path)
        if options.redo or not is_finished(data, settings, path):
            todo.append(path)
            before = (data or {}).get("image")
            if before is not None and before != str(path.resolve()):
                replaced[path] = before
            continue
        outcome = ImageOutcome(path, path.stem, windows=data["windows"], seconds=data["seconds"],
                               counts=_counts(data["detections"]), resumed=True,
                               windows_nodata=data.get("windows_nodata", 0), notes=data.get("notes", []))
        if options.save_vis:
            redraw_picture(path, data, out_dir, detector.classes, options, outcome)
        outcomes.append(outcome)
    windows = plan_windows(todo, options.split)
    callbacks.planned(len(todo), sum(windows.values()))
    for path in todo:
        outcome = predict_image(detector, path, out_dir, options, settings, callbacks)
        outcome.replaced = replaced.get(path) if not outcome.problem else None
        outcomes.append(outcome)
        callbacks.image_done(outcome, windows[path])
    by_path = {o.path: o for o in outcomes}
    ordered = [by_path[p] for p in paths]
    summary = PredictSummary(out_dir, ordered, tuple(detector.classes), time.perf_counter() - started)
    rebuilt = rebuild_task1(out_dir, settings, detector.classes)
    summary.written, summary.task1_images, summary.left_out = rebuilt.written, rebuilt.image_ids, rebuilt.left_out
    for writer in writers:
        files, notes = writer(out_dir, rebuilt.image_ids)
        summary.map_files += files
        summary.writer_notes += notes
    summary.vis_score_thr = options.vis_score_thr
    test_settings = getattr(detector, "test_settings", None)
    summary.model_settings = test_settings() if callable(test_settings) else {}
    return summary
