"""`rotld predict` without the engine: windows, pixels, the merge, huge images, sources, option checks."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon

from rotld_cli.dota.prepare import PRESETS, PrepareOptions, prepare_dota
from rotld_cli.dota.split import SplitParams, plan_patches
from rotld_cli.errors import UsageError
from rotld_cli.predict.images import ArrayImage, RasterImage, open_image
from rotld_cli.predict.pixels import PixelOptions
from rotld_cli.predict.run import PredictOptions, image_windows, merge_windows
from rotld_cli.predict.sources import collect_sources

PAD = (104, 116, 124)


def _covered(width: int, height: int, windows: np.ndarray) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [(1111, 1182), (712, 557), (5000, 3001), (300, 2600)])
def test_windows_are_prepare_dotas_and_cover_every_pixel(preset, size):
    params = SplitParams(**PRESETS[preset])
    width, height = size
    windows = image_windows(width, height, params)
    planned = [p.window for p in plan_patches("P", width, height, np.zeros((0, 8)), params)]
    assert sorted(map(tuple, windows.tolist())) == sorted(planned)
    assert len(set(planned)) == len(planned)
    assert _covered(width, height, windows).all()


def test_windows_are_pixel_identical_to_prepare_dota_patches(dota_samples, tmp_path):
    params = SplitParams(sizes=(512,), gaps=(100,))
    out = tmp_path / "split"
    prepare_dota(dota_samples, out, PrepareOptions(split=params, workers=1))
    for image_path in sorted((dota_samples / "images").glob("*.png")):
        reader = open_image(image_path)
        assert isinstance(reader, ArrayImage)
        windows = image_windows(reader.width, reader.height, params)
        patches = sorted((out / "images").glob(f"{image_path.stem}__*.png"))
        assert [p.stem for p in patches] == [
            f"{image_path.stem}__{x1 - x0}__{x0}___{y0}" for x0, y0, x1, y1 in windows.tolist()
        ]
        for patch, window in zip(patches, windows):
            assert np.array_equal(reader.read(window, params.padding_value), cv2.imread(str(patch)))


def _rbox_poly(cx, cy, w, h, angle) -> Polygon:
    c, s = np.cos(angle), np.sin(angle)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return Polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners])


def test_merge_keeps_two_thin_boxes_crossing_at_90_degrees():
    """An X of two 200 x 8 px boxes: their horizontal boxes nearly coincide (IoU ~1), their rotated IoU is
    ~0.02, so a rotated merge keeps both; the copy of one box seen by the overlapping window is removed."""
    first = (300.0, 300.0, 200.0, 8.0, np.pi / 4)
    second = (300.0, 300.0, 200.0, 8.0, -np.pi / 4)
    a, b = _rbox_poly(*first), _rbox_poly(*second)
    hbb_iou = a.envelope.intersection(b.envelope).area / a.envelope.union(b.envelope).area
    assert hbb_iou > 0.9 and a.intersection(b).area / a.union(b).area < 0.05
    windows = np.array([[0, 0, 1024, 1024], [200, 0, 1224, 1024]])
    in_window = lambda box, x0, score: np.array([[box[0] - x0, *box[1:], score]], dtype=np.float32)  # noqa: E731
    per_window = [
        [np.concatenate([in_window(first, 0, 0.9), in_window(second, 0, 0.8)])],
        [np.concatenate([in_window(first, 200, 0.7), in_window(second, 200, 0.85)])],
    ]
    merged = merge_windows(windows, per_window, "le90", PredictOptions())
    assert merged.scores.tolist() == pytest.approx([0.9, 0.85])
    assert merged.labels.tolist() == [0, 0]
    np.testing.assert_allclose(merged.rboxes, [first, second], atol=1e-4)
    got = [Polygon(np.asarray(p).reshape(4, 2)) for p in merged.polys]
    assert got[0].symmetric_difference(a).area < 1.0 and got[1].symmetric_difference(b).area < 1.0
    # class-agnostic: a box seen as class 0 in one window and class 1 in the other is kept once (the best)
    two_classes = [
        [np.concatenate([in_window(first, 0, 0.9), in_window(second, 0, 0.8)]), np.zeros((0, 6))],
        [np.zeros((0, 6)), in_window(first, 200, 0.95)],
    ]
    per_class = merge_windows(windows, two_classes, "le90", PredictOptions())
    assert per_class.labels.tolist() == [0, 0, 1] and per_class.scores.tolist() == pytest.approx([0.9, 0.8, 0.95])
    agnostic = merge_windows(windows, two_classes, "le90", PredictOptions(class_agnostic=True))
    assert agnostic.labels.tolist() == [1, 0] and agnostic.scores.tolist() == pytest.approx([0.95, 0.8])
    capped = merge_windows(windows, per_window, "le90", PredictOptions(max_per_img=1, score_thr=0.5))
    assert capped.scores.tolist() == pytest.approx([0.9])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_16bit_and_gray_images_follow_the_stated_rule(tmp_path):
    from geo_helpers import write_raster

    rng = np.random.default_rng(1)
    gray16 = rng.integers(0, 4096, size=(40, 50), dtype=np.uint16)
    gray16[3, 4] = 4000
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    got = open_image(tmp_path / "g16.png").read((0, 0, 50, 40), PAD)
    expected = np.floor(gray16.astype(np.float64) * 255 / gray16.max() + 0.5).astype(np.uint8)
    assert np.array_equal(got, np.repeat(expected[:, :, None], 3, axis=2))
    # the same 16-bit pixels as a TIFF, read through GDAL by windows: the same windows, padding included
    tiff = open_image(write_raster(tmp_path / "g16.tif", gray16[None]))
    assert isinstance(tiff, RasterImage)
    assert np.array_equal(tiff.read((0, 0, 64, 64), PAD), open_image(tmp_path / "g16.png").read((0, 0, 64, 64), PAD))
    assert np.array_equal(tiff.read((0, 0, 50, 40), PAD), got)
    # --stretch on a 16-bit PNG: per band percentiles of every pixel (a small image)
    low, high = np.percentile(gray16, [2, 98])
    stretched = open_image(tmp_path / "g16.png", PixelOptions(stretch=(2, 98))).read((0, 0, 50, 40), PAD)[:, :, 0]
    value = (gray16.astype(np.float32) - np.float32(low)) * np.float32(255 / (high - low))
    assert np.array_equal(stretched, np.floor(np.clip(value, 0, 255) + np.float32(0.5)).astype(np.uint8))
    gray8 = rng.integers(0, 256, size=(40, 50), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g8.png"), gray8)
    assert np.array_equal(open_image(tmp_path / "g8.png").read((0, 0, 50, 40), PAD), np.dstack([gray8] * 3))


def test_corrupt_and_truncated_images_are_named(tmp_path):
    from rotld_cli.dota.prepare import ImageReadError

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("cut.png", "junk.jpg"):
        with pytest.raises(ImageReadError, match=name):
            open_image(tmp_path / name)


def test_sources_files_folders_globs_and_duplicate_ids(tmp_path):
    for rel in ("a/x.png", "a/y.JPG", "a/notes.txt", "a/v.vrt", "b/z.tif", "c/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = collect_sources([str(tmp_path / "a"), str(tmp_path / "b" / "*.tif"), str(tmp_path / "a" / "x.png")])
    assert [p.name for p in found] == ["v.vrt", "x.png", "y.JPG", "z.tif"]
    with pytest.raises(UsageError, match="two images with the id 'x'"):
        collect_sources([str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(UsageError, match="no such file"):
        collect_sources([str(tmp_path / "missing.png")])
    with pytest.raises(UsageError, match="matches no image"):
        collect_sources([str(tmp_path / "*.bmp")])


PROBE = """
import json, sys
from rotld_cli.cli import main
try:
    main(["predict", *sys.argv[1:]])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"mmcv", "mmdet", "mmrotate", "torch"})
