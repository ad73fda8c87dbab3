"""Window pixels of one source image, BGR uint8, without holding a huge image in memory.

Two ways to read, chosen per file:

* Uncompressed striped TIFF (the layout large mosaics are exported in) larger than
  `window_read_pixels`: nothing is decoded; each window reads its rows straight from the file
  (one `pread` per row), so memory holds one window, never the image.
* Everything else (PNG, JPEG, BMP, compressed or tiled TIFF, and small images): decoded once with
  OpenCV into one array, exactly as `prepare-dota` decodes it (8-bit images give pixel-identical
  windows); windows are cut from that array. PNG and JPEG have no random access, so a huge one
  costs its decoded size once (3 bytes per pixel).

Pixel rule: 8-bit BGR as is; gray is copied to the three channels (OpenCV's IMREAD_COLOR); an alpha
channel is dropped; 16-bit images are scaled linearly by the image's own maximum,
`floor(v * 255 / max + 0.5)` (a 12-bit sensor image uses the full 8-bit range; an all-zero one
stays black). Other pixel types are refused with the file's name.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rotld_cli.dota.prepare import ImageReadError, decode_image
from rotld_cli.dota.split import crop_patch
from rotld_cli.errors import located

DEFAULT_WINDOW_READ_PIXELS = 64_000_000  # above this (8000 x 8000), readable TIFFs are not held whole
_ROWS_PER_SCAN = 256  # rows read at a time when a 16-bit TIFF's maximum is measured
# Pillow rawmode of an uncompressed TIFF strip -> (channels, numpy dtype)
RAW_LAYOUTS = {
    "RGB": (3, np.dtype("u1")),
    "RGBA": (4, np.dtype("u1")),
    "RGBX": (4, np.dtype("u1")),
    "L": (1, np.dtype("u1")),
    "I;16": (1, np.dtype("<u2")),
    "I;16L": (1, np.dtype("<u2")),
    "I;16B": (1, np.dtype(">u2")),
}


@contextlib.contextmanager
def _no_pixel_limit() -> Iterator[None]:
    """Pillow refuses headers above ~179 MP as 'decompression bombs'; huge aerial images are the point here.
    Its warnings about damaged headers are silenced: the failure is reported with the file's name."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():  # e.g. "Corrupt EXIF data" of a damaged TIFF: its error is ours to report
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only (nothing decoded)."""
    try:
        with _no_pixel_limit(), Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise ImageReadError(located(path, None, f"cannot read image: {exc}")) from None


def scale_16bit(pixels: np.ndarray, maximum: int) -> np.ndarray:
    """uint16 -> uint8 by `floor(v * 255 / maximum + 0.5)`; maximum 0 gives black."""
    if maximum <= 0:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.floor(pixels.astype(np.float32) * np.float32(255.0 / maximum) + np.float32(0.5)).astype(np.uint8)


def to_bgr8(pixels: np.ndarray, maximum: int | None, rgb: bool) -> np.ndarray:
    """(h, w[, c]) gray/RGB(A)/BGR, 8- or 16-bit -> (h, w, 3) BGR uint8 by the module's pixel rule."""
    if pixels.dtype != np.uint8:
        pixels = scale_16bit(pixels, int(maximum or 0))
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2BGR)
    if not rgb:
        return np.ascontiguousarray(pixels[:, :, :3])
    return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGR if channels == 4 else cv2.COLOR_RGB2BGR)  # 10x numpy's flip


