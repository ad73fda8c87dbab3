"""Patch-level Task1 detections -> full-image detections, as MMRotate's `DOTADataset.merge_det`.

A patch id such as `P0003__1024__824___0` names its image (the part before the first `__`) and
its origin (x, y) = (824, 0), found with MMRotate's regex `__\\d+___\\d+`. Every polygon is shifted
by its patch origin; then, per full image and class, rotated NMS at IoU 0.1 removes the duplicates
that overlapping patches produce. Merged polygons are rounded as a Task1 file stores them (`%.2f`),
so evaluating the merged detections equals evaluating the files `--save-merged` writes.
"""

from __future__ import annotations

import re

import numpy as np

from rotld_cli.dota.formats import Task1Detections
from rotld_cli.dota.rotated_nms import nms_quads

PATCH_ORIGIN = re.compile(r"__\d+___\d+")
_DIGITS = re.compile(r"\d+")


def split_patch_id(patch_id: str) -> tuple[str, int, int] | None:
    """`P0003__1024__824___0` -> ('P0003', 824, 0); None for an id without a patch origin."""
    found = PATCH_ORIGIN.findall(patch_id)
    if not found:
        return None
    x, y = (int(v) for v in _DIGITS.findall(found[0])[:2])
    return patch_id.split("__")[0], x, y


def is_patch_id(image_id: str) -> bool:
    return PATCH_ORIGIN.search(image_id) is not None


def round_like_task1(values: np.ndarray) -> np.ndarray:
    """`float('%.2f' % v)` for every value, vectorised (exactly: N/100 is correctly rounded)."""
    values = np.asarray(values, dtype=np.float64)
    scaled = values * 100.0
    out = np.rint(scaled) / 100.0
    # where v*100 may sit on a rounding boundary, let Python's formatting decide
    frac = np.abs(scaled - np.trunc(scaled))
    doubtful = np.abs(frac - 0.5) <= 1e-9 * np.maximum(1.0, np.abs(scaled))
    if doubtful.any():
        flat_out = out.reshape(-1)
        for i in np.flatnonzero(doubtful.reshape(-1)):
            flat_out[i] = float(f"{values.reshape(-1)[i]:.2f}")
    return out


def merge_class(dets: Task1Detections, iou_thr: float = 0.1) -> Task1Detections:
    """Merge one class: shift to full-image coordinates, NMS per image, round to `%.2f`.

    Output order: images in order of first appearance, each by descending score (stable).
    Ids without a patch origin are taken as full-image ids (origin 0, 0).
    """
    if len(dets) == 0:
        return Task1Detections([], np.zeros(0), np.zeros((0, 8)))
    patch_ids = list(dict.fromkeys(dets.image_ids))
    table = {pid: k for k, pid in enumerate(patch_ids)}
    codes = np.fromiter(map(table.__getitem__, dets.image_ids), dtype=np.int64, count=len(dets))
    images: dict[str, int] = {}
    image_of = np.empty(len(patch_ids), dtype=np.int64)
    origin = np.zeros((len(patch_ids), 2))
    for k, pid in enumerate(patch_ids):
        parsed = split_patch_id(pid)
        name, x, y = parsed if parsed is not None else (pid, 0, 0)
        image_of[k] = images.setdefault(name, len(images))
        origin[k] = (x, y)
    shifted = dets.polys + np.tile(origin[codes], 4)
    groups = image_of[codes]
    keep = nms_quads(shifted, dets.scores, groups, iou_thr)
    names = list(images)
    return Task1Detections(
        [names[g] for g in groups[keep].tolist()], dets.scores[keep].copy(), round_like_task1(shifted[keep])
    )


def merge_detections(dets_by_class: dict[str, Task1Detections], iou_thr: float = 0.1) -> dict[str, Task1Detections]:
    return {name: merge_class(dets, iou_thr) for name, dets in dets_by_class.items()}
