"""Which boxes' horizontal extents overlap: a sorted index over strips, for NMS candidate pairs.

Why not one sweep along x: in a dense scene each box's x-range meets every box of its column,
most of them far away in y. Here boxes are sorted by (group, horizontal strip of their top
edge, left edge), the strips as tall as the common box, so a query looks at two or three short
runs of neighbours. Boxes taller or wider than twice the median ("large": an untrained model's
boxes, a long bridge) would make every strip tall; they go to a second sorted run by (group,
left edge) instead, which only large boxes are in.

Keys are float64 offsets (group, strip and x laid side by side), searched with one `searchsorted`
per run; every range is a superset (1 px of slack against rounding) and the exact test on the
extents decides, so the result does not depend on the keys' rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

PAIR_CHUNK = 1 << 20  # candidates expanded at a time
_SLACK = 1.0


class Extents:
    """Horizontal boxes (x0, y0, x1, y1) of n boxes in groups, and the strip layout shared by every index."""

    def __init__(self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, groups: np.ndarray) -> None:
        self.x0, self.y0, self.x1, self.y1, self.groups = x0, y0, x1, y1, groups
        self.finite = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(x1) & np.isfinite(y1)
        f = self.finite
        width, height = (x1 - x0)[f], (y1 - y0)[f]
        self.x_base = float(x0[f].min()) if f.any() else 0.0
        self.y_base = float(y0[f].min()) if f.any() else 0.0
        self.strip = max(2.0 * float(np.median(height)), 1.0) if height.size else 1.0
        self.max_width = max(2.0 * float(np.median(width)), 1.0) if width.size else 1.0
        self.large = f & (((x1 - x0) > self.max_width) | ((y1 - y0) > self.strip))
        x_span = (
            (float(x1[f].max()) - self.x_base if f.any() else 0.0)
            + 2.0 * max(self.max_width, float(width.max()) if width.size else 0.0)
            + 16.0
        )
        strips = int((float(y1[f].max()) - self.y_base) // self.strip) + 2 if f.any() else 1
        self.x_span, self.strips = x_span, strips
        with np.errstate(invalid="ignore"):
            self.row = np.where(f, np.floor((y0 - self.y_base) / self.strip), 0).astype(np.int64)
        self.row = np.clip(self.row, 0, strips - 1)
        self.left = x0 - self.x_base

    def index(self, members: np.ndarray) -> OverlapIndex:
        return OverlapIndex(self, members)

    def inner_pairs(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (a, b), a < b, of `members` (sorted, a few hundred at most), one group, whose horizontal
        boxes overlap with positive area: one comparison matrix, cheaper than an index for few boxes."""
        m = members[self.finite[members]]
        x0, y0, x1, y1, g = self.x0[m], self.y0[m], self.x1[m], self.y1[m], self.groups[m]
        meet = (x0[None, :] < x1[:, None]) & (x0[:, None] < x1[None, :]) & (y0[None, :] < y1[:, None])
        meet &= (y0[:, None] < y1[None, :]) & (g[:, None] == g[None, :])
        i, j = np.nonzero(np.triu(meet, 1))
        return m[i], m[j]


class OverlapIndex:
    """Some of the boxes, sorted for `pairs`: small ones by (group, strip, x0), large ones by (group, x0)."""

    def __init__(self, extents: Extents, members: np.ndarray) -> None:
        e = extents
        members = members[e.finite[members]]
        large = e.large[members]
        small, big = members[~large], members[large]
        key = (e.groups[small] * e.strips + e.row[small]) * e.x_span + e.left[small]
        order = np.argsort(key, kind="stable")
        self.small, self.small_keys = small[order], key[order]
        key = e.groups[big] * e.x_span + e.left[big]
        order = np.argsort(key, kind="stable")
        self.big, self.big_keys = big[order], key[order]
        widths = e.x1[big] - e.x0[big]
        self.big_reach = (float(widths.max()) if widths.size else 0.0) + _SLACK
        self.extents = e

    def _ranges(self, queries: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(query rows, starts, counts, sorted members) of the runs that may hold each query's partners."""
        e = self.extents
        g, left, right = e.groups[queries], e.left[queries], e.x1[queries] - e.x_base
        if self.small.size:
            # a small box b meets q only if y0_q - strip < y0_b < y1_q and x0_q - max_width < x0_b < x1_q
            first = np.floor((e.y0[queries] - e.strip - _SLACK - e.y_base) / e.strip).astype(np.int64)
            last = np.floor((e.y1[queries] - e.y_base) / e.strip).astype(np.int64)
            first, last = np.clip(first, 0, e.strips - 1), np.clip(last, 0, e.strips - 1)
            per = last - first + 1
            rows = np.repeat(np.arange(queries.size), per)
            strip = np.repeat(first, per) + (np.arange(rows.size) - np.repeat(np.cumsum(per) - per, per))
            base = (g[rows] * e.strips + strip) * e.x_span
            lo = np.searchsorted(self.small_keys, base + left[rows] - e.max_width - _SLACK, side="left")
            hi = np.searchsorted(self.small_keys, base + right[rows] + _SLACK, side="right")
            yield rows, lo, np.maximum(hi - lo, 0), self.small
        if self.big.size:
            base = g * e.x_span
            lo = np.searchsorted(self.big_keys, base + left - self.big_reach - _SLACK, side="left")
            hi = np.searchsorted(self.big_keys, base + right + _SLACK, side="right")
            yield np.arange(queries.size), lo, np.maximum(hi - lo, 0), self.big

    def pairs(
        self, queries: np.ndarray, after: np.ndarray, open_: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pairs (a, b), a = queries[k], b a member with b > after[k] and `open_[b]`, of one group, whose
        horizontal boxes overlap with positive area; in chunks of about `PAIR_CHUNK` candidates.

        A run's key range never reaches into another group's (`x_span` exceeds any x range plus the
        reach), so the candidates are of the query's group by construction."""
        e = self.extents
        live = e.finite[queries]
        queries, after = queries[live], after[live]
        for rows, lo, counts, members in self._ranges(queries):
            owner, bound = queries[rows], after[rows]
            cum = np.cumsum(counts)
            start = 0
            while start < rows.size:
                done = int(cum[start - 1]) if start else 0
                stop = max(int(np.searchsorted(cum, done + PAIR_CHUNK, side="right")), start + 1)
                c = counts[start:stop]
                first = cum[start:stop] - c - done  # each range's first slot in this chunk
                b = members[np.arange(int(c.sum())) + np.repeat(lo[start:stop] - first, c)]
                a = np.repeat(owner[start:stop], c)
                keep = (b > np.repeat(bound[start:stop], c)) & open_[b]
                a, b = a[keep], b[keep]
                keep = (e.x0[b] < e.x1[a]) & (e.x0[a] < e.x1[b]) & (e.y0[b] < e.y1[a]) & (e.y0[a] < e.y1[b])
                yield a[keep], b[keep]
                start = stop
