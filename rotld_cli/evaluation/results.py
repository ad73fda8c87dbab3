"""The inputs of an evaluation: Task1 result folders, the image list and the class set of the mean.

Reads and validates result files (one located error per problem, or skip-and-count with
--lenient), decides which images and which classes are evaluated, and guards the folders rotld
writes Task1 files into. Folders rotld writes carry a small manifest (`rotld-task1.json`) naming
the model's classes and the files it wrote: `evaluate --results` on such a folder averages over
the same classes as `evaluate CKPT`, and `--save-merged` never replaces a file it did not write.
Nothing here imports torch or the MMRotate engine.
"""

from __future__ import annotations

import difflib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rotld_cli.dota.classes import CLASSES_BY_VERSION, DOTA_V1_0, DOTA_V2_0, classes_for
from rotld_cli.dota.formats import (
    TASK1_PREFIX,
    TEXT_ENCODING,
    Task1Detections,
    class_from_task1_name,
    format_task1_line,
    parse_task1_text,
    read_text_file,
    write_task1_files,
)
from rotld_cli.dota.merge import split_patch_id
from rotld_cli.errors import RotldError, UsageError, located
from rotld_cli.evaluation.protocols import EvalProtocol, get_protocol
from rotld_cli.evaluation.report import Problems
from rotld_cli.fileio import atomic_path, atomic_write_text

METRICS = ("voc07", "area")
ALL_DOTA_CLASSES = frozenset(DOTA_V2_0)
MANIFEST = "rotld-task1.json"
CLASS_LIST_ALIASES = {f"dota{v[1:]}": v for v in CLASSES_BY_VERSION}  # --classes dota1.0 -> DOTA v1.0's list


@dataclass
class EvaluateOptions:
    """What to evaluate. `ann_dir=None` merges and writes (--save-merged, --zip) without any AP.

    The evaluated images are `image_ids` when given (checkpoint mode: the images the patches were
    cut from), else the `imageset` file, else every label file of `ann_dir`. The class set of the
    mean is `class_set()`'s rule. `strict=None` is the default policy: a bad result-file line
    stops, a bad ground-truth line is skipped and counted; True stops at both, False skips both.
    """

    results: Path
    ann_dir: Path | None
    imageset: Path | None = None
    dota_version: str | None = None
    metric: str | None = None  # None: the protocol's (DOTA: VOC07 11-point)
    protocol: str | None = None  # None: the folder manifest's (a model's recipe's), else dota
    merge: bool = True
    merge_iou: float = 0.1
    save_merged: Path | None = None
    zip_path: Path | None = None
    strict: bool | None = None
    seed_compat: bool = False
    image_ids: Sequence[str] | None = None
    images_from: str = "the images the patches were cut from"  # what `image_ids` are, for the messages
    classes: Sequence[str] | None = None
    model_classes: Sequence[str] | None = None  # the model's (checkpoint mode), else the folder manifest's

    @property
    def strict_results(self) -> bool:
        return self.strict is not False

    @property
    def strict_ground_truth(self) -> bool:
        return self.strict is True


@dataclass(frozen=True)
class ClassSet:
    """The classes of the mean, and how a table names that set."""

    classes: tuple[str, ...]
    label: str
    dota_version: str | None = None
    explicit: bool = False  # chosen by the user or the model: other DOTA classes' files are left out


def class_set(options: EvaluateOptions) -> ClassSet:
    """The one rule for the classes of the mean, for `evaluate --results` and `evaluate CKPT`:

    `--classes` (names, or `dota1.0`/`dota1.5`/`dota2.0`), else `--dota-version`'s list, else the
    model's classes (checkpoint mode, or a result folder rotld wrote), else DOTA v1.0's 15 classes
    (the devkit's mean: a class without detections or ground truth counts as AP 0).
    """
    if options.classes is not None:
        names = tuple(options.classes)
        if len(names) == 1 and names[0].lower() in CLASS_LIST_ALIASES:
            version = CLASS_LIST_ALIASES[names[0].lower()]
            return ClassSet(classes_for(version), _version_label(version), version, explicit=True)
        _check_class_names(names, options)
        return ClassSet(names, f"the {len(names)} evaluated classes (--classes)", None, explicit=True)
    if options.dota_version is not None:
        return ClassSet(classes_for(options.dota_version), _version_label(options.dota_version), options.dota_version,
                        explicit=True)  # fmt: skip
    model = options.model_classes if options.model_classes is not None else manifest_classes(options.results)
    if model is not None:
        return ClassSet(tuple(model), f"the model's {len(model)} classes", None, explicit=True)
    return ClassSet(DOTA_V1_0, _version_label("v1.0"), "v1.0")


