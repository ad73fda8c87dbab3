"""Compare two backends' detections box by box: the export's parity check, and its tests.

Per image and class, detections are matched one to one where every box coordinate differs by at
most `box` pixels (plus `rel` of the coordinate, for large boxes decoded through exp), the angle
by `angle` and the score by `score` (closest pairs first). A detection left without a partner is
a disagreement unless a float-level tie explains it, that is, unless it sits within `score` of a
decision that two backends whose raw scores differ by ~1e-7 may take either way:

* the score threshold (the other backend dropped it by a hair);
* the per-image cap `max_per_img`: the other backend is at its cap and the detection scores no
  more than that backend's last kept one (plus `score`);
* the per-level top-k `nms_pre`: where the k-th and (k+1)-th anchor scores of a level tie (the
  caller passes those tie scores per image), any detection scoring at most that (plus `score`),
  since the swapped anchor's boxes are not the same;
* the NMS order: the other backend kept an overlapping box of the same class (IoU above the NMS
  threshold) whose score ties with it, i.e. the two suppressed each other in opposite orders; and
  what such a swap suppresses in turn: a box the other side's tie-explained box overlaps above
  the NMS threshold with a score not below its own (less `score`).

Anything else fails the check, with a message naming the image, class and both detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rotld_cli.deploy.postprocess import obb_corners
from rotld_cli.dota.polyiou import ConvexQuads, pair_iou

BOX_TOL = 0.05
REL_TOL = 1e-4
ANGLE_TOL = 1e-4
SCORE_TOL = 1e-4
TIE_KINDS = ("score threshold", "max_per_img", "nms_pre", "NMS order")


@dataclass
class Tolerance:
    box: float = BOX_TOL
    rel: float = REL_TOL
    angle: float = ANGLE_TOL
    score: float = SCORE_TOL

    def describe(self) -> str:
        return f"boxes {self.box:g} px + {self.rel:g}·|value|, angles {self.angle:g} rad, scores {self.score:g}"


@dataclass
class ParityReport:
    """Matched detections, the largest differences seen, the ties tolerated, and the disagreements."""

    matched: int = 0
    reference_total: int = 0
    candidate_total: int = 0
    max_box_diff: float = 0.0
    max_angle_diff: float = 0.0
    max_score_diff: float = 0.0
    ties: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIE_KINDS, 0))
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def borderline(self) -> int:
        """Detections found by one backend only, explained by a float-level tie."""
        return sum(self.ties.values())

    @property
    def exercised(self) -> bool:
        """Did the check compare any detection (not only ties)?"""
        return self.matched > 0

    def summary(self) -> str:
        ties = ", ".join(f"{n} at {kind}" for kind, n in self.ties.items() if n) or "none"
        return (f"{self.matched} of {self.reference_total} detections matched "
                f"(other backend: {self.candidate_total}; one-sided at float-level ties: {ties}), "
                f"max box difference {self.max_box_diff:.2g} px, angle {self.max_angle_diff:.2g} rad, "
                f"score {self.max_score_diff:.2g}")  # fmt: skip


def _match(ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs within the tolerance, closest first (largest normalised difference)."""
    if not len(ref) or not len(cand):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    diff = np.abs(ref[:, None, :].astype(np.float64) - cand[None, :, :].astype(np.float64))
    allowed = tol.box + tol.rel * np.abs(ref[:, None, :4].astype(np.float64))
    within = (diff[..., :4] <= allowed).all(axis=2) & (diff[..., 4] <= tol.angle) & (diff[..., 5] <= tol.score)
    r, c = np.nonzero(within)
    cost = diff[r, c].max(axis=1)
    taken_r, taken_c = np.zeros(len(ref), dtype=bool), np.zeros(len(cand), dtype=bool)
    pairs = []
    for k in np.argsort(cost, kind="stable"):
        if not taken_r[r[k]] and not taken_c[c[k]]:
            taken_r[r[k]] = taken_c[c[k]] = True
            pairs.append(k)
    pairs = np.asarray(pairs, dtype=np.int64)
    return r[pairs], c[pairs]


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotated IoU of every box of `a` with every box of `b` ((n, 5+) cx, cy, w, h, angle)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    polys = obb_corners(np.concatenate([a[:, :5], b[:, :5]]))
    quads = ConvexQuads.of(polys)
    ia, ib = np.repeat(np.arange(len(a)), len(b)), np.tile(np.arange(len(a), len(a) + len(b)), len(a))
    return np.nan_to_num(pair_iou(quads, polys, ia, ib)).reshape(len(a), len(b))


