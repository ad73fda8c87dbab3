"""`rotld convert`: hand-written annotation files in each format's official layout -> the exact DOTA lines.

Every expected line is worked out here by hand from the format's definition (the comments show the
arithmetic), independently of the converters: HRSC2016's rotated box and angle sign, its best
begin point, DIOR-R's corner tags, FAIR1M's closing point, YOLO-OBB's normalisation. Plus the
run itself: resume, stale outputs, refusals, the per-file report, the CLI.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from rotld_cli.cli import main
from rotld_cli.datasets import SourceOptions, convert
from rotld_cli.dota.formats import read_label_file

# ------------------------------------------------------------------------------------------
# Helpers


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def image(path: Path, width: int = 64, height: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 7, np.uint8))
    return path


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, " ".join(err.split())


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


# ------------------------------------------------------------------------------------------
# HRSC2016

SYSDATA = """<?xml version="1.0" encoding="utf-8"?>
<sysdata><HRSC_Classes>
  <HRSC_Class><Class_ID>100000001</Class_ID><HRS_Class_ID></HRS_Class_ID><Class_Layer>0</Class_Layer>
    <Class_EngName>ship</Class_EngName></HRSC_Class>
  <HRSC_Class><Class_ID>100000002</Class_ID><HRS_Class_ID>100000001</HRS_Class_ID><Class_Layer>1</Class_Layer>
    <Class_EngName>aircraft carrier</Class_EngName></HRSC_Class>
  <HRSC_Class><Class_ID>100000003</Class_ID><HRS_Class_ID>100000001</HRS_Class_ID><Class_Layer>1</Class_Layer>
    <Class_EngName>warcraft</Class_EngName></HRSC_Class>
  <HRSC_Class><Class_ID>100000005</Class_ID><HRS_Class_ID>100000002</HRS_Class_ID><Class_Layer>2</Class_Layer>
    <Class_EngName>Nimitz</Class_EngName></HRSC_Class>
  <HRSC_Class><Class_ID>100000007</Class_ID><HRS_Class_ID>100000003</HRS_Class_ID><Class_Layer>2</Class_Layer>
    <Class_EngName>Arleigh Burke</Class_EngName></HRSC_Class>
</HRSC_Classes></sysdata>
"""


def hrsc_object(class_id: str, cx, cy, w, h, angle, difficult: int = 0) -> str:
    return (f"<HRSC_Object><Object_ID>1</Object_ID><Class_ID>{class_id}</Class_ID><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><mbox_cx>{cx}</mbox_cx><mbox_cy>{cy}</mbox_cy><mbox_w>{w}</mbox_w>"
            f"<mbox_h>{h}</mbox_h><mbox_ang>{angle!r}</mbox_ang><header_x>0</header_x><header_y>0</header_y>"
            "</HRSC_Object>")  # fmt: skip


def hrsc_image(objects: list[str], annotated: int = 1) -> str:
    return (f'<?xml version="1.0"?>\n<HRSC_Image><Img_ID>x</Img_ID><Img_FileFmt>bmp</Img_FileFmt>'
            f"<Img_SizeWidth>200</Img_SizeWidth><Img_SizeHeight>160</Img_SizeHeight><Annotated>{annotated}</Annotated>"
            f"<HRSC_Objects>{''.join(objects)}</HRSC_Objects></HRSC_Image>")  # fmt: skip


@pytest.fixture
def hrsc(tmp_path) -> Path:
    """MMRotate's HRSC2016 layout: FullDataSet/{AllImages,Annotations}, ImageSets/*.txt, sysdata.xml."""
    root = tmp_path / "HRSC2016"
    full = root / "FullDataSet"
    write(full / "sysdata.xml", SYSDATA)
    a, b = math.atan2(3, 4), math.atan2(4, 3)  # cos/sin 0.8/0.6 and 0.6/0.8: corners on the half-pixel grid
    write(full / "Annotations" / "100000001.xml", hrsc_image([
        hrsc_object("100000001", 100, 50, 40, 20, 0.0),
        hrsc_object("100000005", 100, 100, 50, 25, a),
        hrsc_object("100000007", 100, 100, 50, 25, -a, difficult=1),
        hrsc_object("100000002", 100, 100, 50, 25, b),
        hrsc_object("100000003", 100, 100, -4, 25, 0.0),
    ]))  # fmt: skip
    write(full / "Annotations" / "100000002.xml", hrsc_image([]))  # an image without ships
    write(full / "Annotations" / "100000003.xml", hrsc_image([], annotated=0))
    for stem in ("100000001", "100000002", "100000003"):
        image(full / "AllImages" / f"{stem}.bmp", 200, 160)
    write(root / "ImageSets" / "trainval.txt", "100000001\n100000003\n")
    write(root / "ImageSets" / "test.txt", "100000002\n100000099\n")
    write(root / "ImageSets" / "train.txt", "100000001\n")
    return root


