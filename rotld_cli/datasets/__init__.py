"""`rotld convert FORMAT SRC DST [--to LAYOUT]`: other datasets into the DOTA layout every rotld
command reads, and DOTA datasets out to Ultralytics' YOLO-OBB. Engine-free.

One module per format, each citing the definition it follows: `hrsc2016`, `dior_r`, `fair1m`,
`yolo_obb` (both ways), `dota_layout` (the DOTA layout both ways); `records` holds the reader and
target interfaces, `writer` the one resumable run that joins any reader to any target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rotld_cli.datasets.dior_r import DiorReader
from rotld_cli.datasets.dota_layout import DotaReader, DotaTarget
from rotld_cli.datasets.fair1m import Fair1mReader
from rotld_cli.datasets.hrsc2016 import HrscReader
from rotld_cli.datasets.records import DatasetReader, LayoutTarget
from rotld_cli.datasets.writer import ConvertOptions, ConvertSummary, ProgressFn, convert_dataset
from rotld_cli.datasets.yolo_obb import YoloObbReader, YoloObbTarget
from rotld_cli.errors import UsageError

FORMATS = ("hrsc2016", "dior-r", "fair1m", "yolo-obb", "dota")
"""What SRC may be (`dota`: only with `--to yolo-obb`)."""
TARGETS = ("dota", "yolo-obb")


@dataclass(frozen=True)
class SourceOptions:
    """How to read SRC: a class list replacing the format's, HRSC's level and sysdata file."""

    classes: tuple[str, ...] | None = None
    level: int = 1
    sysdata: Path | None = None


def open_reader(fmt: str, src: Path, options: SourceOptions) -> tuple[DatasetReader, Path]:
    """The reader of `fmt` and the source folder it reads (a YOLO dataset YAML's folder)."""
    if fmt != "hrsc2016" and (options.level != 1 or options.sysdata is not None):
        raise UsageError("--level and --sysdata apply to hrsc2016 only")
    if not src.exists():
        raise UsageError(f"SRC {src}: no such file or folder")
    if fmt == "yolo-obb":
        reader = YoloObbReader(src, options.classes)
        return reader, reader.root
    if not src.is_dir():
        raise UsageError(f"SRC {src}: not a directory")
    if fmt == "hrsc2016":
        return HrscReader(src, options.level, options.sysdata, options.classes), src
    if fmt == "dior-r":
        return DiorReader(src, options.classes), src
    if fmt == "fair1m":
        return Fair1mReader(src, options.classes), src
    if fmt == "dota":
        return DotaReader(src, options.classes), src
    raise UsageError(f"FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")


def open_target(name: str, fmt: str) -> LayoutTarget:
    if name not in TARGETS:
        raise UsageError(f"--to must be one of {', '.join(TARGETS)}, got {name!r}")
    if name == fmt:
        raise UsageError(f"SRC is already {name}: nothing to convert (--to {'yolo-obb' if name == 'dota' else 'dota'})")
    return DotaTarget() if name == "dota" else YoloObbTarget()


def convert(fmt: str, src: Path, dst: Path, to: str = "dota", source: SourceOptions | None = None,
            options: ConvertOptions | None = None, progress: ProgressFn | None = None) -> ConvertSummary:  # fmt: skip
    """`rotld convert`: checks the request, then runs `writer.convert_dataset`."""
    target = open_target(to, fmt)
    reader, root = open_reader(fmt, Path(src), source or SourceOptions())
    return convert_dataset(reader, target, root, Path(dst), options or ConvertOptions(), progress)


__all__ = ["FORMATS", "TARGETS", "ConvertOptions", "ConvertSummary", "SourceOptions", "convert", "open_reader",
           "open_target"]  # fmt: skip
