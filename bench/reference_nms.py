"""The rotated NMS rotld shipped until the blocked rewrite (issue #20), kept only as the reference.

`rotld_cli.dota.rotated_nms.nms_quads` must keep exactly the boxes this one keeps, in the same
order (tests/test_rotated_nms.py), and `python -m bench.predict` times both side by side. This
copy is not part of the product: it generates every pair of boxes whose horizontal extents
overlap up front (quadratic in dense scenes) and resolves the greedy loop in rounds over them.

Original description:
Rotated NMS on quadrilaterals, batched over groups (image, class): the merge step's NMS.

Semantics of mmcv's `nms_rotated` as MMRotate's merge uses it: visit boxes by descending score,
keep a box unless an already kept box of its group overlaps it with IoU > `iou_thr` (mmcv's
CUDA kernel, which the merge tries first; its CPU kernel uses >=, a difference only at an IoU of
exactly the threshold). Equal scores keep their input order (mmcv's order there is whatever the
torch sort returns). No score threshold, no cap.

mmcv measures the IoU of the (cx, cy, w, h, angle) boxes; here the boxes are the polygons of
Task1 files, measured by a float64 convex clip (the devkit's algorithm for the rare non-convex
or degenerate quads, whose NaN IoU never suppresses).

Greedy NMS is sequential, but only along chains of overlapping boxes: candidate pairs come from a
sweep over horizontal boxes, and the keep/suppress decisions are resolved in rounds, each round
settling every box whose higher-scored overlapping neighbours are all settled. IoUs are computed
only from kept boxes, as the greedy loop itself would.
"""

from __future__ import annotations

import numpy as np

from rotld_cli.dota.polyiou import ConvexQuads, convex_iou, iou_poly_pairs
from rotld_cli.dota.rotated_nms import visiting_order

_PAIR_CHUNK = 1 << 21


def _overlap_pairs(x0, y0, x1, y1, groups) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b), a < b, of one group whose horizontal boxes overlap with positive area."""
    n = x0.size
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    span = float(max(x1.max() - x0.min(), 0.0)) * 2.0 + 16.0
    base = x0.min()
    # groups side by side on one axis, so one sorted sweep serves them all
    key0 = (x0 - base) + groups * span
    key1 = (x1 - base) + groups * span
    by_x = np.argsort(key0, kind="stable")
    sorted0 = key0[by_x]
    end = np.searchsorted(sorted0, key1[by_x], side="left")
    counts = np.maximum(end - np.arange(n) - 1, 0)
    firsts, seconds = [], []
    cum = np.cumsum(counts)
    lo = 0
    while lo < n:
        base_count = int(cum[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(cum, base_count + _PAIR_CHUNK, side="right")), lo + 1)
        c = counts[lo:hi]
        s = np.repeat(np.arange(lo, hi), c)
        t = s + 1 + (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))
        a, b = by_x[s], by_x[t]
        keep = (groups[a] == groups[b]) & (x0[b] < x1[a]) & (x0[a] < x1[b]) & (y0[b] < y1[a]) & (y0[a] < y1[b])
        a, b = a[keep], b[keep]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        lo = hi
    return np.concatenate(firsts), np.concatenate(seconds)


def _pair_iou(quads: ConvexQuads, polys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iou = np.empty(a.size)
    for lo in range(0, a.size, _PAIR_CHUNK):
        ia, ib = a[lo : lo + _PAIR_CHUNK], b[lo : lo + _PAIR_CHUNK]
        part, valid, _ = convex_iou(quads, ia, quads, ib)
        if not valid.all():
            part[~valid] = iou_poly_pairs(polys[ia[~valid]], polys[ib[~valid]])
        iou[lo : lo + _PAIR_CHUNK] = part
    return iou


def _greedy(quads: ConvexQuads, polys: np.ndarray, src: np.ndarray, dst: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS outcome for boxes 0..n-1 in visiting order, given the pairs (src < dst) that may overlap.

    Resolved in rounds: a box with no open higher-scored candidate is kept; the IoUs of a kept
    box's candidates are computed then (never those of suppressed boxes) and suppress above the
    threshold. Each round settles at least the first open box.
    """
    n = quads.area.size
    state = np.zeros(n, dtype=np.int8)  # 0 open, 1 kept, 2 suppressed
    while True:
        state[(state == 0) & (np.bincount(dst, minlength=n) == 0)] = 1
        if src.size == 0:
            break
        from_kept = state[src] == 1
        if from_kept.any():
            ea, eb = src[from_kept], dst[from_kept]
            state[eb[_pair_iou(quads, polys, ea, eb) > iou_thr]] = 2
        live = ~from_kept & (state[src] != 2) & (state[dst] == 0)
        src, dst = src[live], dst[live]
    return state == 1


