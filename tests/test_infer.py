"""Patch inference: Task1 files for every class, polygons of the predicted boxes, batching, bad patches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import make_split, write_recipe  # noqa: E402

from rotld_cli.dota.formats import read_task1_file  # noqa: E402
from rotld_cli.dota.polygons import detections_to_task1  # noqa: E402
from rotld_cli.engine import checkpoints as ckpt  # noqa: E402
from rotld_cli.engine import load_engine  # noqa: E402
from rotld_cli.engine.infer import infer_split, load_detector  # noqa: E402

load_engine()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A randomly initialised detector with score threshold 0: every class gets detections on every patch."""
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    root = tmp_path_factory.mktemp("infer")
    split = make_split(root, num_train=1, num_val=3)
    recipe = load_recipe(str(write_recipe(root / "r.yaml", split)),
                         ["model.test.score_thr=0.0", "model.test.max_per_img=20"])
    cfg = build_config(recipe)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    model.init_weights()
    with torch.no_grad():  # spread the scores and boxes: no near-ties for NMS and top-k to break differently
        model.bbox_head.retina_cls.weight.normal_(0, 0.3)
        model.bbox_head.retina_reg.weight.normal_(0, 0.3)
    meta = {"recipe": recipe.to_yaml(), "recipe_name": "tiny", "classes": list(recipe.classes), "angle_version": "oc"}
    path = ckpt.save_checkpoint(root / "model.pth", ckpt.model_state_dict(model), meta)
    return root, split / "val", path, recipe


def rectangle_corners(box: np.ndarray) -> np.ndarray:
    """The 4 corners of (cx, cy, w, h, θ), computed here independently of mmrotate."""
    cx, cy, w, h, a = box
    along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    return np.array([[cx, cy] + sx * w / 2 * along + sy * h / 2 * across for sx, sy in signs])


def test_task1_files_for_every_class_with_the_boxes_corners(setup, tmp_path):
    _, val, path, recipe = setup
    patches = sorted(p.stem for p in (val / "images").glob("*.png"))
    result = infer_split(path, val, out_dir=tmp_path / "task1", device="cpu", batch_size=2)
    assert result.images == len(patches) == 3 and result.skipped == []
    assert sorted(p.name for p in result.written) == sorted(f"Task1_{c}.txt" for c in recipe.classes)
    for name in recipe.classes:
        dets = read_task1_file(tmp_path / "task1" / f"Task1_{name}.txt")
        assert len(dets) > 0 and set(dets.image_ids) <= set(patches)
        assert all(dets.image_ids.count(p) <= 20 for p in patches)
        assert np.all((dets.scores > 0) & (dets.scores <= 1))
        np.testing.assert_allclose(dets.polys, result.detections[name].polys, atol=0.005)

    # The raw model output of one patch, turned into corners here, gives the same polygons.
    model, *_ = load_detector(path, device="cpu")
    first = val / "images" / f"{patches[0]}.png"
    from mmdet.apis import inference_detector

    raw = inference_detector(model.module, str(first))
    cls = int(np.argmax([len(r) for r in raw]))
    boxes = raw[cls]
    ours = result.detections[recipe.classes[cls]]
    mine = ours.polys[[i for i, img in enumerate(ours.image_ids) if img == patches[0]]]
    assert len(mine) == len(boxes)
    for box, poly in zip(boxes, mine):
        corners = rectangle_corners(box[:5])
        # Same 4 points, whatever the starting corner (get_best_begin_point only rotates the order).
        got = poly.reshape(4, 2)
        assert any(np.allclose(np.roll(corners, k, axis=0), got, atol=1e-3) for k in range(4))


def test_batch_size_does_not_change_the_detections(setup):
    _, val, path, recipe = setup
    one = infer_split(path, val, device="cpu", batch_size=1)
    three = infer_split(path, val, device="cpu", batch_size=3)
    for name in recipe.classes:
        assert one.detections[name].image_ids == three.detections[name].image_ids
        np.testing.assert_allclose(one.detections[name].polys, three.detections[name].polys, atol=1e-3)
        np.testing.assert_allclose(one.detections[name].scores, three.detections[name].scores, atol=1e-5)


