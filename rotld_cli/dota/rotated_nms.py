"""Rotated NMS on quadrilaterals, batched over groups (image, class): the merge step's NMS.

Semantics of mmcv's `nms_rotated` as MMRotate's merge uses it: visit boxes by descending score,
keep a box unless an already kept box of its group overlaps it with IoU > `iou_thr` (mmcv's
CUDA kernel, which the merge tries first; its CPU kernel uses >=, a difference only at an IoU of
exactly the threshold). Equal scores keep their input order (mmcv's order there is whatever the
torch sort returns). No score threshold, no cap. A box with a non-finite coordinate neither
suppresses nor is suppressed.

mmcv measures the IoU of the (cx, cy, w, h, angle) boxes; here the boxes are the polygons of
Task1 files, measured by a float64 convex clip (`polyiou.convex_iou`; the devkit's algorithm
`polyiou.iou_poly_pairs` for the rare non-convex or degenerate quads, whose NaN IoU never
suppresses). A pair is looked at only when its horizontal boxes overlap with positive area and
the bound IoU <= (horizontal-box intersection) / (area_a + area_b - that) can exceed the
threshold. The kept boxes are exactly those of rotld's first implementation (kept as the
reference in bench/reference_nms.py; tests/test_rotated_nms.py), which generated every such pair
up front and measured them all: quadratic in a dense scene, where most boxes are suppressed by
the first one near them. What is faster here, and why the result is the same:

* Blocks. The greedy loop is sequential, and one IoU call per kept box would pay numpy's fixed
  cost thousands of times. Boxes are visited in blocks of the next unsettled ones: the pairs
  inside a block (as many boxes as keep them under a budget: small blocks in a dense scene) are
  judged in one batch and the loop runs over the block on them; then the block's kept boxes are
  judged against every later unsettled box they can overlap, in one batch. Suppressed boxes are
  never judged against later ones, as in the greedy loop.
* A spatial index (`overlap_index`): candidates come from short runs of neighbours in horizontal
  strips, not from whole columns of the image.
* Cheap verdicts. Only `IoU > thr` matters. Bounds from the quads' bounding rectangles in each
  one's own frame (`polyiou.iou_bounds`, no clipping) settle most pairs; the rest of the convex
  ones get `polyiou.clip_iou` (fixed-size edge clipping, a fraction of `convex_iou`'s cost, the
  same value to ~1e-14). Either decides only when it lies beyond a margin from the threshold far
  above both methods' rounding (and the devkit's, which grows with the coordinates' square); the
  pairs within it, and those the devkit's algorithm measures, are measured as before, and only
  once the greedy loop needs them (both boxes still kept).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rotld_cli.dota.overlap_index import Extents
from rotld_cli.dota.polyiou import ConvexQuads, QuadFrames, clip_iou, convex_iou, iou_bounds, iou_poly_pairs, pair_iou

_BLOCK_PAIRS = 1024  # candidate pairs inside one block: a dense scene gets small blocks, a sparse one large
_BLOCK_MIN, _BLOCK_MAX = 16, 4096  # boxes per block
_FEW = 96  # up to this many boxes, one batch of every candidate pair is cheapest
_MATRIX_BOXES = 192  # a block this small finds its inner pairs by one comparison matrix, not an index
_MARGIN = 1e-6  # an IoU bound decides only this far from the threshold (plus the devkit's rounding, below)
_ROUNDING = 1e3 * 64 * np.finfo(np.float64).eps  # x scale^2 / area: polyiou.convex_iou's bound on it
_DEVKIT_EPS_AREA = 1e-7  # / area: the devkit treats cross products below 1e-8 as 0 (areas of ~5e-9 px^2)


def _clip_range(boxes: _Boxes, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    iou = clip_iou(boxes.quads, ia, boxes.quads, ib)
    return iou, iou


def _bounds_range(boxes: _Boxes, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return iou_bounds(boxes.frames, ia, ib)


def _shapes(polys: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(simple, triangle) masks of quads with positive `area` and finite corners. Simple: opposite
    edges neither cross nor touch, so the IoU is the plain area ratio (the devkit's value for a
    self-intersecting quad is a winding-weighted one). Triangle: exactly one repeated corner."""
    x, y = np.ascontiguousarray(polys[:, 0::2].T), np.ascontiguousarray(polys[:, 1::2].T)

    def side(p: int, q: int, r: int) -> np.ndarray:
        return (x[q] - x[p]) * (y[r] - y[p]) - (y[q] - y[p]) * (x[r] - x[p])

    def meet(p: int, q: int, r: int, s: int) -> np.ndarray:
        return (side(p, q, r) * side(p, q, s) <= 0) & (side(r, s, p) * side(r, s, q) <= 0)

    with np.errstate(invalid="ignore", over="ignore"):
        proper = (area > 0) & np.isfinite(polys).all(axis=1)
        simple = proper & ~meet(0, 1, 2, 3) & ~meet(1, 2, 3, 0)
    repeated = sum((x[k] == x[(k + 1) % 4]) & (y[k] == y[(k + 1) % 4]) for k in range(4))
    return simple, proper & (repeated == 1)


