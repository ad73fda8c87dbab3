"""The AP each benchmark reports, as protocol objects the evaluator (`DotaEvaluator`) plugs in.

Every protocol shares the pipeline (merge patches, detections by descending score, each matched to
its best ground truth of the image by polygon IoU, greedy TP/FP, PR curve, AP at IoU 0.50:0.05:0.95)
and differs where the benchmarks' reference code differs:

* `dota`: the DOTA devkit (`dota_evaluation_task1.py`): a match needs IoU > threshold, difficult
  objects are ignored (neither TP nor FP), VOC07 11-point AP unless `--metric area`, the mean over
  every class of the set (no ground truth: AP 0). Headline: AP50:95 (the LD paper's AP).
* `hrsc07` / `hrsc12`: HRSC2016 as MMRotate 0.3.4 `HRSCDataset.evaluate` prints it:
  `eval_rbbox_map` (`mmrotate/core/evaluation/eval_map.py`) at IoU 0.50, 0.55, ..., 0.95 with
  VOC07 11-point (`hrsc07`, MMRotate's default `use_07_metric=True`) or area (`hrsc12`, VOC2012)
  AP, and `mAP` = their mean. As there: a match needs IoU >= threshold; every object counts
  (HRSCDataset never fills `bboxes_ignore`, so `difficult` does not exempt one); the mean is over
  the classes that have ground truth. Headline: mAP (AP50:95), with AP50 and AP75.
* `dior`: DIOR-R as MMRotate 1.x `DOTAMetric` with its defaults (`iou_thrs=0.5`,
  `eval_mode='11points'`; the DIOR config `configs/_base_/datasets/dior.py`) computes it, the same
  `eval_rbbox_map`: VOC07 11-point AP50, IoU >= 0.5, every object counts, the mean over the
  classes with ground truth. Headline: AP50 (the other thresholds are in the JSON).

MMRotate compares rotated boxes: its datasets turn each ground-truth polygon into the rotated
rectangle `cv2.minAreaRect` fits (`poly2obb_np` / `qbox2rbox`), and its detections are rotated
boxes. The MMRotate protocols fit the same rectangles to the ground truth and to the detections
(whose corners a Task1 file rounds to 0.01 px) before the polygon IoU, so the IoU equals
`box_iou_rotated`'s up to its float32 rounding; a quad that is already a rectangle is kept as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rotld_cli.errors import UsageError
from rotld_cli.evaluation.metrics import ClassGroundTruth


@dataclass(frozen=True)
class EvalProtocol:
    """How one benchmark turns matches into its AP (see the module docstring)."""

    name: str
    reference: str  # the code whose numbers it reproduces
    inclusive: bool  # a match needs IoU >= threshold (MMRotate) instead of > (the devkit)
    ignore_difficult: bool  # difficult objects are neither TP nor FP (the devkit) or count as any other
    fit_rectangles: bool  # quads become their minAreaRect rectangles (MMRotate's rotated boxes)
    mean_over_classes_with_gt: bool  # MMRotate's mean skips classes without ground truth
    fixed_metric: str | None  # voc07 / area, or None: `--metric` chooses (dota)
    summary_columns: tuple[str, ...]

    def metric(self, requested: str | None) -> str:
        """The AP metric in effect; a `--metric` the protocol contradicts is a usage error."""
        if self.fixed_metric is None:
            return requested or "voc07"
        if requested is not None and requested != self.fixed_metric:
            other = {"hrsc07": "hrsc12", "hrsc12": "hrsc07"}.get(self.name)
            hint = f" (--protocol {other} for {requested})" if other else ""
            raise UsageError(f"--metric {requested}: the {self.name} protocol's AP is {self.fixed_metric}{hint}")
        return self.fixed_metric

    def describe(self, metric: str, class_set: str) -> str:
        """One line for every table and report: whose rules, which AP, the mean over which classes."""
        kind = "VOC07 11-point" if metric == "voc07" else "area under the PR curve"
        match = "IoU >= threshold" if self.inclusive else "IoU > threshold"
        difficult = "difficult objects ignored" if self.ignore_difficult else "difficult objects counted"
        mean = f"mean over {class_set}" + (" that have ground truth" if self.mean_over_classes_with_gt else "")
        return f"{self.name} protocol ({self.reference}: {kind} AP, {match}, {difficult}), {mean}"

    def ground_truth(self, gt: ClassGroundTruth) -> ClassGroundTruth:
        """The ground truth as the protocol compares it: MMRotate's rotated rectangles, its difficult rule."""
        polys = min_area_rects(gt.polys) if self.fit_rectangles else gt.polys
        difficult = gt.difficult if self.ignore_difficult else np.zeros_like(gt.difficult)
        return ClassGroundTruth(polys, difficult, gt.offsets)

    def detections(self, polys: np.ndarray) -> np.ndarray:
        """Detection quads as the protocol compares them (MMRotate: rotated rectangles)."""
        return min_area_rects(polys) if self.fit_rectangles else polys

    def mean(self, aps: Sequence[float], npos: Sequence[int]) -> float:
        """The devkit's `map = map + ap` / classes, or MMRotate's mean over the classes with ground truth."""
        kept = [ap for ap, n in zip(aps, npos) if n > 0 or not self.mean_over_classes_with_gt]
        total = 0.0
        for ap in kept:
            total = total + ap
        return total / len(kept) if kept else 0.0


