"""`RotldDOTADataset`: MMRotate 0.3.4's `DOTADataset` for any class list, with labels of other classes
counted and named instead of a `KeyError`.

`DOTADataset.load_annotations` looks every annfile line's class up in `{class: index}` of the
dataset's classes; a label naming any other class stops the run with a bare `KeyError: 'tank'`
(MMRotate issues #587 and #656: a user's own class list, or patches split with another one). Here
the annfiles are scanned first; the other names are appended to the class list for the duration of
MMRotate's own loader (so every other rule stays MMRotate's: `poly2obb_np`, the difficulty filter,
empty annfiles), their objects are then removed from the loaded annotations, and one warning says
how many objects of which classes were left out, naming a file. An image left without objects is
then dropped from training by MMRotate's `filter_empty_gt`, like any image without objects.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from typing import Any

import numpy as np
from mmrotate.datasets.builder import ROTATED_DATASETS
from mmrotate.datasets.dota import DOTADataset

log = logging.getLogger(__name__)

_PER_OBJECT = ("bboxes", "labels", "polygons")


def outside_labels(ann_folder: str, classes: tuple[str, ...]) -> tuple[Counter, dict[str, str]]:
    """Objects per class name outside `classes` in the annfiles of `ann_folder`, and a file naming each."""
    known = set(classes)
    counts: Counter = Counter()
    where: dict[str, str] = {}
    for path in sorted(glob.glob(ann_folder + "/*.txt")):
        with open(path) as fh:
            for line in fh:
                tokens = line.split()
                if len(tokens) >= 9 and tokens[8] not in known:
                    counts[tokens[8]] += 1
                    where.setdefault(tokens[8], path)
    return counts, where


@ROTATED_DATASETS.register_module()
class RotldDOTADataset(DOTADataset):
    """`DOTADataset` whose loader leaves out (and reports) labels of classes outside `classes`."""

    outside: dict[str, int]

    def load_annotations(self, ann_folder: str) -> list[dict[str, Any]]:
        known = tuple(self.CLASSES)
        self.outside = {}
        try:  # the usual case, every label a known class: the annfiles are read once, by MMRotate
            return super().load_annotations(ann_folder)
        except KeyError:  # MMRotate's class map has no such name: find them, then load with them
            pass
        counts, where = outside_labels(ann_folder, known)
        self.outside = dict(sorted(counts.items()))
        self.CLASSES = (*known, *sorted(counts))
        try:
            infos = super().load_annotations(ann_folder)
        finally:
            self.CLASSES = known
        for info in infos:
            labels = np.asarray(info["ann"].get("labels", []))
            keep = labels < len(known)
            if not keep.all():
                for key in _PER_OBJECT:
                    info["ann"][key] = np.asarray(info["ann"][key])[keep]
        names = ", ".join(f"{name} ({n}, e.g. {where[name]})" for name, n in self.outside.items())
        log.warning(f"{ann_folder}: {sum(counts.values())} object(s) of classes outside data.classes left out: "
                    f"{names}")  # fmt: skip
        return infos
