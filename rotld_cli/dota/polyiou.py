"""Polygon IoU exactly as the DOTA devkit's `polyiou.iou_poly` (C++) computes it, vectorised.

The devkit does not clip convex polygons: it sums, over every edge pair (GT edge i, detection
edge j), the signed intersection area of the two triangles (origin, edge) — each triangle cut
by the three lines of the other with a 1e-8 tolerance — after orienting both quads
counter-clockwise. That works for any simple quad, gives winding-weighted areas for
self-intersecting ones and 0/0 = NaN for two degenerate ones. AP decisions hinge on `IoU > thr`
and on ties between GTs, so an approximate clip (shapely, Sutherland–Hodgman) is not enough:
this module repeats the C++ operations in the same order in float64, so its results are the
devkit's bit for bit.

One behaviour cannot be reproduced: when a clipped edge has both ends within the 1e-8 band of
a cutting line but on different sides of it, the C++ `lineCross` returns without writing and
the devkit reuses whatever its static buffer held from earlier calls (it depends on the
process's call history). Here that buffer starts zeroed for every triangle pair. Such a case
needs an edge collinear with a cutting line to ~1e-12 relative precision; it does not arise
from rounding for coordinates below ~10^4.

The exact port costs ~20 us a pair; `convex_iou` (a Sutherland–Hodgman clip of convex quads,
~3 us a pair) returns a bound on its distance to the devkit's value, so callers can keep the
exact port for the pairs where that distance could change a decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-8
_CHUNK_PAIRS = 16384


def _sig(values: np.ndarray) -> np.ndarray:
    """C++ `sig`: (d > eps) - (d < -eps); NaN gives 0 there too."""
    return (values > EPS).astype(np.int8) - (values < -EPS).astype(np.int8)


def _same_point(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """C++ `Point::operator==`: both coordinate differences within eps (NaN compares equal)."""
    dx = ax - bx
    dy = ay - by
    return ~(dx > EPS) & ~(dx < -EPS) & ~(dy > EPS) & ~(dy < -EPS)


def _signed_area2(xs: np.ndarray, ys: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
    """C++ `area` before the halving: sum of x_i*y_{i+1} - y_i*x_{i+1}, accumulated in order.

    `xs`, `ys` are (rows, k); `count` (rows,) limits each row to its first `count` vertices
    (the polygon closes back to vertex 0); None means all k.
    """
    rows, k = xs.shape
    res = np.zeros(rows)
    if count is None:
        for i in range(k):
            j = (i + 1) % k
            res = res + (xs[:, i] * ys[:, j] - ys[:, i] * xs[:, j])
        return res
    for i in range(k):
        live = i < count
        if not live.any():
            break
        nxt_x = np.where(i + 1 < count, xs[:, (i + 1) % k], xs[:, 0])
        nxt_y = np.where(i + 1 < count, ys[:, (i + 1) % k], ys[:, 0])
        term = xs[:, i] * nxt_y - ys[:, i] * nxt_x
        res = np.where(live, res + term, res)
    return res


class _Clip:
    """Triangles being cut, one per row: vertices (rows, k), counts, and the static `pp` buffer."""

    def __init__(self, px: np.ndarray, py: np.ndarray, n: np.ndarray) -> None:
        self.px, self.py, self.n = px, py, n
        rows = px.shape[0]
        self.bufx = np.zeros((rows, 2 * px.shape[1]))
        self.bufy = np.zeros((rows, 2 * px.shape[1]))

    def take(self, keep: np.ndarray) -> None:
        self.px, self.py, self.n = self.px[keep], self.py[keep], self.n[keep]
        self.bufx, self.bufy = self.bufx[keep], self.bufy[keep]

    def cut(self, ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> None:
        """C++ `polygon_cut(p, n, a, b)`: keep the part left of a->b, in place."""
        px, py, n = self.px, self.py, self.n
        rows, k = px.shape
        cols = np.arange(k)
        valid = cols < n[:, None]
        # cross(a, b, p) = (b.x-a.x)*(p.y-a.y) - (p.x-a.x)*(b.y-a.y)
        s = (bx - ax)[:, None] * (py - ay[:, None]) - (px - ax[:, None]) * (by - ay)[:, None]
        sg = _sig(s)
        nxt = np.where(cols + 1 < n[:, None], cols + 1, 0)
        s_next = np.take_along_axis(s, nxt, axis=1)
        sg_next = np.take_along_axis(sg, nxt, axis=1)
        qx = np.take_along_axis(px, nxt, axis=1)
        qy = np.take_along_axis(py, nxt, axis=1)
        keep = valid & (sg > 0)
        crossing = valid & (sg != sg_next)
        denom = s_next - s
        written = _sig(denom) != 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cx = (px * s_next - qx * s) / denom
            cy = (py * s_next - qy * s) / denom
        # slot 2i: vertex i (if kept); slot 2i+1: the crossing on edge i (if any)
        slot_valid = np.empty((rows, 2 * k), dtype=bool)
        slot_valid[:, 0::2] = keep
        slot_valid[:, 1::2] = crossing
        slot_written = np.empty((rows, 2 * k), dtype=bool)
        slot_written[:, 0::2] = keep
        slot_written[:, 1::2] = crossing & written
        sx = np.empty((rows, 2 * k))
        sy = np.empty((rows, 2 * k))
        sx[:, 0::2], sx[:, 1::2] = px, cx
        sy[:, 0::2], sy[:, 1::2] = py, cy
        pos = np.cumsum(slot_valid, axis=1) - 1
        m = pos[:, -1] + 1
        width = max(int(m.max(initial=0)), 1)
        if width > self.bufx.shape[1]:
            extra = width - self.bufx.shape[1]
            self.bufx = np.pad(self.bufx, ((0, 0), (0, extra)))
            self.bufy = np.pad(self.bufy, ((0, 0), (0, extra)))
        r, c = np.nonzero(slot_written)
        self.bufx[r, pos[r, c]] = sx[r, c]
        self.bufy[r, pos[r, c]] = sy[r, c]
        ppx = self.bufx[:, :width]
        ppy = self.bufy[:, :width]
        # drop a point equal (within eps) to the one before it in pp
        pcols = np.arange(width)
        differs = np.ones((rows, width), dtype=bool)
        differs[:, 1:] = ~_same_point(ppx[:, 1:], ppy[:, 1:], ppx[:, :-1], ppy[:, :-1])
        kept = differs & (pcols < m[:, None])
        new_n = kept.sum(axis=1)
        new_k = max(int(new_n.max(initial=0)), 1)
        new_x = np.zeros((rows, new_k))
        new_y = np.zeros((rows, new_k))
        r, c = np.nonzero(kept)
        dest = (np.cumsum(kept, axis=1) - 1)[r, c]
        new_x[r, dest] = ppx[r, c]
        new_y[r, dest] = ppy[r, c]
        # while (n > 1 && p[n-1] == p[0]) n--
        all_rows = np.arange(rows)
        while True:
            last = np.maximum(new_n - 1, 0)
            shrink = (new_n > 1) & _same_point(new_x[all_rows, last], new_y[all_rows, last], new_x[:, 0], new_y[:, 0])
            if not shrink.any():
                break
            new_n = new_n - shrink
        self.px, self.py, self.n = new_x, new_y, new_n


def _triangle_areas(ax, ay, bx, by, cx, cy, dx, dy) -> np.ndarray:
    """C++ `intersectArea(a, b, c, d)`: signed intersection area of triangles (o,a,b), (o,c,d)."""
    out = np.zeros(ax.shape[0])
    s1 = _sig(ax * by - bx * ay)
    s2 = _sig(cx * dy - dx * cy)
    live = np.nonzero((s1 != 0) & (s2 != 0))[0]
    if live.size == 0:
        return out
    s1, s2 = s1[live], s2[live]
    ax, ay, bx, by = ax[live], ay[live], bx[live], by[live]
    cx, cy, dx, dy = cx[live], cy[live], dx[live], dy[live]
    flip1 = s1 == -1
    ax, bx = np.where(flip1, bx, ax), np.where(flip1, ax, bx)
    ay, by = np.where(flip1, by, ay), np.where(flip1, ay, by)
    flip2 = s2 == -1
    cx, dx = np.where(flip2, dx, cx), np.where(flip2, cx, dx)
    cy, dy = np.where(flip2, dy, cy), np.where(flip2, cy, dy)
    zeros = np.zeros(live.size)
    clip = _Clip(np.stack([zeros, ax, bx], axis=1), np.stack([zeros, ay, by], axis=1), np.full(live.size, 3))
    index = live
    coords = [zeros, cx, cy, dx, dy]
    # the three lines of triangle (o, c, d): o->c, c->d, d->o
    for line in ((0, 0, 1, 2), (1, 2, 3, 4), (3, 4, 0, 0)):
        clip.cut(*(coords[i] for i in line))
        # a polygon of <= 2 points has area exactly 0 and stays that small: stop tracking it
        alive = clip.n >= 3
        if not alive.all():
            clip.take(alive)
            index = index[alive]
            coords = [arr[alive] for arr in coords]
            s1, s2 = s1[alive], s2[alive]
        if index.size == 0:
            return out
    area = np.abs(_signed_area2(clip.px, clip.py, clip.n) / 2.0)
    out[index] = np.where(s1 * s2 == -1, -area, area)
    return out


def _iou_chunk(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    px, py = gt[:, 0::2].copy(), gt[:, 1::2].copy()
    qx, qy = det[:, 0::2].copy(), det[:, 1::2].copy()
    # intersectArea(ps1, n1, ps2, n2) reverses a clockwise quad in place before the sum
    rev = _signed_area2(px, py) / 2.0 < 0
    px[rev], py[rev] = px[rev, ::-1], py[rev, ::-1]
    rev = _signed_area2(qx, qy) / 2.0 < 0
    qx[rev], qy[rev] = qx[rev, ::-1], qy[rev, ::-1]
    pairs = gt.shape[0]
    i_idx = np.repeat(np.arange(4), 4)
    j_idx = np.tile(np.arange(4), 4)
    tri = [
        arr[:, idx].reshape(-1)
        for arr, idx in (
            (px, i_idx),
            (py, i_idx),
            (px, (i_idx + 1) % 4),
            (py, (i_idx + 1) % 4),
            (qx, j_idx),
            (qy, j_idx),
            (qx, (j_idx + 1) % 4),
            (qy, (j_idx + 1) % 4),
        )
    ]
    parts = _triangle_areas(*tri).reshape(pairs, 16)
    inter = np.zeros(pairs)
    for k in range(16):
        inter = inter + parts[:, k]
    union = np.abs(_signed_area2(px, py) / 2.0) + np.abs(_signed_area2(qx, qy) / 2.0) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def iou_poly_pairs(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """`polyiou.iou_poly(gt[k], det[k])` for every row k; both (n, 8) as x1 y1 ... x4 y4.

    The argument order matters as in the devkit (which passes the GT first): the sum runs over
    GT edges, then detection edges, and rounding follows that order.
    """
    gt = np.ascontiguousarray(gt, dtype=np.float64).reshape(-1, 8)
    det = np.ascontiguousarray(det, dtype=np.float64).reshape(-1, 8)
    if gt.shape != det.shape:
        raise ValueError(f"gt and det must have the same number of rows, got {gt.shape} and {det.shape}")
    out = np.empty(gt.shape[0])
    for start in range(0, gt.shape[0], _CHUNK_PAIRS):
        stop = start + _CHUNK_PAIRS
        out[start:stop] = _iou_chunk(gt[start:stop], det[start:stop])
    return out


def iou_poly(gt: np.ndarray, det: np.ndarray) -> float:
    """One devkit `iou_poly(gt, det)`."""
    return float(iou_poly_pairs(np.asarray(gt).reshape(1, 8), np.asarray(det).reshape(1, 8))[0])


@dataclass
class ConvexQuads:
    """Quads prepared once for many fast IoUs: counter-clockwise vertices, area, convexity."""

    xs: np.ndarray  # (n, 4)
    ys: np.ndarray  # (n, 4)
    area: np.ndarray  # (n,)
    convex: np.ndarray  # (n,) strictly convex and not degenerate
    scale: np.ndarray  # (n,) largest absolute coordinate

    @classmethod
    def of(cls, polys: np.ndarray) -> ConvexQuads:
        polys = np.asarray(polys, dtype=np.float64).reshape(-1, 8)
        xs, ys = polys[:, 0::2], polys[:, 1::2]
        area2 = _signed_area2(xs, ys)
        flip = area2 < 0
        xs = np.where(flip[:, None], xs[:, ::-1], xs)
        ys = np.where(flip[:, None], ys[:, ::-1], ys)
        ex = np.roll(xs, -1, axis=1) - xs
        ey = np.roll(ys, -1, axis=1) - ys
        turns = ex * np.roll(ey, -1, axis=1) - ey * np.roll(ex, -1, axis=1)
        edge2 = (ex * ex + ey * ey).max(axis=1)
        convex = (turns > 1e-6 * edge2[:, None]).all(axis=1) & (edge2 > 0)
        return cls(xs, ys, np.abs(area2) / 2.0, convex, np.abs(polys).max(axis=1))


def _next_col(values: np.ndarray, n: np.ndarray, full: bool) -> np.ndarray:
    """values[:, (j + 1) % n] per row, for rows holding n <= width vertices."""
    rolled = np.concatenate([values[:, 1:], values[:, :1]], axis=1)
    if full:
        return rolled
    last = np.arange(values.shape[1]) == (n - 1)[:, None]
    return np.where(last, values[:, :1], rolled)


def convex_iou(
    a: ConvexQuads, ia: np.ndarray, b: ConvexQuads, ib: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast IoU of quads a[ia[k]] and b[ib[k]] by Sutherland–Hodgman clipping, in float64.

    Returns (iou, valid, bound): `valid` is False where either quad is not strictly convex
    (such pairs need the devkit algorithm); `bound` bounds |iou - devkit iou| on valid rows: the
    devkit's origin-anchored triangle fans round at ~C^2 ulp (C: the largest coordinate) and its
    1e-8 cross-product tolerance moves areas by far less than 1e-6; a 1000x safety factor on top.
    """
    ox, oy = a.xs[ia, :1], a.ys[ia, :1]  # a local origin keeps the clip's own rounding small
    ax, ay = a.xs[ia] - ox, a.ys[ia] - oy
    px, py = b.xs[ib] - ox, b.ys[ib] - oy
    rows = ia.size
    n = np.full(rows, 4)
    full = True
    for i in range(4):
        j = (i + 1) % 4
        e0x, e0y = ax[:, i : i + 1], ay[:, i : i + 1]
        dx, dy = ax[:, j : j + 1] - e0x, ay[:, j : j + 1] - e0y
        k = px.shape[1]
        side = dx * (py - e0y) - dy * (px - e0x)
        side_n = _next_col(side, n, full)
        qx, qy = _next_col(px, n, full), _next_col(py, n, full)
        inside = side >= 0
        crossing = inside != (side_n >= 0)
        if not full:
            live = np.arange(k) < n[:, None]
            inside &= live
            crossing &= live
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = side / (side - side_n)
            cx = px + t * (qx - px)
            cy = py + t * (qy - py)
        slot_valid = np.empty((rows, 2 * k), dtype=bool)
        slot_valid[:, 0::2] = inside
        slot_valid[:, 1::2] = crossing
        sx = np.empty((rows, 2 * k))
        sy = np.empty((rows, 2 * k))
        sx[:, 0::2], sx[:, 1::2] = px, cx
        sy[:, 0::2], sy[:, 1::2] = py, cy
        dest = np.cumsum(slot_valid, axis=1)
        n = dest[:, -1]
        width = max(int(n.max(initial=0)), 1)
        r, c = np.nonzero(slot_valid)
        dest = dest[r, c] - 1
        px = np.zeros((rows, width))
        py = np.zeros((rows, width))
        px[r, dest] = sx[r, c]
        py[r, dest] = sy[r, c]
        full = False
    inter = np.where(n >= 3, np.abs(_signed_area2(px, py, n)) / 2.0, 0.0)
    union = a.area[ia] + b.area[ib] - inter
    scale = np.maximum(a.scale[ia], b.scale[ib]) + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        bound = 1e3 * (64 * np.finfo(np.float64).eps * scale * scale + 1e-6) / union
    valid = a.convex[ia] & b.convex[ib] & np.isfinite(bound) & (union > 0)
    return iou, valid, np.where(valid, bound, np.inf)