def min_area_rects(polys: np.ndarray) -> np.ndarray:
    """(n, 8) quads -> the corners of the rotated rectangles `cv2.minAreaRect` fits (float32 in, as
    MMRotate's `poly2obb_np_oc`). A quad whose corners already form a rectangle (right angles to
    1e-9 of the sides' lengths) is returned unchanged: fitting would only add float32 noise."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 8)
    out = polys.copy()
    pts = polys.reshape(-1, 4, 2)
    sides = np.roll(pts, -1, axis=1) - pts
    dots = np.abs(np.einsum("nkc,nkc->nk", sides, np.roll(sides, -1, axis=1)))
    lengths = np.linalg.norm(sides, axis=2)
    square = (dots <= 1e-9 * lengths * np.roll(lengths, -1, axis=1)).all(axis=1) & (lengths > 0).all(axis=1)
    import cv2  # only where a quad has to be fitted

    for k in np.flatnonzero(~square):
        out[k] = cv2.boxPoints(cv2.minAreaRect(pts[k].astype(np.float32))).reshape(8)
    return out


def _eval_rbbox_map(name: str, reference: str, metric: str, columns: tuple[str, ...]) -> EvalProtocol:
    """A protocol computed by MMRotate's `eval_rbbox_map`: IoU >= threshold, every object counts,
    rotated rectangles, the mean over the classes with ground truth."""
    return EvalProtocol(name, reference, inclusive=True, ignore_difficult=False, fit_rectangles=True,
                        mean_over_classes_with_gt=True, fixed_metric=metric, summary_columns=columns)  # fmt: skip


PROTOCOLS: dict[str, EvalProtocol] = {
    "dota": EvalProtocol("dota", "DOTA devkit dota_evaluation_task1.py", inclusive=False, ignore_difficult=True,
                         fit_rectangles=False, mean_over_classes_with_gt=False, fixed_metric=None,
                         summary_columns=("AP", "AP50", "AP70", "AP90", "AP75")),
    "hrsc07": _eval_rbbox_map("hrsc07", "MMRotate 0.3.4 HRSCDataset.evaluate", "voc07", ("AP", "AP50", "AP75")),
    "hrsc12": _eval_rbbox_map("hrsc12", "MMRotate 0.3.4 HRSCDataset.evaluate (use_07_metric=False)", "area",
                              ("AP", "AP50", "AP75")),
    "dior": _eval_rbbox_map("dior", "MMRotate 1.x DOTAMetric (iou_thrs=0.5)", "voc07", ("AP50",)),
}  # fmt: skip
DEFAULT_PROTOCOL = "dota"


def get_protocol(name: str | None) -> EvalProtocol:
    """`--protocol NAME` (None: the DOTA devkit's); an unknown name is a usage error listing them."""
    if name is None:
        return PROTOCOLS[DEFAULT_PROTOCOL]
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}") from None
