"""`rotld predict` on rasters read through rasterio, and its map outputs (no engine: fake detectors).

Every raster here is written with rasterio: UTM and EPSG:4326, north-up and rotated geotransforms,
DEFLATE-tiled and COG, uint16 4-band with a nodata border, a 20,000 x 20,000 px tiled file. The
expected values are computed in the tests from the stated rules (affine a*x + b*y + c, the scaling
formula in float32, numpy percentiles), and reprojection is checked against GDAL's own transform
(rasterio.warp) and a point whose coordinates are known by hand.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from geo_helpers import FixedDetector, PixelDetector, bgr_to_bands, write_raster
from pyogrio.raw import read as read_vector
from rasterio.enums import ColorInterp
from rasterio.transform import Affine, from_origin

from rotld_cli.dota.split import SplitParams
from rotld_cli.errors import UsageError
from rotld_cli.predict.images import ArrayImage, RasterImage, open_image
from rotld_cli.predict.maps import MapOptions, write_map_outputs
from rotld_cli.predict.pixels import PixelOptions
from rotld_cli.predict.run import PredictOptions, image_windows, predict

# the tests write plain (not georeferenced) rasters on purpose; rasterio 1.4's from_origin uses affine's old `*`
pytestmark = [
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]
PAD = (104, 116, 124)
SMALL = SplitParams(sizes=(256,), gaps=(56,))  # 200 px steps: a few dozen windows on a DOTA sample
UTM33 = "EPSG:32633"


def _run(detector, paths, out, options=None, maps=None):
    writers = [lambda o, ids: write_map_outputs(o, ids, maps)] if maps is not None else []
    return predict(detector, paths, out, options or PredictOptions(split=SMALL), {"file": "fake"}, writers=writers)


def _result(out, image_id):
    return json.loads((out / "images" / f"{image_id}.json").read_text())


def _geotiff_copy(png, path, **profile):
    bgr = cv2.imread(str(png))
    return write_raster(path, bgr_to_bands(bgr), **profile)


# -- pixels: the georeferenced copy of a real sample is the PNG ----------------------------------------


def test_raster_copies_of_a_real_sample_predict_as_the_png(dota_samples, tmp_path):
    """P1888.png as a DEFLATE-tiled UTM GeoTIFF, a COG in EPSG:4326, an LZW-striped BigTIFF, a lossless
    JPEG2000 and a VRT over the GeoTIFF: every window equals the PNG's, so do the detections."""
    png = dota_samples / "images" / "P1888.png"
    utm = {"crs": UTM33, "transform": from_origin(500000, 4100000, 0.3, 0.3)}
    copies = {
        "tiled": _geotiff_copy(png, tmp_path / "tiled" / "P1888.tif", **utm, tiled=True, blockxsize=128,
                               blockysize=128, compress="deflate"),
        "cog": _geotiff_copy(png, tmp_path / "cog" / "P1888.tif", driver="COG", crs="EPSG:4326",
                             transform=from_origin(15.2, 41.9, 2e-6, 2e-6), compress="deflate", blocksize=256),
        "bigtiff": _geotiff_copy(png, tmp_path / "big" / "P1888.tif", **utm, BIGTIFF="YES", compress="lzw"),
        "jpeg2000": _geotiff_copy(png, tmp_path / "jp2" / "P1888.jp2", **utm, driver="JP2OpenJPEG", QUALITY=100,
                                  REVERSIBLE="YES"),
    }  # fmt: skip
    vrt = tmp_path / "vrt" / "P1888.vrt"
    vrt.parent.mkdir()
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{copies['tiled']}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt.write_text(f'<VRTDataset rasterXSize="712" rasterYSize="557">{bands}</VRTDataset>')
    copies["vrt"] = vrt
    reference = ArrayImage.decode(png, PixelOptions())
    windows = image_windows(reference.width, reference.height, SMALL)
    drivers = {}
    for name, path in copies.items():
        raster = open_image(path)
        assert isinstance(raster, RasterImage) and raster.notes == []
        drivers[name] = raster.describe()["driver"]
        for window in windows:  # every window, past-the-border padding included
            assert np.array_equal(raster.read(window, PAD), reference.read(window, PAD)), (name, window)
        raster.close()
    assert drivers == {"tiled": "GTiff", "cog": "GTiff", "bigtiff": "GTiff", "jpeg2000": "JP2OpenJPEG", "vrt": "VRT"}
    results = {}
    for name, path in {"png": png, **copies}.items():
        summary = _run(PixelDetector(), [path], tmp_path / f"out-{name}")
        assert summary.problems == [] and summary.to_dict()["windows"] == len(windows)
        results[name] = _result(tmp_path / f"out-{name}", "P1888")
    assert len(results["png"]["detections"]) > 3
    for name in copies:
        assert results[name]["detections"] == results["png"]["detections"], name
    assert results["png"]["georef"] is None and results["tiled"]["georef"]["epsg"] == 32633
    assert results["cog"]["georef"]["epsg"] == 4326 and results["vrt"]["georef"] is None


