"""Task1 files rebuilt from the per-image JSONs, so a resumed run writes exactly what one run would."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rotld_cli.dota.formats import TASK1_PREFIX, Task1Detections, class_from_task1_name
from rotld_cli.errors import RotldError
from rotld_cli.evaluation.results import write_task1_folder

IMAGES_DIR = "images"  # one <image id>.json per finished image


def task1_from_results(out_dir: Path, image_ids: Sequence[str], classes: Sequence[str]) -> dict[str, Task1Detections]:
    """Per class, the detections of `image_ids` (sorted by id, each by descending score, as `rotld
    evaluate`'s merge orders them)."""
    ids: dict[str, list[str]] = {c: [] for c in classes}
    scores: dict[str, list[float]] = {c: [] for c in classes}
    polys: dict[str, list[list[float]]] = {c: [] for c in classes}
    for image_id in sorted(image_ids):
        path = out_dir / IMAGES_DIR / f"{image_id}.json"
        try:
            detections = json.loads(path.read_text(encoding="utf-8"))["detections"]
        except (OSError, ValueError, KeyError) as exc:
            raise RotldError(f"{path}: cannot read the image's result ({exc})") from None
        for det in detections:
            ids[det["class"]].append(image_id)
            scores[det["class"]].append(det["score"])
            polys[det["class"]].append(det["polygon"])
    return {
        c: Task1Detections(ids[c], np.asarray(scores[c], dtype=np.float64), np.asarray(polys[c]).reshape(-1, 8))
        for c in classes
    }


def write_task1_from_results(out_dir: Path, image_ids: Sequence[str], classes: Sequence[str]) -> list[Path]:
    """`Task1_<class>.txt` for every class in `out_dir`; those of other classes (an older model's) go."""
    for path in out_dir.glob(f"{TASK1_PREFIX}*.txt"):
        if class_from_task1_name(path) not in classes:
            path.unlink()
    # the folder's manifest names the model's classes: `evaluate --results` takes its mean over them
    return write_task1_folder(out_dir, task1_from_results(out_dir, image_ids, classes), classes, "predicted")


def read_result(out_dir: Path, image_id: str) -> dict:
    """One finished image's result JSON (a RotldError naming the file when it cannot be read)."""
    path = out_dir / IMAGES_DIR / f"{image_id}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RotldError(f"{path}: cannot read the image's result ({exc})") from None