# mbox (100, 50, 40, 20, 0): v1 = (20, 0), v2 = (0, 10): c-v1-v2 = (80, 40), c+v1-v2 = (120, 40), ...
LINE_ANGLE_0 = "80 40 120 40 120 60 80 60"
# mbox (100, 100, 50, 25, atan2(3, 4)): v1 = 25 (0.8, 0.6) = (20, 15), v2 = 12.5 (-0.6, 0.8) = (-7.5, 10):
# (87.5, 75), (127.5, 105), (112.5, 125), (72.5, 95). A positive angle turns the w side clockwise on screen
# (y down): p2 is lower than p1. The horizontal box is [72.5, 127.5] x [75, 125]; distance sums to its
# corners TL, TR, BR, BL: starting at p1 15+30+15+30 = 90, at p4 20+40+20+40 = 120, at p2/p3 more: p1 first.
LINE_POSITIVE = "87.5 75 127.5 105 112.5 125 72.5 95"
# -atan2(3, 4): v1 = (20, -15), v2 = (7.5, 10): (72.5, 105), (112.5, 75), (127.5, 95), (87.5, 125); sums from
# p1 30+15+30+15 = 90, from p2 40+20+40+20 = 120: p1 first.
LINE_NEGATIVE = "72.5 105 112.5 75 127.5 95 87.5 125"
# atan2(4, 3): v1 = (15, 20), v2 = (-10, 7.5): (95, 72.5), (125, 112.5), (105, 127.5), (75, 87.5); sums from p1
# 20+40+20+40 = 120, from p4 15+30+15+30 = 90: the best begin point is p4, the order p4 p1 p2 p3.
LINE_REORDERED = "75 87.5 95 72.5 125 112.5 105 127.5"


def test_hrsc_level_1_lines_angle_convention_and_best_begin_point(hrsc, tmp_path):
    dst = tmp_path / "out"
    summary = convert("hrsc2016", hrsc, dst)
    assert lines(dst / "trainval" / "labelTxt" / "100000001.txt") == [
        f"{LINE_ANGLE_0} ship 0", f"{LINE_POSITIVE} ship 0", f"{LINE_NEGATIVE} ship 1", f"{LINE_REORDERED} ship 0",
    ]  # fmt: skip
    # an image without objects: a 0-byte label file; the unannotated one is left out with a note
    assert (dst / "test" / "labelTxt" / "100000002.txt").read_bytes() == b""
    assert sorted(p.name for p in (dst / "trainval" / "images").iterdir()) == ["100000001.bmp"]
    assert (dst / "trainval" / "images" / "100000001.bmp").read_bytes() == (
        hrsc / "FullDataSet" / "AllImages" / "100000001.bmp").read_bytes()  # fmt: skip
    assert (dst / "classes.txt").read_text() == "ship\n"
    # default splits: trainval and test (not train, a subset of trainval)
    assert sorted(summary.stats) == ["test", "trainval"] and not (dst / "train").exists()
    assert summary.total.images == 2 and summary.total.empty_images == 1 and summary.total.difficult == 1
    assert summary.total.skipped_objects == 1
    assert any("100000001.xml: object 5: mbox_w and mbox_h must be positive" in p for p in summary.problems)
    assert any("test.txt: 100000099: no image" in p for p in summary.problems)
    assert any("100000003.xml: not annotated (Annotated 0); image skipped" in n for n in summary.notes)


