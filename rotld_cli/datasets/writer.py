"""`rotld convert`'s run: any `DatasetReader` into any `LayoutTarget`, resumably, never touching the source.

One job per image: read its objects, write the label file and a copy (or hard link) of the image
atomically, then a completion marker recording both files and the source's signatures. A rerun
skips images whose marker, outputs and sources are unchanged, removes the outputs of images that
left the source (only files a marker records) and reports every problem again. DST must be new,
empty or an earlier `rotld convert` of the same parameters (`--overwrite` replaces one made with
others); it may not be SRC, lie inside it or contain it. `rotld-convert.json` records the
parameters, the counts per split and every problem, like prepare-dota's manifest.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rotld_cli import __version__
from rotld_cli.datasets.records import (
    DatasetReader,
    ImageLabels,
    LayoutTarget,
    SkippedImage,
    SourceImage,
    image_suffix,
    relative,
)
from rotld_cli.dota.formats import FormatError
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.fileio import atomic_path, atomic_write_text, exclusive_lock, file_signature
from rotld_cli.fileio import read_json_object as read_marker

log = logging.getLogger(__name__)

MANIFEST = "rotld-convert.json"
MANIFEST_FORMAT = "rotld-convert/1"
STATE_DIR = ".rotld-convert"  # lock + per-image completion markers; hidden, so image globs skip it


@dataclass(frozen=True)
class ConvertOptions:
    """How to run: which splits, hard links instead of copies, replacing a run made with other parameters."""

    splits: tuple[str, ...] | None = None
    link: bool = False
    overwrite: bool = False


@dataclass
class SplitStats:
    """Counts of one split (summed over its images): what the summary and the manifest show."""

    images: int = 0
    empty_images: int = 0
    objects: Counter = field(default_factory=Counter)  # written, per class
    difficult: int = 0
    outside: Counter = field(default_factory=Counter)  # objects of classes outside the list, per class
    skipped_objects: int = 0  # malformed objects left out

    def add(self, other: SplitStats) -> None:
        for name in ("images", "empty_images", "difficult", "skipped_objects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.objects.update(other.objects)
        self.outside.update(other.outside)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objects"] = dict(sorted(self.objects.items()))
        data["outside"] = dict(sorted(self.outside.items()))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitStats:
        plain = {k: int(v) for k, v in data.items() if k in ("images", "empty_images", "difficult", "skipped_objects")}
        return cls(**plain, objects=Counter(data.get("objects", {})), outside=Counter(data.get("outside", {})))


@dataclass
class ImageOutcome:
    """One image: its counts (None: not written), problems (exit 1) and notes (warnings)."""

    split: str
    image_id: str
    stats: SplitStats | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ConvertSummary:
    """The result of a run: counts per split (resumed images included), problems and notes."""

    dst: Path
    params: dict[str, Any]
    classes: tuple[str, ...]
    stats: dict[str, SplitStats]
    problems: list[str]
    notes: list[str]
    resumed: int
    removed_stale: int
    written: list[str]
    seconds: float

    @property
    def total(self) -> SplitStats:
        total = SplitStats()
        for stats in self.stats.values():
            total.add(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "dst": str(self.dst),
            "params": self.params,
            "classes": list(self.classes),
            "splits": {name: stats.to_dict() for name, stats in self.stats.items()},
            "total": self.total.to_dict(),
            "resumed_images": self.resumed,
            "removed_stale_images": self.removed_stale,
            "problems": self.problems,
            "notes": self.notes,
            "written": self.written,
            "seconds": round(self.seconds, 3),
        }


ProgressFn = Callable[[Iterator[ImageOutcome], int], Iterator[ImageOutcome]]


def convert_dataset(
    reader: DatasetReader,
    target: LayoutTarget,
    src: Path,
    dst: Path,
    options: ConvertOptions,
    progress: ProgressFn | None = None,
) -> ConvertSummary:
    """Convert SRC (read by `reader`) into DST (laid out by `target`); resumes an interrupted run.

    Bad inputs become `problems` (the other images go on); the caller decides the exit status.
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    check_paths(src, dst)
    classes = reader.classes()
    params = {"format": reader.format, "target": target.name, **reader.params(), "classes": list(classes)}
    manifest = read_manifest(dst)
    replace = check_dst(dst, manifest, params, options.overwrite)
    items, listed = reader.list_images()
    items, repeated = unique_images(select_splits(items, options.splits, reader.default_splits))
    listed = listed + repeated
    dst.mkdir(parents=True, exist_ok=True)
    with output_lock(dst):
        if replace:
            for marker in sorted((dst / STATE_DIR / "done").glob("*/*.json")):
                remove_recorded(marker, dst)
            manifest = None
        manifest = manifest or {"splits": {}}
        manifest.update(format=MANIFEST_FORMAT, rotld_version=__version__, params=params, source=str(src.resolve()),
                        complete=False)  # fmt: skip
        write_manifest(dst, manifest)
        for problem in listed:
            log.warning(problem)
        splits = sorted({item.split for item in items})
        stats = {name: SplitStats() for name in splits}
        problems: dict[str, list[str]] = {name: [] for name in splits}
        notes: list[str] = []
        todo, resumed = [], 0
        for item in items:
            done = completed(item, dst)
            if done is None:
                todo.append(item)
            else:
                resumed += 1
                _record(done, stats, problems, notes)
        removed = remove_stale(dst, items, splits)
        if resumed:
            log.info(f"resuming: {resumed} image(s) already converted in {dst}")
        outcomes = (convert_image(item, reader, target, dst, classes, options.link) for item in todo)
        for outcome in progress(outcomes, len(todo)) if progress is not None and todo else outcomes:
            _record(outcome, stats, problems, notes)
        all_splits = sorted(set(manifest["splits"]) | set(splits))
        written = [relative(p, dst) for p in target.finish(dst, classes, all_splits)]
        for name in splits:
            manifest["splits"][name] = {**stats[name].to_dict(), "problems": sorted(problems[name])}
        total = SplitStats()
        for split_stats in manifest["splits"].values():
            total.add(SplitStats.from_dict(split_stats))
        manifest["total"] = total.to_dict()
        manifest["listing_problems"] = listed
        manifest["complete"] = not listed and not any(s["problems"] for s in manifest["splits"].values())
        manifest["seconds"] = round(time.perf_counter() - start, 3)
        write_manifest(dst, manifest)
    all_problems = listed + sorted(p for split_problems in problems.values() for p in split_problems)
    return ConvertSummary(dst, params, classes, stats, all_problems, notes, resumed, removed, written,
                          time.perf_counter() - start)  # fmt: skip


