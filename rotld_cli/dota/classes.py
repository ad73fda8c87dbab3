"""The one class table: DOTA v1.0/1.5/2.0, HRSC2016, DIOR-R and FAIR1M class lists in label order,
and a user's own list (`--classes a,b,c`, `--classes-from FILE`, a recipe's `data.classes: [...]`).

A class name is one token of a DOTA label line (no whitespace), so names whose dataset spells
them with spaces are kept with each run of whitespace replaced by `-` (`class_token`):
FAIR1M's `Passenger Ship` is `Passenger-Ship` here, in the DOTA label files `rotld convert`
writes and in the recipes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DOTA_V1_0: tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
"""In the order of MMRotate 0.3.4's `DOTADataset.CLASSES`."""
DOTA_V1_5: tuple[str, ...] = (*DOTA_V1_0, "container-crane")
DOTA_V2_0: tuple[str, ...] = (*DOTA_V1_5, "airport", "helipad")

HRSC2016: tuple[str, ...] = ("ship",)
"""HRSC2016's level-1 task (MMRotate 0.3.4 `HRSCDataset.HRSC_CLASS`, `classwise=False`); the level-2/3
names come from the dataset's own `sysdata.xml` (`rotld convert hrsc2016 --level 2|3` writes them)."""
DIOR_R: tuple[str, ...] = (
    "airplane",
    "airport",
    "baseballfield",
    "basketballcourt",
    "bridge",
    "chimney",
    "expressway-service-area",
    "expressway-toll-station",
    "dam",
    "golffield",
    "groundtrackfield",
    "harbor",
    "overpass",
    "ship",
    "stadium",
    "storagetank",
    "tenniscourt",
    "trainstation",
    "vehicle",
    "windmill",
)
"""DIOR-R's 20 classes in the order (and the lower case) of MMRotate 1.x `DIORDataset.METAINFO`."""
FAIR1M: tuple[str, ...] = (
    # airplanes
    "Boeing737", "Boeing747", "Boeing777", "Boeing787", "C919", "A220", "A321", "A330", "A350", "ARJ21",
    "other-airplane",
    # ships
    "Passenger-Ship", "Motorboat", "Fishing-Boat", "Tugboat", "Engineering-Ship", "Liquid-Cargo-Ship",
    "Dry-Cargo-Ship", "Warship", "other-ship",
    # vehicles
    "Small-Car", "Bus", "Cargo-Truck", "Dump-Truck", "Van", "Trailer", "Tractor", "Excavator", "Truck-Tractor",
    "other-vehicle",
    # courts
    "Basketball-Court", "Tennis-Court", "Football-Field", "Baseball-Field",
    # roads
    "Intersection", "Roundabout", "Bridge",
)  # fmt: skip
"""FAIR1M v1.0 / v2.0's 37 fine-grained classes (the paper's 5 groups, in its order), as tokens."""

CLASSES_BY_VERSION: dict[str, tuple[str, ...]] = {"v1.0": DOTA_V1_0, "v1.5": DOTA_V1_5, "v2.0": DOTA_V2_0}
NAMED_CLASS_LISTS: dict[str, tuple[str, ...]] = {
    **CLASSES_BY_VERSION,
    "hrsc2016": HRSC2016,
    "dior-r": DIOR_R,
    "fair1m": FAIR1M,
}
"""What a recipe's `data.classes: NAME` may name: the DOTA versions and the other datasets' lists."""


def classes_for(version: str) -> tuple[str, ...]:
    try:
        return CLASSES_BY_VERSION[version]
    except KeyError:
        from rotld_cli.errors import UsageError

        raise UsageError(
            f"--dota-version: unknown version {version!r}; choose one of {', '.join(CLASSES_BY_VERSION)}"
        ) from None


def class_token(name: str) -> str:
    """A dataset's class name as one label-line token: runs of whitespace become `-`."""
    return "-".join(name.split())


def check_class_list(names: Iterable[str], where: str) -> tuple[str, ...]:
    """Distinct, non-empty names without whitespace; `where: what` as a UsageError otherwise."""
    from rotld_cli.errors import UsageError

    out = tuple(names)
    if not out:
        raise UsageError(f"{where}: no class names")
    for name in out:
        if not name or any(ch.isspace() for ch in name):
            raise UsageError(f"{where}: class name {name!r} holds whitespace (a label line splits on it)")
    repeated = sorted({c for c in out if out.count(c) > 1})
    if repeated:
        raise UsageError(f"{where}: {', '.join(repeated)} given twice")
    return out


def parse_class_option(text: str, option: str = "--classes") -> tuple[str, ...]:
    """`--classes a,b,c` -> ('a', 'b', 'c'); a named list (`dior-r`, `v1.5`, ...) gives its classes."""
    value = text.strip()
    if value in NAMED_CLASS_LISTS:
        return NAMED_CLASS_LISTS[value]
    return check_class_list((t.strip() for t in value.split(",") if t.strip()), option)


def read_classes_file(path: os.PathLike[str] | str, option: str = "--classes-from") -> tuple[str, ...]:
    """A class list file: one name per line, in label order; blank lines and `#` comments are skipped.

    `rotld convert` writes one (`DST/classes.txt`); errors name the file and line.
    """
    from rotld_cli.errors import UsageError, located

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{option} {located(path, None, 'not a UTF-8 text file')}") from None
    except OSError as exc:
        raise UsageError(f"{option} {located(path, None, f'cannot read: {exc.strerror or exc}')}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        if any(ch.isspace() for ch in name):
            raise UsageError(f"{option} {located(path, lineno, f'class name {name!r} holds whitespace')}")
        if name in seen:
            raise UsageError(f"{option} {located(path, lineno, f'{name!r} repeats line {seen[name]}')}")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise UsageError(f"{option} {located(path, None, 'no class names')}")
    return tuple(names)


def class_list_option(classes: str | None, classes_from: os.PathLike[str] | None,
                      dota_version: str | None = None) -> tuple[str, ...] | None:  # fmt: skip
    """The class list of `--classes` / `--classes-from` (None: neither); one of them, not with `--dota-version`."""
    from rotld_cli.errors import UsageError

    given = [name for name, value in (("--classes", classes), ("--classes-from", classes_from),
                                      ("--dota-version", dota_version)) if value is not None]  # fmt: skip
    if len(given) > 1:
        raise UsageError(f"{given[0]} and {given[1]}: choose one")
    if classes is not None:
        return parse_class_option(classes)
    return read_classes_file(classes_from) if classes_from is not None else None


def write_classes_file(path: os.PathLike[str] | str, classes: Iterable[str]) -> None:
    """The file `read_classes_file` reads (atomically)."""
    from rotld_cli.fileio import atomic_write_text

    atomic_write_text(path, "".join(f"{name}\n" for name in classes))