def test_prepare_dota_splits_the_converted_trainval_and_test(hrsc, tmp_path):
    from rotld_cli.dota.prepare import PrepareOptions, prepare_dota
    from rotld_cli.dota.split import SplitParams

    convert("hrsc2016", hrsc, tmp_path / "dota")
    options = PrepareOptions(split=SplitParams(sizes=(256,), gaps=(0,), padding=False), classes=("ship",))
    summary = prepare_dota(tmp_path / "dota", tmp_path / "split", options)
    assert sorted(summary.stats) == ["test", "trainval"] and summary.stats["trainval"].annotations["ship"] == 4
    annfile = tmp_path / "split" / "trainval" / "annfiles" / "100000001__256__0___0.txt"
    second = [float(v) for v in lines(annfile)[1].split()[:8]]
    assert second == [float(v) for v in LINE_POSITIVE.split()]  # the whole image: one window, nothing shifted


def test_hrsc_levels_2_and_3_name_classes_by_the_datasets_sysdata(hrsc, tmp_path):
    level3 = convert("hrsc2016", hrsc, tmp_path / "l3", source=SourceOptions(level=3))
    names = [line.split()[8] for line in lines(tmp_path / "l3" / "trainval" / "labelTxt" / "100000001.txt")]
    assert names == ["ship", "Nimitz", "Arleigh-Burke", "aircraft-carrier"]  # each object's own (finest) class
    assert level3.classes == ("ship", "aircraft-carrier", "warcraft", "Nimitz", "Arleigh-Burke")  # Class_ID order
    convert("hrsc2016", hrsc, tmp_path / "l2", source=SourceOptions(level=2))
    names = [line.split()[8] for line in lines(tmp_path / "l2" / "trainval" / "labelTxt" / "100000001.txt")]
    assert names == ["ship", "aircraft-carrier", "warcraft", "aircraft-carrier"]  # layer-2 types -> their class
    assert (tmp_path / "l2" / "classes.txt").read_text() == "ship\naircraft-carrier\nwarcraft\n"


def test_hrsc_without_sysdata_for_level_3_is_one_line(hrsc, tmp_path, capsys):
    (hrsc / "FullDataSet" / "sysdata.xml").unlink()
    code, _, err = run_main(["convert", "hrsc2016", str(hrsc), str(tmp_path / "o"), "--level", "3"], capsys)
    assert code == 2 and "--level 3: the class names come from the dataset's sysdata.xml" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------
# DIOR-R


def dior_object(name: str, corners: list[int] | None, difficult: int = 0) -> str:
    tags = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
            "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")  # fmt: skip
    box = ("<robndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, corners)) + "</robndbox>"
           if corners else "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>")  # fmt: skip
    return (f"<object><type>robndbox</type><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult>{box}<angle>0</angle></object>")  # fmt: skip


def dior_xml(objects: list[str]) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<annotation><filename>x.jpg</filename><size><width>800</width>'
        f"<height>800</height><depth>3</depth></size><segmented>0</segmented>{''.join(objects)}</annotation>"
    )


