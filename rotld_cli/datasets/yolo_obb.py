"""Ultralytics' YOLO-OBB dataset format, both ways: `YoloObbReader` imports one, `YoloObbTarget` writes one.

The format (https://docs.ultralytics.com/datasets/obb/): one `<image stem>.txt` per image with a
line `class_index x1 y1 x2 y2 x3 y3 x4 y4` per object, the corners normalised by the image width
(x) and height (y) to 0..1; a dataset YAML names the classes (`names: {0: plane, ...}` or a list)
and the image folders (`train: images/train`, `val: ...`, `test: ...`; a folder, a `.txt` list of
images, or a list of either, relative to `path`, else to the YAML's folder). An image's label
file is its path with the last `/images/` replaced by `/labels/` and the suffix by `.txt`
(Ultralytics' `img2label_paths`); an image without one has no objects (a background image).

Import: SRC is the dataset YAML, a folder holding exactly one, or (with `--classes`) a folder
`images/<split>/` + `labels/<split>/` without YAML. Corners are scaled back by the image's size
(its header, `records.image_size`); lines that are not 9 numbers with a valid class index are
skipped and named. Class names with spaces become tokens (`storage tank` -> `storage-tank`).

Export (`--to yolo-obb`): DST/images/<split>/, DST/labels/<split>/, DST/data.yaml (no `path`:
Ultralytics then resolves the folders against the YAML's own folder). Ultralytics refuses a label
file with a coordinate outside 0..1, so such corners are clipped to the border and the file is
named in a note; YOLO-OBB has no difficult flag (difficult objects are written as the others).
Coordinates are written with 8 decimals, so DOTA -> YOLO -> DOTA returns every corner to
within 5e-9 of the image size plus the DOTA file's 1e-6 px rounding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rotld_cli.datasets.records import (
    ImageLabels,
    LabelledObject,
    SourceImage,
    image_size,
    image_suffix,
    relative,
)
from rotld_cli.dota.classes import check_class_list, class_token
from rotld_cli.dota.formats import FormatError, read_text_file
from rotld_cli.errors import UsageError, located
from rotld_cli.fileio import atomic_write_text

SPLIT_KEYS = ("train", "val", "test")
DATA_YAML = "data.yaml"


def label_path_of(image: Path) -> Path:
    """Ultralytics' `img2label_paths`: the last `/images/` becomes `/labels/`, the suffix `.txt`."""
    text = str(image)
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = text.rpartition(a)
    return Path((head + b + tail) if sep else text).with_suffix(".txt")


def _norm_text(value: float) -> str:
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class YoloObbReader:
    format = "yolo-obb"
    default_splits = None

    def __init__(self, src: Path, classes: tuple[str, ...] | None = None) -> None:
        self.data_yaml = _find_yaml(src)
        self.root = src.parent if src.is_file() else src
        data: dict[str, Any] = {}
        if self.data_yaml is not None:
            data = _load_yaml(self.data_yaml)
            base = data.get("path")
            if isinstance(base, str) and base:
                candidate = Path(base) if Path(base).is_absolute() else self.data_yaml.parent / base
                self.root = candidate if candidate.is_dir() else self.data_yaml.parent
            else:
                self.root = self.data_yaml.parent
            self.names = _names(data.get("names"), self.data_yaml)
        elif classes is None:
            raise UsageError(
                f"SRC {src}: no dataset YAML (names of the class indices); pass it as SRC or give --classes"
            )
        else:
            self.names = classes
        self.entries = {key: data[key] for key in SPLIT_KEYS if data.get(key)} if data else {
            key: f"images/{key}" for key in SPLIT_KEYS if (self.root / "images" / key).is_dir()}  # fmt: skip
        if not self.entries:
            raise UsageError(f"SRC {src}: no train/val/test images (a dataset YAML's keys, or images/<split>/)")
        self._classes = classes if classes is not None else self.names

    def params(self) -> dict[str, Any]:
        return {"names": list(self.names)}

    def classes(self) -> tuple[str, ...]:
        return self._classes

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        items, problems = [], []
        for split, entry in self.entries.items():
            for source in entry if isinstance(entry, list) else [entry]:
                found, missing = self._images(str(source))
                items += [SourceImage(split, p.stem, p, label_path_of(p)) for p in found]
                problems += missing
        return items, problems

    def _images(self, entry: str) -> tuple[list[Path], list[str]]:
        path = Path(entry) if Path(entry).is_absolute() else self.root / entry
        where = self.data_yaml or self.root
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file() and image_suffix(p) is not None), []
        if path.is_file() and path.suffix == ".txt":
            images, problems = [], []
            for lineno, raw in enumerate(read_text_file(path).splitlines(), start=1):
                line = raw.strip()
                if not line:
                    continue
                image = path.parent / line[2:] if line.startswith("./") else Path(line)
                image = image if image.is_absolute() else self.root / image
                if image.is_file():
                    images.append(image)
                else:
                    problems.append(located(path, lineno, f"no image {image}; skipped"))
            return images, problems
        return [], [located(where, None, f"{entry}: no such folder or image list; skipped")]

    def read(self, item: SourceImage) -> ImageLabels:
        assert item.annotation is not None
        labels = ImageLabels()
        if not item.annotation.is_file():
            return labels
        text = read_text_file(item.annotation)
        width, height = image_size(item.image)
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                labels.keep(self._object(line, width, height, item.annotation, lineno), self._classes)
            except FormatError as exc:
                labels.skipped.append(f"{exc}; line skipped")
        return labels

    def _object(self, line: str, width: int, height: int, path: Path, lineno: int) -> LabelledObject:
        tokens = line.split()
        if len(tokens) != 9:
            kind = " (a detection line `class x y w h`, not OBB)" if len(tokens) == 5 else ""
            raise FormatError(path, lineno, f"expected 'class_index x1 y1 x2 y2 x3 y3 x4 y4', got {len(tokens)} "
                                            f"fields{kind}")  # fmt: skip
        try:
            index, values = int(tokens[0]), [float(t) for t in tokens[1:]]
        except ValueError:
            raise FormatError(path, lineno, f"not a class index and 8 numbers: {line!r}") from None
        if not 0 <= index < len(self.names):
            raise FormatError(path, lineno, f"class index {index} outside 0..{len(self.names) - 1}")
        if not all(math.isfinite(v) for v in values):
            raise FormatError(path, lineno, f"coordinates must be finite numbers: {line!r}")
        poly = tuple(v * (width if k % 2 == 0 else height) for k, v in enumerate(values))
        return LabelledObject(poly, self.names[index])


