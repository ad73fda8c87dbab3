"""`rotld evaluate --results`: Task1 result files + DOTA labelTxt -> the DOTA devkit's APs.

Reads and validates the inputs (one located error per problem, or skip-and-count in lenient
mode), merges patch-level results to full images when the ids are patch ids, evaluates every
class at IoU 0.50:0.05:0.95 (`dota/metrics.py`) and builds the JSON-ready report. Optionally
writes the evaluated (merged) Task1 files and a DOTA-server submission zip.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.dota.classes import classes_for
from rotld_cli.dota.formats import (
    TASK1_PREFIX,
    FormatError,
    Task1Detections,
    class_from_task1_name,
    format_task1_line,
    parse_task1_text,
    read_label_file,
    write_task1_files,
)
from rotld_cli.dota.merge import is_patch_id, merge_detections, split_patch_id
from rotld_cli.dota.metrics import (
    SEED_THRESHOLDS,
    THRESHOLDS,
    ClassGroundTruth,
    class_mean,
    evaluate_class,
    seed_compat_means,
    threshold_name,
)
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.fileio import atomic_path

METRICS = ("voc07", "area")
MAX_LISTED_PROBLEMS = 20


@dataclass
class Skipped:
    """What lenient mode left out: one message per problem, and the number of lines skipped."""

    messages: list[str] = field(default_factory=list)
    lines: int = 0

    def add(self, message: str, lines: int = 1) -> None:
        self.messages.append(message)
        self.lines += lines


@dataclass
class EvaluateOptions:
    results: Path
    ann_dir: Path
    imageset: Path | None = None
    dota_version: str = "v1.0"
    metric: str = "voc07"
    merge: bool = True
    merge_iou: float = 0.1
    save_merged: Path | None = None
    zip_path: Path | None = None
    strict: bool = True
    seed_compat: bool = False


def read_task1_fast(path: Path, strict: bool = True, problems: list[str] | None = None) -> Task1Detections:
    """`formats.read_task1_file`, with a vectorised path for well-formed files (most of them).

    A file with any line that is not exactly 10 fields of finite numbers after the id goes
    through the strict per-line parser, which names the file and line of the problem.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, None, f"cannot read: {exc}") from None
    if all(len(line.split()) in (0, 10) for line in text.splitlines()):
        tokens = text.split()
        ids = tokens[0::10]
        del tokens[0::10]
        try:
            values = np.fromiter(map(float, tokens), dtype=np.float64, count=len(tokens)).reshape(-1, 9)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            return Task1Detections(ids, values[:, 0].copy(), values[:, 1:].copy())
    return parse_task1_text(text, path, strict=strict, problems=problems)


def _first_line_of(path: Path, image_id: str) -> int | None:
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = raw.split(None, 1)
        if tokens and tokens[0] == image_id:
            return lineno
    return None


def _image_ids(options: EvaluateOptions) -> list[str]:
    if options.imageset is None:
        ids = sorted(p.stem for p in options.ann_dir.glob("*.txt"))
        if not ids:
            raise RotldError(f"--ann-dir {options.ann_dir}: no labelTxt files (*.txt)")
        return ids
    try:
        lines = options.imageset.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--imageset {options.imageset}: cannot read: {exc}") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        if name in seen:
            raise RotldError(located(options.imageset, lineno, f"image id {name!r} repeats line {seen[name]}"))
        if not (options.ann_dir / f"{name}.txt").is_file():
            raise RotldError(located(options.imageset, lineno, f"no label file {options.ann_dir / (name + '.txt')}"))
        seen[name] = lineno
        ids.append(name)
    if not ids:
        raise RotldError(f"--imageset {options.imageset}: no image ids")
    return ids


