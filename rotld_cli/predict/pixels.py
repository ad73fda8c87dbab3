"""How a source's pixels become the BGR uint8 windows the model sees: bands, scaling, nodata.

The model was trained on 8-bit RGB (DOTA), so every source is brought to that, by rules stated here
and recorded in each image's JSON:

* Bands (`--bands`, 1-based, in R,G,B order, or one band for gray): by default the bands whose colour
  interpretation is red, green and blue, else one band (gray, copied to the three channels), else the
  first three. 8-bit images read by OpenCV (PNG, JPEG, BMP) are used as prepare-dota decodes them.
* 8-bit pixels are used as they are. Any other type (16-bit, 32-bit, float) is scaled per image:
  `max` (the default): `floor(v * 255 / max + 0.5)`, one maximum over the bands used, so a 12-bit sensor
  image uses the full 8-bit range and the bands keep their balance; `stretch LO,HI` (`--stretch 2,98`):
  per band, the LO and HI percentiles map to 0 and 255, `floor(clip((v - lo) * 255 / (hi - lo), 0,
  255) + 0.5)`. Values below 0 / outside the range saturate; a band with max (or hi - lo) of 0 is
  black. The arithmetic is float32, as the reader before rasterio did, so 16-bit images scale
  bit-identically to earlier versions.
* Where the statistics come from: see `STATS_*` and `images.RasterImage.statistics`: never a full scan
  of a huge file.
* Nodata (the band's nodata value, NaN, an alpha band or a mask band): such pixels are left out of the
  statistics and filled with the window padding's colour (prepare-dota's BGR 104,116,124).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rotld_cli.errors import UsageError

STATS_WHOLE_PIXELS = 4_000_000  # up to this (2000 x 2000), the percentile statistics use every pixel
STATS_MAX_EXACT_PIXELS = 64_000_000  # up to this (8000 x 8000), `max` is the maximum of every pixel
STATS_WINDOWS = 8  # else an 8 x 8 grid of windows ...
STATS_WINDOW = 256  # ... of 256 px, spread evenly (4.2 MP), unless an overview is there to read


@dataclass(frozen=True)
class PixelOptions:
    """The per-image pixel rules the user chose (recorded in the results: they shape the detections)."""

    bands: tuple[int, ...] | None = None  # 1-based, R,G,B order (or one: gray); None: by colour interpretation
    stretch: tuple[float, float] | None = None  # low/high percentiles; None: max scaling

    def validate(self) -> None:
        if self.bands is not None:
            if len(self.bands) not in (1, 3):
                raise UsageError(f"--bands: give 3 bands (R,G,B) or 1 (gray), got {len(self.bands)}")
            if min(self.bands) < 1:
                raise UsageError(f"--bands: band numbers start at 1, got {min(self.bands)}")
        if self.stretch is not None:
            low, high = self.stretch
            if not 0.0 <= low < high <= 100.0:
                raise UsageError(
                    f"--stretch: expected LOW,HIGH percentiles with 0 <= LOW < HIGH <= 100, got {low},{high}"
                )

    def settings(self) -> dict:
        return {
            "bands": list(self.bands) if self.bands else None,
            "scaling": "max" if self.stretch is None else {"stretch": list(self.stretch)},
        }


@dataclass(frozen=True)
class Scaling:
    """One image's mapping to 8 bits: per output band, `low` -> 0 and `high` -> 255."""

    rule: str  # "max" or "stretch"
    low: tuple[float, ...]
    high: tuple[float, ...]
    sample: str  # where the statistics came from, in words

    def to_dict(self) -> dict:
        return {"rule": self.rule, "low": list(self.low), "high": list(self.high), "sample": self.sample}


def scaling_from_sample(values: Sequence[np.ndarray], options: PixelOptions, sample: str) -> Scaling:
    """The scaling of an image from its valid sample values, one 1-D array per band."""
    values = [np.asarray(v, dtype=np.float64) for v in values]
    if options.stretch is None:
        top = max((float(v.max()) for v in values if v.size), default=0.0)
        return Scaling("max", (0.0,) * len(values), (max(top, 0.0),) * len(values), sample)
    low_pct, high_pct = options.stretch
    lows, highs = [], []
    for band in values:
        if band.size:
            low, high = np.percentile(band, [low_pct, high_pct])
        else:
            low = high = 0.0
        lows.append(float(low))
        highs.append(float(high))
    return Scaling("stretch", tuple(lows), tuple(highs), sample)


def scale_to_uint8(pixels: np.ndarray, scaling: Scaling, band_axis: int) -> np.ndarray:
    """Any-type pixels -> uint8 by `scaling`, band by band along `band_axis` (float32 arithmetic)."""
    out = np.empty(pixels.shape, dtype=np.uint8)
    for index, (low, high) in enumerate(zip(scaling.low, scaling.high)):
        where = [slice(None)] * pixels.ndim
        where[band_axis] = index
        band = pixels[tuple(where)].astype(np.float32)
        factor = np.float32(255.0 / (high - low)) if high > low else np.float32(0.0)
        if low:
            band -= np.float32(low)
        band *= factor
        np.clip(band, 0.0, 255.0, out=band)
        band += np.float32(0.5)
        np.nan_to_num(band, copy=False, nan=0.0)
        out[tuple(where)] = np.floor(band)
    return out


def stats_grid(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The sample windows (x0, y0, x1, y1) of an image too large to read whole for its statistics:
    an evenly spaced STATS_WINDOWS x STATS_WINDOWS grid of STATS_WINDOW px windows (clipped to the image)."""
    side = STATS_WINDOW

    def starts(extent: int) -> list[int]:
        if extent <= side:
            return [0]
        return sorted({round(i * (extent - side) / (STATS_WINDOWS - 1)) for i in range(STATS_WINDOWS)})

    return [(x, y, min(x + side, width), min(y + side, height)) for y in starts(height) for x in starts(width)]


def band_order_to_bgr(pixels: np.ndarray) -> np.ndarray:
    """(c, h, w) uint8 in R,G,B order (or one gray band) -> (h, w, 3) BGR, contiguous."""
    if pixels.shape[0] == 1:
        return np.repeat(pixels[0][:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.moveaxis(pixels[::-1], 0, -1))
