"""FAIR1M v1.0 / v2.0 (Sun et al., ISPRS J. 2022) -> DOTA layout.

Layout: every `labelXml/` folder under SRC with its sibling `images/` (v1.0: `train/part1/`,
`train/part2/`, ...; v2.0: `train/`, `validation/`); the split is the first folder below SRC
(`validation` is written as `val`, DOTA's name). An `images/` folder without `labelXml/` (the test
split) is converted unlabelled: images only.

Each `annotation/objects/object` names its class in `possibleresult/name` and its polygon in
`points/point`, each `x,y` in pixels (`coordinate` is `pixel`). The polygon repeats its first
point at the end to close it (5 points for a box); the repeat is dropped and the 4 corners keep
their order. Exactly 4 points (no repeat) are read as the corners too; any other count, or a
fifth point that is not the first, is skipped and named. Class names with spaces become tokens
(`Passenger Ship` -> `Passenger-Ship`, `dota.classes.FAIR1M`). FAIR1M has no difficult flag (0).
"""

from __future__ import annotations

from rotld_cli.datasets.records import (
    ImageLabels,
    LabelledObject,
    ListedClassesReader,
    SourceImage,
    finite_poly,
    image_suffix,
    parse_xml,
    xml_objects,
    xml_text,
)
from rotld_cli.dota.classes import FAIR1M, class_token
from rotld_cli.dota.formats import FormatError
from rotld_cli.errors import UsageError, located

SPLIT_NAMES = {"validation": "val"}


class Fair1mReader(ListedClassesReader):
    format = "fair1m"
    table = FAIR1M

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        folders = sorted(p for p in self.src.rglob("images") if p.is_dir())
        if not folders:
            raise UsageError(f"SRC {self.src}: no images/ folder (FAIR1M's layout: <split>/images + <split>/labelXml)")
        items, problems = [], []
        for images in folders:
            rel = images.parent.relative_to(self.src).parts
            split = SPLIT_NAMES.get(rel[0], rel[0]) if rel else self.src.resolve().name
            xml_dir = images.parent / "labelXml"
            stems = set()
            for image in sorted(images.iterdir()):
                if image.name.startswith(".") or not image.is_file() or image_suffix(image) is None:
                    continue
                stems.add(image.stem)
                annotation = xml_dir / f"{image.stem}.xml"
                if not xml_dir.is_dir():
                    items.append(SourceImage(split, image.stem, image, None))
                elif annotation.is_file():
                    items.append(SourceImage(split, image.stem, image, annotation))
                else:
                    problems.append(located(image, None, f"no annotation {annotation}; skipped"))
            for xml in sorted(xml_dir.glob("*.xml")) if xml_dir.is_dir() else []:
                if xml.stem not in stems:
                    problems.append(located(xml, None, f"annotation without an image in {images}"))
        return items, problems

    def read(self, item: SourceImage) -> ImageLabels:
        assert item.annotation is not None
        nodes = parse_xml(item.annotation).findall("objects/object")
        return xml_objects(nodes, item.annotation, _object, self._classes)


def _object(node, where: str) -> LabelledObject:
    name = xml_text(node, "possibleresult/name")
    if not name:
        raise FormatError(where, None, "no <possibleresult><name>")
    unit = xml_text(node, "coordinate")
    if unit is not None and unit.lower() != "pixel":
        raise FormatError(where, None, f"coordinates are {unit!r}, not pixel")
    points = []
    for point in node.findall("points/point"):
        text = (point.text or "").strip()
        x, _, y = text.partition(",")
        try:
            points.append((float(x), float(y)))
        except ValueError:
            raise FormatError(where, None, f"point {text!r} is not 'x,y'") from None
    if len(points) == 5 and points[4] == points[0]:
        points = points[:4]
    elif len(points) != 4:
        detail = "its 5th point does not repeat the first" if len(points) == 5 else f"got {len(points)} points"
        raise FormatError(where, None, f"expected 4 corners and the closing repeat of the first; {detail}")
    return LabelledObject(finite_poly([v for p in points for v in p], where), class_token(name))