class _Boxes:
    """Boxes in visiting order: convex quads, horizontal extents, and the rule of who suppresses whom."""

    def __init__(self, polys: np.ndarray, groups: np.ndarray, iou_thr: float) -> None:
        self.polys, self.iou_thr = polys, iou_thr
        self.quads = ConvexQuads.of(polys)
        self.simple, triangle = _shapes(polys, self.quads.area)
        self.clippable = self.quads.convex | triangle
        self.frames = QuadFrames.of(self.quads)
        xs, ys = self.frames.xs, self.frames.ys
        x0, x1 = (
            np.minimum(np.minimum(xs[0], xs[1]), np.minimum(xs[2], xs[3])),
            np.maximum(np.maximum(xs[0], xs[1]), np.maximum(xs[2], xs[3])),
        )
        y0, y1 = (
            np.minimum(np.minimum(ys[0], ys[1]), np.minimum(ys[2], ys[3])),
            np.maximum(np.maximum(ys[0], ys[1]), np.maximum(ys[2], ys[3])),
        )
        self.extents = Extents(x0, y0, x1, y1, groups)

    def candidates(self, overlapping: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Of pairs whose horizontal boxes overlap with positive area, those that may have IoU > the
        threshold: all but those of two convex quads with IoU <= hbb / (area_a + area_b - hbb) <= the
        threshold (hbb: the horizontal boxes' intersection)."""
        found_a, found_b = [], []
        e, quads = self.extents, self.quads
        for a, b in overlapping:
            hbb = (np.minimum(e.x1[a], e.x1[b]) - np.maximum(e.x0[a], e.x0[b])) * (
                np.minimum(e.y1[a], e.y1[b]) - np.maximum(e.y0[a], e.y0[b])
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                bound = hbb / (quads.area[a] + quads.area[b] - hbb)
            keep = ~(quads.convex[a] & quads.convex[b] & (bound >= 0) & (bound <= self.iou_thr))
            found_a.append(a[keep])
            found_b.append(b[keep])
        if not found_a:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(found_a), np.concatenate(found_b)

    def _settle(self, verdict: np.ndarray, pairs: np.ndarray, a: np.ndarray, b: np.ndarray, iou_range) -> None:
        """Set verdict[pairs] to 0 / 1 where `iou_range` puts the IoU clearly below / above the threshold:
        beyond `_MARGIN` plus bounds on the devkit's rounding (it grows with the coordinates' square) and
        on its 1e-8 tolerance, both relative to the larger area (the union is at least that)."""
        quads, thr = self.quads, self.iou_thr
        pa, pb = a[pairs], b[pairs]
        lower, upper = iou_range(self, pa, pb)
        scale = np.maximum(quads.scale[pa], quads.scale[pb]) + 1.0
        margin = _MARGIN + (_ROUNDING * scale * scale + _DEVKIT_EPS_AREA) / np.maximum(quads.area[pa], quads.area[pb])
        verdict[pairs[upper <= thr - margin]] = 0
        verdict[pairs[lower > thr + margin]] = 1

    def verdicts(self, a: np.ndarray, b: np.ndarray, kept: bool = False) -> np.ndarray:
        """Does a[k] (the earlier box) suppress b[k]: 1 yes, 0 no, -1 not known yet (`suppresses`
        decides it, only where it still matters).

        IoU bounds settle the pairs of simple quads far from the threshold (near-duplicates, boxes
        touching at a corner) without clipping; `clip_iou` the rest of the convex quads and triangles
        (one batch now is cheaper than measuring them later as they are needed, a batch per round).
        `kept`: every a[k] is kept, so a b[k] that one pair suppresses needs no other verdict."""
        verdict = np.full(a.size, -1, dtype=np.int8)
        self._settle(verdict, np.flatnonzero(self.simple[a] & self.simple[b]), a, b, _bounds_range)
        clip = (verdict < 0) & self.clippable[a] & self.clippable[b]
        if kept:
            hit = np.zeros(self.polys.shape[0], dtype=bool)
            hit[b[verdict == 1]] = True
            clip &= ~hit[b]
        self._settle(verdict, np.flatnonzero(clip), a, b, _clip_range)
        return verdict

    def suppresses(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """IoU(a[k], b[k]) > the threshold, a[k] the earlier box, as the former implementation decides it:
        `convex_iou` for two convex quads, the devkit's algorithm for the others (a NaN IoU never
        suppresses). `clip_iou` (the same IoU up to rounding, cheaper) settles the pairs of convex
        quads and triangles beyond the margin; the measures run on the rest."""
        verdict = np.full(a.size, -1, dtype=np.int8)
        self._settle(verdict, np.flatnonzero(self.clippable[a] & self.clippable[b]), a, b, _clip_range)
        result = verdict == 1
        open_ = verdict < 0
        convex = np.flatnonzero(open_ & self.quads.convex[a] & self.quads.convex[b])
        iou, valid, _ = convex_iou(self.quads, a[convex], self.quads, b[convex])
        result[convex[valid]] = iou[valid] > self.iou_thr
        open_[convex[valid]] = False
        rest = np.flatnonzero(open_)
        if rest.size:
            result[rest] = iou_poly_pairs(self.polys[a[rest]], self.polys[b[rest]]) > self.iou_thr
        return result


def _block(boxes: _Boxes, unsettled: np.ndarray, start: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `size` next unsettled boxes from `start` (fewer where their inner candidate pairs would pass
    `_BLOCK_PAIRS`), and those inner pairs (a < b)."""
    block = start + np.flatnonzero(unsettled[start:])[:size]
    if block.size <= _MATRIX_BOXES:
        a, b = boxes.candidates([boxes.extents.inner_pairs(block)])
    else:
        member = np.zeros(unsettled.size, dtype=bool)
        member[block] = True
        a, b = boxes.candidates(boxes.extents.index(block).pairs(block, block, member))
    if a.size > _BLOCK_PAIRS:
        # the pairs of a prefix are those whose later box lies in it: cut where they reach the budget
        per_box = np.bincount(np.searchsorted(block, b), minlength=block.size)
        block = block[: max(int(np.searchsorted(np.cumsum(per_box), _BLOCK_PAIRS, side="right")), 1)]
        inside = b <= block[-1]
        a, b = a[inside], b[inside]
    return block, a, b


def _kept_by(size: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The greedy loop over boxes 0..size-1 where src[k] suppresses dst[k] (src < dst) if kept: the kept mask.

    In rounds: a box none of whose suppressors is still open is kept; its targets are suppressed.
    Each round settles at least the first open box."""
    state = np.zeros(size, dtype=np.int8)  # 0 open, 1 kept, 2 suppressed
    while True:
        state[(state == 0) & (np.bincount(dst, minlength=size) == 0)] = 1
        if src.size == 0:
            return state == 1
        from_kept = state[src] == 1
        state[dst[from_kept]] = 2
        live = ~from_kept & (state[src] != 2) & (state[dst] == 0)
        src, dst = src[live], dst[live]


def _resolve_block(boxes: _Boxes, block: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The greedy loop over one block and its inner candidate pairs (a < b): the block's kept boxes.

    Pairs the bounds leave open are measured only where they matter: resolve with them as 'no',
    measure those whose both boxes came out kept, resolve again, until none is left. Then every pair
    from a kept box to a kept one is measured, so the result is the greedy loop's (a box suppressed
    through an unmeasured pair from a suppressed box cannot happen: unmeasured pairs never suppress)."""
    verdict = boxes.verdicts(a, b)
    live = verdict != 0
    src, dst, verdict = np.searchsorted(block, a[live]), np.searchsorted(block, b[live]), verdict[live]
    hit, unknown = verdict == 1, verdict < 0
    while True:
        kept = _kept_by(block.size, src[hit], dst[hit])
        ask = np.flatnonzero(unknown & kept[src] & kept[dst])
        if ask.size == 0:
            return block[kept]
        hit[ask] = boxes.suppresses(block[src[ask]], block[dst[ask]])
        unknown[ask] = False


def _greedy(boxes: _Boxes) -> np.ndarray:
    """The greedy loop's kept boxes (a mask over the visiting order), computed block by block."""
    n = boxes.polys.shape[0]
    unsettled = np.ones(n, dtype=bool)
    kept = np.zeros(n, dtype=bool)
    index, indexed = boxes.extents.index(np.arange(n)), n
    start, size = 0, _BLOCK_MIN
    while start < n:
        block, a, b = _block(boxes, unsettled, start, size)
        if block.size == 0:
            break
        # the next block: as many boxes as this one's pair budget allowed, twice as many if it was not reached
        size = min(max(2 * block.size if a.size <= _BLOCK_PAIRS // 2 else block.size, _BLOCK_MIN), _BLOCK_MAX)
        survivors = _resolve_block(boxes, block, a, b)
        kept[survivors] = True
        unsettled[block] = False
        end = int(block[-1])
        left = int(np.count_nonzero(unsettled[end + 1 :]))
        if 2 * left < indexed:  # most indexed boxes are settled: index the open ones only
            index, indexed = boxes.extents.index(end + 1 + np.flatnonzero(unsettled[end + 1 :])), left
        sa, sb = boxes.candidates(index.pairs(survivors, np.full(survivors.size, end), unsettled))
        verdict = boxes.verdicts(sa, sb, kept=True)
        unsettled[sb[verdict == 1]] = False
        ask = np.flatnonzero((verdict < 0) & unsettled[sb])  # a target already suppressed needs no more
        if ask.size:
            unsettled[sb[ask[boxes.suppresses(sa[ask], sb[ask])]]] = False
        start = end + 1
    return kept


def _few(polys: np.ndarray, groups: np.ndarray, iou_thr: float) -> np.ndarray:
    """The greedy loop for a few boxes (visiting order): every candidate pair measured at once, as the
    former implementation measures it; the blocks' fixed costs would outweigh what they save."""
    n = polys.shape[0]
    if n == 1:
        return np.ones(1, dtype=bool)
    quads = ConvexQuads.of(polys)
    x0, y0 = polys[:, 0::2].min(axis=1), polys[:, 1::2].min(axis=1)
    x1, y1 = polys[:, 0::2].max(axis=1), polys[:, 1::2].max(axis=1)
    a, b = np.triu_indices(n, 1)
    with np.errstate(invalid="ignore"):
        meet = (x0[b] < x1[a]) & (x0[a] < x1[b]) & (y0[b] < y1[a]) & (y0[a] < y1[b]) & (groups[a] == groups[b])
        a, b = a[meet], b[meet]
        hbb = (np.minimum(x1[a], x1[b]) - np.maximum(x0[a], x0[b])) * (
            np.minimum(y1[a], y1[b]) - np.maximum(y0[a], y0[b])
        )
        with np.errstate(divide="ignore"):
            bound = hbb / (quads.area[a] + quads.area[b] - hbb)
    maybe = ~(quads.convex[a] & quads.convex[b] & (bound >= 0) & (bound <= iou_thr))
    a, b = a[maybe], b[maybe]
    if a.size == 0:
        return np.ones(n, dtype=bool)
    hit = pair_iou(quads, polys, a, b) > iou_thr
    return _kept_by(n, a[hit], b[hit])


def visiting_order(
    polys: np.ndarray, scores: np.ndarray, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(polys (n, 8) float64, groups (n,) int64, the order the greedy loop visits them: by group, then
    descending score, equal scores in input order)."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 8)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.zeros(scores.size, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    return polys, groups, np.lexsort((-scores, groups))


def nms_quads(
    polys: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, iou_thr: float = 0.1
) -> np.ndarray:
    """Indices of the kept quads, ordered by group id, then descending score (stable).

    `polys` (n, 8), `scores` (n,), `groups` (n,) non-negative ints: NMS runs within each group.
    """
    polys, groups, order = visiting_order(polys, scores, groups)
    n = order.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= _FEW:
        return order[_few(polys[order], groups[order], float(iou_thr))]
    kept = _greedy(_Boxes(polys[order], groups[order], float(iou_thr)))
    return order[kept]