def _record(outcome: ImageOutcome, stats: dict[str, SplitStats], problems: dict[str, list[str]],
            notes: list[str]) -> None:  # fmt: skip
    if outcome.stats is not None:
        stats[outcome.split].add(outcome.stats)
    problems[outcome.split].extend(outcome.problems)
    notes.extend(outcome.notes)
    for message in outcome.problems + outcome.notes:
        log.warning(message)


# --------------------------------------------------------------------------------------------
# One image


def convert_image(item: SourceImage, reader: DatasetReader, target: LayoutTarget, dst: Path,
                  classes: tuple[str, ...], link: bool) -> ImageOutcome:  # fmt: skip
    """Labels, image copy, marker (last): a killed run leaves no marker for a half-written image."""
    marker = marker_path(dst, item)
    remove_recorded(marker, dst)  # an image about to be redone: its old outputs may be named differently
    suffix = image_suffix(item.image)
    if suffix is None:
        return ImageOutcome(
            item.split,
            item.image_id,
            problems=[
                located(item.image, None, f"{item.image.suffix} images cannot be split by prepare-dota; skipped")
            ],
        )
    labels, text, notes = ImageLabels(), None, []
    try:
        if item.annotation is not None:
            labels = reader.read(item)
            text, notes = target.label_text(labels, item.image, classes)
    except FormatError as exc:
        return ImageOutcome(item.split, item.image_id, problems=[f"{exc}; image skipped"])
    except SkippedImage as exc:
        return ImageOutcome(item.split, item.image_id, notes=[f"{exc}; image skipped"])
    image_out = target.image_path(dst, item.split, item.image_id, suffix)
    copy_image(item.image, image_out, link)
    outputs = [image_out]
    if text is not None:  # an unlabelled image (a test split) gets no label file
        outputs.append(target.label_path(dst, item.split, item.image_id))
        atomic_write_text(outputs[-1], text)
    stats = SplitStats(images=1, empty_images=int(not labels.objects), skipped_objects=len(labels.skipped))
    stats.objects.update(obj.name for obj in labels.objects)
    stats.difficult = sum(1 for obj in labels.objects if obj.difficulty)
    stats.outside.update(labels.outside)
    record = {
        "image_signature": file_signature(item.image),
        "annotation_signature": file_signature(item.annotation),
        "outputs": [relative(p, dst) for p in outputs],
        "stats": stats.to_dict(),
        "problems": labels.skipped,
        "notes": notes,
    }
    atomic_write_text(marker, json.dumps(record))
    return ImageOutcome(item.split, item.image_id, stats, list(labels.skipped), list(notes))


def copy_image(source: Path, final: Path, link: bool) -> None:
    """A byte copy (or, with `link`, a hard link where the file system allows one) renamed into place."""
    with atomic_path(final) as tmp:
        if link:
            tmp.unlink()
            try:
                os.link(source, tmp)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        shutil.copyfile(source, tmp)


def marker_path(dst: Path, item: SourceImage) -> Path:
    return dst / STATE_DIR / "done" / item.split / f"{item.image_id}.json"