class ArrayImage:
    """An image decoded once into memory; windows are cut from it as prepare-dota cuts patches."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]

    def read(self, window: Sequence[int], padding: Sequence[int] | None) -> np.ndarray:
        return np.ascontiguousarray(crop_patch(self.pixels, window, padding))

    def whole(self) -> np.ndarray | None:
        return self.pixels

    def close(self) -> None:
        self.pixels = None


class StripTiffImage:
    """An uncompressed striped TIFF read window by window from the file (one pread per row)."""

    def __init__(self, path: Path, width: int, height: int, strips: list[tuple[int, int, int]], rawmode: str) -> None:
        self.path = path
        self.width, self.height = width, height
        self.strips = strips  # (first row, stop row, file offset), ascending
        self.channels, self.dtype = RAW_LAYOUTS[rawmode]
        self.rgb = self.channels > 1
        self.pixel_bytes = self.channels * self.dtype.itemsize
        self.row_bytes = width * self.pixel_bytes
        self._fd = os.open(path, os.O_RDONLY)
        end = max(offset + (stop - start) * self.row_bytes for start, stop, offset in strips)
        if os.fstat(self._fd).st_size < end:
            self.close()
            raise ImageReadError(located(path, None, "truncated TIFF (strips reach past the end of the file)"))
        self.maximum = self._measure_max() if self.dtype.itemsize == 2 else None

    def _rows(self, y_start: int, y_stop: int, x_start: int, x_stop: int) -> np.ndarray:
        """Raw pixels of rows [y_start, y_stop) and columns [x_start, x_stop), as stored."""
        out = np.empty((y_stop - y_start, x_stop - x_start, self.channels), dtype=self.dtype)
        width_bytes = (x_stop - x_start) * self.pixel_bytes
        for start, stop, offset in self.strips:
            for row in range(max(start, y_start), min(stop, y_stop)):
                at = offset + (row - start) * self.row_bytes + x_start * self.pixel_bytes
                view = memoryview(out[row - y_start]).cast("B")
                if os.preadv(self._fd, [view], at) != width_bytes:
                    raise ImageReadError(located(self.path, None, f"cannot read row {row}"))
        return out

    def _measure_max(self) -> int:
        return max(
            int(self._rows(y, min(y + _ROWS_PER_SCAN, self.height), 0, self.width).max(initial=0))
            for y in range(0, self.height, _ROWS_PER_SCAN)
        )

    def read(self, window: Sequence[int], padding: Sequence[int] | None) -> np.ndarray:
        x_start, y_start, x_stop, y_stop = (int(v) for v in window)
        inside = self._rows(y_start, min(y_stop, self.height), x_start, min(x_stop, self.width))
        pixels = to_bgr8(inside, self.maximum, self.rgb)
        return np.ascontiguousarray(crop_patch(pixels, (0, 0, x_stop - x_start, y_stop - y_start), padding))

    def whole(self) -> np.ndarray | None:
        return None  # never materialised

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _raw_strips(path: Path) -> tuple[int, int, list[tuple[int, int, int]], str] | None:
    """(width, height, strips, rawmode) when Pillow sees an uncompressed, full-width-striped TIFF."""
    with _no_pixel_limit(), Image.open(path) as image:
        if image.format != "TIFF" or getattr(image, "use_load_libtiff", False) or not image.tile:
            return None
        width, height = image.size
        strips, rawmodes = [], set()
        for tile in image.tile:
            x0, y0, x1, y1 = tile.extents
            rawmode, stride, ystep = (*tuple(tile.args), 0, 1)[:3]
            layout = RAW_LAYOUTS.get(rawmode)
            if tile.codec_name != "raw" or layout is None or x0 != 0 or x1 != width or ystep != 1:
                return None
            if stride not in (0, width * layout[0] * layout[1].itemsize):
                return None
            strips.append((y0, y1, tile.offset))
            rawmodes.add(rawmode)
    if len(rawmodes) != 1:
        return None
    return width, height, sorted(strips), rawmodes.pop()


def decode_whole(path: Path) -> np.ndarray:
    """The image decoded once with OpenCV (as prepare-dota), then converted by the pixel rule."""
    pixels = decode_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ImageReadError(located(path, None, f"unsupported pixel type {pixels.dtype} (8- or 16-bit images only)"))
    maximum = int(pixels.max(initial=0))
    out = np.empty(pixels.shape, dtype=np.uint8)
    for y in range(0, pixels.shape[0], _ROWS_PER_SCAN):  # converted in bands: no float copy of the whole image
        out[y : y + _ROWS_PER_SCAN] = scale_16bit(pixels[y : y + _ROWS_PER_SCAN], maximum)
    return out


def open_image(path: Path, window_read_pixels: int = DEFAULT_WINDOW_READ_PIXELS) -> ArrayImage | StripTiffImage:
    """The reader for `path` (see the module docstring for which one); ImageReadError names the file."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            layout = _raw_strips(path)
        except OSError as exc:
            raise ImageReadError(located(path, None, f"cannot read image: {exc}")) from None
        if layout is not None and layout[0] * layout[1] > window_read_pixels:
            return StripTiffImage(path, *layout)
    try:
        return ArrayImage(decode_whole(path))
    except cv2.error as exc:
        raise ImageReadError(located(path, None, f"cannot decode image: {exc.msg or exc}")) from None