def reference_nms_quads(
    polys: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, iou_thr: float = 0.1
) -> np.ndarray:
    """Indices of the kept quads, ordered by group id, then descending score (stable).

    `polys` (n, 8), `scores` (n,), `groups` (n,) non-negative ints: NMS runs within each group.
    """
    polys, groups, order = visiting_order(polys, scores, groups)
    if order.size == 0:
        return np.zeros(0, dtype=np.int64)
    p = polys[order]
    quads = ConvexQuads.of(p)
    x0, y0 = p[:, 0::2].min(axis=1), p[:, 1::2].min(axis=1)
    x1, y1 = p[:, 0::2].max(axis=1), p[:, 1::2].max(axis=1)
    a, b = _overlap_pairs(x0, y0, x1, y1, groups[order])
    # IoU <= (horizontal-box intersection) / (area_a + area_b - that), for convex quads
    hbb = (np.minimum(x1[a], x1[b]) - np.maximum(x0[a], x0[b])) * (np.minimum(y1[a], y1[b]) - np.maximum(y0[a], y0[b]))
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = hbb / (quads.area[a] + quads.area[b] - hbb)
    maybe = ~(quads.convex[a] & quads.convex[b] & (bound >= 0) & (bound <= iou_thr))
    kept = _greedy(quads, p, a[maybe], b[maybe], iou_thr)
    return order[kept]


def jittered_scene(
    polys: np.ndarray, groups: np.ndarray, copies: int, jitter: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMS candidates as a detector leaves them: every object `copies` times, each copy shifted,
    scaled and turned a little (`jitter` px at the object's size), with random scores.

    Returns (polys (n, 8), scores (n,), groups (n,)); used by the tests and the benchmark alike.
    """
    rng = np.random.default_rng(seed)
    polys = np.repeat(np.asarray(polys, dtype=np.float64).reshape(-1, 8), copies, axis=0)
    groups = np.repeat(np.asarray(groups, dtype=np.int64), copies)
    centre = polys.reshape(-1, 4, 2).mean(axis=1, keepdims=True)
    turn = rng.normal(0.0, 0.05, len(polys))
    rotation = np.stack([np.cos(turn), -np.sin(turn), np.sin(turn), np.cos(turn)], axis=1).reshape(-1, 2, 2)
    scale = rng.normal(1.0, 0.05, (len(polys), 1, 1))
    corners = (polys.reshape(-1, 4, 2) - centre) @ rotation.transpose(0, 2, 1) * scale
    shift = rng.normal(0.0, jitter, (len(polys), 1, 2))
    scores = rng.uniform(0.05, 1.0, len(polys)).round(3)  # rounded: many equal scores
    return (corners + centre + shift).reshape(-1, 8), scores, groups


def random_quads(n: int, extent: float, seed: int, odd: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotated rectangles in an `extent`-px square, scores with ties, 3 groups; a fraction `odd`
    of them random quads (non-convex, self-intersecting: the devkit's algorithm measures those), and
    about 1% with a repeated corner."""
    rng = np.random.default_rng(seed)
    c, w, h, t = rng.uniform(0, extent, (n, 2)), rng.uniform(2, 80, n), rng.uniform(2, 80, n), rng.uniform(-3, 3, n)
    dx = np.stack([w / 2 * np.cos(t), w / 2 * np.sin(t)], 1)
    dy = np.stack([-h / 2 * np.sin(t), h / 2 * np.cos(t)], 1)
    polys = np.round(np.stack([c + dx + dy, c - dx + dy, c - dx - dy, c + dx - dy], 1).reshape(n, 8), 2)
    wild = rng.uniform(size=n) < odd
    polys[wild] = rng.uniform(0, extent, (int(wild.sum()), 8))
    degenerate = rng.uniform(size=n) < 0.01
    polys[degenerate, 2:4] = polys[degenerate, 0:2]  # a repeated corner
    return polys, np.round(rng.uniform(size=n), 2), rng.integers(0, 3, n)