# -- geometry: polygons are the affine image of the pixel polygons --------------------------------------

BOXES = [  # cx, cy, w, h, angle, score, class: an axis-aligned box with a corner at pixel (0, 200), rotated ones
    (10.0, 210.0, 20.0, 20.0, 0.0, 0.9, 0),
    (150.5, 80.25, 60.0, 14.0, 0.7, 0.8, 1),
    (300.0, 170.0, 33.3, 80.1, -1.2, 0.7, 0),
]
INSIDE = [(60.5, 40.25, 60.0, 14.0, 0.7, 0.8, 1)]  # centred inside a 120 x 100 image (predict drops the others)
TRANSFORMS = {
    "utm-north-up": (UTM33, Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 100.0)),
    "utm-rotated-non-square": (
        UTM33,
        Affine.translation(612345.25, 4412345.5) @ Affine.rotation(27.5) @ Affine.scale(0.3, -0.45),
    ),
    "wgs84": ("EPSG:4326", Affine(1e-5, 0.0, 12.25, 0.0, -1.2e-5, 45.5)),
    "utm-sheared": (UTM33, Affine(0.5, 0.1, 500100.0, 0.05, -0.5, 4000050.0)),
}


def _affine(transform, x, y):
    """The affine map written out, as the acceptance states it (not the product's code)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * x + b * y + c, d * x + e * y + f


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_output_polygon_is_the_affine_image_of_its_pixel_polygon(tmp_path, name):
    crs, transform = TRANSFORMS[name]
    image = write_raster(tmp_path / f"{name}.tif", np.full((3, 240, 400), 90, np.uint8), crs=crs, transform=transform,
                         tiled=True, blockxsize=128, blockysize=128, compress="deflate")  # fmt: skip
    out = tmp_path / "out"
    _run(FixedDetector(BOXES), [image], out, PredictOptions(split=SplitParams(sizes=(512,), gaps=(0,))),
         MapOptions(geojson=True, gpkg=True))  # fmt: skip
    detections = _result(out, name)["detections"]
    assert len(detections) == len(BOXES)
    expected = []
    for det in detections:
        xs, ys = np.asarray(det["polygon"][0::2]), np.asarray(det["polygon"][1::2])
        mx, my = _affine(transform, xs, ys)
        expected.append(np.column_stack([mx, my]))
    collection = json.loads((out / "geojson" / f"{name}.geojson").read_text())
    epsg = int(crs.split(":")[1])
    if epsg == 4326:
        assert "crs" not in collection  # RFC 7946's default: WGS 84 lon/lat
    else:
        assert collection["crs"]["properties"]["name"] == f"urn:ogc:def:crs:EPSG::{epsg}"
    for feature, corners, det in zip(collection["features"], expected, detections):
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and np.array_equal(ring[0], ring[-1])
        np.testing.assert_allclose(ring[:4], corners, rtol=0, atol=1e-9)
        props = feature["properties"]
        assert (props["class"], props["score"], props["image_id"]) == (det["class"], det["score"], name)
        assert [props[k] for k in ("cx", "cy", "w", "h", "angle")] == list(det["rbox"].values())
    assert pyogrio.read_info(out / "geojson" / f"{name}.geojson")["crs"] == crs
    meta, _, geometry, fields = read_vector(out / "detections.gpkg", layer="detections")
    assert meta["crs"] == crs and list(meta["fields"]) == ["image_id", "class", "score", "cx", "cy", "w", "h", "angle"]
    rings = [np.asarray(shapely.get_coordinates(g)) for g in shapely.from_wkb(geometry)]
    for ring, corners in zip(rings, expected):
        np.testing.assert_allclose(ring[:4], corners, rtol=0, atol=1e-9)
    assert list(fields[1]) == [d["class"] for d in detections]


def test_reprojection_to_wgs84_matches_gdal_and_a_point_known_by_hand(tmp_path):
    crs, transform = TRANSFORMS["utm-north-up"]
    image = write_raster(tmp_path / "utm.tif", np.full((3, 240, 400), 90, np.uint8), crs=crs, transform=transform)
    out = tmp_path / "out"
    _run(FixedDetector(BOXES), [image], out, PredictOptions(split=SplitParams(sizes=(512,), gaps=(0,))),
         MapOptions(geojson_merged=True, gpkg=True, to_crs="EPSG:4326"))  # fmt: skip
    collection = json.loads((out / "detections.geojson").read_text())
    assert "crs" not in collection and pyogrio.read_info(out / "detections.geojson")["crs"] == "EPSG:4326"
    from rasterio.warp import transform as gdal_transform

    for feature, det in zip(collection["features"], _result(out, "utm")["detections"]):
        ring = np.asarray(feature["geometry"]["coordinates"][0])[:4]
        mx, my = _affine(transform, np.asarray(det["polygon"][0::2]), np.asarray(det["polygon"][1::2]))
        lon, lat = gdal_transform(crs, "EPSG:4326", mx.tolist(), my.tolist())
        np.testing.assert_allclose(ring, np.column_stack([lon, lat]), rtol=0, atol=1e-7)
    # the first box's corner at pixel (0, 200) is easting 500000 (zone 33's central meridian, 15 E), northing 0
    first = np.asarray(collection["features"][0]["geometry"]["coordinates"][0])
    assert np.abs(first - [15.0, 0.0]).sum(axis=1).min() < 1e-9
    meta, _, geometry, _ = read_vector(out / "detections.gpkg")
    assert meta["crs"] == "EPSG:4326"
    np.testing.assert_allclose(shapely.get_coordinates(shapely.from_wkb(geometry[0])), first, rtol=0, atol=1e-12)


# -- bands, depth, nodata ------------------------------------------------------------------------------


def _uint16_rgbn(height=300, width=420, border=150, seed=0):
    """R, G, B, NIR uint16 (12-bit values), nodata 0 in a `border` px band on the left and the top."""
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 4096, size=(4, height, width), dtype=np.uint16)
    bands[3] += 50000  # NIR far brighter: it must not set the RGB scaling
    bands[:, :border, :] = 0
    bands[:, :, :border] = 0
    return bands


RGBN = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)


def test_uint16_four_bands_with_a_nodata_border(tmp_path):
    bands = _uint16_rgbn()
    stored = bands[[2, 1, 0, 3]]  # the file holds B, G, R, NIR, and says so: the default picks bands 3, 2, 1
    path = write_raster(tmp_path / "rgbn.tif", stored, nodata=0, crs=UTM33,
                        colorinterp=(ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined),
                        transform=from_origin(400000, 5000000, 2, 2), tiled=True, blockxsize=64, blockysize=64,
                        compress="deflate", photometric="MINISBLACK")  # fmt: skip
    valid = (bands[:3] != 0).any(axis=0)
    top = int(bands[:3].max())
    expected_rgb = np.floor(bands[:3].astype(np.float32) * np.float32(255.0 / top) + np.float32(0.5)).astype(np.uint8)
    expected = np.moveaxis(expected_rgb[::-1], 0, -1).copy()
    expected[~valid] = PAD
    image = open_image(path, PixelOptions(), PAD)
    assert image.bands == (3, 2, 1) and image.scaling.high == (top,) * 3
    assert np.array_equal(image.read((0, 0, 420, 300), None), expected)
    assert image.read((0, 0, 128, 128), PAD) is None  # inside the border: nothing to detect
    window = image.read((300, 200, 556, 456), PAD)  # past the image: padding
    assert np.array_equal(window[:100, :120], expected[200:, 300:]) and (window[100:] == PAD).all()
    image.close()
    # --bands 3,2,1 is the same choice, given explicitly
    explicit = open_image(path, PixelOptions(bands=(3, 2, 1)), PAD)
    assert np.array_equal(explicit.read((0, 0, 420, 300), None), expected)
    explicit.close()
    # --bands 4: NIR alone, as gray, scaled by its own maximum
    nir = open_image(path, PixelOptions(bands=(4,)), PAD)
    got = nir.read((0, 0, 420, 300), None)
    scaled = np.floor(bands[3].astype(np.float32) * np.float32(255.0 / int(bands[3].max())) + np.float32(0.5))
    assert np.array_equal(got[valid], np.repeat(scaled.astype(np.uint8)[valid][:, None], 3, axis=1))
    nir.close()
    # windows entirely in the border are skipped and counted; the others are detected on
    params = SplitParams(sizes=(128,), gaps=(28,))
    windows = image_windows(420, 300, params)
    blank = sum(1 for x0, y0, x1, y1 in windows.tolist() if x1 <= 150 or y1 <= 150)
    assert 0 < blank < len(windows)
    detector = PixelDetector()
    summary = _run(detector, [path], tmp_path / "out", PredictOptions(split=params))
    assert summary.to_dict()["windows_nodata"] == blank and detector.windows_seen == len(windows) - blank
    record = _result(tmp_path / "out", "rgbn")
    assert record["windows_nodata"] == blank
    assert record["pixels"]["bands"] == [3, 2, 1] and record["pixels"]["nodata_from"] == "nodata"
    assert record["pixels"]["scaling"] == {"rule": "max", "low": [0.0] * 3, "high": [float(top)] * 3,
                                           "sample": "every pixel"}  # fmt: skip


def _stretched(band, low, high):
    value = (band.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.floor(np.clip(value, 0, 255) + np.float32(0.5)).astype(np.uint8)


def test_percentile_stretch_from_every_pixel_an_overview_or_a_window_grid(tmp_path):
    bands = _uint16_rgbn()
    path = write_raster(tmp_path / "small.tif", bands, nodata=0, colorinterp=RGBN)
    valid = (bands[:3] != 0).any(axis=0)
    image = open_image(path, PixelOptions(stretch=(2.0, 98.0)), PAD)
    lows = [np.percentile(b[valid], 2) for b in bands[:3]]
    highs = [np.percentile(b[valid], 98) for b in bands[:3]]
    assert image.scaling.sample == "every pixel"
    np.testing.assert_array_equal(image.scaling.low, lows)
    np.testing.assert_array_equal(image.scaling.high, highs)
    got = image.read((0, 0, 420, 300), None)
    for channel, band in enumerate((2, 1, 0)):  # BGR out of R, G, B
        assert np.array_equal(got[:, :, channel][valid], _stretched(bands[band], lows[band], highs[band])[valid])
    image.close()

    # above 4 MP: a COG's overview (the finest within 4 MP), read back here through GDAL's overview level
    rng = np.random.default_rng(1)
    big = rng.integers(100, 60000, size=(3, 2100, 2100), dtype=np.uint16)
    cog = write_raster(tmp_path / "big-cog.tif", big, driver="COG", compress="deflate", blocksize=512,
                       overview_resampling="nearest")  # fmt: skip
    sampled = open_image(cog, PixelOptions(stretch=(2.0, 98.0)), PAD)
    with rasterio.open(cog, overview_level=0) as half:
        assert (half.width, half.height) == (1050, 1050)
        overview = half.read()
    assert sampled.scaling.sample == "overview 1/2"
    np.testing.assert_array_equal(sampled.scaling.low, [np.percentile(b, 2) for b in overview])
    sampled.close()
    # without overviews: the 8 x 8 grid of 256 px windows spread evenly
    plain = write_raster(tmp_path / "big.tif", big, tiled=True, blockxsize=256, blockysize=256)
    gridded = open_image(plain, PixelOptions(stretch=(2.0, 98.0)), PAD)
    starts = [round(i * (2100 - 256) / 7) for i in range(8)]
    grid = [big[:, y : y + 256, x : x + 256].reshape(3, -1) for y in starts for x in starts]
    values = np.concatenate(grid, axis=1)
    assert gridded.scaling.sample == "64 windows of 256 px"
    np.testing.assert_array_equal(gridded.scaling.high, [np.percentile(b, 98) for b in values])
    gridded.close()


def test_alpha_palette_and_float_sources(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(4, 60, 80), dtype=np.uint8)
    rgba[3] = 255
    rgba[3, :, :20] = 0  # transparent left strip: nodata
    path = write_raster(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES")
    image = open_image(path, PixelOptions(), PAD)
    got = image.read((0, 0, 80, 60), None)
    assert image.describe()["nodata_from"] == "alpha"
    assert (got[:, :20] == PAD).all() and np.array_equal(got[:, 20:], np.moveaxis(rgba[2::-1, :, 20:], 0, -1))
    image.close()
    # a paletted band: its colours
    indexes = rng.integers(0, 3, size=(1, 30, 40), dtype=np.uint8)
    palette = {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (10, 20, 30, 255)}
    pal = tmp_path / "pal.tif"
    with rasterio.open(pal, "w", driver="GTiff", width=40, height=30, count=1, dtype="uint8",
                       photometric="PALETTE") as dst:  # fmt: skip
        dst.write(indexes)
        dst.write_colormap(1, palette)
    got = open_image(pal, PixelOptions(), PAD).read((0, 0, 40, 30), None)
    lut = np.array([palette[i][2::-1] for i in range(3)], dtype=np.uint8)  # BGR
    assert np.array_equal(got, lut[indexes[0]])
    # float32 with NaN as nodata, negative values saturating at 0
    values = rng.uniform(-0.1, 0.8, size=(1, 30, 40)).astype(np.float32)
    values[0, 0, :5] = np.nan
    flt = write_raster(tmp_path / "float.tif", values)
    got = open_image(flt, PixelOptions(), PAD).read((0, 0, 40, 30), None)[:, :, 0]
    top = np.nanmax(values)
    expected = np.floor(np.clip(values[0] * np.float32(255.0 / top), 0, 255) + np.float32(0.5))
    assert (got[0, :5] == PAD[0]).all() and np.array_equal(got[1:], expected[1:].astype(np.uint8))


# -- georeference problems -----------------------------------------------------------------------------


def test_a_crs_that_cannot_be_read_is_predicted_in_pixels_with_a_warning(tmp_path):
    path = write_raster(tmp_path / "badcrs.tif", np.full((3, 100, 120), 80, np.uint8), crs=UTM33,
                        transform=from_origin(500000, 4000000, 0.5, 0.5))  # fmt: skip
    data = bytearray(path.read_bytes())
    key = struct.pack("<4H", 3072, 0, 1, 32633)  # ProjectedCSTypeGeoKey -> a code no EPSG registry has
    assert data.count(key) == 1
    data[data.find(key) : data.find(key) + 8] = struct.pack("<4H", 3072, 0, 1, 12345)
    path.write_bytes(bytes(data))
    plain = write_raster(tmp_path / "plain.tif", np.full((3, 100, 120), 80, np.uint8))  # no georeference at all
    out = tmp_path / "out"
    options = PredictOptions(split=SplitParams(sizes=(128,), gaps=(0,)))
    summary = _run(FixedDetector(INSIDE), [path, plain], out, options, MapOptions(geojson=True))
    warnings = summary.to_dict()["warnings"]
    assert len(warnings) == 1 and "badcrs.tif: its CRS cannot be read" in warnings[0]
    assert "predicted in pixel coordinates" in warnings[0]
    for name in ("badcrs", "plain"):
        record = _result(out, name)
        assert record["georef"] is None and len(record["detections"]) == 1
        collection = json.loads((out / "geojson" / f"{name}.geojson").read_text())
        ring = np.asarray(collection["features"][0]["geometry"]["coordinates"][0])[:4]
        np.testing.assert_array_equal(ring, np.asarray(record["detections"][0]["polygon"]).reshape(4, 2))
        assert "image pixels" in pyogrio.read_info(out / "geojson" / f"{name}.geojson")["crs"]


def test_merged_outputs_need_one_crs(tmp_path):
    pixels = np.full((3, 100, 120), 80, np.uint8)
    utm = write_raster(tmp_path / "a.tif", pixels, crs=UTM33, transform=from_origin(500000, 4000000, 0.5, 0.5))
    wgs = write_raster(tmp_path / "b.tif", pixels, crs="EPSG:4326", transform=from_origin(15, 36, 1e-5, 1e-5))
    out = tmp_path / "out"
    options = PredictOptions(split=SplitParams(sizes=(128,), gaps=(0,)))
    with pytest.raises(UsageError, match=r"images 'a' and 'b' are in different CRSs \(EPSG:32633, EPSG:4326\)"):
        _run(FixedDetector(INSIDE), [utm, wgs], out, options, MapOptions(gpkg=True))
    assert (out / "images" / "a.json").exists() and not (out / "detections.gpkg").exists()
    summary = _run(FixedDetector(INSIDE), [utm, wgs], out, options, MapOptions(gpkg=True, to_crs="EPSG:4326"))
    assert summary.to_dict()["resumed"] == 2  # the rerun only writes the files
    meta, _, _, fields = read_vector(out / "detections.gpkg")
    assert meta["crs"] == "EPSG:4326" and sorted(fields[0]) == ["a", "b"]


# -- huge files --------------------------------------------------------------------------------------------


def test_a_20000_px_tiled_file_is_read_by_windows_and_its_nodata_windows_skipped(tmp_path):
    """A 20,000 x 20,000 px DEFLATE-tiled GeoTIFF, sparse: only a 1500 x 900 px block holds data, every other
    tile is nodata (GDAL's SPARSE_OK writes no bytes for it), so the test is quick; the peak memory of a
    fully written one is bench/predict.py's figure."""
    side, x0, y0 = 20000, 13000, 17500
    path = tmp_path / "huge.tif"
    block = np.zeros((3, 900, 1500), np.uint8)
    ys, xs = np.mgrid[0:900, 0:1500]
    block[:] = [(xs * 7 + ys) % 250 + 1, (ys * 3) % 250 + 1, (xs + 2 * ys) % 250 + 1]
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", nodata=0,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                       crs=UTM33, transform=from_origin(300000, 4500000, 0.25, 0.25)) as dst:  # fmt: skip
        dst.write(block, window=Window(x0, y0, 1500, 900))
    assert path.stat().st_size < 5_000_000
    params = SplitParams()  # 1024 px windows, 200 px gaps
    windows = image_windows(side, side, params)
    holding = [w for w in windows.tolist() if w[0] < x0 + 1500 and w[2] > x0 and w[1] < y0 + 900 and w[3] > y0]
    detector = PixelDetector()
    summary = _run(detector, [path], tmp_path / "out", PredictOptions(split=params))
    assert summary.to_dict()["windows"] == len(windows) == 25 * 25  # ceil((20000 - 1024) / 824) + 1 per side
    assert summary.to_dict()["windows_nodata"] == len(windows) - len(holding) and detector.windows_seen == len(holding)
    image = open_image(path)
    wx0, wy0, wx1, wy1 = holding[0]
    got = image.read(holding[0], PAD)
    inside = np.zeros((wy1 - wy0, wx1 - wx0), bool)
    inside[max(y0 - wy0, 0) : y0 + 900 - wy0, max(x0 - wx0, 0) : x0 + 1500 - wx0] = True
    assert (got[~inside] == PAD).all()
    expected = np.moveaxis(block[::-1], 0, -1)[max(wy0 - y0, 0) : wy1 - y0, max(wx0 - x0, 0) : wx1 - x0]
    assert np.array_equal(got[inside].reshape(expected.shape), expected)
    image.close()
    for det in _result(tmp_path / "out", "huge")["detections"]:  # every box where the data is
        assert x0 <= det["rbox"]["cx"] <= x0 + 1500 and y0 <= det["rbox"]["cy"] <= y0 + 900


def _sparse_uint16(path, side, blocks):
    """A side x side px uint16 tiled GeoTIFF, nodata 0, holding only `blocks` {(x, y): (h, w) array}."""
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "uint16", "nodata": 0,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "sparse_ok": True}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for (x, y), block in blocks.items():
            dst.write(block[None], window=Window(x, y, block.shape[1], block.shape[0]))
    return path


