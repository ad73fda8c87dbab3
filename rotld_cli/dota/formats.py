"""Parsers and writers for DOTA labelTxt, split annfiles and Task1 result files.

Every parse error names the file and the 1-based line, so a user can open it and fix it.

Bad label lines follow one policy in every command that reads labels (`prepare-dota`, `evaluate`):
by default (`strict=False`) a bad line is left out and recorded in `LabelFile.skipped` as
`file:line: what` (the file's other objects are kept, the caller counts and reports the lines and
exits non-zero at the end); with `strict=True` (the commands' `--strict`) the first bad line raises
`FormatError`. A file that cannot be read at all raises in both modes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rotld_cli.errors import RotldError, located
from rotld_cli.fileio import atomic_write_text

HEADER_PREFIXES = ("imagesource:", "gsd:")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".bmp", ".tif", ".jpg")
"""The image files rotld reads and `prepare-dota --ext` writes (full images and patches), the one list."""
TEXT_ENCODING = "utf-8-sig"
"""How DOTA text files are read: UTF-8, a leading byte-order mark (Windows editors add one) dropped."""


def is_image_file(path: Path) -> bool:
    """An image rotld reads: a known suffix (any case), not hidden, a regular file."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


class FormatError(RotldError):
    """A malformed line in a DOTA text file; the message is `file:line: what`."""

    def __init__(self, path: os.PathLike[str] | str, line: int | None, message: str) -> None:
        super().__init__(located(path, line, message))
        self.path = str(path)
        self.line = line
        self.detail = message


@dataclass
class DotaObject:
    """One labelled object: the raw quadrilateral (8 floats), class name and difficulty flag."""

    poly: np.ndarray
    name: str
    difficulty: int = 0
    line: int | None = None


@dataclass
class LabelFile:
    objects: list[DotaObject] = field(default_factory=list)
    gsd: float | None = None
    skipped: list[str] = field(default_factory=list)  # bad lines left out, as `file:line: what; line skipped`


def _floats(tokens: Sequence[str], path: os.PathLike[str] | str, lineno: int, what: str) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise FormatError(path, lineno, f"{what} must be numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise FormatError(path, lineno, f"{what} must be finite numbers, got {' '.join(tokens)!r}")
    return values


def parse_label_text(
    text: str, path: os.PathLike[str] | str, classes: Sequence[str] | None = None, strict: bool = True
) -> LabelFile:
    """Parse DOTA labelTxt content (img_split semantics, but no malformed line passes unnoticed).

    An object line has >= 9 tokens: 8 coordinates, the class name, and the difficulty as the
    10th token when there are exactly 10 (else 0). `imagesource:`/`gsd:` headers and blank
    lines are skipped; any other bad line (too short, not numbers, a class outside `classes`)
    raises `FormatError` when `strict`, else lands in `skipped` (see the module docstring).
    """
    result = LabelFile()
    known = set(classes) if classes is not None else None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.lower().startswith(HEADER_PREFIXES):
            if line.lower().startswith("gsd:"):
                value = line.split(":", 1)[1].strip()
                try:
                    result.gsd = float(value)
                except ValueError:
                    result.gsd = None
            continue
        try:
            result.objects.append(_label_object(line, path, lineno, known))
        except FormatError as exc:
            if strict:
                raise
            result.skipped.append(f"{exc}; line skipped")
    return result


def _label_object(line: str, path: os.PathLike[str] | str, lineno: int, known: set[str] | None) -> DotaObject:
    """One object line -> DotaObject; FormatError naming the line when it is not one."""
    tokens = line.split()
    if len(tokens) < 9:
        raise FormatError(path, lineno, f"expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got {line!r}")
    if len(tokens) > 10:
        raise FormatError(path, lineno, f"too many fields ({len(tokens)}) in {line!r}")
    coords = _floats(tokens[:8], path, lineno, "coordinates")
    name = tokens[8]
    if known is not None and name not in known:
        raise FormatError(path, lineno, f"unknown class {name!r}")
    difficulty = 0
    if len(tokens) == 10:
        try:
            difficulty = int(tokens[9])
        except ValueError:
            raise FormatError(path, lineno, f"difficulty must be an integer, got {tokens[9]!r}") from None
    return DotaObject(np.asarray(coords, dtype=np.float64), name, difficulty, lineno)


def read_text_file(path: os.PathLike[str] | str) -> str:
    """A DOTA text file's content (BOM dropped); unreadable or non-UTF-8 -> one located `FormatError`."""
    path = Path(path)
    try:
        return path.read_text(encoding=TEXT_ENCODING, errors="strict")
    except UnicodeDecodeError:
        raise FormatError(path, None, "not a UTF-8 text file") from None
    except OSError as exc:
        raise FormatError(path, None, f"cannot read: {exc.strerror or exc}") from None


def read_label_file(
    path: os.PathLike[str] | str, classes: Sequence[str] | None = None, strict: bool = True
) -> LabelFile:
    """`parse_label_text` of a file (a UTF-8 BOM, as some editors write, is not part of the first line)."""
    return parse_label_text(read_text_file(path), path, classes, strict=strict)


def format_annfile_line(poly: Iterable[float], name: str, difficulty: int | str) -> str:
    """One annfile line as MMRotate's img_split writes it (coordinates via str(np.float32))."""
    coords = " ".join(str(np.float32(v)) for v in poly)
    return f"{coords} {name} {difficulty}"


def write_annfile(path: os.PathLike[str] | str, lines: Iterable[str]) -> None:
    """Write an annfile atomically; no objects gives an empty (0-byte) file, like img_split."""
    body = "\n".join(lines)
    atomic_write_text(path, body + "\n" if body else "")


@dataclass
class Task1Detections:
    """All detections of one class: image ids, scores and polygons (n, 8)."""

    image_ids: list[str]
    scores: np.ndarray
    polys: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)