def test_an_unreadable_patch_is_reported_and_skipped(setup, tmp_path):
    _, val, path, _ = setup
    copy = tmp_path / "val"
    shutil.copytree(val, copy)
    bad = copy / "images" / "broken__128__0___0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = infer_split(path, copy, device="cpu", batch_size=2)
    assert result.skipped == [(str(bad), "cannot decode the image")]
    assert result.images == 3
    assert all("broken" not in i for d in result.detections.values() for i in d.image_ids)


def test_detections_to_task1_orders_corners_like_mmrotate():
    # An axis-aligned 'oc' box at θ = π/2 (w is the vertical extent): corners start at the top-left.
    box = np.array([[50.0, 40.0, 20.0, 10.0, np.pi / 2, 0.75]])
    dets = detections_to_task1([[box]], ["P1__128__0___0"], ["plane"])["plane"]
    assert dets.image_ids == ["P1__128__0___0"] and dets.scores.tolist() == [0.75]
    np.testing.assert_allclose(dets.polys[0], [45, 30, 55, 30, 55, 50, 45, 50], atol=1e-9)


def test_missing_images_and_recipe_are_clear_errors(setup, tmp_path):
    _, _, path, _ = setup
    from rotld_cli.errors import RotldError

    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(RotldError, match="no patch images"):
        infer_split(path, tmp_path / "empty", device="cpu")
    bare = ckpt.save_checkpoint(tmp_path / "bare.pth", torch.load(path, weights_only=True)["state_dict"], {})
    with pytest.raises(RotldError, match="no recipe in the checkpoint's metadata"):
        load_detector(bare, device="cpu")
    assert Path(bare).exists()


def test_engine_detector_gives_the_boxes_of_the_file_pipeline(setup):
    """In-memory images through `EngineDetector` == mmdet's own file-reading inference, box for box."""
    from mmdet.apis import inference_detector

    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.patches import read_patch

    _, val, path, recipe = setup
    paths = sorted((val / "images").glob("*.png"))
    detector = EngineDetector.from_checkpoint(path, device="cpu", batch_size=1)
    assert detector.classes == tuple(recipe.classes) and detector.angle_version == "oc"
    got = detector.detect([read_patch(p) for p in paths])
    assert len(got) == len(paths)
    for patch, per_class in zip(paths, got):
        reference = inference_detector(detector.model.module, str(patch))  # LoadImageFromFile, the recipe's pipeline
        assert len(per_class) == len(reference) == len(recipe.classes)
        for mine, theirs in zip(per_class, reference):
            assert mine.dtype == np.float32 and mine.shape == theirs.shape
            np.testing.assert_array_equal(mine, theirs)
    # batched: the same boxes up to float summation order
    batched = EngineDetector.from_checkpoint(path, device="cpu", batch_size=3).detect([read_patch(p) for p in paths])
    for one, three in zip(got, batched):
        for a, b in zip(one, three):
            np.testing.assert_allclose(a, b, atol=1e-3)


def test_patch_loop_reports_empty_and_undecodable_files(setup, tmp_path):
    from rotld_cli.engine.detector import EngineDetector
    from rotld_cli.engine.patches import detect_patches

    _, val, path, _ = setup
    good = sorted((val / "images").glob("*.png"))
    (tmp_path / "Z.png").write_bytes(b"")
    (tmp_path / "Y.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = [good[0], tmp_path / "Y.png", good[1], tmp_path / "Z.png"]
    seen: list[tuple[list[str], int]] = []
    progress: list[tuple[int, int]] = []
    detector = EngineDetector.from_checkpoint(path, device="cpu", batch_size=2)
    stats = detect_patches(detector, paths, lambda ids, dets: seen.append((ids, len(dets))), batch_size=2,
                           workers=2, on_progress=lambda done, total: progress.append((done, total)))
    assert stats.ran == [good[0].stem, good[1].stem]
    assert stats.unreadable == [
        (str(tmp_path / "Y.png"), "cannot decode the image"),
        (str(tmp_path / "Z.png"), "empty file"),
    ]
    assert seen == [([good[0].stem], 1), ([good[1].stem], 1)] and progress == [(2, 4), (4, 4)]