def test_a_huge_16bit_raster_is_scaled_from_its_window_grid(tmp_path):
    """Above 64 MP without overviews, `max` comes from the 8 x 8 grid of 256 px windows; a brighter pixel
    elsewhere saturates at 255. A sample without one valid pixel is said, not silently black."""
    side = 9000  # 81 MP; the grid's windows start at round(i * (9000 - 256) / 7): 0, 1249, 2498, ...
    inside = np.full((256, 256), 1000, np.uint16)
    inside[10, 10] = 3000  # the sample's maximum
    outside = np.full((100, 100), 5000, np.uint16)  # brighter, between the grid's windows
    path = _sparse_uint16(tmp_path / "huge16.tif", side, {(1249, 1249): inside, (600, 600): outside})
    image = open_image(path)
    assert image.scaling.sample == "64 windows of 256 px" and image.scaling.high == (3000.0,)
    got = image.read((500, 500, 1524, 1524), PAD)[:, :, 0]
    assert got[100, 100] == 255  # 5000 > 3000: saturated
    assert got[1249 - 500, 1249 - 500] == np.floor(np.float32(1000) * np.float32(255 / 3000) + np.float32(0.5))
    assert got[0, 0] == PAD[0] and image.notes == []
    image.close()
    empty = open_image(_sparse_uint16(tmp_path / "missed.tif", side, {(600, 600): outside}))
    assert len(empty.notes) == 1 and "hold no valid pixel, so the image reads black" in empty.notes[0]
    empty.close()


