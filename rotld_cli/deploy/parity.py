"""Compare two backends' detections box by box: the export's parity check, and its tests.

Per image and class, detections are paired by mutual nearest neighbour in (cx, cy, w, h, θ,
score). A pair agrees when every box coordinate differs by at most `box_tol` pixels (plus
`rel_tol` of the coordinate, for large boxes decoded through exp), the angle by `angle_tol` and
the score by `score_tol`. A detection without a partner is tolerated only when its score lies
within `score_tol` of the score threshold (the other backend dropped it by a hair); anything else
is a disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BOX_TOL = 0.05
REL_TOL = 1e-4
ANGLE_TOL = 1e-4
SCORE_TOL = 1e-4


@dataclass
class Tolerance:
    box: float = BOX_TOL
    rel: float = REL_TOL
    angle: float = ANGLE_TOL
    score: float = SCORE_TOL

    def describe(self) -> str:
        return (f"boxes {self.box:g} px + {self.rel:g}·|value|, angles {self.angle:g} rad, "
                f"scores {self.score:g}")


@dataclass
class ParityReport:
    """Matched detections, the largest differences seen, and the disagreements (human-readable)."""

    matched: int = 0
    reference_total: int = 0
    candidate_total: int = 0
    max_box_diff: float = 0.0
    max_angle_diff: float = 0.0
    max_score_diff: float = 0.0
    borderline: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.matched} of {self.reference_total} detections matched "
                f"(other backend: {self.candidate_total}, {self.borderline} at the score threshold), "
                f"max box difference {self.max_box_diff:.2g} px, angle {self.max_angle_diff:.2g} rad, "
                f"score {self.max_score_diff:.2g}")


def _pair(ref: np.ndarray, cand: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by the largest absolute difference over the 6 columns (row chunks)."""
    if not len(ref) or not len(cand):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    best_cand = np.empty(len(ref), dtype=np.int64)
    col_cost, best_ref = np.full(len(cand), np.inf), np.zeros(len(cand), dtype=np.int64)
    for lo in range(0, len(ref), chunk):
        cost = np.abs(ref64[lo : lo + chunk, None, :] - cand64[None, :, :]).max(axis=2)
        best_cand[lo : lo + chunk] = cost.argmin(axis=1)
        rows = cost.argmin(axis=0)
        better = cost[rows, np.arange(len(cand))] < col_cost
        col_cost[better] = cost[rows[better], np.nonzero(better)[0]]
        best_ref[better] = rows[better] + lo
    ref_ids = np.nonzero(best_ref[best_cand] == np.arange(len(ref)))[0]
    return ref_ids, best_cand[ref_ids]


def compare_detections(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]],
                       classes: Sequence[str], score_thr: float, tol: Tolerance | None = None,
                       names: Sequence[str] | None = None) -> ParityReport:
    """Per image, per class (n, 6) detections of two backends → a `ParityReport`."""
    tol = tol or Tolerance()
    report = ParityReport()
    for index, (ref_image, cand_image) in enumerate(zip(reference, candidate)):
        name = names[index] if names is not None else f"image {index}"
        for cls, ref, cand in zip(classes, ref_image, cand_image):
            ref, cand = np.asarray(ref).reshape(-1, 6), np.asarray(cand).reshape(-1, 6)
            report.reference_total += len(ref)
            report.candidate_total += len(cand)
            r, c = _pair(ref, cand)
            diff = np.abs(ref[r].astype(np.float64) - cand[c].astype(np.float64))
            allowed = tol.box + tol.rel * np.abs(ref[r, :4].astype(np.float64))
            good = (diff[:, :4] <= allowed).all(axis=1) & (diff[:, 4] <= tol.angle) & (diff[:, 5] <= tol.score)
            if len(diff):
                report.max_box_diff = max(report.max_box_diff, float(diff[:, :4].max()))
                report.max_angle_diff = max(report.max_angle_diff, float(diff[:, 4].max()))
                report.max_score_diff = max(report.max_score_diff, float(diff[:, 5].max()))
            report.matched += int(good.sum())
            if not good.all():
                worst = int(np.argmax(~good))
                report.problems.append(
                    f"{name}, {cls}: {int((~good).sum())} detection(s) differ beyond the tolerance, e.g. "
                    f"{np.round(ref[r[worst]], 4).tolist()} vs {np.round(cand[c[worst]], 4).tolist()}"
                )
            ref_only, cand_only = np.delete(ref, r, axis=0)[:, 5], np.delete(cand, c, axis=0)[:, 5]
            lonely = np.concatenate([ref_only, cand_only])
            near = np.abs(lonely - score_thr) <= tol.score
            report.borderline += int(near.sum())
            if not near.all():
                tied = np.intersect1d(ref_only, cand_only).size > 0
                report.problems.append(
                    f"{name}, {cls}: {int((~near).sum())} detection(s) found by one backend only "
                    f"(best score {float(lonely[~near].max()):.4f})"
                    + ("; equal scores, which torch and numpy order differently (an image padded with zeros "
                       "under a barely trained model?)" if tied else "")
                )
    return report
