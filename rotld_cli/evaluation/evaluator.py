"""`DotaEvaluator`: patch (or image) detections in, merged to full images, DOTA devkit APs out.

Shaped like detectron2's `DatasetEvaluator`: `reset()`, `process(detections)` once per batch (a
checkpoint run) or once with a whole result folder, `evaluate()`. Both `rotld evaluate` modes and
the demo evaluate through this one object, so their numbers cannot differ. Engine-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.dota.formats import FormatError, Task1Detections, read_label_file
from rotld_cli.dota.merge import is_patch_id, merge_detections
from rotld_cli.evaluation.metrics import (
    SEED_THRESHOLDS,
    THRESHOLDS,
    ClassGroundTruth,
    PRCurve,
    evaluate_class_curves,
    seed_compat_means,
    threshold_name,
)
from rotld_cli.evaluation.protocols import EvalProtocol, get_protocol
from rotld_cli.evaluation.report import ClassResult, EvaluationReport, Problems
from rotld_cli.evaluation.results import ClassSet

PR_CURVE_THRESHOLDS = (0.5, 0.75)
Progress = Callable[[str, int], None]
"""`on_progress(description, classes_done)`: called when a stage starts and after each class."""


@dataclass
class EvalProgress:
    """Where an evaluation reports progress (the CLI draws it; None: nothing is shown)."""

    patches: Callable[[int, int], None] | None = None  # (done, total) after every batch of patches run
    classes: Progress | None = None  # (stage, classes done) while evaluating
    drawing: Callable[[int, int], None] | None = None  # (done, total) while drawing --save-vis


@dataclass
class Evaluation:
    """The report plus what it was computed from (for the pictures): the evaluated (merged)
    detections, the images in evaluation order, their ground truth and the PR curves."""

    report: EvaluationReport
    detections: dict[str, Task1Detections]
    image_ids: list[str]
    ground_truth: dict[str, ClassGroundTruth] | None
    curves: dict[float, dict[str, PRCurve]] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.report.classes


@dataclass
class GroundTruth:
    """Per class of the set: the GT quads by image; objects of other classes and skipped lines counted."""

    per_class: dict[str, ClassGroundTruth]
    outside: dict[str, int]
    skipped: Problems


def read_ground_truth(ann_dir: Path, image_ids: Sequence[str], classes: Sequence[str], strict: bool) -> GroundTruth:
    """The labelTxt files of `image_ids`. A bad line stops with `strict`, else it is skipped and
    counted (file:line); objects of classes outside `classes` are counted, never silently dropped."""
    per_class: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in classes}
    outside: dict[str, int] = {}
    skipped = Problems()
    wanted = set(classes)
    for image_id in image_ids:
        labels = read_label_file(ann_dir / f"{image_id}.txt", strict=strict)
        objects = labels.objects
        for message in labels.skipped:
            skipped.add(message)
        for obj in objects:
            if obj.name not in wanted:
                outside[obj.name] = outside.get(obj.name, 0) + 1
        for name in classes:
            mine = [o for o in objects if o.name == name]
            polys = np.array([o.poly for o in mine], dtype=np.float64).reshape(-1, 8)
            per_class[name].append((polys, np.array([o.difficulty for o in mine], dtype=np.int64)))
    gts = {name: ClassGroundTruth.from_images(per_class[name]) for name in classes}
    return GroundTruth(gts, dict(sorted(outside.items())), skipped)


def _concat(parts: Sequence[Task1Detections]) -> Task1Detections:
    if len(parts) == 1:
        return parts[0]
    ids = [i for p in parts for i in p.image_ids]
    scores = np.concatenate([np.asarray(p.scores, dtype=np.float64) for p in parts])
    polys = np.concatenate([np.asarray(p.polys, dtype=np.float64).reshape(-1, 8) for p in parts])
    return Task1Detections(ids, scores, polys)


def _mean(values: Sequence[float]) -> float:
    total = 0.0
    for v in values:
        total = total + v
    return total / len(values)


class DotaEvaluator:
    """Accumulates patch-level (or image-level) Task1 detections, then merges and evaluates them.

    `image_ids` are the evaluated images (a detection's id is one of them, or a patch id cut from
    one); `ann_dir=None` only merges (no AP). `merge=False` evaluates the ids as given. `protocol`
    (`evaluation.protocols`) says how matches become the AP: the DOTA devkit's by default.
    """

    def __init__(self, classes: ClassSet, image_ids: Sequence[str], ann_dir: Path | None = None, *,
                 metric: str = "voc07", merge: bool = True, merge_iou: float = 0.1, seed_compat: bool = False,
                 strict_ground_truth: bool = False, protocol: EvalProtocol | None = None) -> None:  # fmt: skip
        self.protocol = protocol or get_protocol(None)
        self.class_set = classes
        self.image_ids = list(image_ids)
        self.ann_dir = ann_dir
        self.metric = metric
        self.merge = merge
        self.merge_iou = merge_iou
        self.seed_compat = seed_compat
        self.strict_ground_truth = strict_ground_truth
        self._ground_truth: GroundTruth | None = None
        self.reset()

    def reset(self) -> None:
        self._parts: dict[str, list[Task1Detections]] = {}

    def process(self, detections: Mapping[str, Task1Detections]) -> None:
        """Add detections (per class; classes outside the set are not expected here)."""
        for name, det in detections.items():
            if len(det):
                self._parts.setdefault(name, []).append(det)

    def ground_truth(self) -> GroundTruth:
        """The label files of the evaluated images, read once; call it early to find bad lines
        before a long inference (with `strict_ground_truth` the first one stops here)."""
        if self._ground_truth is None:
            assert self.ann_dir is not None
            try:
                self._ground_truth = read_ground_truth(self.ann_dir, self.image_ids, self.class_set.classes,
                                                       self.strict_ground_truth)  # fmt: skip
            except FormatError as exc:
                if not self.strict_ground_truth or exc.line is None:
                    raise
                raise FormatError(exc.path, exc.line, f"{exc.detail} (--strict stops at a bad ground-truth line)"
                                  ) from None  # fmt: skip
        return self._ground_truth

    def detections(self) -> dict[str, Task1Detections]:
        """Everything processed so far, per class of the set (as given: patch ids not merged)."""
        return {name: _concat(self._parts[name]) for name in self.class_set.classes if name in self._parts}

    def evaluate(self, on_progress: Progress | None = None) -> Evaluation:
        """Merge patch ids to images (rotated NMS per image and class), then AP per class and the means."""

        def progress(description: str, advance: int = 0) -> None:
            if on_progress is not None:
                on_progress(description, advance)

        classes = self.class_set.classes
        dets = self.detections()
        merged = self.merge and any(is_patch_id(i) for d in dets.values() for i in dict.fromkeys(d.image_ids))
        if merged:
            progress("merging patches")
            dets = merge_detections(dets, self.merge_iou)
        per_class = {c: ClassResult(num_det=len(dets[c]) if c in dets else 0) for c in classes}
        report = EvaluationReport(classes, self.class_set.label, 0, merged, per_class,
                                  dota_version=self.class_set.dota_version, metric=self.metric,
                                  seed_compat=self.seed_compat, protocol=self.protocol.name,
                                  protocol_rules=self.protocol.describe(self.metric, self.class_set.label))  # fmt: skip
        if self.ann_dir is None:
            progress("merged", len(classes))
            image_ids = list(dict.fromkeys(i for d in dets.values() for i in d.image_ids))
            report.evaluated, report.num_images = False, len(image_ids)
            return Evaluation(report, dets, image_ids, None)
        progress("reading ground truth")
        gt = self.ground_truth()
        report.num_images = len(self.image_ids)
        report.gt_outside, report.gt_skipped = gt.outside, gt.skipped
        index = {image_id: k for k, image_id in enumerate(self.image_ids)}
        thresholds = SEED_THRESHOLDS if self.seed_compat else THRESHOLDS
        names = [threshold_name(t) for t in thresholds]
        curve_thresholds = [t for t in thresholds if any(abs(t - c) < 1e-9 for c in PR_CURVE_THRESHOLDS)]
        curves: dict[float, dict[str, PRCurve]] = {round(t, 2): {} for t in curve_thresholds}
        compared = {name: self.protocol.ground_truth(gt.per_class[name]) for name in classes}
        for name in classes:
            det = dets.get(name)
            if det is None or len(det) == 0:
                aps = [0.0] * len(thresholds)
                for t in curve_thresholds:
                    curves[round(t, 2)][name] = (np.zeros(0), np.zeros(0), 0.0)
            else:
                det_image = np.fromiter(map(index.__getitem__, det.image_ids), dtype=np.int64, count=len(det))
                aps, by_thr = evaluate_class_curves(det.scores, det_image, self.protocol.detections(det.polys),
                                                    compared[name], thresholds,
                                                    self.metric == "voc07", curve_thresholds,
                                                    self.protocol.inclusive)  # fmt: skip
                for t, curve in by_thr.items():
                    curves[round(t, 2)][name] = curve
            entry = per_class[name]
            entry.aps, entry.ap = dict(zip(names, aps)), _mean(aps)
            entry.num_gt = compared[name].npos
            entry.num_difficult = int(gt.per_class[name].difficult.sum())
            progress(name, 1)
        by_threshold = [[per_class[c].aps[n] for c in classes] for n in names]
        npos = [per_class[c].num_gt for c in classes]
        means = [self.protocol.mean(aps, npos) for aps in by_threshold]
        if self.protocol.mean_over_classes_with_gt:
            report.left_out_of_mean = [c for c, n in zip(classes, npos) if n == 0]
        if self.seed_compat:
            reported = seed_compat_means(by_threshold)
            report.means = {"AP": _mean(reported), **dict(zip(names, reported))}
            report.devkit = {"AP": _mean(means), **dict(zip(names, means))}
        else:
            report.means = {"AP": _mean(means), **dict(zip(names, means))}
        return Evaluation(report, dets, self.image_ids, gt.per_class, curves)