def _version_label(version: str) -> str:
    return f"DOTA {version}'s {len(classes_for(version))} classes"


def _check_class_names(names: tuple[str, ...], options: EvaluateOptions) -> None:
    """Typos are errors, not a silent AP 0: every name must be a DOTA class, one of the model's,
    or have a result file."""
    if not names:
        raise UsageError("--classes: no class names")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise UsageError(f"--classes: {', '.join(repeated)} given twice")
    known = set(ALL_DOTA_CLASSES) | set(options.model_classes or ()) | set(_result_file_classes(options.results))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (DOTA classes: {', '.join(DOTA_V2_0)})"
            what = f"not a DOTA class and no {TASK1_PREFIX}{name}.txt"
            raise UsageError(f"--classes: unknown class {name!r}: {what}{hint}")


def _result_file_classes(results: Path) -> list[str]:
    if not results.is_dir():
        return []
    return [p.stem[len(TASK1_PREFIX):] for p in results.glob(f"{TASK1_PREFIX}*.txt")]


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a Task1 folder rotld wrote, or None (absent or unreadable)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def predicted_images(folder: Path) -> list[str] | None:
    """The images of a folder `rotld predict` wrote (its manifest lists them), or None for other folders."""
    data = read_manifest(folder)
    images = data.get("images") if data and data.get("kind") == "predicted" else None
    return list(images) if isinstance(images, list) and all(isinstance(i, str) for i in images) else None


def manifest_classes(folder: Path) -> tuple[str, ...] | None:
    data = read_manifest(folder)
    classes = data.get("classes") if data else None
    return tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None


def manifest_protocol(folder: Path) -> str | None:
    """The evaluation protocol a Task1 folder rotld wrote was made for (its model's recipe), if recorded."""
    value = (read_manifest(folder) or {}).get("protocol")
    return value if isinstance(value, str) else None


def evaluation_rules(options: EvaluateOptions) -> tuple[EvalProtocol, str]:
    """The protocol (`--protocol`, else the folder manifest's, else dota) and the AP metric in effect."""
    if options.metric is not None and options.metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {options.metric!r}")
    protocol = get_protocol(options.protocol or manifest_protocol(options.results))
    if options.seed_compat and protocol.name != "dota":
        raise UsageError(f"--seed-compat reproduces the DOTA seed script's bug: not with --protocol {protocol.name}")
    return protocol, protocol.metric(options.metric)


def write_manifest(folder: Path, kind: str, classes: Sequence[str], files: Sequence[Path],
                   extra: dict | None = None) -> None:
    """The manifest of a Task1 folder rotld writes: its kind, the classes, the files rotld wrote (and `extra`)."""
    manifest = {"kind": kind, "classes": list(classes), "files": [p.name for p in files], **(extra or {})}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def write_task1_folder(folder: Path, dets: dict[str, Task1Detections], classes: Sequence[str], kind: str,
                       protocol: str | None = None, extra: dict | None = None) -> list[Path]:
    """`write_task1_files`, then the manifest (the classes, which files rotld wrote, the protocol, `extra`)."""
    written = write_task1_files(folder, dets, classes)
    write_manifest(folder, kind, classes, written, {**({"protocol": protocol} if protocol else {}), **(extra or {})})
    return written


