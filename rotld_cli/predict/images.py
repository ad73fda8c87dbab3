"""The pixels of one source image, window by window, as BGR uint8 (`pixels` states the rules).

Two readers, chosen by the file's suffix:

* `ArrayImage` — PNG, JPEG, BMP: decoded once with OpenCV exactly as `prepare-dota` decodes them
  (8-bit windows are pixel-identical to its patches); these formats have no random access, so a huge
  one costs its decoded size once. 16-bit PNGs are scaled by the pixel rules.
* `RasterImage` — everything else (GeoTIFF, Cloud-Optimized GeoTIFF, BigTIFF, JPEG2000, VRT, any
  raster GDAL opens), through rasterio: each window reads only its blocks, compressed or tiled, so
  memory holds the windows in flight, never the image; GDAL's block cache is capped at
  `GDAL_CACHE_BYTES`. The source's georeference (`geo`) comes with it.

Both give the same interface: `width`, `height`, `read(window, padding)` (None when the window is
entirely nodata: the caller skips it), `whole()` (the image for drawing, when small enough),
`georef`, `notes` (warnings about this image), `describe()` (the rules applied, for the JSON), `close()`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rotld_cli.dota.prepare import ImageReadError, decode_image
from rotld_cli.dota.split import crop_patch
from rotld_cli.errors import located
from rotld_cli.predict.geo import GeoReference, usable_crs_problem
from rotld_cli.predict.pixels import (
    STATS_MAX_EXACT_PIXELS,
    STATS_WHOLE_PIXELS,
    PixelOptions,
    Scaling,
    band_order_to_bgr,
    scale_to_uint8,
    scaling_from_sample,
    stats_grid,
)

OPENCV_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # prepare-dota's decode; every other suffix goes to GDAL
WHOLE_MAX_PIXELS = 64_000_000  # --save-vis draws images up to this size (8000 x 8000)
GDAL_CACHE_BYTES = 256 * 2**20  # GDAL's block cache (its default is 5% of the machine's memory)
_ROWS_PER_SCAN = 512  # rows read at a time when a raster's exact maximum is measured


def uses_opencv(path: Path) -> bool:
    return path.suffix.lower() in OPENCV_SUFFIXES


class ArrayImage:
    """An image decoded once into memory (PNG, JPEG, BMP); windows are cut from it as prepare-dota cuts patches."""

    georef: GeoReference | None = None

    def __init__(self, pixels: np.ndarray, scaling: Scaling | None = None, notes: Sequence[str] = ()) -> None:
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]
        self.scaling = scaling
        self.notes = list(notes)

    @classmethod
    def decode(cls, path: Path, options: PixelOptions) -> ArrayImage:
        """Decoded as prepare-dota decodes (BGR; gray copied to three channels; alpha dropped), then scaled
        to 8 bits when it is 16-bit (one pass over bands of rows: no float copy of the whole image)."""
        try:
            pixels = decode_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        except cv2.error as exc:
            raise ImageReadError(located(path, None, f"cannot decode image: {exc.msg or exc}")) from None
        notes = []
        if options.bands is not None:
            notes.append(f"{path}: --bands applies to GDAL rasters; {path.suffix} images are read as prepare-dota "
                         "reads them (B,G,R)")  # fmt: skip
        if pixels.dtype == np.uint8:
            return cls(pixels, None, notes)
        if pixels.dtype != np.uint16:
            raise ImageReadError(
                located(path, None, f"unsupported pixel type {pixels.dtype} (8- or 16-bit images only)")
            )
        scaling = _array_scaling(pixels, options)
        out = np.empty(pixels.shape, dtype=np.uint8)
        for y in range(0, pixels.shape[0], _ROWS_PER_SCAN):
            out[y : y + _ROWS_PER_SCAN] = scale_to_uint8(pixels[y : y + _ROWS_PER_SCAN], scaling, band_axis=2)
        return cls(out, scaling, notes)

    def read(self, window: Sequence[int], padding: Sequence[int] | None) -> np.ndarray:
        return np.ascontiguousarray(crop_patch(self.pixels, window, padding))

    def whole(self) -> np.ndarray | None:
        return self.pixels

    def describe(self) -> dict:
        return {"reader": "opencv", "bands": "B,G,R", "scaling": self.scaling.to_dict() if self.scaling else None}

    def close(self) -> None:
        self.pixels = None


def _array_scaling(pixels: np.ndarray, options: PixelOptions) -> Scaling:
    """A decoded 16-bit image's scaling: `max` over every pixel; percentiles over every pixel up to
    STATS_WHOLE_PIXELS, else over the same window grid a raster without overviews is sampled on."""
    channels = [pixels[:, :, c] for c in range(pixels.shape[2])]
    if options.stretch is None:
        top = max(int(c.max(initial=0)) for c in channels)
        return Scaling("max", (0.0,) * len(channels), (float(top),) * len(channels), "every pixel")
    height, width = pixels.shape[:2]
    if height * width <= STATS_WHOLE_PIXELS:
        return scaling_from_sample([c.ravel() for c in channels], options, "every pixel")
    grid = stats_grid(width, height)
    values = [np.concatenate([c[y0:y1, x0:x1].ravel() for x0, y0, x1, y1 in grid]) for c in channels]
    return scaling_from_sample(values, options, f"{len(grid)} windows of 256 px")


class RasterImage:
    """A raster read through rasterio (GDAL), one window at a time; see the module docstring."""

    def __init__(self, path: Path, options: PixelOptions, fill: Sequence[int]) -> None:
        import rasterio
        from rasterio.errors import RasterioError

        self.path = path
        self.notes: list[str] = []
        _cap_gdal_cache()
        try:
            with warnings.catch_warnings():  # rasterio's NotGeoreferencedWarning: stated in our outputs instead
                warnings.simplefilter("ignore")
                self._src = rasterio.open(path)
                self.georef = self._georeference()
        except (RasterioError, OSError) as exc:
            raise ImageReadError(located(path, None, f"cannot read image: {_gdal_message(exc)}")) from None
        self.width, self.height = self._src.width, self._src.height
        self.fill = np.asarray(fill, dtype=np.uint8)
        try:
            self.bands = self._choose_bands(options.bands)
            self._mask_mode, self._alpha = self._mask_source()
            self.dtype = np.result_type(*(self._src.dtypes[b - 1] for b in self.bands))
            if self.dtype.kind == "c":
                raise ImageReadError(located(path, None, f"unsupported pixel type {self.dtype} (complex)"))
            self._palette = self._lookup_table()
            self.scaling = None if self.dtype == np.uint8 else self.statistics(options)
        except BaseException:
            self.close()
            raise

    # -- what is read ------------------------------------------------------------------------------------
    def _choose_bands(self, requested: tuple[int, ...] | None) -> tuple[int, ...]:
        from rasterio.enums import ColorInterp

        count = self._src.count
        if requested is not None:
            if max(requested) > count:
                raise ImageReadError(located(self.path, None, f"--bands {','.join(map(str, requested))}: "
                                                              f"the image has {count} band(s)"))  # fmt: skip
            return tuple(requested)
        interp = list(self._src.colorinterp)
        rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        if all(c in interp for c in rgb):
            return tuple(interp.index(c) + 1 for c in rgb)
        colour_bands = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
        if len(colour_bands) >= 3:
            return tuple(colour_bands[:3])
        return (colour_bands or [1])[:1]  # gray (or a palette), maybe beside an alpha band

    def _mask_source(self) -> tuple[str | None, int | None]:
        """How nodata is known: 'alpha' (an alpha band), 'nodata' (the bands' nodata values), 'mask' (a mask
        band, e.g. a GeoTIFF's internal mask), or None (every pixel valid; NaN still counts as nodata)."""
        from rasterio.enums import ColorInterp, MaskFlags

        flags = self._src.mask_flag_enums[self.bands[0] - 1]
        if MaskFlags.alpha in flags:
            interp = list(self._src.colorinterp)
            return "alpha", interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else self._src.count
        if MaskFlags.nodata in flags:
            return "nodata", None
        if MaskFlags.per_dataset in flags:
            return "mask", None
        return None, None

    def _lookup_table(self) -> np.ndarray | None:
        """A paletted band's colours (RGB) as a 256-entry table, or None."""
        from rasterio.enums import ColorInterp

        if len(self.bands) != 1 or self._src.colorinterp[self.bands[0] - 1] != ColorInterp.palette:
            return None
        table = np.zeros((256, 3), dtype=np.uint8)
        for index, rgba in self._src.colormap(self.bands[0]).items():
            if 0 <= index < 256:
                table[index] = rgba[:3]
        return table

    def _georeference(self) -> GeoReference | None:
        """The georeference, or None with a note saying why (pixel coordinates then)."""
        transform = self._src.transform
        if transform.is_identity:  # GDAL's answer for an image without a geotransform
            if self._src.gcps[0] or self._src.rpcs:
                self.notes.append(f"{self.path}: georeferenced by ground control points or RPCs only, which rotld "
                                  "does not apply: predicted in pixel coordinates")  # fmt: skip
            return None
        try:
            crs_wkt = self._src.crs.to_wkt() if self._src.crs else None
        except Exception as exc:  # rasterio's CRSError: GDAL could not make a CRS of the geokeys
            problem = f"its CRS cannot be read ({_gdal_message(exc)})"
        else:
            problem = usable_crs_problem(crs_wkt)
        if problem:
            self.notes.append(f"{self.path}: {problem}: predicted in pixel coordinates")
            return None
        return GeoReference(crs_wkt, tuple(float(v) for v in tuple(transform)[:6]))  # type: ignore[arg-type]

    # -- statistics --------------------------------------------------------------------------------------
    def statistics(self, options: PixelOptions) -> Scaling:
        """The image's scaling (see `pixels`), from:
        `max`: every pixel up to STATS_MAX_EXACT_PIXELS (read in bands of rows), else the sample below;
        percentiles, or `max` above that size: a sample — every pixel up to STATS_WHOLE_PIXELS, else the
        finest overview within that many pixels (a COG has them), else an 8 x 8 grid of 256 px windows.
        Brighter pixels than a sample's maximum saturate at 255."""
        pixels = self.width * self.height
        if options.stretch is None and pixels <= STATS_MAX_EXACT_PIXELS:
            top = 0.0
            for y in range(0, self.height, _ROWS_PER_SCAN):
                data, valid = self._read_raw((0, y, self.width, min(y + _ROWS_PER_SCAN, self.height)))
                top = max([top, *(float(v.max()) for v in _valid_values(data, valid) if v.size)])
            n = len(self.bands)
            return Scaling("max", (0.0,) * n, (top,) * n, "every pixel")
        if pixels <= STATS_WHOLE_PIXELS:
            data, valid = self._read_raw((0, 0, self.width, self.height))
            return scaling_from_sample(_valid_values(data, valid), options, "every pixel")
        factor = self._overview_factor()
        if factor is not None:
            shape = (math.ceil(self.height / factor), math.ceil(self.width / factor))
            values = _valid_values(*self._read_raw((0, 0, self.width, self.height), out_shape=shape))
            sample = f"overview 1/{factor}"
        else:
            grid = stats_grid(self.width, self.height)
            parts = [_valid_values(*self._read_raw(w)) for w in grid]
            values = [np.concatenate([p[b] for p in parts]) for b in range(len(self.bands))]
            sample = f"{len(grid)} windows of 256 px"
        if not any(v.size for v in values):
            self.notes.append(
                f"{self.path}: the {sample} sampled for the {self.dtype} -> 8-bit scaling hold no valid pixel, "
                "so the image reads black; add overviews (gdaladdo) for the statistics to come from"
            )
        return scaling_from_sample(values, options, sample)

    def _overview_factor(self) -> int | None:
        """The finest overview of at most STATS_WHOLE_PIXELS pixels (None: no such overview)."""
        fits = [
            f for f in self._src.overviews(self.bands[0]) if (self.width / f) * (self.height / f) <= STATS_WHOLE_PIXELS
        ]
        return min(fits) if fits else None

    # -- reading -----------------------------------------------------------------------------------------
    def _read_raw(self, window: Sequence[int], out_shape: tuple[int, int] | None = None):
        """The chosen bands of an in-image window as stored, (c, h, w), and its valid-pixel mask (None: all valid)."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        x0, y0, x1, y1 = (int(v) for v in window)
        win = Window(x0, y0, x1 - x0, y1 - y0)
        indexes = [*self.bands, self._alpha] if self._mask_mode == "alpha" else list(self.bands)
        shape = None if out_shape is None else (len(indexes), *out_shape)
        try:
            data = self._src.read(indexes, window=win, out_shape=shape)
            mask = None
            if self._mask_mode == "alpha":
                data, mask = data[:-1], data[-1] > 0
            elif self._mask_mode == "mask":
                mask_shape = None if out_shape is None else out_shape
                mask = self._src.read_masks(self.bands[0], window=win, out_shape=mask_shape) > 0
        except RasterioError as exc:
            raise ImageReadError(located(self.path, None, f"cannot read window {x0},{y0},{x1},{y1}: "
                                                          f"{_gdal_message(exc)}")) from None  # fmt: skip
        if self._mask_mode == "nodata":  # nodata where every chosen band holds its nodata value
            invalid = np.ones(data.shape[1:], dtype=bool)
            for band, nodata in zip(data, (self._src.nodatavals[b - 1] for b in self.bands)):
                if nodata is None:
                    invalid[:] = False
                else:
                    invalid &= np.isnan(band) if math.isnan(nodata) else band == nodata
            mask = ~invalid
        if data.dtype.kind == "f":
            finite = np.isfinite(data).all(axis=0)
            mask = finite if mask is None else mask & finite
        return data, mask

    def read(self, window: Sequence[int], padding: Sequence[int] | None) -> np.ndarray | None:
        """The window as BGR uint8 (past the image: `padding`; nodata: the fill colour), or None when every
        in-image pixel is nodata (nothing to detect)."""
        x0, y0, x1, y1 = (int(v) for v in window)
        data, valid = self._read_raw((x0, y0, min(x1, self.width), min(y1, self.height)))
        if valid is not None and not valid.any():
            return None
        pixels = data if self.scaling is None else scale_to_uint8(data, self.scaling, band_axis=0)
        if self._palette is not None:
            pixels = np.moveaxis(self._palette[pixels[0]], -1, 0)
        bgr = band_order_to_bgr(pixels)
        if valid is not None and not valid.all():
            bgr[~valid] = self.fill
        return np.ascontiguousarray(crop_patch(bgr, (0, 0, x1 - x0, y1 - y0), padding))

    def whole(self) -> np.ndarray | None:
        if self.width * self.height > WHOLE_MAX_PIXELS:
            return None
        return self.read((0, 0, self.width, self.height), None)

    def describe(self) -> dict:
        return {
            "reader": "gdal",
            "driver": self._src.driver,
            "dtype": str(self.dtype),
            "bands": list(self.bands),
            "palette": self._palette is not None,
            "nodata_from": self._mask_mode,
            "scaling": self.scaling.to_dict() if self.scaling else None,
        }

    def close(self) -> None:
        src = getattr(self, "_src", None)
        if src is not None and not src.closed:
            src.close()


def _cap_gdal_cache() -> None:
    """GDAL's block cache defaults to 5% of the machine's memory and would fill with a huge image's
    blocks; a window needs far less. A user's own GDAL_CACHEMAX is kept."""
    from rasterio.env import get_gdal_config, set_gdal_config

    if "GDAL_CACHEMAX" not in os.environ and get_gdal_config("GDAL_CACHEMAX") != GDAL_CACHE_BYTES:
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)