@pytest.fixture
def dior(tmp_path) -> Path:
    root = tmp_path / "DIOR"
    ann = root / "Annotations" / "Oriented Bounding Boxes"
    write(ann / "00001.xml", dior_xml([
        dior_object("golffield", [133, 237, 684, 237, 684, 672, 133, 672]),
        # a rotated box: its "left_top" tag is the topmost corner, not the top-left one; kept in tag order
        dior_object("Expressway-Service-area", [50, 10, 90, 50, 50, 90, 10, 50], difficult=1),
        dior_object("vehicle", None),
        dior_object("helipad", [1, 2, 3, 2, 3, 4, 1, 4]),
    ]))  # fmt: skip
    write(ann / "00002.xml", dior_xml([dior_object("windmill", [5, 6, 7, 6, 7, 8, 5, 8])]))
    write(ann / "11726.xml", dior_xml([]))
    image(root / "JPEGImages-trainval" / "00001.jpg")
    image(root / "JPEGImages-trainval" / "00002.jpg")
    image(root / "JPEGImages-test" / "11726.jpg")
    write(root / "ImageSets" / "Main" / "train.txt", "00001\n")
    write(root / "ImageSets" / "Main" / "val.txt", "00002\n")
    write(root / "ImageSets" / "Main" / "test.txt", "11726\n")
    return root


def test_dior_corner_tags_lower_case_classes_and_trainval(dior, tmp_path):
    dst = tmp_path / "out"
    summary = convert("dior-r", dior, dst)
    assert lines(dst / "trainval" / "labelTxt" / "00001.txt") == [
        "133 237 684 237 684 672 133 672 golffield 0",
        "50 10 90 50 50 90 10 50 expressway-service-area 1",
    ]
    assert lines(dst / "trainval" / "labelTxt" / "00002.txt") == ["5 6 7 6 7 8 5 8 windmill 0"]
    assert (dst / "test" / "labelTxt" / "11726.txt").read_bytes() == b""
    assert sorted(summary.stats) == ["test", "trainval"]  # trainval = train.txt + val.txt
    assert dict(summary.total.outside) == {"helipad": 1}  # counted and named, not written, not an error
    assert summary.problems == [f"{dior / 'Annotations' / 'Oriented Bounding Boxes' / '00001.xml'}: object 3: "
                                "no <robndbox> (a horizontal-box annotation?); object skipped"]  # fmt: skip
    assert len(lines(dst / "classes.txt")) == 20


# ------------------------------------------------------------------------------------------
# FAIR1M


def fair1m_object(name: str, points: list[tuple[float, float]]) -> str:
    pts = "".join(f"<point>{x:.6f},{y:.6f}</point>" for x, y in points)
    return (f"<object><coordinate>pixel</coordinate><type>rectangle</type><description>None</description>"
            f"<possibleresult><name>{name}</name><probability>1</probability></possibleresult>"
            f"<points>{pts}</points></object>")  # fmt: skip


def fair1m_xml(objects: list[str]) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<annotation><source><filename>0.tif</filename>'
            "<origin>GF2/GF3</origin></source><research><version>2.0</version></research>"
            f"<size><width>1000</width><height>1000</height><depth>3</depth></size><objects>{''.join(objects)}"
            "</objects></annotation>")  # fmt: skip


@pytest.fixture
def fair1m(tmp_path) -> Path:
    root = tmp_path / "FAIR1M2.0"
    box = [(473.5, 571.0), (489.0, 571.0), (489.0, 587.25), (473.5, 587.25)]
    write(root / "train" / "labelXml" / "0.xml", fair1m_xml([
        fair1m_object("Passenger Ship", [*box, box[0]]),  # the polygon closes on its first point
        fair1m_object("Small Car", box[::-1]),  # 4 points, no repeat: read as the corners too
        fair1m_object("Dump Truck", [*box, (1.0, 2.0)]),  # a 5th point that is not the first
    ]))  # fmt: skip
    image(root / "train" / "images" / "0.tif")
    write(root / "validation" / "labelXml" / "7.xml", fair1m_xml([]))
    image(root / "validation" / "images" / "7.tif")
    image(root / "test" / "images" / "9.tif")  # the test split: images only
    return root