def _ground_truth(ann_dir: Path, image_ids: Sequence[str], classes: Sequence[str]) -> dict[str, ClassGroundTruth]:
    per_class: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in classes}
    for image_id in image_ids:
        objects = read_label_file(ann_dir / f"{image_id}.txt").objects
        for name in classes:
            mine = [o for o in objects if o.name == name]
            polys = np.array([o.poly for o in mine], dtype=np.float64).reshape(-1, 8)
            per_class[name].append((polys, np.array([o.difficulty for o in mine], dtype=np.int64)))
    return {name: ClassGroundTruth.from_images(per_class[name]) for name in classes}


def _read_results(options: EvaluateOptions, classes: Sequence[str], skipped: Skipped) -> dict[str, Task1Detections]:
    if not options.results.is_dir():
        raise UsageError(f"--results {options.results}: not a directory")
    files = sorted(options.results.glob(f"{TASK1_PREFIX}*.txt"))
    if not files:
        raise RotldError(f"--results {options.results}: no {TASK1_PREFIX}<class>.txt files")
    known = set(classes)
    dets: dict[str, Task1Detections] = {}
    for path in files:
        name = class_from_task1_name(path)
        if name not in known:
            message = located(path, None, f"unknown class {name!r} for DOTA {options.dota_version}")
            if options.strict:
                raise RotldError(f"{message} (classes: {', '.join(classes)}; see --dota-version)")
            skipped.add(
                message,
                sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()),
            )
            continue
        problems: list[str] = []
        dets[name] = read_task1_fast(path, strict=options.strict, problems=problems)
        for message in problems:
            skipped.add(message)
    if not dets:
        raise RotldError(f"--results {options.results}: no result file of a DOTA {options.dota_version} class")
    return dets


def _drop_unknown_images(
    dets: dict[str, Task1Detections], known: set[str], options: EvaluateOptions, skipped: Skipped
) -> dict[str, Task1Detections]:
    """Detections must name an evaluated image (a patch id: the image it was cut from)."""
    out = {}
    for name, det in dets.items():
        image_of = {}
        for image_id in dict.fromkeys(det.image_ids):
            parsed = split_patch_id(image_id) if options.merge else None
            image_of[image_id] = parsed[0] if parsed is not None else image_id
        missing = [i for i, image in image_of.items() if image not in known]
        if not missing:
            out[name] = det
            continue
        path = options.results / f"{TASK1_PREFIX}{name}.txt"
        where = "the --imageset list" if options.imageset is not None else f"the ground truth ({options.ann_dir})"
        if options.strict:
            image_id = missing[0]
            shown = image_id if image_of[image_id] == image_id else f"{image_id} (image {image_of[image_id]})"
            hint = " (the ground truth has this patch id: pass --no-merge)" if image_id in known else ""
            raise RotldError(located(path, _first_line_of(path, image_id), f"image id {shown} is not in {where}{hint}"))
        drop = set(missing)
        keep = np.array([i not in drop for i in det.image_ids], dtype=bool)
        count = int((~keep).sum())
        line = _first_line_of(path, missing[0])
        skipped.add(
            located(path, line, f"{count} detection(s) on {len(drop)} image(s) not in {where}, e.g. {missing[0]}"),
            count,
        )
        out[name] = Task1Detections([i for i, k in zip(det.image_ids, keep) if k], det.scores[keep], det.polys[keep])
    return out


def task1_texts(dets: dict[str, Task1Detections], classes: Sequence[str]) -> dict[str, str]:
    """File name -> content of every class's Task1 file (empty files for classes without detections)."""
    texts = {}
    for name in classes:
        det = dets.get(name)
        lines = (
            []
            if det is None
            else [format_task1_line(i, s, p) for i, s, p in zip(det.image_ids, det.scores.tolist(), det.polys.tolist())]
        )
        texts[f"{TASK1_PREFIX}{name}.txt"] = "\n".join(lines) + ("\n" if lines else "")
    return texts


