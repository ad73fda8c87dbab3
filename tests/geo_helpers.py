"""Rasters made with rasterio, and detectors without an engine, for the predict tests.

`PixelDetector` implements the `rotld_cli.detector.Detector` contract with boxes that are a function
of each window's pixels (position of the brightest pixel, class by its parity, score by the mean), so
two sources give equal predictions exactly when every window they produce is pixel-identical.
`FixedDetector` returns given boxes (image coordinates of a one-window image) for the geometry tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio

CLASSES = ("plane", "ship")


class PixelDetector:
    classes = CLASSES
    angle_version = "le90"

    def __init__(self) -> None:
        self.windows_seen = 0

    def detect(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        out = []
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            self.windows_seen += 1
            brightness = image.astype(np.int64).sum(axis=2)
            y, x = np.unravel_index(int(np.argmax(brightness)), brightness.shape)
            score = float(image.mean()) / 256.0
            box = np.array([[x + 0.5, y + 0.5, 24.0, 10.0, 0.25 + (x % 7) / 10, score]], dtype=np.float32)
            per_class = [np.zeros((0, 6), dtype=np.float32) for _ in CLASSES]
            per_class[int(image[y, x, 0]) % 2] = box
            out.append(per_class)
        return out


class FixedDetector:
    """The same boxes (cx, cy, w, h, angle, score, class index) for every window."""

    classes = CLASSES
    angle_version = "le90"

    def __init__(self, boxes: Sequence[Sequence[float]]) -> None:
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 7)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        per_class = [self.boxes[self.boxes[:, 6] == c][:, :6] for c in range(len(CLASSES))]
        return [[b.copy() for b in per_class] for _ in images]


def write_raster(path: Path, bands: np.ndarray, **profile) -> Path:
    """(c, h, w) pixels -> a raster file (GeoTIFF unless `driver` says otherwise), with rasterio."""
    bands = np.asarray(bands)
    if bands.ndim == 2:
        bands = bands[None]
    colorinterp = profile.pop("colorinterp", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"driver": "GTiff", "count": bands.shape[0], "height": bands.shape[1], "width": bands.shape[2],
            "dtype": bands.dtype.name}  # fmt: skip
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(bands)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def bgr_to_bands(bgr: np.ndarray) -> np.ndarray:
    """An OpenCV BGR image (h, w, 3) -> rasterio's band-first R, G, B."""
    return np.ascontiguousarray(np.moveaxis(bgr[:, :, ::-1], -1, 0))
