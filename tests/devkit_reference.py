"""A straightforward port of the DOTA devkit's Task1 evaluation: the reference rotld is checked against.

`voc_eval`, `voc_ap` and `parse_gt` follow `dota_evaluation_task1.py` line by line (one detection
and one polygon IoU at a time); `iou_poly` follows `polyiou.cpp` operation by operation in Python
floats (IEEE doubles, like the C++), including its static point buffer. Deliberate deviations,
each needed to run it at all or to pin down what the devkit leaves undefined:

* `np.bool` -> `bool` (removed in numpy 1.24);
* detections are sorted with a stable sort (`kind="stable"`): equal scores keep file order;
* an empty detection file gives AP 0 (the devkit raises IndexError on it);
* a class without non-difficult GT gives AP 0 (the devkit divides by zero: nan or 0);
* `iou` can be swapped (the benchmark times the loop with a precomputed IoU table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

_EPS = 1e-8
_MAXN = 510
# polygon_cut's `static Point pp[maxn]`: zero-initialised, then whatever the last call left
_PP: list[tuple[float, float]] = [(0.0, 0.0)] * _MAXN


def reset_static_buffer() -> None:
    _PP[:] = [(0.0, 0.0)] * _MAXN


def _sig(d: float) -> int:
    return int(d > _EPS) - int(d < -_EPS)


def _same(p: tuple[float, float], q: tuple[float, float]) -> bool:
    return _sig(p[0] - q[0]) == 0 and _sig(p[1] - q[1]) == 0


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (b[0] - o[0]) * (a[1] - o[1])


def _area(ps: list, n: int) -> float:
    ps[n] = ps[0]
    res = 0.0
    for i in range(n):
        res += ps[i][0] * ps[i + 1][1] - ps[i][1] * ps[i + 1][0]
    return res / 2.0


def _line_cross(a, b, c, d):
    s1 = _cross(a, b, c)
    s2 = _cross(a, b, d)
    if _sig(s1) == 0 and _sig(s2) == 0:
        return 2, None
    if _sig(s2 - s1) == 0:
        return 0, None
    return 1, ((c[0] * s2 - d[0] * s1) / (s2 - s1), (c[1] * s2 - d[1] * s1) / (s2 - s1))


def _polygon_cut(p: list, n: int, a, b) -> int:
    m = 0
    p[n] = p[0]
    for i in range(n):
        if _sig(_cross(a, b, p[i])) > 0:
            _PP[m] = p[i]
            m += 1
        if _sig(_cross(a, b, p[i])) != _sig(_cross(a, b, p[i + 1])):
            status, point = _line_cross(a, b, p[i], p[i + 1])
            if status == 1:
                _PP[m] = point
            m += 1
    n = 0
    for i in range(m):
        if i == 0 or not _same(_PP[i], _PP[i - 1]):
            p[n] = _PP[i]
            n += 1
    while n > 1 and _same(p[n - 1], p[0]):
        n -= 1
    return n


def _triangle_intersect_area(a, b, c, d) -> float:
    o = (0.0, 0.0)
    s1 = _sig(_cross(o, a, b))
    s2 = _sig(_cross(o, c, d))
    if s1 == 0 or s2 == 0:
        return 0.0
    if s1 == -1:
        a, b = b, a
    if s2 == -1:
        c, d = d, c
    p = [o, a, b] + [(0.0, 0.0)] * 61
    n = 3
    n = _polygon_cut(p, n, o, c)
    n = _polygon_cut(p, n, c, d)
    n = _polygon_cut(p, n, d, o)
    res = abs(_area(p, n))
    if s1 * s2 == -1:
        res = -res
    return res


def _intersect_area(ps1: list, n1: int, ps2: list, n2: int) -> float:
    if _area(ps1, n1) < 0:
        ps1[:n1] = ps1[:n1][::-1]
    if _area(ps2, n2) < 0:
        ps2[:n2] = ps2[:n2][::-1]
    ps1[n1] = ps1[0]
    ps2[n2] = ps2[0]
    res = 0.0
    for i in range(n1):
        for j in range(n2):
            res += _triangle_intersect_area(ps1[i], ps1[i + 1], ps2[j], ps2[j + 1])
    return res


def iou_poly(p: Sequence[float], q: Sequence[float]) -> float:
    """`polyiou.iou_poly(p, q)`: p and q are x1 y1 ... x4 y4; the devkit passes (GT, detection)."""
    ps1 = [(float(p[2 * i]), float(p[2 * i + 1])) for i in range(4)] + [(0.0, 0.0)]
    ps2 = [(float(q[2 * i]), float(q[2 * i + 1])) for i in range(4)] + [(0.0, 0.0)]
    inter_area = _intersect_area(ps1, 4, ps2, 4)
    union_area = abs(_area(ps1, 4)) + abs(_area(ps2, 4)) - inter_area
    with np.errstate(divide="ignore", invalid="ignore"):
        # C++ double division (0/0 is NaN, x/0 is +-inf), which Python's float `/` refuses
        return float(np.float64(inter_area) / union_area)


def parse_gt(filename: str) -> list[dict]:
    objects = []
    with open(filename) as f:
        while True:
            line = f.readline()
            if line:
                splitlines = line.strip().split(" ")
                object_struct = {}
                if len(splitlines) < 9:
                    continue
                object_struct["name"] = splitlines[8]
                if len(splitlines) == 9:
                    object_struct["difficult"] = 0
                elif len(splitlines) == 10:
                    object_struct["difficult"] = int(splitlines[9])
                object_struct["bbox"] = [float(v) for v in splitlines[:8]]
                objects.append(object_struct)
            else:
                break
    return objects


def voc_ap(rec, prec, use_07_metric: bool = False) -> float:
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def voc_eval(
    detpath: str,
    annopath: str,
    imagesetfile: str,
    classname: str,
    ovthresh: float = 0.5,
    use_07_metric: bool = False,
    iou: Callable[[Sequence[float], Sequence[float]], float] = iou_poly,
    recs: dict | None = None,
):
    """rec, prec, ap for one class; `recs` (image -> parse_gt result) skips re-reading the labels."""
    with open(imagesetfile) as f:
        lines = f.readlines()
    imagenames = [x.strip() for x in lines]
    if recs is None:
        recs = {}
        for imagename in imagenames:
            recs[imagename] = parse_gt(annopath.format(imagename))

    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}

    detfile = detpath.format(classname)
    with open(detfile) as f:
        lines = f.readlines()
    if not lines:
        return np.zeros(0), np.zeros(0), 0.0

    splitlines = [x.strip().split(" ") for x in lines]
    image_ids = [x[0] for x in splitlines]
    confidence = np.array([float(x[1]) for x in splitlines])
    BB = np.array([[float(z) for z in x[2:]] for x in splitlines])

    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)

        if BBGT.size > 0:
            BBGT_xmin = np.min(BBGT[:, 0::2], axis=1)
            BBGT_ymin = np.min(BBGT[:, 1::2], axis=1)
            BBGT_xmax = np.max(BBGT[:, 0::2], axis=1)
            BBGT_ymax = np.max(BBGT[:, 1::2], axis=1)
            bb_xmin = np.min(bb[0::2])
            bb_ymin = np.min(bb[1::2])
            bb_xmax = np.max(bb[0::2])
            bb_ymax = np.max(bb[1::2])

            ixmin = np.maximum(BBGT_xmin, bb_xmin)
            iymin = np.maximum(BBGT_ymin, bb_ymin)
            ixmax = np.minimum(BBGT_xmax, bb_xmax)
            iymax = np.minimum(BBGT_ymax, bb_ymax)
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih

            uni = (
                (bb_xmax - bb_xmin + 1.0) * (bb_ymax - bb_ymin + 1.0)
                + (BBGT_xmax - BBGT_xmin + 1.0) * (BBGT_ymax - BBGT_ymin + 1.0)
                - inters
            )

            overlaps = inters / uni

            BBGT_keep_mask = overlaps > 0
            BBGT_keep = BBGT[BBGT_keep_mask, :]
            BBGT_keep_index = np.where(overlaps > 0)[0]

            def calcoverlaps(BBGT_keep, bb):
                overlaps = []
                for index, _GT in enumerate(BBGT_keep):
                    overlap = iou(BBGT_keep[index], bb)
                    overlaps.append(overlap)
                return overlaps

            if len(BBGT_keep) > 0:
                overlaps = calcoverlaps(BBGT_keep, bb)
                ovmax = np.max(overlaps)
                jmax = np.argmax(overlaps)
                jmax = BBGT_keep_index[jmax]

        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    if npos == 0:
        return tp * np.nan, tp * np.nan, 0.0
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)
    return rec, prec, ap


def evaluate_all(
    detpath: str,
    annopath: str,
    imagesetfile: str,
    classnames: Sequence[str],
    thresholds: Sequence[float],
    use_07_metric: bool = True,
    iou: Callable[[Sequence[float], Sequence[float]], float] = iou_poly,
) -> list[list[float]]:
    """The seed script's loop (thresholds outside, classes inside): AP[threshold][class]."""
    with open(imagesetfile) as f:
        recs = {x.strip(): parse_gt(annopath.format(x.strip())) for x in f.readlines()}
    return [
        [float(voc_eval(detpath, annopath, imagesetfile, c, thr, use_07_metric, iou, recs)[2]) for c in classnames]
        for thr in thresholds
    ]