class YoloObbTarget:
    """DST/images/<split>/<id>.<ext>, DST/labels/<split>/<id>.txt, DST/data.yaml."""

    name = "yolo-obb"

    def image_path(self, dst: Path, split: str, image_id: str, suffix: str) -> Path:
        return dst / "images" / split / f"{image_id}{suffix}"

    def label_path(self, dst: Path, split: str, image_id: str) -> Path:
        return dst / "labels" / split / f"{image_id}.txt"

    def label_text(self, labels: ImageLabels, image: Path, classes: Sequence[str]) -> tuple[str, list[str]]:
        if not labels.objects:
            return "", []
        width, height = image_size(image)
        index = {name: k for k, name in enumerate(classes)}
        lines, clipped = [], 0
        for obj in labels.objects:
            values = [v / (width if k % 2 == 0 else height) for k, v in enumerate(obj.poly)]
            inside = [min(max(v, 0.0), 1.0) for v in values]
            clipped += inside != values
            lines.append(f"{index[obj.name]} " + " ".join(_norm_text(v) for v in inside))
        notes = []
        if clipped:
            notes.append(located(image, None, f"{clipped} object(s) with corners outside the image: clipped to its "
                                              "border (Ultralytics refuses coordinates outside 0..1)"))  # fmt: skip
        return "".join(line + "\n" for line in lines), notes

    def finish(self, dst: Path, classes: Sequence[str], splits: Sequence[str]) -> list[Path]:
        data: dict[str, Any] = {split: f"images/{split}" for split in splits}
        if "train" not in data and "trainval" in data:
            data["train"] = data["trainval"]
        data["names"] = dict(enumerate(classes))
        path = dst / DATA_YAML
        header = "# Ultralytics YOLO-OBB dataset written by `rotld convert`; the folders are relative to this file.\n"
        atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return [path]


def _find_yaml(src: Path) -> Path | None:
    if src.is_file():
        return src
    if not src.is_dir():
        raise UsageError(f"SRC {src}: no such file or folder")
    found = sorted([*src.glob("*.yaml"), *src.glob("*.yml")])
    if len(found) > 1:
        names = ", ".join(relative(p, src) for p in found)
        raise UsageError(f"SRC {src}: several YAML files ({names}); pass the dataset YAML itself as SRC")
    return found[0] if found else None


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UsageError(located(path, mark.line + 1 if mark else None, f"invalid YAML ({exc})")) from None
    if not isinstance(data, dict):
        raise UsageError(located(path, None, "a dataset YAML must be a mapping (names:, train:, val:, ...)"))
    return data


def _names(value: Any, path: Path) -> tuple[str, ...]:
    """`names:` as a list or an {index: name} mapping with indices 0..n-1, as tokens."""
    if isinstance(value, dict):
        if sorted(value) != list(range(len(value))):
            raise UsageError(located(path, None, f"names: indices must be 0..{len(value) - 1}, got {sorted(value)}"))
        value = [value[k] for k in range(len(value))]
    if not isinstance(value, list) or not value:
        raise UsageError(located(path, None, "names: expected a list or a mapping of class indices to names"))
    return check_class_list((class_token(str(name)) for name in value), f"{path}: names")