def _valid_values(data: np.ndarray, valid: np.ndarray | None) -> list[np.ndarray]:
    """Per band, the 1-D values of the valid pixels."""
    return [band.ravel() if valid is None else band[valid] for band in data]


def _gdal_message(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_image(path: Path, options: PixelOptions | None = None, fill: Sequence[int] = (104, 116, 124)):
    """The reader for `path` (OpenCV for PNG/JPEG/BMP, rasterio otherwise); ImageReadError names the file."""
    path = Path(path)
    options = options or PixelOptions()
    if uses_opencv(path):
        return ArrayImage.decode(path, options)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(located(path, None, f"cannot read image: {exc.strerror or exc}")) from None
    if size == 0:
        raise ImageReadError(located(path, None, "empty image file (0 bytes)"))
    return RasterImage(path, options, fill)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only (nothing decoded)."""
    if uses_opencv(path):
        from PIL import Image

        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # huge aerial images are the point here, not decompression bombs
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the failure is ours to report
                with Image.open(path) as image:
                    return image.size
        except OSError as exc:
            raise ImageReadError(located(path, None, f"cannot read image: {exc}")) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning: not a problem here
            with rasterio.open(path) as src:
                return src.width, src.height
    except (RasterioError, OSError) as exc:
        raise ImageReadError(located(path, None, f"cannot read image: {_gdal_message(exc)}")) from None