def test_fair1m_closing_point_tokens_and_an_unlabelled_test_split(fair1m, tmp_path):
    dst = tmp_path / "out"
    summary = convert("fair1m", fair1m, dst)
    assert lines(dst / "train" / "labelTxt" / "0.txt") == [
        "473.5 571 489 571 489 587.25 473.5 587.25 Passenger-Ship 0",
        "473.5 587.25 489 587.25 489 571 473.5 571 Small-Car 0",
    ]
    assert (dst / "val" / "labelTxt" / "7.txt").read_bytes() == b""  # validation -> val
    assert (dst / "test" / "images" / "9.tif").is_file() and not (dst / "test" / "labelTxt").exists()
    assert summary.problems == [
        f"{fair1m / 'train' / 'labelXml' / '0.xml'}: object 3: expected 4 corners and the "
        "closing repeat of the first; its 5th point does not repeat the first; object skipped"
    ]
    assert len(summary.classes) == 37


# ------------------------------------------------------------------------------------------
# YOLO-OBB


@pytest.fixture
def yolo(tmp_path) -> Path:
    root = tmp_path / "dota8"
    write(root / "dota8.yaml", "path: .\ntrain: images/train\nval: images/val\n"
                               "names:\n  0: plane\n  1: storage tank\n")  # fmt: skip
    image(root / "images" / "train" / "a.jpg", 200, 100)
    write(root / "labels" / "train" / "a.txt",
          "0 0.1 0.2 0.3 0.2 0.3 0.4 0.1 0.4\n1 0.5 0.5 0.625 0.5 0.625 0.75 0.5 0.75\n"
          "0 0.5 0.5 0.1 0.1\n7 0 0 0 0 0 0 0 0\n")  # fmt: skip
    image(root / "images" / "val" / "b.png", 80, 40)  # no label file: a background image
    return root


def test_yolo_obb_import_scales_by_the_image_size(yolo, tmp_path):
    dst = tmp_path / "out"
    summary = convert("yolo-obb", yolo / "dota8.yaml", dst)
    # x * 200, y * 100: (0.1, 0.2) -> (20, 20), ...; (0.625, 0.75) -> (125, 75)
    assert lines(dst / "train" / "labelTxt" / "a.txt") == [
        "20 20 60 20 60 40 20 40 plane 0", "100 50 125 50 125 75 100 75 storage-tank 0",
    ]  # fmt: skip
    assert (dst / "val" / "labelTxt" / "b.txt").read_bytes() == b""
    label = yolo / "labels" / "train" / "a.txt"
    assert summary.problems == [
        f"{label}:3: expected 'class_index x1 y1 x2 y2 x3 y3 x4 y4', got 5 fields (a detection line `class x y w h`, "
        "not OBB); line skipped",
        f"{label}:4: class index 7 outside 0..1; line skipped",
    ]
    assert (dst / "classes.txt").read_text() == "plane\nstorage-tank\n"


