"""`rotld prepare-dota`: split DOTA images into patches (MMRotate img_split semantics)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from rotld_cli import ui
from rotld_cli.cli import app
from rotld_cli.errors import RotldError, UsageError


def _values(option: str, raw: list[str] | None, kind: type) -> tuple | None:
    """Values of a repeatable option that also accepts comma-separated lists (`--rates 0.5,1.0`)."""
    if not raw:
        return None
    tokens = [t.strip() for item in raw for t in item.split(",") if t.strip()]
    try:
        return tuple(kind(t) for t in tokens)
    except ValueError:
        raise UsageError(f"{option}: expected {kind.__name__} values, got {' '.join(raw)!r}") from None


@app.command("prepare-dota", help="Split DOTA images into patches + annfiles (MMRotate img_split semantics).")
def prepare_cmd(
    src: Path = typer.Argument(
        ..., help="A DOTA root (train/ val/ test/) or one split folder (images/, optional labelTxt/)."
    ),
    out: Path = typer.Argument(..., help="Output folder; mirrors SRC with images/ and annfiles/."),
    preset: str = typer.Option(
        "ss", "--preset", metavar="ss|ms", help="ss: 1024/200 at rate 1; ms: 1024/500 at rates 0.5,1,1.5."
    ),
    sizes: Optional[list[str]] = typer.Option(
        None, "--sizes", metavar="SIZE,...", help="Window sizes (repeat or comma-separate; overrides --preset)."
    ),
    gaps: Optional[list[str]] = typer.Option(
        None, "--gaps", metavar="GAP,...", help="Overlaps between windows, one per size."
    ),
    rates: Optional[list[str]] = typer.Option(
        None, "--rates", metavar="RATE,...", help="Window scales: size/rate px windows."
    ),
    img_rate_thr: float = typer.Option(0.6, "--img-rate-thr", help="Keep windows whose in-image area ratio > this."),
    iof_thr: float = typer.Option(0.7, "--iof-thr", help="Keep objects whose area inside the window >= this."),
    padding_value: Optional[list[str]] = typer.Option(
        None, "--padding-value", metavar="B,G,R", help="Fill of windows past the image (default: 104,116,124)."
    ),
    no_padding: bool = typer.Option(False, "--no-padding", help="Write border patches smaller instead of padding."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: the CPU count)."),
    splits: Optional[list[str]] = typer.Option(
        None, "--splits", metavar="NAME,...", help="Splits of a DOTA root (default: all found)."
    ),
    dota_version: Optional[str] = typer.Option(
        None, "--dota-version", metavar="v1.0|v1.5|v2.0", help="Class list: v1.0 (default), v1.5 or v2.0."
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", metavar="A,B,...|NAME",
        help="Your own class list (or a named one: dior-r, fair1m, hrsc2016, ...) instead of --dota-version's.",
    ),
    classes_from: Optional[Path] = typer.Option(
        None, "--classes-from", help="The class list from a file, one name per line (`rotld convert` writes one)."
    ),
    ext: str = typer.Option(".png", "--ext", help="Patch format: .png (lossless), .bmp, .tif or .jpg."),
    png_compression: Optional[int] = typer.Option(
        None, "--png-compression", help="zlib level 0-9 (default: OpenCV's fast level-1 RLE, as img_split)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an OUT made with other parameters."),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first bad label line (default: skip the line, count it, go on)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    from rotld_cli.dota.prepare import PRESETS, PrepareOptions, prepare_dota
    from rotld_cli.dota.split import SplitParams

    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    base = PRESETS[preset]
    params = SplitParams(
        sizes=_values("--sizes", sizes, int) or base["sizes"],
        gaps=_values("--gaps", gaps, int) or base["gaps"],
        rates=_values("--rates", rates, float) or base["rates"],
        img_rate_thr=img_rate_thr,
        iof_thr=iof_thr,
        padding=not no_padding,
        padding_value=_values("--padding-value", padding_value, int) or SplitParams.padding_value,
    )
    from rotld_cli.dota.classes import class_list_option

    options = PrepareOptions(
        split=params,
        ext=ext,
        png_compression=png_compression,
        dota_version=dota_version or "v1.0",
        classes=class_list_option(classes, classes_from, dota_version),
        workers=workers if workers is not None else (os.cpu_count() or 1),
        splits=_values("--splits", splits, str),
        overwrite=overwrite,
        strict=strict,
    )
    with ui.status_on_stderr(as_json):
        summary = prepare_dota(src, out, options, progress=None if as_json else ui.split_progress)
    print_summary(summary, as_json, _render, f"split into {out}")


def print_summary(summary, as_json: bool, render, done: str) -> None:
    """A run over many input files: its `--json` or its tables, then exit 1 if any input was bad
    (each problem was reported as it was found): prepare-dota's and convert's ending."""
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        render(summary)
    if summary.problems:
        raise RotldError(f"{len(summary.problems)} problem(s) in the input (each reported above); the rest was {done}")


def _render(summary) -> None:
    from rich.markup import escape

    total = summary.total
    rows = [
        [name, total.objects[name], total.annotations[name], total.truncated[name]]
        for name in sorted(set(total.objects) | set(total.annotations))
    ]
    ui.console.print(ui.table("objects per class", ["class", "objects", "in patches", "truncated (diff. 2)"], rows))
    figures = [
        ["images", f"{total.images} ({summary.resumed} resumed)" if summary.resumed else total.images],
        ["patches", f"{total.patches} ({total.empty_patches} without objects)"],
        ["objects kept (annfile lines)", sum(total.annotations.values())],
        ["truncated objects (difficulty 2)", sum(total.truncated.values())],
        ["objects dropped (in no patch)", total.dropped],
        ["invalid polygons repaired", total.repaired],
        ["images without a label file", total.unlabelled],
        ["bad label lines skipped", total.skipped_lines],
        ["seconds", f"{summary.seconds:.1f}"],
    ]
    if summary.removed_stale:
        figures.append(["stale patches removed", summary.removed_stale])
    ui.console.print(ui.table(f"prepare-dota -> {escape(str(summary.out))}", ["", "value"], figures))
