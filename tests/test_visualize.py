"""Detections drawn on a real DOTA image: exactly where the boxes and labels go, nothing elsewhere."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotld_cli.dota.classes import DOTA_V1_0, DOTA_V2_0
from rotld_cli.dota.formats import Task1Detections, read_label_file
from rotld_cli.errors import RotldError
from rotld_cli.evaluation.visualize import (
    FONT,
    FONT_SCALE,
    FONT_THICKNESS,
    class_colours,
    draw_detections,
    save_visualizations,
)

LARGE = "large-vehicle"
SMALL = "small-vehicle"


@pytest.fixture(scope="module")
def p1888(dota_samples: Path) -> tuple[np.ndarray, list]:
    image = cv2.imread(str(dota_samples / "images" / "P1888.png"))
    assert image is not None
    return image, read_label_file(dota_samples / "labelTxt" / "P1888.txt").objects


def _near_polygon(shape: tuple[int, int], poly: np.ndarray, radius: float) -> np.ndarray:
    """Pixels whose centre lies within `radius` of an edge of the (rounded) polygon."""
    pts = np.round(np.asarray(poly, dtype=np.float64).reshape(4, 2))
    near = np.zeros(shape, dtype=bool)
    r = int(np.ceil(radius))
    x0, y0 = (max(int(v) - r, 0) for v in pts.min(axis=0))
    x1, y1 = (min(int(v) + r + 1, n) for v, n in zip(pts.max(axis=0), (shape[1], shape[0])))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    p = np.stack([xs, ys], axis=-1).astype(np.float64)
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        near[y0:y1, x0:x1] |= np.linalg.norm(p - (a + t[..., None] * ab), axis=-1) <= radius
    return near


def _expected_label_rect(text: str, anchor: tuple[int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The label box: text size + 1 px padding, bottom-left corner on the anchor, shifted into the image."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
    w, h = tw + 2, th + baseline + 2
    x0 = min(max(anchor[0], 0), width - w)
    y0 = min(max(anchor[1] - h + 1, 0), height - h)
    return x0, y0, x0 + w - 1, y0 + h - 1


def _rect_mask(shape: tuple[int, int], rect: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = rect
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


def test_class_colours_are_fixed_distinct_and_not_white() -> None:
    v2 = class_colours(DOTA_V2_0)
    assert v2 == class_colours(list(DOTA_V2_0))
    assert list(v2) == list(DOTA_V2_0)
    values = np.array(list(v2.values()), dtype=np.float64)
    assert len({tuple(c) for c in values}) == 18
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(values, 2)) > 40
    assert np.linalg.norm(values - 255, axis=1).min() > 70  # the ground truth is white
    v1 = class_colours(DOTA_V1_0)
    assert all(v1[c] == v2[c] for c in DOTA_V1_0)  # a colour follows the class's index
    assert v2["plane"] == (75, 25, 230)  # BGR of the palette's first (red) colour
    many = class_colours([f"c{k}" for k in range(30)])
    assert len(set(many.values())) == 30


def test_one_detection_changes_exactly_its_outline_and_label(p1888) -> None:
    image, objects = p1888
    obj = objects[2]  # 465 371 455 372 451 324 460 323 large-vehicle
    assert obj.name == LARGE and obj.poly.tolist() == [465, 371, 455, 372, 451, 324, 460, 323]
    out = draw_detections(image, [(LARGE, 0.87, obj.poly)], DOTA_V1_0)
    assert out.shape == image.shape and out.dtype == image.dtype
    colour = np.array(class_colours(DOTA_V1_0)[LARGE], dtype=np.uint8)
    h, w = image.shape[:2]
    rect = _expected_label_rect("large-vehicle 0.87", (465, 371), w, h)
    assert rect == (465, 371 - (rect[3] - rect[1]), rect[2], 371)  # fits: bottom-left corner on the vertex
    allowed = _near_polygon((h, w), obj.poly, 2.5) | _rect_mask((h, w), rect)
    changed = _changed(out, image)
    assert changed.sum() > 2 * 100  # the outline (perimeter ~ 2 * (48 + 10)) and the label
    assert not (changed & ~allowed).any()
    for x, y in [(455, 372), (451, 324), (460, 323), (453, 348), (455.5, 323.5), (462.5, 347)]:
        assert out[round(y), round(x)].tolist() == colour.tolist(), (x, y)  # vertices and edge midpoints
    x0, y0, x1, y1 = rect
    for x, y in [(x0, y0), (x1, y0), (x1, y1)]:  # the label's filled background
        assert out[y, x].tolist() == colour.tolist()
    label = out[rect[1] : rect[3] + 1, rect[0] : rect[2] + 1].reshape(-1, 3)
    assert (label.min(axis=1) > 200).sum() > 20  # white (anti-aliased) text on the dark purple
    assert np.array_equal(out[:300], image[:300])  # far from the polygon: untouched


def test_all_objects_of_p1888_are_outlined_in_their_class_colour(p1888) -> None:
    image, objects = p1888
    assert len(objects) == 64
    out = draw_detections(image, [(o.name, 1.0, o.poly) for o in objects], DOTA_V1_0)
    h, w = image.shape[:2]
    colours = class_colours(DOTA_V1_0)
    edges = [_near_polygon((h, w), o.poly, 2.5) for o in objects]
    anchors = [(round(o.poly[0]), round(o.poly[1])) for o in objects]
    labels = np.logical_or.reduce(
        [_rect_mask((h, w), _expected_label_rect(f"{o.name} 1.00", a, w, h)) for o, a in zip(objects, anchors)]
    )
    changed = _changed(out, image)
    assert not (changed & ~(np.logical_or.reduce(edges) | labels)).any()
    checked = 0
    for k, obj in enumerate(objects):
        others = np.logical_or.reduce([e for j, e in enumerate(edges) if j != k] + [labels])
        for x, y in np.round(obj.poly.reshape(4, 2)).astype(int):
            if not others[y, x]:
                assert out[y, x].tolist() == list(colours[obj.name]), (k, x, y)
                checked += 1
    assert checked > 60  # most vertices are clear of other boxes and of labels


def test_score_threshold_filters_and_input_is_not_modified(p1888) -> None:
    image, objects = p1888
    before = image.copy()
    poly = objects[0].poly
    out = draw_detections(image, [(SMALL, 0.2999, poly)], DOTA_V1_0, score_thr=0.3)
    assert np.array_equal(out, image) and out is not image
    out = draw_detections(image, [(SMALL, 0.3, poly)], DOTA_V1_0, score_thr=0.3)
    assert _changed(out, image).sum() > 50
    assert np.array_equal(image, before)
    with pytest.raises(ValueError, match="not one of"):
        draw_detections(image, [("car", 0.9, poly)], DOTA_V1_0)


def test_labels_are_moved_into_the_image(p1888) -> None:
    image, _ = p1888
    h, w = image.shape[:2]
    colour = list(class_colours(DOTA_V1_0)["plane"])
    top_left = np.array([2, 3, 40, 3, 40, 30, 2, 30], dtype=np.float64)  # a label above y=3 would leave the image
    out = draw_detections(image, [("plane", 0.5, top_left)], DOTA_V1_0)
    x0, y0, x1, y1 = _expected_label_rect("plane 0.50", (2, 3), w, h)
    assert y0 == 0 and out[0, x0].tolist() == colour and out[y1, x1].tolist() == colour
    right = np.array([w - 3, 200, w - 1, 260, w - 20, 260, w - 20, 200], dtype=np.float64)
    out = draw_detections(image, [("plane", 0.5, right)], DOTA_V1_0)
    x0, y0, x1, y1 = _expected_label_rect("plane 0.50", (w - 3, 200), w, h)
    assert x1 == w - 1 and out[200, w - 1].tolist() == colour and out[y0, x0].tolist() == colour


def test_ground_truth_is_dashed_white(p1888) -> None:
    image, _ = p1888
    gt = np.array([100, 100, 200, 100, 200, 150, 100, 150], dtype=np.float64)
    out = draw_detections(image, [], DOTA_V1_0, gt=[gt])
    white = (out == 255).all(axis=2)
    assert white[100, 100:107].all() and white[100, 110:117].all()  # dash 6 px, gap 4 px, from x=100
    assert np.array_equal(out[100, 107:110], image[100, 107:110])
    assert np.array_equal(out[100:151, 200], np.where(((np.arange(51) % 10) <= 6)[:, None], 255, image[100:151, 200]))
    changed = _changed(out, image)
    assert not (changed & ~_near_polygon(image.shape[:2], gt, 0.5)).any()


def _task1(rows: list[tuple[str, float, np.ndarray]]) -> Task1Detections:
    return Task1Detections([r[0] for r in rows], np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def test_save_visualizations_writes_pngs_and_reports_missing_images(p1888, dota_samples: Path, tmp_path: Path) -> None:
    image, objects = p1888
    by_class = {
        name: _task1([("P1888", 1.0, o.poly) for o in objects if o.name == name] + [("P9999", 0.9, objects[0].poly)])
        for name in (SMALL, LARGE)
    }
    calls = []
    out_dir = tmp_path / "vis"
    result = save_visualizations(
        dota_samples / "images", by_class, out_dir, DOTA_V1_0, progress=lambda done, total: calls.append((done, total))
    )
    assert result.written == [out_dir / "P1888.png"]
    assert len(result.problems) == 1 and "P9999" in result.problems[0] and "no image" in result.problems[0]
    assert calls == [(1, 2), (2, 2)]
    assert sorted(p.name for p in out_dir.iterdir()) == ["P1888.png"]  # no temp file left
    saved = cv2.imread(str(out_dir / "P1888.png"))
    dets = [(name, 1.0, o.poly) for name in (SMALL, LARGE) for o in objects if o.name == name]
    assert np.array_equal(saved, draw_detections(image, dets, DOTA_V1_0))  # PNG is lossless


def test_save_visualizations_draws_gt_and_survives_bad_inputs(p1888, dota_samples: Path, tmp_path: Path) -> None:
    image, objects = p1888
    images, labels = tmp_path / "images", tmp_path / "labelTxt"
    images.mkdir()
    labels.mkdir()
    shutil.copy(dota_samples / "images" / "P1888.png", images)
    shutil.copy(dota_samples / "labelTxt" / "P1888.txt", labels)
    cv2.imwrite(str(images / "A.jpg"), image[:64, :64])
    (images / "B.png").write_bytes(b"not a png")
    (labels / "A.txt").write_text("1 2 3 4 5 6 7 8\n", encoding="utf-8")  # no class name
    (labels / "C.txt").write_text("", encoding="utf-8")  # GT only, and no image
    by_class = {SMALL: _task1([("B", 0.9, objects[0].poly), ("A", 0.9, np.array([5, 5, 40, 5, 40, 40, 5, 40.0]))])}
    result = save_visualizations(images, by_class, tmp_path / "out", DOTA_V1_0, score_thr=0.5, ann_dir=labels)
    assert [p.name for p in result.written] == ["A.png", "P1888.png"]
    assert len(result.problems) == 3
    assert "A.txt:1:" in result.problems[0] and "drawn without ground truth" in result.problems[0]
    assert "B.png: cannot read the image" in result.problems[1]
    assert "C: no image" in result.problems[2]
    gt = [o.poly for o in objects]
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "P1888.png")), draw_detections(image, [], DOTA_V1_0, gt=gt))
    a = cv2.imread(str(images / "A.jpg"))  # found by its .jpg suffix; B's detection is not drawn on it
    expected = draw_detections(a, [(SMALL, 0.9, np.array([5, 5, 40, 5, 40, 40, 5, 40.0]))], DOTA_V1_0)
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "A.png")), expected)
    only = save_visualizations(images, by_class, tmp_path / "only", DOTA_V1_0, image_ids=["P1888"])
    assert [p.name for p in only.written] == ["P1888.png"] and only.problems == []
    with pytest.raises(RotldError, match="unknown class"):
        save_visualizations(images, {"car": by_class[SMALL]}, tmp_path / "x", DOTA_V1_0)


def test_higher_scores_are_drawn_on_top(p1888) -> None:
    image, objects = p1888
    poly = objects[2].poly
    colours = class_colours(DOTA_V1_0)
    for dets in ([("plane", 0.9, poly), ("ship", 0.5, poly)], [("ship", 0.5, poly), ("plane", 0.9, poly)]):
        out = draw_detections(image, dets, DOTA_V1_0)
        for x, y in [(451, 324), (460, 323), (453, 348)]:  # away from the labels at (465, 371)
            assert out[y, x].tolist() == list(colours["plane"])
