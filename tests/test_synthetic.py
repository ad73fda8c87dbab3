"""The synthetic DOTA-like dataset: layout, labels, determinism, and labels matching the pixels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotld_cli.demo.scenes import (
    CLASS_STYLES,
    SUPPORTED_CLASSES,
    generate_dataset,
    make_config,
    plan_scene,
    render_scene,
)
from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import read_label_file
from rotld_cli.errors import RotldError, UsageError

ALL_CLASSES = ["plane", "small-vehicle", "large-vehicle", "ship", "tennis-court", "storage-tank", "swimming-pool"]
PARAMS = dict(
    num_train=4,
    num_val=2,
    image_size=(384, 320),
    seed=11,
    classes=ALL_CLASSES,
    objects_per_image=(8, 14),
    difficult_fraction=0.25,
    border_fraction=0.25,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return root, generate_dataset(root, **PARAMS)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_ids_and_image_sizes(dataset):
    root, summary = dataset
    assert sorted(p.name for p in (root / "train" / "images").iterdir()) == [f"S000{i}.png" for i in range(4)]
    assert sorted(p.name for p in (root / "val" / "images").iterdir()) == ["S0004.png", "S0005.png"]
    for split, ids in (("train", range(4)), ("val", range(4, 6))):
        assert sorted(p.name for p in (root / split / "labelTxt").iterdir()) == [f"S{i:04d}.txt" for i in ids]
        for i in ids:
            img = cv2.imread(str(root / split / "images" / f"S{i:04d}.png"), cv2.IMREAD_UNCHANGED)
            assert img.shape == (320, 384, 3) and img.dtype == np.uint8
    assert not [p for p in root.rglob(".*")], "temporary files left behind"
    stored = json.loads((root / "synthetic.json").read_text())
    assert stored["seed"] == 11 and stored["image_size"] == [384, 320] and stored["classes"] == ALL_CLASSES
    assert summary["generated"] == 6 and summary["reused"] == 0


def test_labels_parse_as_dota_with_configured_classes_and_counts(dataset):
    root, summary = dataset
    seen: dict[str, int] = {}
    for split in ("train", "val"):
        objects = difficult = 0
        for path in sorted((root / split / "labelTxt").glob("*.txt")):
            lines = path.read_text().splitlines()
            assert lines[:2] == ["imagesource:synthetic", "gsd:null"]
            labels = read_label_file(path, classes=DOTA_V1_0)
            assert labels.gsd is None
            assert 8 <= len(labels.objects) <= 14
            assert all(len(line.split()) == 10 for line in lines[2:])
            for obj in labels.objects:
                assert obj.name in ALL_CLASSES and obj.difficulty in (0, 1)
                seen[obj.name] = seen.get(obj.name, 0) + 1
                difficult += obj.difficulty
            objects += len(labels.objects)
        assert summary["splits"][split]["objects"] == objects
        assert summary["splits"][split]["difficult"] == difficult
    assert set(seen) == set(ALL_CLASSES), "every configured class appears"
    per_class = {
        name: summary["splits"]["train"]["per_class"][name] + summary["splits"]["val"]["per_class"][name]
        for name in ALL_CLASSES
    }
    assert per_class == seen


def _polys(root: Path) -> list[tuple[str, np.ndarray, str, int]]:
    found = []
    for path in sorted(root.glob("*/labelTxt/*.txt")):
        for obj in read_label_file(path, classes=DOTA_V1_0).objects:
            found.append((path.stem, obj.poly.reshape(4, 2), obj.name, obj.difficulty))
    return found


def test_polygons_are_clockwise_rectangles_with_class_typical_shapes(dataset):
    root, _ = dataset
    polys = _polys(root)
    for image_id, quad, name, difficulty in polys:
        x, y = quad[:, 0], quad[:, 1]
        signed_area2 = float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        assert signed_area2 > 0, f"{image_id} {name}: not clockwise on screen (y down)"
        sides = np.linalg.norm(np.roll(quad, -1, axis=0) - quad, axis=1)
        assert sides[0] == pytest.approx(sides[2], abs=0.2) and sides[1] == pytest.approx(sides[3], abs=0.2)
        diagonals = np.linalg.norm(quad[2] - quad[0]), np.linalg.norm(quad[3] - quad[1])
        assert diagonals[0] == pytest.approx(diagonals[1], abs=0.2), "right angles"
        width, length = sorted((sides[0], sides[1]))
        assert width >= 2.8, "MMRotate drops boxes under 2 px"
        style = CLASS_STYLES[name]
        along, across = sides[1], sides[0]  # corner 0 -> 1 is the front edge, 1 -> 2 the side
        if difficulty == 0:  # rows jitter their members' size by up to 6 %
            assert 0.94 * style.length[0] - 0.1 <= along <= 1.06 * style.length[1] + 0.1, (image_id, name, along)
            if across > 3.2:
                assert style.aspect[0] - 0.02 <= across / along <= style.aspect[1] + 0.02, (image_id, name)
        else:
            assert max(length, width) < style.length[0], "difficult objects are the tiny ones"
        if name == "storage-tank":
            assert sides[0] == pytest.approx(sides[1], abs=0.2)
            assert np.allclose(quad[0], (x.min(), y.min()), atol=0.11), "tanks: axis-aligned, from the top-left"
    ships = [np.linalg.norm(q[1:3] - q[0:2], axis=1) for _, q, n, d in polys if n == "ship" and d == 0]
    assert ships and min(side / front for front, side in ships) >= 2.9, "ships are long and narrow"


def test_difficult_and_border_objects_are_present(dataset):
    root, summary = dataset
    w, h = 384, 320
    outside = [
        q
        for _, q, _, _ in _polys(root)
        if q[:, 0].min() < 0 or q[:, 1].min() < 0 or q[:, 0].max() > w or q[:, 1].max() > h
    ]
    assert outside and sum(s["cut_by_border"] for s in summary["splits"].values()) == len(outside)
    for quad in outside:  # centre stays inside: at most part of the object is cut off
        cx, cy = quad.mean(axis=0)
        assert 0 <= cx <= w and 0 <= cy <= h
    assert sum(s["difficult"] for s in summary["splits"].values()) > 0


def _polygon_mask(quad: np.ndarray, shape: tuple[int, int], grow: int = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    pts = [np.round(quad * 16).astype(np.int32)]
    cv2.fillPoly(mask, pts, 1, cv2.LINE_8, shift=4)
    if grow:
        cv2.polylines(mask, pts, True, 1, thickness=2 * grow + 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def test_every_label_sits_on_its_drawn_object_and_nothing_else_is_labelled(dataset):
    """Re-render each scene without its objects: pixels change only inside the labelled boxes,
    every box has changed pixels, and (for whole objects) they reach all four sides of the box."""
    root, _ = dataset
    config = make_config(**PARAMS)
    for index in range(6):
        split = "train" if index < 4 else "val"
        image = cv2.imread(str(root / split / "images" / f"S{index:04d}.png"))
        scene = plan_scene(config, index)
        assert np.array_equal(render_scene(scene), image), "the plan reproduces the stored image"
        changed = np.any(render_scene(scene, with_objects=False) != image, axis=2)
        labels = read_label_file(root / split / "labelTxt" / f"S{index:04d}.txt", classes=DOTA_V1_0).objects
        inside_any = np.zeros(changed.shape, bool)
        for obj in labels:
            quad = obj.poly.reshape(4, 2)
            inside_any |= _polygon_mask(quad, changed.shape, grow=2)
            own = changed & _polygon_mask(quad, changed.shape, grow=1)
            area = max(_polygon_mask(quad, changed.shape).sum(), 1)
            assert own.sum() >= 0.2 * area, f"S{index:04d} {obj.name} line {obj.line}: box is not on its object"
            whole = (
                quad.min() >= 2 and quad[:, 0].max() <= image.shape[1] - 3 and quad[:, 1].max() <= image.shape[0] - 3
            )
            if whole and obj.difficulty == 0:
                ys, xs = np.nonzero(own)
                centre = quad.mean(axis=0)
                for a, b in ((0, 1), (1, 2)):
                    axis = (quad[b] - quad[a]) / np.linalg.norm(quad[b] - quad[a])
                    proj = (np.stack([xs, ys], axis=1) - centre) @ axis
                    half = np.linalg.norm(quad[b] - quad[a]) / 2
                    extent = f"{proj.min():.1f}..{proj.max():.1f} vs ±{half:.1f}"
                    assert proj.max() >= half - 1.6 and proj.min() <= -half + 1.6, (
                        f"S{index:04d} {obj.name} line {obj.line}: box not tight: {extent}"
                    )
        assert not (changed & ~inside_any).any(), f"S{index:04d}: pixels changed outside every label"


def test_same_seed_same_bytes_and_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    generate_dataset(again, **PARAMS)
    assert all_files(again) == all_files(root)
    other = tmp_path / "other"
    generate_dataset(other, **{**PARAMS, "seed": 12})
    a, b = all_files(root), all_files(other)
    for name in a:
        if name.endswith((".png", ".txt")) and name != "synthetic.json":
            assert a[name] != b[name], f"{name} did not change with the seed"


def test_second_run_reuses_images_and_fills_gaps(dataset, tmp_path):
    root = tmp_path / "data"
    first = generate_dataset(root, **PARAMS)
    before = all_files(root)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    (root / "val" / "images" / "S0005.png").unlink()
    calls: list[tuple[int, int]] = []
    second = generate_dataset(root, **PARAMS, progress=lambda done, total: calls.append((done, total)))
    assert second["generated"] == 1 and second["reused"] == 5
    assert second["splits"] == first["splits"]
    assert all_files(root) == before
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name != "S0005.png")
    assert calls == [(i, 6) for i in range(1, 7)]


def test_changed_parameters_are_refused_on_existing_data(dataset, tmp_path):
    root, _ = dataset
    before = all_files(root)
    with pytest.raises(RotldError, match=r"other parameters \(seed: 11 -> 12\); delete it or choose another"):
        generate_dataset(root, **{**PARAMS, "seed": 12})
    assert all_files(root) == before

    empty = tmp_path / "empty"
    generate_dataset(empty, **{**PARAMS, "num_train": 0, "num_val": 0})
    summary = generate_dataset(empty, **{**PARAMS, "num_train": 1, "num_val": 1})
    assert summary["generated"] == 2
    assert json.loads((empty / "synthetic.json").read_text())["num_train"] == 1

    foreign = tmp_path / "foreign"
    (foreign / "train" / "images").mkdir(parents=True)
    (foreign / "train" / "images" / "P0001.png").write_bytes(b"x")
    with pytest.raises(RotldError, match=r"no synthetic\.json"):
        generate_dataset(foreign, **PARAMS)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"classes": ["bridge"]}, "classes: 'bridge' cannot be rendered"),
        ({"classes": ["car"]}, "classes: 'car' cannot be rendered"),
        ({"classes": []}, "classes: give at least one class"),
        ({"objects_per_image": (5, 2)}, "objects_per_image"),
        ({"image_size": 32}, "image_size"),
        ({"image_size": (640,)}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"num_train": 1.5}, "num_train"),
        ({"difficult_fraction": 2.0}, "difficult_fraction"),
    ],
)
def test_bad_parameters_name_the_parameter(tmp_path, override, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        generate_dataset(tmp_path / "d", **{**PARAMS, **override})
    assert not (tmp_path / "d").exists()


def test_supported_classes_are_dota_v1_names_in_label_order():
    assert list(SUPPORTED_CLASSES) == [c for c in DOTA_V1_0 if c in set(ALL_CLASSES)]
    assert make_config().classes == ("plane", "small-vehicle", "large-vehicle", "ship", "storage-tank")


