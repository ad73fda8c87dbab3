"""Geometry of the DOTA split: sliding windows, object assignment, patch names and crops.

Mirrors MMRotate 0.3.4 `tools/data/dota/split/img_split.py` (get_sliding_window,
bbox_overlaps_iof, get_window_obj, crop_and_save_img) value for value, including its float32
quirks, so patches and annfiles made here equal the ones the reference script writes.
Pure numpy + shapely: no I/O, no OpenCV, no engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

# img_split keeps windows within this distance of the best in-image ratio when none passes.
WINDOW_RATE_EPS = 0.01
# img_split clamps polygon areas to this before dividing (degenerate polygons get iof 0).
AREA_EPS = 1e-6
# float32 holds every integer below this exactly, and str(np.float32) prints them as '<int>.0'.
EXACT_FLOAT32_INT = 2**24
# Patch files are named `.{id}__{size}__{x}___{y}.png.<8 random>.png` while written: ~60 bytes
# beside the id, within the usual 255-byte limit of a file name.
MAX_IMAGE_ID_BYTES = 190


@dataclass(frozen=True)
class SplitParams:
    """The split settings, as img_split's JSON configs name them (sizes before the rate scaling)."""

    sizes: tuple[int, ...] = (1024,)
    gaps: tuple[int, ...] = (200,)
    rates: tuple[float, ...] = (1.0,)
    img_rate_thr: float = 0.6
    iof_thr: float = 0.7
    padding: bool = True
    padding_value: tuple[int, ...] = (104, 116, 124)

    def window_specs(self) -> list[tuple[int, int]]:
        """(window size, gap) pairs: int(size/rate), int(gap/rate) for each rate, then each size."""
        return [(int(size / rate), int(gap / rate)) for rate in self.rates for size, gap in zip(self.sizes, self.gaps)]


@dataclass
class Patch:
    """One window of an image and the objects assigned to it (indices, truncation, shifted polygons)."""

    name: str
    window: tuple[int, int, int, int]  # x_start, y_start, x_stop, y_stop (stop exclusive)
    object_indices: np.ndarray  # indices into the image's objects, ascending
    truncated: np.ndarray  # bool per assigned object: iof < 1 -> difficulty 2
    polys: np.ndarray  # (k, 8) float32, shifted by the window origin, not clipped


def axis_starts(length: int, size: int, step: int) -> list[int]:
    """Window starts along one axis: every `step`, the last one moved flush with the border."""
    count = 1 if length <= size else math.ceil((length - size) / step + 1)
    starts = [step * i for i in range(count)]
    if len(starts) > 1 and starts[-1] + size > length:
        starts[-1] = length - size
    return starts


def sliding_windows(width: int, height: int, specs: Sequence[tuple[int, int]], img_rate_thr: float) -> np.ndarray:
    """All windows (n, 4) int64 [x_start, y_start, x_stop, y_stop] kept for an image.

    Windows of every (size, gap) are concatenated (x outer, y inner, as itertools.product), then
    filtered: keep those whose in-image area / window area > img_rate_thr; if none passes, keep
    the ones within 0.01 of the best ratio (so a small image still gives its one padded window).
    """
    windows = []
    for size, gap in specs:
        if size <= gap:
            raise ValueError(f"window size {size} must be larger than its gap {gap}")
        step = size - gap
        xs = axis_starts(width, size, step)
        ys = axis_starts(height, size, step)
        start = np.array([(x, y) for x in xs for y in ys], dtype=np.int64)
        windows.append(np.concatenate([start, start + size], axis=1))
    windows = np.concatenate(windows, axis=0)

    inside = windows.copy()
    inside[:, 0::2] = np.clip(inside[:, 0::2], 0, width)
    inside[:, 1::2] = np.clip(inside[:, 1::2], 0, height)
    img_areas = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    win_areas = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    rates = img_areas / win_areas
    if not (rates > img_rate_thr).any():
        rates[np.abs(rates - rates.max()) < WINDOW_RATE_EPS] = 1
    return windows[rates > img_rate_thr]