def pair_iou(quads: ConvexQuads, polys: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of the pairs polys[ia[k]], polys[ib[k]] (`quads` = `ConvexQuads.of(polys)`): `convex_iou`
    where both quads are strictly convex, the devkit's algorithm for the rest."""
    iou, valid, _ = convex_iou(quads, ia, quads, ib)
    if not valid.all():
        iou[~valid] = iou_poly_pairs(polys[ia[~valid]], polys[ib[~valid]])
    return iou


def convex_iou_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`convex_iou` of row-paired quads a[k], b[k] ((n, 8) each)."""
    rows = np.arange(np.asarray(a).reshape(-1, 8).shape[0])
    return convex_iou(ConvexQuads.of(a), rows, ConvexQuads.of(b), rows)


@dataclass
class QuadFrames:
    """Per quad, what IoU bounds need: its vertices (columns), the unit axes of its first edge's frame,
    and its extent along them (`iou_bounds`)."""

    xs: list[np.ndarray]  # 4 arrays (n,)
    ys: list[np.ndarray]
    ux: np.ndarray
    uy: np.ndarray
    lo_u: np.ndarray
    hi_u: np.ndarray
    lo_v: np.ndarray
    hi_v: np.ndarray
    area: np.ndarray

    @classmethod
    def of(cls, quads: ConvexQuads) -> QuadFrames:
        xs = [np.ascontiguousarray(quads.xs[:, k]) for k in range(4)]
        ys = [np.ascontiguousarray(quads.ys[:, k]) for k in range(4)]
        ux, uy = xs[1] - xs[0], ys[1] - ys[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.hypot(ux, uy)
            ux, uy = ux / norm, uy / norm
        along = np.stack([x * ux + y * uy for x, y in zip(xs, ys)])
        across = np.stack([y * ux - x * uy for x, y in zip(xs, ys)])
        return cls(
            xs, ys, ux, uy, along.min(axis=0), along.max(axis=0), across.min(axis=0), across.max(axis=0), quads.area
        )


def _frame_overlap(f: QuadFrames, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In the frame of quads ia: (overlap area, area of the rectangle around both) of the two quads'
    bounding rectangles."""
    ux, uy = f.ux[ia], f.uy[ia]
    bx = [x[ib] for x in f.xs]
    by = [y[ib] for y in f.ys]
    overlap, extent = None, None
    for lo_a, hi_a, project in ((f.lo_u[ia], f.hi_u[ia], lambda x, y: x * ux + y * uy),
                                (f.lo_v[ia], f.hi_v[ia], lambda x, y: y * ux - x * uy)):  # fmt: skip
        p = [project(x, y) for x, y in zip(bx, by)]
        lo_b = np.minimum(np.minimum(p[0], p[1]), np.minimum(p[2], p[3]))
        hi_b = np.maximum(np.maximum(p[0], p[1]), np.maximum(p[2], p[3]))
        side = np.maximum(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0)
        span = np.maximum(hi_a, hi_b) - np.minimum(lo_a, lo_b)
        overlap, extent = (side, span) if overlap is None else (overlap * side, extent * span)
    return overlap, extent


def iou_bounds(frames: QuadFrames, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the IoU of simple quads ia[k], ib[k] (exact math; rounding ~1e-12 of a px).

    In the frame of each quad's first edge, both quads lie in their bounding rectangles, so the
    intersection lies in the overlap I of those rectangles (and is at most the smaller area) and the
    union in the rectangle R around both: IoU <= I / (area_a + area_b - I) and
    IoU = (area_a + area_b) / union - 1 >= (area_a + area_b) / R - 1; the tighter of the two frames
    is taken. Near-duplicates (IoU near 1) and boxes that only touch rotated corners (IoU near 0)
    are decided this way without clipping. The areas must be the polygons' own (not so for a
    self-intersecting quad, whose shoelace area is a winding-weighted one).
    """
    area_a, area_b = frames.area[ia], frames.area[ib]
    overlap_a, extent_a = _frame_overlap(frames, ia, ib)
    overlap_b, extent_b = _frame_overlap(frames, ib, ia)
    total = area_a + area_b
    inter = np.fmin(np.fmin(overlap_a, overlap_b), np.minimum(area_a, area_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / np.fmin(extent_a, extent_b) - 1.0, inter / (total - inter)


def _inside_length(
    px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray, tol: np.ndarray, shared: bool
) -> np.ndarray:
    """Twice the signed area that the edges of quads p add inside quads q; vertices as (4, pairs) rows,
    both counter-clockwise, in the same local frame.

    Edge i of p, p_i + t d_i for t in [0, 1], lies inside q's edge j where num + t den >= 0; the
    part inside all four (one t-interval: Cyrus–Beck) adds cross(start, end) = (t_out - t_in) *
    cross(p_i, d_i). A parallel edge (den = 0) outside (num < 0) gives t_in = inf: nothing. An
    edge on the line of an edge of q (num and den within `tol`, far above rounding) is not cut by
    it; on a same-direction edge it counts only when `shared`, so a boundary the two quads share
    counts once; on an opposite-direction edge both count and cancel.
    """
    dx, dy = np.roll(px, -1, axis=0) - px, np.roll(py, -1, axis=0) - py
    ex, ey = np.roll(qx, -1, axis=0) - qx, np.roll(qy, -1, axis=0) - qy
    # axes (edge i of p, edge j of q, pair); num = cross(e_j, p_i - q_j), den = cross(e_j, d_i)
    num = ex[None] * (py[:, None] - qy[None]) - ey[None] * (px[:, None] - qx[None])
    den = ex[None] * dy[:, None] - ey[None] * dx[:, None]
    den += 0.0  # -0.0 -> +0.0: a parallel edge's num / den must have num's sign
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den  # the crossing is at t = -ratio
    parallel = np.abs(den) <= tol
    if parallel.any():
        i, j, k = np.nonzero(parallel)
        on_line = np.abs(num[i, j, k]) <= tol[k]
        i, j, k = i[on_line], j[on_line], k[on_line]
        ratio[i, j, k] = np.nan  # no cut (the reductions below skip NaN)
    entering = den >= 0
    t_in = np.maximum(-np.fmin.reduce(np.where(entering, ratio, np.inf), axis=1), 0.0)
    t_out = np.minimum(-np.fmax.reduce(np.where(entering, -np.inf, ratio), axis=1), 1.0)
    length = np.maximum(t_out - t_in, 0.0)
    if not shared and parallel.any() and i.size:
        same = ex[j, k] * dx[i, k] + ey[j, k] * dy[i, k] > 0
        length[i[same], k[same]] = 0.0
    return (length * (px * dy - py * dx)).sum(axis=0)


def clip_iou(a: ConvexQuads, ia: np.ndarray, b: ConvexQuads, ib: np.ndarray) -> np.ndarray:
    """IoU of the convex quads a[ia[k]] and b[ib[k]] by clipping each one's edges to the other, in float64.

    The quantity `convex_iou` computes, by another route: fixed-size arrays and no vertex lists,
    so it costs a fraction. Its rounding differs from `convex_iou`'s in the last bits (both work in
    a frame local to the pair, errors ~1e-15 of the IoU): a caller that must reproduce
    `convex_iou(...) > thr` takes `convex_iou` within a margin of the threshold.
    """
    ox, oy = a.xs[ia, 0], a.ys[ia, 0]
    ax, ay = np.ascontiguousarray(a.xs[ia].T) - ox, np.ascontiguousarray(a.ys[ia].T) - oy
    bx, by = np.ascontiguousarray(b.xs[ib].T) - ox, np.ascontiguousarray(b.ys[ib].T) - oy
    size = np.maximum(np.abs(bx).max(axis=0), np.abs(by).max(axis=0)) + np.abs(ax).max(axis=0) + np.abs(ay).max(axis=0)
    tol = 1e-10 * size * size  # cross products are ~size^2; their rounding ~1e-16 of that
    inside = _inside_length(ax, ay, bx, by, tol, True) + _inside_length(bx, by, ax, ay, tol, False)
    inter = np.maximum(inside / 2.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (a.area[ia] + b.area[ib] - inter)