def check_save_merged(save_merged: Path, results: Path) -> None:
    """`--save-merged DIR` never replaces the user's files: not the --results folder itself, and not
    a folder holding Task1 files that rotld did not write there."""
    if save_merged.exists() and not save_merged.is_dir():
        raise UsageError(f"--save-merged {save_merged}: exists and is not a directory")
    if results.exists() and save_merged.exists() and save_merged.resolve() == results.resolve():
        raise UsageError(f"--save-merged {save_merged}: is the --results folder; the merged files would replace "
                         "the inputs (choose another folder)")  # fmt: skip
    if not save_merged.is_dir():
        return
    ours = set((read_manifest(save_merged) or {}).get("files") or ())
    foreign = sorted(p.name for p in save_merged.glob(f"{TASK1_PREFIX}*.txt") if p.name not in ours)
    if foreign:
        raise UsageError(f"--save-merged {save_merged}: holds Task1 files rotld did not write ({foreign[0]}"
                         + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
                         + "); choose an empty or new folder")  # fmt: skip


def read_task1_fast(path: Path, strict: bool = True, problems: list[str] | None = None) -> Task1Detections:
    """`formats.read_task1_file`, with a vectorised path for well-formed files (most of them).

    A file with any line that is not exactly 10 fields of finite numbers after the id goes
    through the strict per-line parser, which names the file and line of the problem.
    """
    text = read_text_file(path)
    if all(len(line.split()) in (0, 10) for line in text.splitlines()):
        tokens = text.split()
        ids = tokens[0::10]
        del tokens[0::10]
        try:
            values = np.fromiter(map(float, tokens), dtype=np.float64, count=len(tokens)).reshape(-1, 9)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            return Task1Detections(ids, values[:, 0].copy(), values[:, 1:].copy())
    return parse_task1_text(text, path, strict=strict, problems=problems)


def _first_line_of(path: Path, image_id: str) -> int | None:
    for lineno, raw in enumerate(path.read_text(encoding=TEXT_ENCODING).splitlines(), start=1):
        tokens = raw.split(None, 1)
        if tokens and tokens[0] == image_id:
            return lineno
    return None


def evaluated_image_ids(options: EvaluateOptions) -> list[str]:
    """The images of the evaluation, in order; each must have a label file in `ann_dir`."""
    assert options.ann_dir is not None
    if options.image_ids is not None:
        ids = list(dict.fromkeys(options.image_ids))
        missing = [i for i in ids if not (options.ann_dir / f"{i}.txt").is_file()]
        if missing:
            raise RotldError(
                f"--ann-dir {options.ann_dir}: no label file for {len(missing)} of the {len(ids)} images "
                f"(e.g. {missing[0]}.txt); is it the labelTxt folder of {options.images_from}?"
            )
        if not ids:
            raise RotldError("no images to evaluate")
        return ids
    if options.imageset is None:
        ids = sorted(p.stem for p in options.ann_dir.glob("*.txt"))
        if not ids:
            raise RotldError(f"--ann-dir {options.ann_dir}: no labelTxt files (*.txt)")
        return ids
    try:
        lines = options.imageset.read_text(encoding=TEXT_ENCODING).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--imageset {options.imageset}: cannot read: {exc}") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        if name in seen:
            raise RotldError(located(options.imageset, lineno, f"image id {name!r} repeats line {seen[name]}"))
        if not (options.ann_dir / f"{name}.txt").is_file():
            raise RotldError(located(options.imageset, lineno, f"no label file {options.ann_dir / (name + '.txt')}"))
        seen[name] = lineno
        ids.append(name)
    if not ids:
        raise RotldError(f"--imageset {options.imageset}: no image ids")
    return ids


