"""HRSC2016 (Liu et al., ICPRAM 2017) -> DOTA layout.

Layouts read: MMRotate's (`FullDataSet/AllImages/*.bmp`, `FullDataSet/Annotations/*.xml`,
`ImageSets/{train,val,trainval,test}.txt`, as in MMRotate 0.3.4 `configs/_base_/datasets/hrsc.py`),
or the release's `Train/` and `Test/` folders (each `AllImages/` + `Annotations/`), which become the
splits `trainval` and `test`. Without `--splits`, `trainval` and `test` are converted (the splits
MMRotate's HRSC configs train and test on).

Each `HRSC_Image/HRSC_Objects/HRSC_Object` is a rotated box `mbox_cx, mbox_cy, mbox_w, mbox_h,
mbox_ang` (pixels; the angle in radians). Its corners follow MMRotate 0.3.4 `HRSCDataset`
(`mmrotate/datasets/hrsc.py`: `obb2poly_np(bbox, 'le90')`, i.e. `obb2poly_np_le90` then
`get_best_begin_point`): with v1 = w/2 (cos a, sin a) and v2 = h/2 (-sin a, cos a) in image
coordinates (y down, so a positive angle turns the w side clockwise on screen), the corners are
c - v1 - v2, c + v1 - v2, c + v1 + v2, c - v1 + v2, then rotated cyclically so that the sum of
their distances to the horizontal box's corners (xmin, ymin), (xmax, ymin), (xmax, ymax),
(xmin, ymax) is smallest (the first such rotation on ties). MMRotate does this in float32; here
it is float64 (the difference is below 1e-4 px). `difficult` becomes the DOTA difficult flag
(MMRotate's HRSCDataset does not read it; `rotld evaluate --protocol hrsc07|hrsc12` counts every
object, as MMRotate does). An image whose `Annotated` is 0 is left out (a note, not an error).

Classes (`--level`): 1 = every object is `ship` (MMRotate's `classwise=False`); 2 and 3 map each
object's `Class_ID` to a name through the dataset's own `sysdata.xml` (`HRSC_Classes/HRSC_Class`:
`Class_ID`, `Class_Layer` 0/1/2, the parent `HRS_Class_ID`, `Class_EngName`): an object labelled
at a finer layer is named by its ancestor at layer `level - 1`; one labelled only at a coarser
layer keeps that coarser name (as MMRotate's 31-class `classwise=True` list keeps `ship` and the
layer-1 names). Class lists are in `Class_ID` order; names are `Class_EngName` tokens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rotld_cli.datasets.records import (
    ImageLabels,
    LabelledObject,
    SkippedImage,
    SourceImage,
    find_image,
    parse_xml,
    xml_difficult,
    xml_number,
    xml_objects,
    xml_text,
)
from rotld_cli.dota.classes import HRSC2016, class_token
from rotld_cli.dota.formats import FormatError
from rotld_cli.errors import UsageError, located

LEVELS = (1, 2, 3)
IMAGESET_SPLITS = ("train", "val", "trainval", "test")
RELEASE_SPLITS = {"Train": "trainval", "Test": "test"}


def mbox_corners(cx: float, cy: float, w: float, h: float, angle: float) -> tuple[float, ...]:
    """The four corners of an HRSC `mbox`, in MMRotate's order (see the module docstring)."""
    cos, sin = math.cos(angle), math.sin(angle)
    v1 = (w / 2 * cos, w / 2 * sin)
    v2 = (-h / 2 * sin, h / 2 * cos)
    points = [
        (cx - v1[0] - v2[0], cy - v1[1] - v2[1]),
        (cx + v1[0] - v2[0], cy + v1[1] - v2[1]),
        (cx + v1[0] + v2[0], cy + v1[1] + v2[1]),
        (cx - v1[0] + v2[0], cy - v1[1] + v2[1]),
    ]
    return tuple(v for point in best_begin_point(points) for v in point)


