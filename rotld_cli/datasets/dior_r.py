"""DIOR-R (Cheng et al., "Anchor-free oriented proposal generator", TGRS 2022; images of DIOR, Li et al.
2020) -> DOTA layout.

Layout (MMRotate 1.x `tools/data/dior/README.md`, `configs/_base_/datasets/dior.py`):
`JPEGImages-trainval/` and `JPEGImages-test/` (or one `JPEGImages/`), `Annotations/Oriented Bounding
Boxes/*.xml` (also spelt with underscores), `ImageSets/Main/{train,val,test}.txt`. The split
`trainval` is train.txt + val.txt (what MMRotate 1.x trains on, a ConcatDataset of the two) unless
a trainval.txt exists; without `--splits`, `trainval` and `test` are converted.

Each VOC-style `annotation/object` holds `name`, `difficult` and a `robndbox` of eight corner tags.
As MMRotate 1.x `DIORDataset.parse_data_info` (`mmrotate/datasets/dior.py`): the class is the
lower-cased `name` (the files spell e.g. `Expressway-Service-area`), the polygon is
`x_left_top, y_left_top, x_right_top, y_right_top, x_right_bottom, y_right_bottom, x_left_bottom,
y_left_bottom` in that order (the tag names, not the corners' positions on screen: a rotated box's
"left_top" need not be its top-left corner, and the order is kept as written), and the `angle` tag
is not read (the corners define the box). `difficult` becomes the DOTA difficult flag (MMRotate's
DIOR evaluation counts every object; so does `rotld evaluate --protocol dior`). An object without
`robndbox` (a horizontal-box file) is skipped and named.
"""

from __future__ import annotations

from pathlib import Path

from rotld_cli.datasets.records import (
    ImageLabels,
    LabelledObject,
    ListedClassesReader,
    SourceImage,
    find_image,
    parse_xml,
    xml_difficult,
    xml_number,
    xml_objects,
    xml_text,
)
from rotld_cli.dota.classes import DIOR_R, class_token
from rotld_cli.dota.formats import FormatError
from rotld_cli.errors import UsageError, located

CORNER_TAGS = ("x_left_top", "y_left_top", "x_right_top", "y_right_top",
               "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom")  # fmt: skip
ANNOTATION_DIRS = ("Oriented Bounding Boxes", "Oriented_Bounding_Boxes")
IMAGE_DIRS = ("JPEGImages-trainval", "JPEGImages-test", "JPEGImages")
SPLITS = ("train", "val", "test")


class DiorReader(ListedClassesReader):
    format = "dior-r"
    default_splits = ("trainval", "test")
    table = DIOR_R

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        annotations = self.src / "Annotations"
        ann_dir = next((annotations / d for d in ANNOTATION_DIRS if (annotations / d).is_dir()), None)
        sets = self.src / "ImageSets" / "Main"
        if ann_dir is None or not sets.is_dir():
            raise UsageError(
                f"SRC {self.src}: expected Annotations/Oriented Bounding Boxes/ and ImageSets/Main/ (DIOR-R's layout)"
            )
        lists = {s: _ids(sets / f"{s}.txt") for s in (*SPLITS, "trainval") if (sets / f"{s}.txt").is_file()}
        if "trainval" not in lists and ("train" in lists or "val" in lists):
            lists["trainval"] = list(dict.fromkeys(lists.get("train", []) + lists.get("val", [])))
        image_dirs = [self.src / d for d in IMAGE_DIRS]
        items, problems = [], []
        for split, ids in lists.items():
            for image_id in ids:
                image, annotation = find_image(image_dirs, image_id), ann_dir / f"{image_id}.xml"
                listed_in = sets / f"{split}.txt"
                if image is None:
                    problems.append(
                        located(listed_in, None, f"{image_id}: no image in {', '.join(IMAGE_DIRS)}; skipped")
                    )
                elif not annotation.is_file():
                    problems.append(located(listed_in, None, f"{image_id}: no annotation {annotation}; skipped"))
                else:
                    items.append(SourceImage(split, image_id, image, annotation))
        return items, problems

    def read(self, item: SourceImage) -> ImageLabels:
        assert item.annotation is not None
        return xml_objects(parse_xml(item.annotation).findall("object"), item.annotation, _object, self._classes)


def _object(node, where: str) -> LabelledObject:
    name = xml_text(node, "name")
    if not name:
        raise FormatError(where, None, "no <name>")
    box = node.find("robndbox")
    if box is None:
        raise FormatError(where, None, "no <robndbox> (a horizontal-box annotation?)")
    poly = tuple(xml_number(box, tag, where) for tag in CORNER_TAGS)
    return LabelledObject(poly, class_token(name.lower()), xml_difficult(node, where))


def _ids(path: Path) -> list[str]:
    return list(
        dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    )
