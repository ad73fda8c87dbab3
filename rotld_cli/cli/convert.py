"""`rotld convert FORMAT SRC DST`: HRSC2016, DIOR-R, FAIR1M or YOLO-OBB into the DOTA layout, and
DOTA out to YOLO-OBB (`rotld convert dota SRC DST --to yolo-obb`). Engine-free."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rotld_cli import ui
from rotld_cli.cli import app


@app.command(
    "convert",
    help="Convert HRSC2016, DIOR-R, FAIR1M or YOLO-OBB datasets to the DOTA layout (images/ + labelTxt/), "
    "or a DOTA dataset to YOLO-OBB (--to yolo-obb).",
)
def convert_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="hrsc2016, dior-r, fair1m, yolo-obb, or dota (with --to)."),
    src: Path = typer.Argument(..., help="The dataset's root folder (yolo-obb: also its dataset YAML)."),
    dst: Path = typer.Argument(..., help="Output folder: new, empty, or an earlier `rotld convert` to resume."),
    to: str = typer.Option("dota", "--to", metavar="dota|yolo-obb", help="Layout to write."),
    level: int = typer.Option(1, "--level", metavar="1|2|3", help="hrsc2016: ship only, class, or type names."),
    sysdata: Optional[Path] = typer.Option(
        None, "--sysdata", help="hrsc2016 --level 2|3: the dataset's sysdata.xml (default: found under SRC)."
    ),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        metavar="A,B,...|NAME",
        help="Class list replacing the format's (a named list: v1.0, v1.5, v2.0, dior-r, fair1m, hrsc2016); "
        "objects of other classes are counted, not written. dota: default v1.0.",
    ),
    classes_from: Optional[Path] = typer.Option(
        None, "--classes-from", help="The class list from a file, one name per line (e.g. a DST/classes.txt)."
    ),
    splits: Optional[str] = typer.Option(
        None, "--splits", metavar="NAME,...", help="Splits to convert (default: the format's, e.g. trainval,test)."
    ),
    link: bool = typer.Option(False, "--link", help="Hard-link the images instead of copying them (same disk)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier conversion made with other options."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    from rotld_cli.cli.prepare import print_summary
    from rotld_cli.datasets import ConvertOptions, SourceOptions, convert
    from rotld_cli.dota.classes import class_list_option

    names = class_list_option(classes, classes_from)
    wanted = tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else None
    with ui.status_on_stderr(as_json):
        summary = convert(
            fmt, src, dst, to, SourceOptions(classes=names, level=level, sysdata=sysdata),
            ConvertOptions(splits=wanted, link=link, overwrite=overwrite),
            progress=None if as_json else lambda outcomes, total: ui.count_progress(outcomes, total, "converting"),
        )  # fmt: skip
    print_summary(summary, as_json, _render, f"converted into {dst}")


def _render(summary) -> None:
    from rich.markup import escape

    total = summary.total
    names = list(summary.classes) + sorted(set(total.objects) - set(summary.classes))
    rows = [[name, total.objects[name]] for name in names if total.objects[name]]
    ui.console.print(ui.table("objects per class", ["class", "objects"], rows))
    outside = ", ".join(f"{name} ({n})" for name, n in sorted(total.outside.items()))
    figures = [
        ["images", f"{total.images} ({summary.resumed} resumed)" if summary.resumed else total.images],
        ["images without objects", total.empty_images],
        ["objects written", sum(total.objects.values())],
        ["difficult objects", total.difficult],
        ["objects of classes outside the list", f"{sum(total.outside.values())} {outside}".strip()],
        ["malformed objects skipped", total.skipped_objects],
        ["problems", len(summary.problems)],
        ["seconds", f"{summary.seconds:.1f}"],
    ]
    if summary.removed_stale:
        figures.append(["stale images removed", summary.removed_stale])
    fmt, target = summary.params["format"], summary.params["target"]
    ui.console.print(ui.table(f"convert {fmt} -> {target}: {escape(str(summary.dst))}", ["", "value"], figures))
    if target == "yolo-obb" and total.difficult:
        ui.warn(f"YOLO-OBB has no difficult flag: {total.difficult} difficult object(s) written as ordinary ones")
    if total.outside:
        ui.warn(f"objects of classes outside the class list were not written: {outside}")
    for path in summary.written:
        ui.info(f"wrote {summary.dst / path}")