print(json.dumps({"code": code, "loaded": loaded}))
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--merge-iou", "0"], "--merge-iou must be in (0, 1]"),
        (["--sizes", "100", "--gaps", "200"], "need 0 <= gap < size"),
        (["--device", "tpu"], "--device: expected"),
        (["--max-per-img", "0"], "--max-per-img must be at least 1"),
        (["--bands", "1,2"], "--bands: give 3 bands"),
        (["--stretch", "2"], "--stretch: expected LOW,HIGH"),
        (["--stretch", "98,2"], "0 <= LOW < HIGH <= 100"),
        (["--to-crs", "EPSG:4326"], "--to-crs needs --geojson"),
        (["--gpkg", "--to-crs", "EPSG:99999"], "--to-crs EPSG:99999: not a CRS pyproj knows"),
        (["--onnx-typo"], "No such option"),
    ],
)
def test_bad_options_fail_before_the_engine_loads(tmp_path, repo_root, args, message):
    model = tmp_path / "m.pth"
    model.write_bytes(b"x")
    image = tmp_path / "i.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(model), str(image), "--out", str(tmp_path / "o"), *args],
        cwd=repo_root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and result["loaded"] == []
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_broken_onnx_file_is_one_clear_error(tmp_path):
    from rotld_cli.errors import RotldError
    from rotld_cli.predict.backend import load_detector_backend

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(RotldError, match=r"m\.onnx"):
        load_detector_backend(model, None, None)
