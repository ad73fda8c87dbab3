"""The `--out` folder of `rotld predict`: claimed before anything is written, Task1 files rebuilt from its JSONs.

A predict folder holds `images/<id>.json` (one per finished image, written last and atomically),
the `Task1_<class>.txt` files and `rotld-task1.json` (the manifest `evaluate --results` reads:
kind "predicted", the classes, the files and the images). The Task1 files are rebuilt at the end
of every run from every JSON in the folder made with the run's model and settings, so a folder
filled by several runs (other images, a resumed run) holds all of them; a JSON made otherwise is
left out, and named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.dota.formats import TASK1_PREFIX, Task1Detections, class_from_task1_name
from rotld_cli.errors import RotldError, UsageError
from rotld_cli.evaluation.results import read_manifest, write_manifest, write_task1_folder
from rotld_cli.fileio import read_json_object

IMAGES_DIR = "images"  # one <image id>.json per finished image
KIND = "predicted"
RESULT_FORMAT = "rotld-predict/2"


def check_out_dir(out_dir: Path, sources: Sequence[Path]) -> None:
    """Refuse an `--out` that is not ours to write (before the model loads; nothing is written).

    Accepted: a new or empty folder, or one `rotld predict` wrote (its manifest says so). Refused:
    a file; a folder below a file; a folder holding other files; the folder of a SOURCE image (or
    the `images/` inside OUT being one), where the JSONs would land among the images.
    """
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "exists and is not a folder" if blocker == out_dir else f"{blocker} is a file, not a folder"
        raise UsageError(f"--out {out_dir}: {where}")
    resolved = out_dir.resolve()
    for source in sources:
        folder = source.resolve().parent
        if folder in (resolved, resolved / IMAGES_DIR):
            raise UsageError(f"--out {out_dir}: holds the SOURCE image {source} (predict writes images/, Task1 "
                             "files and a manifest there); choose a new folder")  # fmt: skip
    if out_dir.is_dir():
        manifest = read_manifest(out_dir)
        if manifest is not None and manifest.get("kind") == KIND:
            return
        entries = sorted(p.name for p in out_dir.iterdir())
        if entries:
            raise UsageError(f"--out {out_dir}: holds files rotld predict did not write ({entries[0]}"
                             + (f" and {len(entries) - 1} more" if len(entries) > 1 else "")
                             + "); choose a new or empty folder")  # fmt: skip


def claim_out_dir(out_dir: Path, sources: Sequence[Path], classes: Sequence[str]) -> None:
    """`check_out_dir`, then make `out_dir` a predict folder (its manifest first, so an interrupted
    first run can be resumed)."""
    check_out_dir(out_dir, sources)
    if read_manifest(out_dir) is not None:
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RotldError(f"--out {out_dir}: cannot create: {exc.strerror or exc}") from None
    write_manifest(out_dir, KIND, classes, [], {"images": []})


def result_path(out_dir: Path, image_id: str) -> Path:
    return out_dir / IMAGES_DIR / f"{image_id}.json"


def read_result(path: Path) -> dict | None:
    """A stored image result of this format, or None (absent, unreadable, another format)."""
    data = read_json_object(path)
    return data if data is not None and data.get("format") == RESULT_FORMAT else None


@dataclass
class Task1Rebuild:
    """What the Task1 files of a predict folder hold, and the JSONs left out of them (with why)."""

    written: list[Path]
    image_ids: list[str]
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (json file, reason)


def rebuild_task1(out_dir: Path, settings: dict, classes: Sequence[str]) -> Task1Rebuild:
    """`Task1_<class>.txt` for every class from every `images/*.json` made with `settings` (sorted by
    image id, each image's detections by descending score, as `rotld evaluate`'s merge orders them);
    Task1 files of classes the model does not have (an older model's) go."""
    ids: list[str] = []
    left_out: list[tuple[str, str]] = []
    per_class: dict[str, tuple[list[str], list[float], list[list[float]]]] = {c: ([], [], []) for c in classes}
    for path in sorted((out_dir / IMAGES_DIR).glob("*.json")):
        data = read_result(path)
        if data is None:
            left_out.append((path.name, "not a result of this rotld version"))
            continue
        if data.get("settings") != settings:
            left_out.append((path.name, "made with another model or other settings"))
            continue
        ids.append(path.stem)
        for det in data["detections"]:
            image_ids, scores, polys = per_class[det["class"]]
            image_ids.append(path.stem)
            scores.append(det["score"])
            polys.append(det["polygon"])
    dets = {
        c: Task1Detections(i, np.asarray(s, dtype=np.float64), np.asarray(p, dtype=np.float64).reshape(-1, 8))
        for c, (i, s, p) in per_class.items()
    }
    for path in out_dir.glob(f"{TASK1_PREFIX}*.txt"):
        if class_from_task1_name(path) not in classes:
            path.unlink()
    written = write_task1_folder(out_dir, dets, classes, KIND, extra={"images": ids})
    return Task1Rebuild(written, ids, left_out)
