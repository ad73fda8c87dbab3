"""The DOTA layout every other rotld command reads: `<split>/images/` + `<split>/labelTxt/`.

`DotaTarget` writes it (each converted image's label file, `x1 y1 ... x4 y4 class difficult` per
object, 0 bytes for an image without objects, and `classes.txt`, the class list in label order
for `--classes-from`). `DotaReader` reads one, so a DOTA dataset can be exported to another
layout (`rotld convert dota SRC DST --to yolo-obb`). Format: the DOTA devkit's labelTxt
(https://captain-whu.github.io/DOTA/dataset.html), read with `dota.formats.read_label_file`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rotld_cli.datasets.records import (
    ImageLabels,
    LabelledObject,
    ListedClassesReader,
    SourceImage,
    coord_text,
    image_suffix,
)
from rotld_cli.dota.classes import DOTA_V1_0, write_classes_file
from rotld_cli.dota.formats import read_label_file
from rotld_cli.errors import UsageError, located

DOTA_SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"


def label_line(obj: LabelledObject) -> str:
    return " ".join(coord_text(v) for v in obj.poly) + f" {obj.name} {obj.difficulty}"


class DotaTarget:
    """DST/<split>/images/<id>.<ext>, DST/<split>/labelTxt/<id>.txt, DST/classes.txt."""

    name = "dota"

    def image_path(self, dst: Path, split: str, image_id: str, suffix: str) -> Path:
        return dst / split / "images" / f"{image_id}{suffix}"

    def label_path(self, dst: Path, split: str, image_id: str) -> Path:
        return dst / split / "labelTxt" / f"{image_id}.txt"

    def label_text(self, labels: ImageLabels, image: Path, classes: Sequence[str]) -> tuple[str, list[str]]:
        return "".join(label_line(obj) + "\n" for obj in labels.objects), []

    def finish(self, dst: Path, classes: Sequence[str], splits: Sequence[str]) -> list[Path]:
        path = dst / CLASSES_FILE
        write_classes_file(path, classes)
        return [path]


class DotaReader(ListedClassesReader):
    """A DOTA root (`train/ val/ test/`, each `images/` + `labelTxt/`) or one such split folder
    (its split is the folder's name). Bad label lines are skipped and named, as in prepare-dota.
    Classes: DOTA v1.0's unless `--classes` names others."""

    format = "dota"
    table = DOTA_V1_0

    def list_images(self) -> tuple[list[SourceImage], list[str]]:
        if (self.src / "images").is_dir():
            folders = [(self.src.resolve().name, self.src)]
        else:
            folders = [(name, self.src / name) for name in DOTA_SPLITS if (self.src / name / "images").is_dir()]
        if not folders:
            raise UsageError(f"SRC {self.src}: expected images/ (one split) or train/, val/, test/ with images/")
        items, problems = [], []
        for split, folder in folders:
            labels = folder / "labelTxt"
            stems = set()
            for path in sorted((folder / "images").iterdir()):
                if path.name.startswith(".") or not path.is_file() or image_suffix(path) is None:
                    continue
                stems.add(path.stem)
                label = labels / f"{path.stem}.txt"
                items.append(SourceImage(split, path.stem, path, label if label.is_file() else None))
            for label in sorted(labels.glob("*.txt")) if labels.is_dir() else []:
                if label.stem not in stems:
                    problems.append(located(label, None, f"label file without an image in {folder / 'images'}"))
        return items, problems

    def read(self, item: SourceImage) -> ImageLabels:
        assert item.annotation is not None
        parsed = read_label_file(item.annotation, strict=False)
        labels = ImageLabels(skipped=list(parsed.skipped))
        for obj in parsed.objects:
            labels.keep(LabelledObject(tuple(float(v) for v in obj.poly), obj.name, obj.difficulty), self._classes)
        return labels