def test_unreadable_rasters_are_named_and_bad_pixel_options_refused(tmp_path):
    from rotld_cli.dota.prepare import ImageReadError

    good = write_raster(tmp_path / "good.tif", np.full((3, 400, 500), 7, np.uint8), tiled=True, blockxsize=128,
                        blockysize=128, compress="deflate")  # fmt: skip
    (tmp_path / "cut.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "junk.tif").write_bytes(b"not an image at all")
    (tmp_path / "empty.tif").write_bytes(b"")
    for name, message in (("junk.tif", "cannot read image"), ("empty.tif", "empty image file")):
        with pytest.raises(ImageReadError, match=rf"{name}: {message}"):
            open_image(tmp_path / name)
    cut = open_image(tmp_path / "cut.tif")  # the header survives; the missing tiles fail when read
    with pytest.raises(ImageReadError, match=r"cut\.tif: cannot read window"):
        cut.read((0, 0, 500, 400), PAD)
    cut.close()
    with pytest.raises(ImageReadError, match=r"--bands 1,2,4: the image has 3 band\(s\)"):
        open_image(good, PixelOptions(bands=(1, 2, 4)))
    for options, message in ((PixelOptions(bands=(1, 2)), "give 3 bands"), (PixelOptions(bands=(0,)), "start at 1"),
                             (PixelOptions(stretch=(98, 2)), "LOW < HIGH")):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            options.validate()
    summary = _run(PixelDetector(), [good, tmp_path / "junk.tif"], tmp_path / "out")
    assert len(summary.problems) == 1 and "junk.tif" in summary.problems[0]
    assert summary.to_dict()["predicted"] == 1


def test_the_command_line_writes_maps_and_warns_once_per_image(tmp_path, monkeypatch):
    """`rotld predict ... --geojson --gpkg --to-crs`: options reach the run, warnings are one line each."""
    import contextlib
    import io

    import rotld_cli.predict.backend as backend
    from rotld_cli.cli import main

    monkeypatch.setattr(backend, "load_detector_backend", lambda *args: FixedDetector(BOXES))
    model = tmp_path / "m.pth"
    with zipfile.ZipFile(model, "w") as archive:  # passes the cheap checkpoint check; the backend is a stand-in
        archive.writestr("m/data.pkl", b"")
    crs, transform = TRANSFORMS["utm-rotated-non-square"]
    pixels = np.full((3, 240, 400), 90, np.uint8)
    utm = write_raster(tmp_path / "in" / "utm.tif", pixels, crs=crs, transform=transform)
    plain = write_raster(tmp_path / "in" / "plain.tif", pixels)

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
            main([str(a) for a in ["predict", model, *args, "--sizes", "512", "--gaps", "0"]])
        return exc.value.code, out.getvalue(), err.getvalue()

    code, stdout, err = run(utm, plain, "--out", tmp_path / "o", "--geojson", "--to-crs", "EPSG:4326", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert sorted(Path(f).name for f in summary["map_files"]) == ["plain.geojson", "utm.geojson"]
    assert summary["warnings"] == ["plain: not georeferenced, kept in pixel coordinates"]
    assert err.count("warning:") == 1 and "Traceback" not in err
    assert "crs" not in json.loads((tmp_path / "o" / "geojson" / "utm.geojson").read_text())
    # one GeoPackage for a georeferenced and a pixel image: refused at the end, one line, the JSONs kept
    code, _, err = run(utm, plain, "--out", tmp_path / "o", "--gpkg")
    assert code == 2 and "Traceback" not in err
    assert "error: --gpkg: images 'plain' and 'utm' are in different CRSs (image pixels, EPSG:32633)" in err
    code, stdout, err = run(utm, "--out", tmp_path / "o", "--gpkg", "--stretch", "2,98")
    assert code == 0 and "map files" in stdout and "detections.gpkg" in stdout, err
    assert pyogrio.read_info(tmp_path / "o" / "detections.gpkg", layer="detections")["features"] == len(BOXES)