def read_results(options: EvaluateOptions, classes: ClassSet, skipped: Problems,
                 ignored: list[str]) -> dict[str, Task1Detections]:
    """The result files of the class set (others: left out with an explicit set, else an error)."""
    if not options.results.is_dir():
        raise UsageError(f"--results {options.results}: not a directory")
    files = sorted(options.results.glob(f"{TASK1_PREFIX}*.txt"))
    if not files:
        raise RotldError(f"--results {options.results}: no {TASK1_PREFIX}<class>.txt files")
    known = set(classes.classes)
    dets: dict[str, Task1Detections] = {}
    for path in files:
        name = class_from_task1_name(path)
        if name not in known and classes.explicit and name in ALL_DOTA_CLASSES:
            ignored.append(name)
            continue
        if name not in known:
            message = located(path, None, f"unknown class {name!r} for {classes.label}")
            if options.strict_results:
                hint = "--classes" if options.classes is not None else "--dota-version or --classes"
                raise RotldError(f"{message} (classes: {', '.join(classes.classes)}; see {hint})")
            skipped.add(message, sum(1 for line in read_text_file(path).splitlines() if line.strip()))
            continue
        problems: list[str] = []
        dets[name] = read_task1_fast(path, strict=options.strict_results, problems=problems)
        for message in problems:
            skipped.add(message)
    if not dets:
        raise RotldError(f"--results {options.results}: no result file of {classes.label}")
    return dets


def drop_unknown_images(
    dets: dict[str, Task1Detections], known: set[str], options: EvaluateOptions, skipped: Problems
) -> dict[str, Task1Detections]:
    """Detections must name an evaluated image (a patch id: the image it was cut from)."""
    out = {}
    for name, det in dets.items():
        image_of = {}
        for image_id in dict.fromkeys(det.image_ids):
            parsed = split_patch_id(image_id) if options.merge else None
            image_of[image_id] = parsed[0] if parsed is not None else image_id
        missing = [i for i, image in image_of.items() if image not in known]
        if not missing:
            out[name] = det
            continue
        path = options.results / f"{TASK1_PREFIX}{name}.txt"
        if options.image_ids is not None:
            where = "the evaluated images"
        elif options.imageset is not None:
            where = "the --imageset list"
        else:
            where = f"the ground truth ({options.ann_dir})"
        if options.strict_results:
            image_id = missing[0]
            shown = image_id if image_of[image_id] == image_id else f"{image_id} (image {image_of[image_id]})"
            hint = " (the ground truth has this patch id: pass --no-merge)" if image_id in known else ""
            raise RotldError(located(path, _first_line_of(path, image_id), f"image id {shown} is not in {where}{hint}"))
        drop = set(missing)
        keep = np.array([i not in drop for i in det.image_ids], dtype=bool)
        count = int((~keep).sum())
        line = _first_line_of(path, missing[0])
        skipped.add(
            located(path, line, f"{count} detection(s) on {len(drop)} image(s) not in {where}, e.g. {missing[0]}"),
            count,
        )
        out[name] = Task1Detections([i for i, k in zip(det.image_ids, keep) if k], det.scores[keep], det.polys[keep])
    return out


def task1_texts(dets: dict[str, Task1Detections], classes: Sequence[str]) -> dict[str, str]:
    """File name -> content of every class's Task1 file (empty files for classes without detections)."""
    texts = {}
    for name in classes:
        det = dets.get(name)
        lines = (
            []
            if det is None
            else [format_task1_line(i, s, p) for i, s, p in zip(det.image_ids, det.scores.tolist(), det.polys.tolist())]
        )
        texts[f"{TASK1_PREFIX}{name}.txt"] = "\n".join(lines) + ("\n" if lines else "")
    return texts


def write_submission_zip(path: Path, dets: dict[str, Task1Detections], classes: Sequence[str]) -> None:
    """The DOTA server's Task1 submission: one Task1_<class>.txt per class at the zip root."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, text in task1_texts(dets, classes).items():
                zf.writestr(name, text)


def validate_options(options: EvaluateOptions) -> ClassSet:
    """Option checks that need no result file (checkpoint mode runs them before inference)."""
    evaluation_rules(options)
    if not 0.0 < options.merge_iou <= 1.0:
        raise UsageError(f"--merge-iou must be in (0, 1], got {options.merge_iou}")
    if options.ann_dir is not None and not options.ann_dir.is_dir():
        raise UsageError(f"--ann-dir {options.ann_dir}: not a directory")
    if options.save_merged is not None:
        check_save_merged(options.save_merged, options.results)
    return class_set(options)