def completed(item: SourceImage, dst: Path) -> ImageOutcome | None:
    """The recorded outcome of an image an earlier run finished, if its sources are unchanged and
    its outputs still exist; None means it has to be (re)done."""
    marker = read_marker(marker_path(dst, item))
    if marker is None:
        return None
    if marker.get("image_signature") != file_signature(item.image):
        return None
    if marker.get("annotation_signature") != file_signature(item.annotation):
        return None
    if not all(isinstance(p, str) and (dst / p).is_file() for p in marker.get("outputs", [])):
        return None
    return ImageOutcome(item.split, item.image_id, SplitStats.from_dict(marker.get("stats", {})),
                        list(marker.get("problems", [])), list(marker.get("notes", [])))  # fmt: skip


def remove_recorded(marker: Path, dst: Path) -> int:
    """Delete the outputs `marker` records (files under DST only), then the marker; 1 if there was one."""
    recorded = read_marker(marker)
    if recorded is None:
        marker.unlink(missing_ok=True)
        return 0
    root = dst.resolve()
    for name in recorded.get("outputs", []):
        path = (dst / name).resolve() if isinstance(name, str) else None
        if path is not None and path.is_relative_to(root) and path.is_file():
            path.unlink()
    marker.unlink(missing_ok=True)
    return 1


def remove_stale(dst: Path, items: list[SourceImage], splits: list[str]) -> int:
    """Outputs of images that are no longer in the converted splits of SRC."""
    current = {(item.split, item.image_id) for item in items}
    removed = 0
    for split in splits:
        for marker in sorted((dst / STATE_DIR / "done" / split).glob("*.json")):
            if (split, marker.stem) not in current:
                removed += remove_recorded(marker, dst)
    return removed


# --------------------------------------------------------------------------------------------
# The destination


def check_paths(src: Path, dst: Path) -> None:
    """SRC must exist; DST may not be SRC, lie inside it or hold it (the source is never written)."""
    if not src.is_dir():
        raise UsageError(f"SRC {src}: not a directory")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST {dst}: exists and is not a directory")
    s, d = src.resolve(), dst.resolve()
    if d == s or d.is_relative_to(s) or s.is_relative_to(d):
        raise UsageError(f"DST {dst}: must be a folder outside SRC {src} (the source is never written)")


def read_manifest(dst: Path) -> dict[str, Any] | None:
    path = dst / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RotldError(located(path, None, f"unreadable manifest ({exc}); choose a new DST")) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise UsageError(f"{path}: not a `rotld convert` manifest; choose a new DST")
    return data


def check_dst(dst: Path, manifest: dict[str, Any] | None, params: dict[str, Any], overwrite: bool) -> bool:
    """Refuse a foreign non-empty DST and mixed parameters; True when an earlier run is to be replaced."""
    if manifest is None:
        foreign = sorted(p.name for p in dst.iterdir() if p.name != STATE_DIR) if dst.is_dir() else []
        if foreign:
            raise UsageError(
                f"DST {dst} is not empty and has no {MANIFEST} from `rotld convert` (e.g. {foreign[0]}); "
                "choose a new or empty folder"
            )
        return False
    old = manifest.get("params", {})
    if old == params:
        return False
    if not overwrite:
        changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        detail = ", ".join(f"{k} {_short(old.get(k))} -> {_short(params.get(k))}" for k in changed)
        raise UsageError(f"{dst / MANIFEST}: made with other parameters ({detail}); pass --overwrite to replace it")
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def select_splits(items: list[SourceImage], requested: tuple[str, ...] | None,
                  defaults: tuple[str, ...] | None) -> list[SourceImage]:  # fmt: skip
    """The images of `--splits`, else of the reader's default splits that SRC has, else all."""
    found = sorted({item.split for item in items})
    if requested:
        unknown = [s for s in requested if s not in found]
        if unknown:
            raise UsageError(f"--splits: no split {unknown[0]!r} in SRC (found: {', '.join(found) or 'none'})")
        wanted = set(requested)
    else:
        wanted = {s for s in defaults or () if s in found} or set(found)
    return [item for item in items if item.split in wanted]


def unique_images(items: list[SourceImage]) -> tuple[list[SourceImage], list[str]]:
    """The first image of each (split, id); a second one (`a.jpg` beside `a.png`) is a problem, not an overwrite."""
    seen: dict[tuple[str, str], Path] = {}
    out, problems = [], []
    for item in items:
        key = (item.split, item.image_id)
        if key in seen:
            problems.append(located(item.image, None, f"another image has the same id ({seen[key].name}); skipped"))
            continue
        seen[key] = item.image
        out.append(item)
    return out, problems


def output_lock(dst: Path):
    """Refuse a second `rotld convert` writing into the same DST at the same time."""
    return exclusive_lock(dst / STATE_DIR / "lock", f"{dst}: another `rotld convert` is writing here")


def write_manifest(dst: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(dst / MANIFEST, json.dumps(manifest, indent=2) + "\n")
