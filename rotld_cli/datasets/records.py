"""What flows through `rotld convert`: source images, their labelled objects, and the two interfaces
a format plugs into (a `DatasetReader` reads one, a `LayoutTarget` writes one).

Coordinates are pixels of the full image, corners in the source's order; class names are
label-line tokens (`dota.classes.class_token`). Engine-free.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rotld_cli.dota.formats import FormatError

CANONICAL_SUFFIX = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".tif": ".tif", ".tiff": ".tif", ".bmp": ".bmp"}
"""Image suffixes (any case) a converted dataset can hold, and the one written: the suffixes
`prepare-dota` reads (`.jpeg`/`.tiff` are the same bytes under its spelling)."""


@dataclass(frozen=True)
class SourceImage:
    """One image of the source and the file that labels it (None: an unlabelled image, e.g. a test
    split: only the image is written)."""

    split: str
    image_id: str
    image: Path
    annotation: Path | None


@dataclass(frozen=True)
class LabelledObject:
    """One object: 4 corners (x1, y1, ..., x4, y4) in pixels, its class token, its difficult flag."""

    poly: tuple[float, ...]
    name: str
    difficulty: int = 0


@dataclass
class ImageLabels:
    """The objects of one image; `skipped` holds one located message per object left out (malformed),
    `outside` counts the objects of classes outside the class list (left out by choice)."""

    objects: list[LabelledObject] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    outside: Counter = field(default_factory=Counter)

    def keep(self, obj: LabelledObject, classes: Sequence[str] | None) -> None:
        """Add `obj`, or count it as outside `classes`."""
        if classes is not None and obj.name not in classes:
            self.outside[obj.name] += 1
        else:
            self.objects.append(obj)


class SkippedImage(Exception):
    """`DatasetReader.read`: the source itself says this image is not usable (e.g. HRSC's
    `Annotated 0`); the image is left out with the message as a note, not as an error."""


class DatasetReader(Protocol):
    """A source format: which images there are, and the objects of each."""

    format: str
    default_splits: tuple[str, ...] | None  # converted without --splits (None: all)

    def params(self) -> dict[str, Any]:
        """What shapes the output besides the source (recorded in, and compared against, the manifest)."""

    def classes(self) -> tuple[str, ...]:
        """The class list, in label order (objects of other classes are counted, not written)."""

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        """Every image to convert, and the problems found by listing (one located message each)."""

    def read(self, item: SourceImage) -> ImageLabels:
        """The objects of one image; raises `FormatError` when its annotation cannot be read at all."""


class LayoutTarget(Protocol):
    """A destination layout: where an image and its labels go, how labels are written."""

    name: str

    def image_path(self, dst: Path, split: str, image_id: str, suffix: str) -> Path: ...

    def label_path(self, dst: Path, split: str, image_id: str) -> Path: ...

    def label_text(self, labels: ImageLabels, image: Path, classes: Sequence[str]) -> tuple[str, list[str]]:
        """The label file's content, and notes about what could not be written exactly."""

    def finish(self, dst: Path, classes: Sequence[str], splits: Sequence[str]) -> list[Path]:
        """Files describing the whole dataset (class list, dataset YAML); returns their paths."""


class ListedClassesReader:
    """The part of a `DatasetReader` most formats share: SRC, a class list (the format's table unless
    `--classes` replaces it), no parameters besides the classes."""

    format = ""
    default_splits: tuple[str, ...] | None = None
    table: tuple[str, ...] = ()

    def __init__(self, src: Path, classes: tuple[str, ...] | None = None) -> None:
        self.src = src
        self._classes = classes if classes is not None else self.table

    def params(self) -> dict[str, Any]:
        return {}

    def classes(self) -> tuple[str, ...]:
        return self._classes


# --------------------------------------------------------------------------------------------
# Helpers the readers share


def coord_text(value: float) -> str:
    """A pixel coordinate as label files hold it: at most 6 decimals, no trailing zeros (`80`, `103.5`)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def finite_poly(values: Sequence[float], where: str) -> tuple[float, ...]:
    """8 finite numbers, else FormatError naming `where`."""
    if len(values) != 8 or not all(math.isfinite(v) for v in values):
        raise FormatError(where, None, f"expected 8 finite corner coordinates, got {list(values)}")
    return tuple(float(v) for v in values)


def parse_xml(path: Path) -> ET.Element:
    """The root of an XML annotation; FormatError naming the file (and line) when it does not parse."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise FormatError(path, line, f"not well-formed XML ({str(exc).split(':')[0]})") from None
    except OSError as exc:
        raise FormatError(path, None, f"cannot read: {exc.strerror or exc}") from None


def xml_objects(
    nodes: Sequence[ET.Element],
    annotation: Path,
    parse: Callable[[ET.Element, str], LabelledObject],
    classes: Sequence[str],
) -> ImageLabels:
    """Each XML object through `parse(node, "<file>: object N")`; one that raises FormatError is
    skipped with its message, one of another class counted (`ImageLabels.keep`)."""
    labels = ImageLabels()
    for k, node in enumerate(nodes, start=1):
        try:
            labels.keep(parse(node, f"{annotation}: object {k}"), classes)
        except FormatError as exc:
            labels.skipped.append(f"{exc}; object skipped")
    return labels


def xml_difficult(node: ET.Element, where: str) -> int:
    """The VOC-style `difficult` flag (0 when absent)."""
    return int(xml_number(node, "difficult", where)) if node.find("difficult") is not None else 0


def xml_number(node: ET.Element, tag: str, where: str) -> float:
    """`float(node.find(tag).text)`; a missing or non-numeric value is a FormatError naming `where` and the tag."""
    child = node.find(tag)
    text = child.text.strip() if child is not None and child.text is not None else None
    if text is None:
        raise FormatError(where, None, f"no <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise FormatError(where, None, f"<{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise FormatError(where, None, f"<{tag}> is not finite: {text!r}")
    return value


def xml_text(node: ET.Element, path: str) -> str | None:
    child = node.find(path)
    return child.text.strip() if child is not None and child.text is not None else None


def image_suffix(path: Path) -> str | None:
    """The suffix the converted copy gets (`.jpeg` -> `.jpg`), None for a format prepare-dota cannot read."""
    return CANONICAL_SUFFIX.get(path.suffix.lower())


def find_image(folders: Sequence[Path], stem: str) -> Path | None:
    """The image `stem.<any image suffix>` in the first folder that has one."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for suffix in CANONICAL_SUFFIX:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as a decoder shows the image: the header's size, swapped when its EXIF
    orientation turns it by 90° (as OpenCV and Ultralytics' `exif_size` do). Pillow reads only
    the header, so a 10,000² TIFF costs nothing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(0x0112)
            except Exception:  # a malformed EXIF block: the header size stands
                orientation = None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise FormatError(path, None, f"cannot read the image size ({exc})") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)