def write_submission_zip(path: Path, dets: dict[str, Task1Detections], classes: Sequence[str]) -> None:
    """The DOTA server's Task1 submission: one Task1_<class>.txt per class at the zip root."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, text in task1_texts(dets, classes).items():
                zf.writestr(name, text)


def _validate(options: EvaluateOptions) -> None:
    if options.metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {options.metric!r}")
    if not 0.0 < options.merge_iou <= 1.0:
        raise UsageError(f"--merge-iou must be in (0, 1], got {options.merge_iou}")
    if not options.ann_dir.is_dir():
        raise UsageError(f"--ann-dir {options.ann_dir}: not a directory")


def evaluate_results(options: EvaluateOptions, on_progress: Callable[[str, int], None] | None = None) -> dict:
    """Evaluate a Task1 result folder; returns the report (fractions in [0, 1]).

    `on_progress(description, classes_done)` is called when a stage starts and after each class.
    """

    def report_progress(description: str, advance: int = 0) -> None:
        if on_progress is not None:
            on_progress(description, advance)

    _validate(options)
    classes = classes_for(options.dota_version)
    image_ids = _image_ids(options)
    skipped = Skipped()
    dets = _read_results(options, classes, skipped)
    dets = _drop_unknown_images(dets, set(image_ids), options, skipped)
    merged = options.merge and any(is_patch_id(i) for d in dets.values() for i in dict.fromkeys(d.image_ids))
    if merged:
        report_progress("merging patches")
        dets = merge_detections(dets, options.merge_iou)
    report_progress("reading ground truth")
    gts = _ground_truth(options.ann_dir, image_ids, classes)
    index = {image_id: k for k, image_id in enumerate(image_ids)}
    thresholds = SEED_THRESHOLDS if options.seed_compat else THRESHOLDS
    per_class_aps: dict[str, list[float]] = {}
    for name in classes:
        det = dets.get(name)
        if det is None or len(det) == 0:
            per_class_aps[name] = [0.0] * len(thresholds)
        else:
            det_image = np.fromiter(map(index.__getitem__, det.image_ids), dtype=np.int64, count=len(det))
            per_class_aps[name] = evaluate_class(
                det.scores, det_image, det.polys, gts[name], thresholds, options.metric == "voc07"
            )
        report_progress(name, 1)
    if options.save_merged is not None:
        write_task1_files(options.save_merged, dets, classes)
    if options.zip_path is not None:
        write_submission_zip(options.zip_path, dets, classes)
    return _report(options, classes, thresholds, per_class_aps, gts, dets, image_ids, merged, skipped)


def _mean(values: Sequence[float]) -> float:
    total = 0.0
    for v in values:
        total = total + v
    return total / len(values)


def _report(options, classes, thresholds, per_class_aps, gts, dets, image_ids, merged, skipped: Skipped) -> dict:
    names = [threshold_name(t) for t in thresholds]
    by_threshold = [[per_class_aps[c][k] for c in classes] for k in range(len(thresholds))]
    means = [class_mean(aps) for aps in by_threshold]
    report: dict = {}
    if options.seed_compat:
        reported = seed_compat_means(by_threshold)
        report["AP"] = _mean(reported)
        report.update(zip(names, reported))
        report["seed_compat"] = True
        report["devkit"] = {"AP": _mean(means), **dict(zip(names, means))}
    else:
        report["AP"] = _mean(means)
        report.update(zip(names, means))
        report["seed_compat"] = False
    report["per_class"] = {
        c: {
            **dict(zip(names, per_class_aps[c])),
            "AP": _mean(per_class_aps[c]),
            "num_gt": gts[c].npos,
            "num_difficult": int(gts[c].difficult.sum()),
            "num_det": len(dets[c]) if c in dets else 0,
        }
        for c in classes
    }
    report["metric"] = options.metric
    report["dota_version"] = options.dota_version
    report["num_images"] = len(image_ids)
    report["merged"] = merged
    report["missing_classes"] = [c for c in classes if c not in dets]
    report["skipped"] = {"lines": skipped.lines, "problems": skipped.messages[:MAX_LISTED_PROBLEMS]}
    if options.save_merged is not None:
        report["saved"] = str(options.save_merged)
    if options.zip_path is not None:
        report["zip"] = str(options.zip_path)
    return report
