"""DOTA Task1 AP with the devkit's rules (`dota_evaluation_task1.py`), all IoU thresholds at once.

The devkit walks the detections of a class by descending score; each one looks at the GTs of its
image whose horizontal boxes overlap its own (with the devkit's +1-pixel convention), takes the
single GT with the highest polygon IoU (the first on ties, difficult GTs included, NaN wins like
`np.argmax`), and is a TP iff that IoU is strictly above the threshold and the GT is neither
difficult (then it is ignored) nor taken (then it is an FP).

The best GT and its IoU do not depend on the threshold, so they are computed once per class and
the cheap greedy assignment is replayed per threshold. Polygon IoUs come from a fast convex clip
with an error bound; every detection whose decision could differ from the devkit's within that
bound (IoU near a threshold, near-tied GTs, non-convex or degenerate quads) is recomputed with the
bit-exact port of the devkit's C++ (`polyiou.iou_poly_pairs`). Decisions are therefore the
devkit's, and so are the APs.

The VOC07 sum of eleven 1/11 rounds to 1 + 2^-52; APs are clipped to 1. Defined where the devkit
is not: a class without non-difficult GT has AP 0 (the devkit divides by zero: nan or 0), a class
without detections has AP 0 (the devkit crashes on an empty file), and equal scores keep their
input order (a stable sort; the devkit's `np.argsort` order depends on the numpy version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rotld_cli.dota.polyiou import ConvexQuads, convex_iou, iou_poly_pairs

THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# The seed's script loops `0.5 + 0.05 * i`: the same doubles except 0.8500000000000001.
SEED_THRESHOLDS: tuple[float, ...] = tuple(0.5 + 0.05 * i for i in range(10))
# The devkit's VOC07 recall points, float quirks included (0.30000000000000004, ...).
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)
_PAIR_CHUNK = 1 << 22


def threshold_name(thr: float) -> str:
    """0.5 -> 'AP50', 0.8500000000000001 -> 'AP85'."""
    return f"AP{round(thr * 100):d}"


@dataclass
class ClassGroundTruth:
    """GT quads of one class over the evaluated images, grouped by image in file order."""

    polys: np.ndarray  # (g, 8)
    difficult: np.ndarray  # (g,) bool: any non-zero difficulty flag
    offsets: np.ndarray  # (images + 1,): image k owns rows offsets[k]:offsets[k+1]

    @property
    def npos(self) -> int:
        return int((~self.difficult).sum())

    @classmethod
    def from_images(cls, per_image: Sequence[tuple[np.ndarray, np.ndarray]]) -> ClassGroundTruth:
        """`per_image[k]` = (polys (n, 8), difficulty flags (n,)) of image k, in file order."""
        counts = np.array([len(p) for p, _ in per_image], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        polys = np.concatenate(
            [np.asarray(p, dtype=np.float64).reshape(-1, 8) for p, _ in per_image] or [np.zeros((0, 8))]
        )
        flags = np.concatenate([np.asarray(d).reshape(-1) for _, d in per_image] or [np.zeros(0)])
        return cls(polys, flags.astype(bool), offsets)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True) -> float:
    """The devkit's `voc_ap`; recall must be non-decreasing (it is a cumulative TP count / npos)."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        # max(prec[rec >= t]) is a suffix maximum because rec is sorted
        suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
        first = np.searchsorted(rec, VOC07_RECALL_POINTS, side="left")
        ap = 0.0
        for idx in first:
            p = suffix_max[idx] if idx < rec.size else 0.0
            ap = ap + p / 11.0
        # eleven times 1/11 sums to 1.0000000000000002: keep APs in [0, 1]
        return min(float(ap), 1.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _hbb(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        polys[:, 0::2].min(axis=1),
        polys[:, 1::2].min(axis=1),
        polys[:, 0::2].max(axis=1),
        polys[:, 1::2].max(axis=1),
    )


def _segment_first(values: np.ndarray, seg_of: np.ndarray, starts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Index of the first row of each segment whose value equals the segment's target (NaN == NaN)."""
    t = target[seg_of]
    hit = (values == t) | (np.isnan(values) & np.isnan(t))
    pos = np.where(hit, np.arange(values.size), values.size)
    return np.minimum.reduceat(pos, starts)


def _candidate_pairs(det_image: np.ndarray, det_polys: np.ndarray, gt: ClassGroundTruth, lo: int, hi: int):
    """(det, gt) pairs of detections lo:hi whose horizontal boxes overlap by the devkit's rule."""
    img = det_image[lo:hi]
    first = gt.offsets[img]
    counts = gt.offsets[img + 1] - first
    total = int(counts.sum())
    det = np.repeat(np.arange(lo, hi), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    g = np.repeat(first, counts) + within
    bx0, by0, bx1, by1 = (v[det] for v in _hbb(det_polys))
    gx0, gy0, gx1, gy1 = (v[g] for v in _hbb(gt.polys))
    iw = np.maximum(np.minimum(gx1, bx1) - np.maximum(gx0, bx0) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gy1, by1) - np.maximum(gy0, by0) + 1.0, 0.0)
    inters = iw * ih
    uni = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0) + (gx1 - gx0 + 1.0) * (gy1 - gy0 + 1.0) - inters
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = inters / uni > 0
    return det[keep], g[keep]


def best_gt(
    det_image: np.ndarray, det_polys: np.ndarray, gt: ClassGroundTruth, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection (in the given order): the devkit's `ovmax` and `jmax` (GT row, -1 if none).

    `ovmax` equals the devkit's value exactly wherever a decision depends on it; elsewhere it may
    differ in the last bits (it is then clear of every threshold and of every other candidate).
    """
    nd = det_image.size
    ovmax = np.full(nd, -np.inf)
    jmax = np.full(nd, -1, dtype=np.int64)
    if nd == 0 or gt.polys.shape[0] == 0:
        return ovmax, jmax
    quads = (ConvexQuads.of(gt.polys), ConvexQuads.of(det_polys))
    # bound the memory of the (detection, GT of its image) pair arrays
    cum = np.cumsum(gt.offsets[det_image + 1] - gt.offsets[det_image])
    lo = 0
    while lo < nd:
        base = int(cum[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(cum, base + _PAIR_CHUNK, side="right")), lo + 1)
        _best_gt_chunk(det_image, det_polys, gt, quads, thresholds, lo, hi, ovmax, jmax)
        lo = hi
    return ovmax, jmax


def _best_gt_chunk(det_image, det_polys, gt, quads, thresholds, lo, hi, ovmax, jmax) -> None:
    det, g = _candidate_pairs(det_image, det_polys, gt, lo, hi)
    if det.size == 0:
        return
    fast, valid, bound = convex_iou(quads[0], g, quads[1], det)
    starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
    seg_det = det[starts]
    seg_of = np.cumsum(np.r_[False, det[1:] != det[:-1]])
    # the fast result decides a detection only if it is clear of every threshold and tie
    safe_val = np.where(valid, fast, -np.inf)
    top = np.maximum.reduceat(safe_val, starts)
    ktop = _segment_first(safe_val, seg_of, starts, top)
    b_top = bound[ktop]
    upper = np.where(valid, fast + bound, np.inf)
    upper[ktop] = -np.inf
    second = np.maximum.reduceat(upper, starts)
    all_valid = np.minimum.reduceat(valid.astype(np.int8), starts).astype(bool)
    thr = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # -inf + inf where a detection has no valid pair
        near_thr = (np.abs(top[:, None] - thr[None, :]) <= b_top[:, None]).any(axis=1)
        near_tie = second >= top - b_top
        relevant = (top + b_top >= thr.min()) | (second >= thr.min())
    exact_seg = ~all_valid | ((near_thr | near_tie) & relevant)
    values = fast.copy()
    redo = exact_seg[seg_of]
    if redo.any():
        values[redo] = iou_poly_pairs(gt.polys[g[redo]], det_polys[det[redo]])
    best = np.maximum.reduceat(values, starts)
    first = _segment_first(values, seg_of, starts, best)
    ovmax[seg_det] = best
    jmax[seg_det] = g[first]


def assign(
    ovmax: np.ndarray, jmax: np.ndarray, difficult: np.ndarray, thr: float, inclusive: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's greedy TP/FP marks (float 0/1 arrays) for detections sorted by score.

    `inclusive`: a match needs IoU >= thr (MMRotate's `tpfp_default`) instead of the devkit's > thr."""
    above = ovmax >= thr if inclusive else ovmax > thr
    gt_difficult = np.zeros(ovmax.size, dtype=bool)
    gt_difficult[above] = difficult[jmax[above]]
    claim = np.flatnonzero(above & ~gt_difficult)
    tp = np.zeros(ovmax.size)
    _, first = np.unique(jmax[claim], return_index=True)
    tp[claim[first]] = 1.0
    fp = np.where(above & gt_difficult, 0.0, 1.0 - tp)
    return tp, fp


def class_ap(tp: np.ndarray, fp: np.ndarray, npos: int, use_07_metric: bool = True) -> float:
    """Precision/recall as the devkit computes them, then `voc_ap`; AP 0 when npos is 0."""
    if npos == 0:
        return 0.0
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric)


def score_order(scores: np.ndarray) -> np.ndarray:
    """Descending score; equal scores keep their input (file) order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


PRCurve = tuple[np.ndarray, np.ndarray, float]
"""recall, precision (one point per detection, by descending score), AP: one class at one IoU threshold."""


def pr_curve(tp: np.ndarray, fp: np.ndarray, npos: int, use_07_metric: bool = True) -> PRCurve:
    """The devkit's recall/precision arrays for TP/FP marks in score order, and `class_ap` of them."""
    if npos == 0 or tp.size == 0:
        return np.zeros(0), np.zeros(0), 0.0
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / float(npos)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision, class_ap(tp, fp, npos, use_07_metric)


def evaluate_class_curves(
    scores: np.ndarray,
    det_image: np.ndarray,
    det_polys: np.ndarray,
    gt: ClassGroundTruth,
    thresholds: Sequence[float] = THRESHOLDS,
    use_07_metric: bool = True,
    curves_at: Sequence[float] = (),
    inclusive: bool = False,
) -> tuple[list[float], dict[float, PRCurve]]:
    """`evaluate_class`, plus the PR curve at each threshold of `curves_at` (one of `thresholds`),
    from the very TP/FP marks of the APs: the plots never recompute the assignment."""
    order = score_order(scores)
    det_image = np.asarray(det_image, dtype=np.int64)[order]
    det_polys = np.asarray(det_polys, dtype=np.float64).reshape(-1, 8)[order]
    ovmax, jmax = best_gt(det_image, det_polys, gt, thresholds)
    npos = gt.npos
    aps: list[float] = []
    curves: dict[float, PRCurve] = {}
    for thr in thresholds:
        tp, fp = assign(ovmax, jmax, gt.difficult, thr, inclusive)
        aps.append(class_ap(tp, fp, npos, use_07_metric))
        if thr in curves_at:
            curves[thr] = pr_curve(tp, fp, npos, use_07_metric)
    return aps, curves


def evaluate_class(
    scores: np.ndarray,
    det_image: np.ndarray,
    det_polys: np.ndarray,
    gt: ClassGroundTruth,
    thresholds: Sequence[float] = THRESHOLDS,
    use_07_metric: bool = True,
) -> list[float]:
    """AP of one class at every threshold. `det_image` indexes the images of `gt.offsets`."""
    return evaluate_class_curves(scores, det_image, det_polys, gt, thresholds, use_07_metric)[0]


def seed_compat_means(per_threshold_aps: Sequence[Sequence[float]]) -> list[float]:
    """The seed script's reported values: its accumulator is never reset between thresholds.

    r_i = (r_{i-1} + sum of class APs at threshold i) / num_classes = m_i + r_{i-1} / num_classes.
    """
    reported = []
    acc = 0.0
    for aps in per_threshold_aps:
        for ap in aps:
            acc = acc + ap
        acc = acc / len(aps)
        reported.append(acc)
    return reported
