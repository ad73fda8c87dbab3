"""`rotld predict` with a real (tiny, trained here) model: equal to `rotld evaluate CKPT`, bad images, resume.

Synthetic 256 px images are cut by prepare-dota into nine 128 px patches (stride 96), a ResNet-18
with a 16-channel head is trained for one epoch on them, and `evaluate CKPT` runs on the patch
files while `predict` runs on the full images with the same windows: the merged Task1 files and
every AP must be identical. The 1-epoch model needs `score_thr 0 / max_per_img 10` (set on both)
to produce boxes to merge.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import write_recipe  # noqa: E402

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.demo.scenes import generate_dataset  # noqa: E402
from rotld_cli.dota.prepare import PrepareOptions, prepare_dota  # noqa: E402
from rotld_cli.dota.split import SplitParams  # noqa: E402
from rotld_cli.evaluation import EvaluateOptions, evaluate  # noqa: E402
from rotld_cli.predict.run import PredictOptions, predict  # noqa: E402

WINDOWS = SplitParams(sizes=(128,), gaps=(32,))
TEST_CFG = {"score_thr": 0.0, "max_per_img": 10}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from rotld_cli.engine.train import TrainOptions, train_teacher

    root = tmp_path_factory.mktemp("predict")
    data = root / "data"
    generate_dataset(data, num_train=2, num_val=2, image_size=256, seed=0, objects_per_image=(4, 7),
                     distractors_per_image=(1, 3))  # fmt: skip
    split = root / "split"
    prepare_dota(data, split, PrepareOptions(split=WINDOWS))
    recipe = write_recipe(root / "teacher.yaml", split)
    options = TrainOptions(work_dir=root / "teacher", device="cpu", validate=False,
                           overrides=["schedule.epochs=1"])  # fmt: skip
    teacher = train_teacher(str(recipe), options).checkpoint
    return {"root": root, "val": split / "val", "ann": data / "val" / "labelTxt", "images": data / "val" / "images",
            "model": teacher}  # fmt: skip


def _main(argv: list) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code, out.getvalue(), err.getvalue()


def test_polygons_equal_mmrotates_obb2poly(world):
    from mmrotate.core import obb2poly_np

    from rotld_cli.dota.polygons import rboxes_to_polygons

    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(0, 500, (300, 2)), rng.uniform(1, 200, (300, 2)),
                             rng.uniform(-np.pi, np.pi, 300), rng.uniform(0, 1, 300)]).astype(np.float32)  # fmt: skip
    boxes[:20, 4] = np.float32(np.pi / 2)  # exact right angles: ties between start corners
    boxes = boxes.astype(np.float64)
    for version in ("oc", "le90", "le135"):
        assert np.array_equal(rboxes_to_polygons(boxes, version), obb2poly_np(boxes, version)[:, :8]), version


def test_predict_then_evaluate_equals_evaluate_checkpoint(world, tmp_path):
    from rotld_cli.engine.checkpoint_eval import CheckpointEvalOptions, evaluate_checkpoint
    from rotld_cli.engine.detector import EngineDetector

    by_checkpoint = evaluate_checkpoint(
        CheckpointEvalOptions(checkpoint=world["model"], split_dir=world["val"], ann_dir=world["ann"],
                              out_dir=tmp_path / "eval", device="cpu", **TEST_CFG)
    )  # fmt: skip
    detector = EngineDetector.from_checkpoint(world["model"], device="cpu")
    for key, value in TEST_CFG.items():
        setattr(detector.test_cfg, key, value)
    out = tmp_path / "pred"
    paths = sorted(world["images"].glob("*.png"))
    summary = predict(detector, paths, out, PredictOptions(split=WINDOWS), {"file": "teacher"})
    assert summary.problems == [] and summary.to_dict()["windows"] == 18
    assert sum(summary.to_dict()["detections"].values()) > 10
    merged = tmp_path / "eval" / "merged"
    for task1 in sorted(merged.glob("Task1_*.txt")):
        assert (out / task1.name).read_text() == task1.read_text(), task1.name
    # no --classes: the folder's manifest names the model's classes, as evaluate CKPT's mean uses
    by_results = evaluate(EvaluateOptions(results=out, ann_dir=world["ann"])).report.to_json()
    by_ckpt = by_checkpoint.report.to_json()
    assert by_results["merged"] is False and by_ckpt["merged"] is True
    for key in ("AP", "AP50", "AP75", "per_class", "num_images", "class_set"):
        assert by_results[key] == by_ckpt[key], key
    one = json.loads((out / "images" / f"{paths[0].stem}.json").read_text())
    assert one["width"] == one["height"] == 256 and one["windows"] == 9
    det = one["detections"][0]
    assert set(det) == {"class", "score", "polygon", "rbox"} and len(det["polygon"]) == 8


def test_a_corrupt_image_among_good_ones_then_resume(world, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(world["images"], images)
    good = sorted(images.glob("*.png"))
    (images / "broken.png").write_bytes(good[0].read_bytes()[:500])
    out = tmp_path / "out"
    argv = ["predict", world["model"], images, "--out", out, "--device", "cpu", "--save-vis", "--json"]
    code, stdout, err = _main(argv)
    assert code == 1, err
    assert "broken.png" in err and "Traceback" not in err
    summary = json.loads(stdout)
    assert (summary["images"], summary["predicted"], summary["failed"]) == (3, 2, 1)
    assert any("broken.png" in p for p in summary["problems"])
    assert sorted(p.stem for p in (out / "images").glob("*.json")) == [p.stem for p in good]
    assert sorted(p.stem for p in (out / "vis").glob("*.png")) == [p.stem for p in good]
    task1 = {p.name: p.read_text() for p in out.glob("Task1_*.txt")}
    assert task1

    (images / "broken.png").unlink()  # the second run resumes: nothing is predicted again
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").glob("*.json")}
    code, stdout, err = _main(argv)
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["predicted"], summary["resumed"], summary["failed"]) == (0, 2, 0)
    assert {p: p.stat().st_mtime_ns for p in (out / "images").glob("*.json")} == stamps
    assert {p.name: p.read_text() for p in out.glob("Task1_*.txt")} == task1

    code, stdout, _ = _main([*argv, "--merge-iou", "0.5"])  # other settings: the images are predicted again
    assert code == 0 and json.loads(stdout)["predicted"] == 2


def test_cuda_without_a_gpu_is_one_line(world, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = _main(["predict", world["model"], world["images"], "--out", tmp_path / "o", "--device", "cuda"])
    assert code == 2 and "--device cuda: no usable GPU" in err and "Traceback" not in err


def test_a_georeferenced_geotiff_copy_of_a_real_sample_gives_the_pngs_detections(world, dota_samples, tmp_path):
    """P1888.png written as a DEFLATE-tiled UTM GeoTIFF with rasterio: a real model's detections, read
    through GDAL window by window, equal the PNG's; the GeoJSON holds them on the map."""
    import cv2
    from geo_helpers import bgr_to_bands, write_raster
    from rasterio.transform import from_origin

    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.predict.maps import MapOptions, write_map_outputs

    png = dota_samples / "images" / "P1888.png"
    tiff = write_raster(tmp_path / "tif" / "P1888.tif", bgr_to_bands(cv2.imread(str(png))), crs="EPSG:32633",
                        transform=from_origin(500000, 4100000, 0.3, 0.3), tiled=True, blockxsize=256,
                        blockysize=256, compress="deflate")  # fmt: skip
    detector = EngineDetector.from_checkpoint(world["model"], device="cpu")
    for key, value in TEST_CFG.items():
        setattr(detector.test_cfg, key, value)
    maps = MapOptions(geojson=True)
    results = []
    for path in (png, tiff):
        out = tmp_path / f"out-{path.suffix[1:]}"  # not the source's folder: predict refuses that
        writers = [lambda o, ids: write_map_outputs(o, ids, maps)]
        predict(detector, [path], out, PredictOptions(split=WINDOWS), {"file": "t"}, writers=writers)
        results.append(json.loads((out / "images" / "P1888.json").read_text()))
    assert results[0]["detections"] == results[1]["detections"] and len(results[0]["detections"]) > 0
    assert results[0]["windows"] == results[1]["windows"] == 48
    features = json.loads((tmp_path / "out-tif" / "geojson" / "P1888.geojson").read_text())["features"]
    first = results[1]["detections"][0]["polygon"]
    expected = [[500000 + 0.3 * x, 4100000 - 0.3 * y] for x, y in zip(first[0::2], first[1::2])]
    np.testing.assert_allclose(features[0]["geometry"]["coordinates"][0][:4], expected, rtol=0, atol=1e-9)


def test_a_plain_state_dict_predicts_with_recipe(world, tmp_path):
    """A checkpoint without rotld's metadata: the error names `--recipe`, which then builds the same model."""
    state = torch.load(world["model"], map_location="cpu", weights_only=True)["state_dict"]
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    image = sorted(world["images"].glob("*.png"))[0]
    code, _, err = _main(["predict", bare, image, "--out", tmp_path / "a", "--device", "cpu"])
    assert code == 1 and "no recipe in the checkpoint's metadata" in err and "--recipe RECIPE" in err
    assert len(err.strip().splitlines()) == 1
    results = []
    for model, extra in ((bare, ["--recipe", world["root"] / "teacher.yaml"]), (world["model"], [])):
        out = tmp_path / model.stem
        code, _, err = _main(["predict", model, image, "--out", out, "--device", "cpu", "--sizes", "128", "--gaps",
                              "32", "--json", *extra])  # fmt: skip
        assert code == 0, err
        results.append(json.loads((out / "images" / f"{image.stem}.json").read_text())["detections"])
    assert results[0] == results[1]