def dota_dataset(root: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """train/val with random quads (floats, inside the image) on images of odd sizes."""
    sizes = {}
    for split, stems in (("train", ["P1", "P2"]), ("val", ["P3"])):
        for k, stem in enumerate(stems):
            width, height = 333 + 17 * k, 217 + 5 * k
            sizes[stem] = (width, height)
            image(root / split / "images" / f"{stem}.png", width, height)
            rows = []
            for n in range(5):
                xs, ys = rng.uniform(0, width, 4), rng.uniform(0, height, 4)
                poly = " ".join(f"{x:.3f} {y:.3f}" for x, y in zip(xs, ys))
                rows.append(f"{poly} {['plane', 'ship', 'harbor'][n % 3]} {n % 2}")
            write(root / split / "labelTxt" / f"{stem}.txt", "imagesource:GoogleEarth\ngsd:0.5\n" + "\n".join(rows))
    return sizes


def test_yolo_obb_round_trip_returns_the_polygons_to_1e6_of_the_image_size(tmp_path):
    sizes = dota_dataset(tmp_path / "DOTA", np.random.default_rng(0))
    yolo_dir, back = tmp_path / "yolo", tmp_path / "back"
    exported = convert("dota", tmp_path / "DOTA", yolo_dir, to="yolo-obb")
    assert exported.total.objects["ship"] == 6 and exported.total.difficult == 6  # 3 images x (n = 1, 3)
    data = yaml.safe_load((yolo_dir / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val" and "path" not in data
    assert data["names"][0] == "plane" and data["names"][12] == "harbor" and len(data["names"]) == 15
    # the YOLO line is the DOTA corner divided by the image's width (x) or height (y)
    first = lines(tmp_path / "DOTA" / "train" / "labelTxt" / "P1.txt")[2].split()
    yolo_first = lines(yolo_dir / "labels" / "train" / "P1.txt")[0].split()
    width, height = sizes["P1"]
    assert yolo_first[0] == "0"
    for k, (dota_v, yolo_v) in enumerate(zip(first[:8], yolo_first[1:])):
        assert float(yolo_v) == pytest.approx(float(dota_v) / (width if k % 2 == 0 else height), abs=1e-8)
    convert("yolo-obb", yolo_dir, back)
    for split, stem in (("train", "P1"), ("train", "P2"), ("val", "P3")):
        src = read_label_file(tmp_path / "DOTA" / split / "labelTxt" / f"{stem}.txt").objects
        out = read_label_file(back / split / "labelTxt" / f"{stem}.txt").objects
        assert [o.name for o in out] == [o.name for o in src]
        scale = np.tile(sizes[stem], 4)
        error = np.abs(np.array([o.poly for o in out]) - np.array([o.poly for o in src])) / scale
        assert error.max() <= 1e-6, (stem, error.max())


def test_yolo_obb_export_clips_corners_outside_the_image_and_says_so(tmp_path):
    root = tmp_path / "DOTA"
    image(root / "train" / "images" / "P1.png", 100, 50)
    write(root / "train" / "labelTxt" / "P1.txt", "-10 5 50 5 50 25 -10 25 plane 0\n")
    summary = convert("dota", root, tmp_path / "yolo", to="yolo-obb")
    assert lines(tmp_path / "yolo" / "labels" / "train" / "P1.txt") == ["0 0 0.1 0.5 0.1 0.5 0.5 0 0.5"]
    assert summary.notes == [
        f"{root / 'train' / 'images' / 'P1.png'}: 1 object(s) with corners outside the image: "
        "clipped to its border (Ultralytics refuses coordinates outside 0..1)"
    ]


# ------------------------------------------------------------------------------------------
# The run: resume, stale outputs, refusals, the source untouched


def test_a_rerun_resumes_redoes_changed_images_and_removes_those_that_left(dior, tmp_path):
    before = tree_digest(dior)
    dst = tmp_path / "out"
    convert("dior-r", dior, dst)
    again = convert("dior-r", dior, dst)
    assert again.resumed == 3 and again.total.images == 3 and again.total.outside == {"helipad": 1}
    assert again.problems and "object 3: no <robndbox>" in again.problems[0]  # reported again when resumed
    ann = dior / "Annotations" / "Oriented Bounding Boxes" / "00002.xml"
    write(
        ann, dior_xml([dior_object("windmill", [1, 1, 2, 1, 2, 2, 1, 2]), dior_object("dam", [0, 0, 4, 0, 4, 4, 0, 4])])
    )
    os.utime(ann, ns=(1, 1))  # a new signature even within the file system's time resolution
    third = convert("dior-r", dior, dst)
    assert third.resumed == 2
    assert lines(dst / "trainval" / "labelTxt" / "00002.txt") == ["1 1 2 1 2 2 1 2 windmill 0", "0 0 4 0 4 4 0 4 dam 0"]
    write(dior / "ImageSets" / "Main" / "val.txt", "")  # 00002 leaves the dataset
    fourth = convert("dior-r", dior, dst)
    assert fourth.removed_stale == 1
    assert not (dst / "trainval" / "labelTxt" / "00002.txt").exists()
    assert not (dst / "trainval" / "images" / "00002.jpg").exists()
    assert (dst / "trainval" / "labelTxt" / "00001.txt").exists()
    manifest = json.loads((dst / "rotld-convert.json").read_text())
    assert manifest["format"] == "rotld-convert/1" and manifest["splits"]["trainval"]["images"] == 1
    assert manifest["complete"] is False  # the robndbox-less object is still a problem
    changed = {k for k, v in tree_digest(dior).items() if before.get(k) != v}
    assert changed == {"Annotations/Oriented Bounding Boxes/00002.xml", "ImageSets/Main/val.txt"}  # the test's edits


def test_refusals_keep_the_source_and_other_files_safe(dior, tmp_path, capsys):
    before = tree_digest(dior)
    foreign = tmp_path / "foreign"
    write(foreign / "notes.txt", "mine")
    cases = [
        (["convert", "dior-r", str(dior), str(foreign)], "is not empty and has no rotld-convert.json"),
        (["convert", "dior-r", str(dior), str(dior)], "must be a folder outside SRC"),
        (["convert", "dior-r", str(dior), str(dior / "dota")], "must be a folder outside SRC"),
        (["convert", "dior-r", str(dior), str(tmp_path)], "must be a folder outside SRC"),
        (["convert", "hrsc2016", str(dior), str(tmp_path / "o")], "expected FullDataSet/"),
        (["convert", "dior-r", str(dior), str(tmp_path / "o"), "--level", "2"], "--level and --sysdata apply to"),
        (["convert", "dota", str(dior), str(tmp_path / "o")], "SRC is already dota"),
        (["convert", "dior-r", str(dior), str(tmp_path / "o"), "--splits", "val2"], "--splits: no split 'val2'"),
        (["convert", "dior-r", str(dior), str(tmp_path / "o"), "--classes", "a,a"], "--classes: a given twice"),
    ]
    for argv, message in cases:
        code, _, err = run_main(argv, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert (foreign / "notes.txt").read_text() == "mine" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert tree_digest(dior) == before
    convert("dior-r", dior, tmp_path / "o")
    code, _, err = run_main(["convert", "dior-r", str(dior), str(tmp_path / "o"), "--classes", "golffield"], capsys)
    assert code == 2 and "made with other parameters (classes" in err and "pass --overwrite" in err
    code, _, _ = run_main(["convert", "dior-r", str(dior), str(tmp_path / "o"), "--classes", "golffield",
                           "--overwrite"], capsys)  # fmt: skip
    assert code == 1  # the robndbox-less object is still reported
    assert lines(tmp_path / "o" / "trainval" / "labelTxt" / "00001.txt") == [
        "133 237 684 237 684 672 133 672 golffield 0"
    ]
    assert lines(tmp_path / "o" / "trainval" / "labelTxt" / "00002.txt") == []
    assert tree_digest(dior) == before


def test_cli_reports_each_problem_once_per_file_and_exits_1(hrsc, tmp_path, capsys):
    code, out, err = run_main(["convert", "hrsc2016", str(hrsc), str(tmp_path / "o")], capsys)
    assert code == 1
    assert err.count("object 5: mbox_w and mbox_h must be positive") == 1
    assert "2 problem(s) in the input (each reported above); the rest was converted into" in err
    assert "images without objects" in out and "malformed objects skipped" in out
    code, out, _ = run_main(["convert", "hrsc2016", str(hrsc), str(tmp_path / "j"), "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["total"]["objects"] == {"ship": 4} and report["classes"] == ["ship"]
    assert report["written"] == ["classes.txt"]