TASK1_PREFIX = "Task1_"


def class_from_task1_name(path: os.PathLike[str] | str) -> str:
    """`Task1_small-vehicle.txt` -> `small-vehicle`."""
    stem = Path(path).stem
    if not stem.startswith(TASK1_PREFIX) or len(stem) == len(TASK1_PREFIX):
        raise FormatError(path, None, "result files must be named Task1_<class>.txt")
    return stem[len(TASK1_PREFIX) :]


def parse_task1_text(
    text: str, path: os.PathLike[str] | str, strict: bool = True, problems: list[str] | None = None
) -> Task1Detections:
    """Parse `image_id score x1 y1 ... y4` lines. Lenient mode skips bad lines into `problems`."""
    ids: list[str] = []
    rows: list[list[float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        tokens = line.split()
        try:
            if len(tokens) != 10:
                raise FormatError(
                    path, lineno, f"expected 'image_id score x1 y1 x2 y2 x3 y3 x4 y4' (10 fields), got {len(tokens)}"
                )
            values = _floats(tokens[1:], path, lineno, "score and coordinates")
        except FormatError as exc:
            if strict or problems is None:
                raise
            problems.append(str(exc))
            continue
        ids.append(tokens[0])
        rows.append(values)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 9)
    return Task1Detections(ids, arr[:, 0].copy(), arr[:, 1:].copy())


def read_task1_file(
    path: os.PathLike[str] | str, strict: bool = True, problems: list[str] | None = None
) -> Task1Detections:
    return parse_task1_text(read_text_file(path), path, strict=strict, problems=problems)


def as_written(det: Task1Detections) -> Task1Detections:
    """The detections exactly as a Task1 file stores them (coordinates rounded by `%.2f`), so
    evaluating in memory gives the numbers of evaluating the written files."""
    polys = np.char.mod("%.2f", np.asarray(det.polys, dtype=np.float64)).astype(np.float64).reshape(-1, 8)
    return Task1Detections(list(det.image_ids), np.asarray(det.scores, dtype=np.float64), polys)


def format_task1_line(image_id: str, score: float, poly: Sequence[float]) -> str:
    """MMRotate's `_results2submission` format: score via str(float), coordinates `%.2f`."""
    return f"{image_id} {float(score)} " + " ".join(f"{v:.2f}" for v in poly)


def write_task1_files(
    out_dir: os.PathLike[str] | str, dets: dict[str, Task1Detections], classes: Sequence[str]
) -> list[Path]:
    """One `Task1_<class>.txt` per class (all classes, empty files included), atomically."""
    out_dir = Path(out_dir)
    written = []
    for name in classes:
        det = dets.get(name)
        lines = (
            [] if det is None else [format_task1_line(i, s, p) for i, s, p in zip(det.image_ids, det.scores, det.polys)]
        )
        path = out_dir / f"{TASK1_PREFIX}{name}.txt"
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
        written.append(path)
    return written