def _explain(
    lonely: list[np.ndarray],
    cap: list[float | None],
    thr: float,
    iou_thr: float | None,
    topk_tie: float | None,
    tol: float,
) -> list[np.ndarray]:
    """Per side (0, 1), the tie kind index explaining each lonely detection, or -1."""
    kinds = [np.full(len(side), -1) for side in lonely]
    for s in (0, 1):
        scores, other_cap = lonely[s][:, 5].astype(np.float64), cap[1 - s]
        kinds[s][np.abs(scores - thr) <= tol] = 0
        if other_cap is not None:
            kinds[s][(kinds[s] < 0) & (scores <= other_cap + tol)] = 1
        if topk_tie is not None:
            kinds[s][(kinds[s] < 0) & (scores <= topk_tie + tol)] = 2
    if iou_thr is None or not len(lonely[0]) or not len(lonely[1]):
        return kinds
    overlap = _iou_matrix(lonely[0], lonely[1]) > iou_thr
    s0, s1 = lonely[0][:, 5].astype(np.float64), lonely[1][:, 5].astype(np.float64)
    swapped = overlap & (np.abs(s0[:, None] - s1[None, :]) <= tol)
    kinds[0][(kinds[0] < 0) & swapped.any(axis=1)] = 3
    kinds[1][(kinds[1] < 0) & swapped.any(axis=0)] = 3
    while True:  # what a tie-explained box of one side may have suppressed on the other
        grew = False
        for s, over, mine, theirs in ((0, overlap, s0, s1), (1, overlap.T, s1, s0)):
            suppressor = over & (kinds[1 - s] >= 0)[None, :] & (theirs[None, :] >= mine[:, None] - tol)
            new = (kinds[s] < 0) & suppressor.any(axis=1)
            kinds[s][new] = 3
            grew |= bool(new.any())
        if not grew:
            return kinds


def compare_detections(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    classes: Sequence[str],
    score_thr: float,
    tol: Tolerance | None = None,
    names: Sequence[str] | None = None,
    *,
    iou_thr: float | None = None,
    max_per_img: int = 0,
    topk_ties: Sequence[float | None] | None = None,
    labels: tuple[str, str] = ("engine", "onnxruntime"),
) -> ParityReport:
    """Per image, per class (n, 6) detections of two backends → a `ParityReport`.

    `iou_thr`, `max_per_img`: the models' NMS threshold and per-image cap (None / 0: no such tie is
    tolerated); `topk_ties[i]`: image i's highest score at which a level's `nms_pre` top-k falls in a
    tie (None: none does). `labels` name the two backends in the messages.
    """
    tol = tol or Tolerance()
    report = ParityReport()
    for index, (ref_image, cand_image) in enumerate(zip(reference, candidate)):
        name = names[index] if names is not None else f"image {index}"
        sides = [[np.asarray(d).reshape(-1, 6) for d in image] for image in (ref_image, cand_image)]
        cap = []
        for per_class in sides:
            scores = np.concatenate([d[:, 5] for d in per_class]) if per_class else np.zeros(0)
            at_cap = max_per_img > 0 and scores.size >= max_per_img
            cap.append(float(scores.min()) if at_cap else None)
        topk_tie = topk_ties[index] if topk_ties is not None else None
        for cls, ref, cand in zip(classes, *sides):
            report.reference_total += len(ref)
            report.candidate_total += len(cand)
            r, c = _match(ref, cand, tol)
            if len(r):
                diff = np.abs(ref[r].astype(np.float64) - cand[c].astype(np.float64))
                report.max_box_diff = max(report.max_box_diff, float(diff[:, :4].max()))
                report.max_angle_diff = max(report.max_angle_diff, float(diff[:, 4].max()))
                report.max_score_diff = max(report.max_score_diff, float(diff[:, 5].max()))
            report.matched += len(r)
            lonely = [np.delete(ref, r, axis=0), np.delete(cand, c, axis=0)]
            kinds = _explain(lonely, cap, score_thr, iou_thr, topk_tie, tol.score)
            for side in kinds:
                for k in side[side >= 0]:
                    report.ties[TIE_KINDS[k]] += 1
            unexplained = [lonely[s][kinds[s] < 0] for s in (0, 1)]
            count = len(unexplained[0]) + len(unexplained[1])
            if count:
                report.problems.append(f"{name}, {cls}: {count} detection(s) found by one backend only, "
                                       + _example(unexplained, [ref, cand], labels))  # fmt: skip
    return report


def _example(unexplained: list[np.ndarray], sides: list[np.ndarray], labels: tuple[str, str]) -> str:
    """The best-scoring unexplained detection, and the other backend's nearest one."""
    s = 0 if len(unexplained[0]) and (not len(unexplained[1]) or unexplained[0][:, 5].max() >=
                                      unexplained[1][:, 5].max()) else 1  # fmt: skip
    lonely = unexplained[s][np.argmax(unexplained[s][:, 5])]
    who, other = labels if s == 0 else labels[::-1]
    text = f"e.g. {who} {np.round(lonely.astype(np.float64), 4).tolist()}"
    if len(sides[1 - s]):
        nearest = sides[1 - s][np.argmin(np.abs(sides[1 - s] - lonely).max(axis=1))]
        text += f", nearest {other} {np.round(nearest.astype(np.float64), 4).tolist()}"
    else:
        text += f", {other} has none of this class"
    return text