def quad_polygons(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapely polygons of (n, 8) quadrilaterals; invalid ones (self-intersecting, degenerate)
    are repaired with make_valid so the intersections never raise. Returns (geoms, repaired mask).
    """
    geoms = shapely.polygons(np.asarray(polys, dtype=np.float64).reshape(-1, 4, 2))
    repaired = ~shapely.is_valid(geoms)
    if repaired.any():
        geoms[repaired] = shapely.make_valid(geoms[repaired])
    return geoms, repaired


def window_polygons(windows: np.ndarray) -> np.ndarray:
    """Windows as polygons with img_split's vertex order (l,t), (r,t), (r,b), (l,b)."""
    left, top, right, bottom = (windows[:, i].astype(np.float64) for i in range(4))
    corners = [left, top, right, top, right, bottom, left, bottom]
    return shapely.polygons(np.stack(corners, axis=-1).reshape(-1, 4, 2))


def hbb_pairs(polys: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object, window) index pairs whose horizontal boxes overlap with a positive area, and
    whether the object's box lies entirely inside the window.

    Only overlapping pairs can have a non-zero iof, so only they reach shapely (img_split's
    prefilter); for an object inside the window the intersection is the object itself.
    """
    pts = polys.reshape(-1, 4, 2)
    hbb = np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)[:, None, :]
    lt = np.maximum(hbb[..., :2], windows[None, :, :2])
    rb = np.minimum(hbb[..., 2:], windows[None, :, 2:])
    wh = np.clip(rb - lt, 0, np.inf)
    obj_idx, win_idx = np.nonzero(wh[..., 0] * wh[..., 1])
    inside = (hbb[obj_idx, 0, :2] >= windows[win_idx, :2]).all(axis=1) & (
        hbb[obj_idx, 0, 2:] <= windows[win_idx, 2:]
    ).all(axis=1)
    return obj_idx, win_idx, inside


def iof_matrix(geoms: np.ndarray, polys: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """iof (n_objects, n_windows) = area(object ∩ window) / area(object), float64.

    As in img_split the object area is rounded to float32 and clamped to >= 1e-6; the polygon
    is the full (unclipped) quadrilateral; pairs whose HBBs do not overlap get 0. Objects inside
    a window skip the intersection: its area is the object's own (bit for bit, checked in tests).
    """
    iofs = np.zeros((len(polys), len(windows)), dtype=np.float64)
    if iofs.size == 0:
        return iofs
    areas = shapely.area(geoms)
    obj_idx, win_idx, inside = hbb_pairs(polys, windows)
    iofs[obj_idx[inside], win_idx[inside]] = areas[obj_idx[inside]]
    cut_obj, cut_win = obj_idx[~inside], win_idx[~inside]
    if len(cut_obj):
        boxes = window_polygons(windows)
        iofs[cut_obj, cut_win] = shapely.area(shapely.intersection(geoms[cut_obj], boxes[cut_win]))
    return iofs / np.clip(areas.astype(np.float32), AREA_EPS, np.inf)[:, None]


def patch_name(image_id: str, window: Sequence[int]) -> str:
    """`{id}__{window size}__{x}___{y}` (two, two, three underscores), e.g. P0004__1024__0___824."""
    x_start, y_start, x_stop, _ = (int(v) for v in window)
    return f"{image_id}__{x_stop - x_start}__{x_start}___{y_start}"


def image_id_problem(image_id: str) -> str | None:
    """Why an image id cannot round-trip through its patch names and Task1 lines, or None.

    Detections name a patch `{id}__{size}__{x}___{y}`; merging cuts the id at the first `__`
    (MMRotate's rule) and Task1 lines are split on whitespace, so such ids would be evaluated
    against the wrong image or not at all."""
    from rotld_cli.dota.merge import split_patch_id

    if any(ch.isspace() for ch in image_id):
        return "contains whitespace, which a space-separated Task1 result line cannot hold"
    if not image_id.isprintable():
        return "contains a control or undecodable character"
    if "__" in image_id:
        return "contains '__', the separator of patch names (`{id}__{size}__{x}___{y}`)"
    if len(image_id.encode("utf-8", "surrogateescape")) > MAX_IMAGE_ID_BYTES:
        return f"is longer than {MAX_IMAGE_ID_BYTES} bytes: its patch file names would pass the 255-byte limit"
    if image_id.endswith("_"):
        return "ends with '_', which runs into the '__' separator of its patch names"
    if split_patch_id(patch_name(image_id, (0, 0, 1024, 1024))) != (image_id, 0, 0):  # a safety net
        return "its patch names would not map back to it"
    return None


def plan_patches(
    image_id: str,
    width: int,
    height: int,
    polys: np.ndarray,
    params: SplitParams,
    geoms: np.ndarray | None = None,
) -> list[Patch]:
    """The patches of one image and the objects each one keeps (iof >= iof_thr).

    `polys` are the (n, 8) label quadrilaterals; img_split stores them as float32, so they are
    rounded to float32 here and shifted in float32 (its `translate`), which fixes the exact
    text str(np.float32) gives in the annfiles. Pass `geoms` from quad_polygons to reuse them.
    """
    polys = np.asarray(polys, dtype=np.float32).reshape(-1, 8)
    if geoms is None:
        geoms, _ = quad_polygons(polys)
    windows = sliding_windows(width, height, params.window_specs(), params.img_rate_thr)
    iofs = iof_matrix(geoms, polys, windows)
    patches = []
    for i, window in enumerate(windows):
        keep = np.nonzero(iofs[:, i] >= params.iof_thr)[0]
        x_start, y_start = int(window[0]), int(window[1])
        shift = np.array([-x_start, -y_start] * 4, dtype=np.float32)
        patches.append(
            Patch(
                name=patch_name(image_id, window),
                window=tuple(int(v) for v in window),
                object_indices=keep,
                truncated=iofs[keep, i] < 1,
                polys=polys[keep] + shift,
            )
        )
    return patches


def coords_text(polys: np.ndarray) -> list[str]:
    """'x1 y1 ... y4' per float32 row, exactly as img_split writes it (str(np.float32) per value).

    Integral coordinates (all of DOTA v1.0) take a fast path that prints '<int>.0' (3x faster,
    same text); any other value (fractions, -0.0, |v| >= 2**24) goes through numpy's str.
    """
    ints = polys.astype(np.int64)
    if np.array_equal(ints, polys) and np.abs(ints).max(initial=0) < EXACT_FLOAT32_INT:
        if not np.signbit(polys[polys == 0]).any():
            return [" ".join([f"{v}.0" for v in row]) for row in ints.tolist()]
    return [" ".join([str(v) for v in row]) for row in polys]


def annfile_lines(patch: Patch, names: Sequence[str], difficulties: Sequence[int]) -> list[str]:
    """`x1 y1 ... y4 class difficulty` per assigned object; truncated objects get difficulty 2."""
    coords = coords_text(patch.polys)
    return [
        f"{text} {names[i]} {2 if truncated else difficulties[i]}"
        for text, i, truncated in zip(coords, patch.object_indices, patch.truncated)
    ]


def crop_patch(image: np.ndarray, window: Sequence[int], padding_value: Sequence[int] | None) -> np.ndarray:
    """The window's pixels; a window reaching past the image is filled with `padding_value`
    (one value or one per channel) and the crop pasted top-left, unless padding_value is None.
    """
    x_start, y_start, x_stop, y_stop = (int(v) for v in window)
    patch = image[y_start:y_stop, x_start:x_stop]
    height, width = y_stop - y_start, x_stop - x_start
    if padding_value is None or (patch.shape[0] >= height and patch.shape[1] >= width):
        return patch
    padded = np.empty((height, width, *patch.shape[2:]), dtype=image.dtype)
    padded[...] = padding_value[0] if len(padding_value) == 1 else padding_value
    padded[: patch.shape[0], : patch.shape[1], ...] = patch
    return padded