def best_begin_point(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """mmrotate `get_best_begin_point_single`: the cyclic rotation closest to the horizontal box's corners."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box = [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    best, best_force = 0, math.inf
    for start in range(4):
        force = sum(math.dist(points[(start + k) % 4], box[k]) for k in range(4))
        if force < best_force:
            best, best_force = start, force
    return points[best:] + points[:best]


class HrscClassTable:
    """`sysdata.xml`: class id -> (layer, parent id, name token)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        root = parse_xml(path)
        self.entries: dict[str, tuple[int, str | None, str]] = {}
        for k, node in enumerate(root.iter("HRSC_Class"), start=1):
            where = f"{path}: HRSC_Class {k}"
            class_id, name = xml_text(node, "Class_ID"), xml_text(node, "Class_EngName")
            if not class_id or not name:
                raise FormatError(path, None, f"HRSC_Class {k}: needs Class_ID and Class_EngName")
            layer = int(xml_number(node, "Class_Layer", where))
            self.entries[class_id] = (layer, xml_text(node, "HRS_Class_ID") or None, class_token(name))
        if not self.entries:
            raise FormatError(path, None, "no HRSC_Classes/HRSC_Class entries (is it the dataset's sysdata.xml?)")

    def classes(self, level: int) -> tuple[str, ...]:
        """The names of layers 0 .. level-1, in Class_ID order; a name used twice is an error."""
        ids = sorted((i for i, (layer, _, _) in self.entries.items() if layer < level), key=_id_key)
        names = [self.entries[i][2] for i in ids]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise FormatError(self.path, None, f"two classes are named {repeated[0]!r}; rotld needs distinct names")
        return tuple(names)

    def name(self, class_id: str, level: int) -> str | None:
        """The object's name at `level` (its ancestor at layer level-1, or its own coarser name)."""
        seen = set()
        while class_id in self.entries and class_id not in seen:
            seen.add(class_id)
            layer, parent, name = self.entries[class_id]
            if layer < level:
                return name
            if parent is None:
                return None
            class_id = parent
        return None


def _id_key(class_id: str) -> tuple[int, str]:
    return (int(class_id), class_id) if class_id.isdigit() else (1 << 62, class_id)


class HrscReader:
    format = "hrsc2016"
    default_splits = ("trainval", "test")

    def __init__(self, src: Path, level: int = 1, sysdata: Path | None = None,
                 classes: tuple[str, ...] | None = None) -> None:  # fmt: skip
        if level not in LEVELS:
            raise UsageError(f"--level must be 1, 2 or 3 (HRSC2016's class levels), got {level}")
        self.src, self.level = src, level
        self.table: HrscClassTable | None = None
        if level > 1:
            found = sysdata or next((p for p in self._sysdata_candidates() if p.is_file()), None)
            if found is None:
                raise UsageError(
                    f"--level {level}: the class names come from the dataset's sysdata.xml, not found under {src} "
                    "(FullDataSet/sysdata.xml); pass --sysdata FILE"
                )
            if not found.is_file():
                raise UsageError(f"--sysdata {found}: no such file")
            self.table = HrscClassTable(found)
        self._classes = classes if classes is not None else (self.table.classes(level) if self.table else HRSC2016)

    def _sysdata_candidates(self) -> list[Path]:
        return [self.src / "FullDataSet" / "sysdata.xml", self.src / "sysdata.xml",
                *(self.src / folder / "sysdata.xml" for folder in RELEASE_SPLITS)]  # fmt: skip

    def params(self) -> dict[str, Any]:
        return {"level": self.level}

    def classes(self) -> tuple[str, ...]:
        return self._classes

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        full = self.src / "FullDataSet"
        if (full / "Annotations").is_dir():
            lists = [(s, self.src / "ImageSets" / f"{s}.txt") for s in IMAGESET_SPLITS]
            lists = [(s, p) for s, p in lists if p.is_file()]
            if not lists:
                raise UsageError(
                    f"SRC {self.src}: no ImageSets/{{{','.join(IMAGESET_SPLITS)}}}.txt beside FullDataSet/"
                )
            return _listed(lists, [full / "AllImages"], full / "Annotations")
        folders = [(split, self.src / name) for name, split in RELEASE_SPLITS.items()
                   if (self.src / name / "Annotations").is_dir()]  # fmt: skip
        if not folders:
            raise UsageError(
                f"SRC {self.src}: expected FullDataSet/{{AllImages,Annotations}} + ImageSets/ (MMRotate's layout) "
                "or Train/ and Test/ with AllImages/ + Annotations/ (the release's)"
            )
        items, problems = [], []
        for split, folder in folders:
            ids = sorted(p.stem for p in (folder / "Annotations").glob("*.xml"))
            found, missing = _pair(split, ids, [folder / "AllImages"], folder / "Annotations", folder / "Annotations")
            items += found
            problems += missing
        return items, problems

    def read(self, item: SourceImage) -> ImageLabels:
        assert item.annotation is not None
        root = parse_xml(item.annotation)
        objects = root.findall("HRSC_Objects/HRSC_Object")
        if xml_text(root, "Annotated") == "0" and not objects:
            raise SkippedImage(located(item.annotation, None, "not annotated (Annotated 0)"))
        return xml_objects(objects, item.annotation, self._object, self._classes)

    def _object(self, node, where: str) -> LabelledObject:
        cx, cy, w, h, angle = (xml_number(node, tag, where) for tag in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h",
                                                                       "mbox_ang"))  # fmt: skip
        if w <= 0 or h <= 0:
            raise FormatError(where, None, f"mbox_w and mbox_h must be positive, got {w:g} x {h:g}")
        return LabelledObject(mbox_corners(cx, cy, w, h, angle), self._name(node, where), xml_difficult(node, where))

    def _name(self, node, where: str) -> str:
        if self.table is None:
            return HRSC2016[0]
        class_id = xml_text(node, "Class_ID")
        name = self.table.name(class_id, self.level) if class_id else None
        if name is None:
            raise FormatError(where, None, f"Class_ID {class_id!r} is not in {self.table.path}")
        return name


def _listed(
    lists: list[tuple[str, Path]], image_dirs: list[Path], ann_dir: Path
) -> tuple[list[SourceImage], list[str]]:
    items, problems = [], []
    for split, path in lists:
        ids, seen = [], set()
        for raw in path.read_text(encoding="utf-8-sig").splitlines():
            image_id = raw.strip()
            if image_id and image_id not in seen:
                seen.add(image_id)
                ids.append(image_id)
        found, missing = _pair(split, ids, image_dirs, ann_dir, path)
        items += found
        problems += missing
    return items, problems


def _pair(split: str, ids: list[str], image_dirs: list[Path], ann_dir: Path,
          listed_in: Path) -> tuple[list[SourceImage], list[str]]:  # fmt: skip
    """Each id's image and annotation; an id missing either is a problem naming what is missing."""
    items, problems = [], []
    for image_id in ids:
        image, annotation = find_image(image_dirs, image_id), ann_dir / f"{image_id}.xml"
        if image is None:
            problems.append(located(listed_in, None, f"{image_id}: no image in {image_dirs[0]}; skipped"))
        elif not annotation.is_file():
            problems.append(located(listed_in, None, f"{image_id}: no annotation {annotation}; skipped"))
        else:
            items.append(SourceImage(split, image_id, image, annotation))
    return items, problems
