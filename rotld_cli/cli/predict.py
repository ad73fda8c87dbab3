"""`rotld predict`: a model on full-size images of any size -> Task1 files, per-image JSON, pictures, maps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.cli.prepare import _values
from rotld_cli.errors import RotldError, UsageError

DEVICES = ("auto", "cuda", "cpu")


@app.command(
    "predict",
    help="Detect on full-size images of any size: windows as prepare-dota cuts them, merged by rotated NMS.",
)
def predict_cmd(
    model: Path = typer.Argument(..., metavar="CKPT", help="A rotld checkpoint (.pth)."),
    sources: list[str] = typer.Argument(
        ...,
        metavar="SOURCE...",
        help="Image files, folders or glob patterns: PNG, JPEG, BMP, and GeoTIFF/COG, JPEG2000, VRT or any raster "
        "GDAL reads.",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: Task1_<class>.txt, images/<id>.json, vis/."),
    preset: str = typer.Option("ss", "--preset", metavar="ss|ms", help="Windows as prepare-dota's presets."),
    sizes: Optional[list[str]] = typer.Option(None, "--sizes", metavar="SIZE,...", help="Window sizes."),
    gaps: Optional[list[str]] = typer.Option(None, "--gaps", metavar="GAP,...", help="Window overlaps."),
    rates: Optional[list[str]] = typer.Option(None, "--rates", metavar="RATE,...", help="Window scales."),
    img_rate_thr: float = typer.Option(0.6, "--img-rate-thr", help="Keep windows whose in-image area ratio > this."),
    padding_value: Optional[list[str]] = typer.Option(
        None, "--padding-value", metavar="B,G,R", help="Fill of windows past the image (default: 104,116,124)."
    ),
    device: str = typer.Option("auto", "--device", help="auto: the GPU when there is one."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Windows per forward (default: 1 on the CPU, 4 with a GPU)."
    ),
    merge_iou: float = typer.Option(0.1, "--merge-iou", help="IoU of the per-class rotated NMS across windows."),
    score_thr: float = typer.Option(0.0, "--score-thr", help="Drop merged detections scoring below this."),
    max_per_img: Optional[int] = typer.Option(None, "--max-per-img", help="Keep the best N per image (default: all)."),
    class_agnostic: bool = typer.Option(False, "--class-agnostic", help="Merge across classes (one NMS per image)."),
    save_vis: bool = typer.Option(False, "--save-vis", help="Draw the detections into OUT/vis/<id>.png."),
    vis_score_thr: float = typer.Option(0.3, "--vis-score-thr", help="Draw detections scoring at least this."),
    bands: Optional[list[str]] = typer.Option(
        None,
        "--bands",
        metavar="R,G,B",
        help="Raster bands (1-based) as R,G,B, or one for gray "
        "(default: by colour interpretation, else the first three).",
    ),
    stretch: Optional[list[str]] = typer.Option(
        None,
        "--stretch",
        metavar="LOW,HIGH",
        help="Scale non-8-bit images by these per-band percentiles (e.g. 2,98) instead of by the image's maximum.",
    ),
    geojson: bool = typer.Option(False, "--geojson", help="One GeoJSON per image in OUT/geojson/ (map CRS)."),
    geojson_merged: bool = typer.Option(
        False, "--geojson-merged", help="All images' detections in one OUT/detections.geojson."
    ),
    gpkg: bool = typer.Option(False, "--gpkg", help="A GeoPackage layer: OUT/detections.gpkg, layer 'detections'."),
    to_crs: Optional[str] = typer.Option(
        None, "--to-crs", metavar="CRS", help="Reproject the map outputs (e.g. EPSG:4326); default: the image's CRS."
    ),
    redo: bool = typer.Option(False, "--redo", help="Predict again on images already done in OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    from rotld_cli.dota.prepare import PRESETS, PrepareOptions
    from rotld_cli.dota.split import SplitParams
    from rotld_cli.predict.backend import check_model_path
    from rotld_cli.predict.maps import MapOptions
    from rotld_cli.predict.pixels import PixelOptions
    from rotld_cli.predict.run import PredictOptions
    from rotld_cli.predict.sources import collect_sources

    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if device not in DEVICES:
        raise UsageError(f"--device: expected {', '.join(DEVICES)}, got {device!r}")
    base = PRESETS[preset]
    split = SplitParams(
        sizes=_values("--sizes", sizes, int) or base["sizes"],
        gaps=_values("--gaps", gaps, int) or base["gaps"],
        rates=_values("--rates", rates, float) or base["rates"],
        img_rate_thr=img_rate_thr,
        padding_value=_values("--padding-value", padding_value, int) or SplitParams.padding_value,
    )
    PrepareOptions(split=split).validate()
    stretch_values = _values("--stretch", stretch, float)
    if stretch_values is not None and len(stretch_values) != 2:
        raise UsageError(f"--stretch: expected LOW,HIGH (two percentiles), got {','.join(stretch)}")
    pixels = PixelOptions(bands=_values("--bands", bands, int), stretch=stretch_values)
    options = PredictOptions(
        split=split, merge_iou=merge_iou, score_thr=score_thr, max_per_img=max_per_img,
        class_agnostic=class_agnostic, batch_size=batch_size or 1, save_vis=save_vis, vis_score_thr=vis_score_thr,
        pixels=pixels, redo=redo,
    )  # fmt: skip
    options.validate()
    maps = MapOptions(geojson=geojson, geojson_merged=geojson_merged, gpkg=gpkg, to_crs=to_crs)
    maps.validate()
    check_model_path(model)
    paths = collect_sources(sources)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    summary = run_predict(model, paths, out, options, device, batch_size, show_progress=not as_json, maps=maps)
    from rotld_cli import ui

    if as_json:
        for outcome in summary.outcomes:  # the progress bar reports them as they happen
            for note in outcome.notes:
                ui.warn(note)
            if outcome.problem:
                ui.warn(f"{outcome.problem} (skipped)")
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        render(summary)
    skipped = summary.to_dict()["no_picture"]
    if skipped:
        ui.warn(f"--save-vis: no picture of {len(skipped)} image(s) read by windows (too large to draw): "
                + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))  # fmt: skip
    for note in summary.writer_notes:
        ui.warn(note)
    if summary.problems:
        raise RotldError(f"{len(summary.problems)} image(s) could not be read; the others are in {out}")


def run_predict(
    model: Path, paths, out: Path, options, device: str, batch_size: int | None, show_progress: bool, maps=None
):
    """Load the backend (the engine only now), then predict with a progress bar; `maps`: the map outputs."""
    from dataclasses import replace
    from functools import partial

    from rotld_cli.checkpoints import sha256_file
    from rotld_cli.predict.backend import load_detector_backend
    from rotld_cli.predict.run import predict

    detector = load_detector_backend(model, None if device == "auto" else device, batch_size)
    options = replace(options, batch_size=getattr(detector, "batch_size", options.batch_size))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RotldError(f"--out {out}: cannot create: {exc.strerror or exc}") from None
    identity = {"file": model.name, "sha256": sha256_file(model)}
    from rotld_cli.predict.maps import write_map_outputs

    writers = [partial(write_map_outputs, options=maps)] if maps is not None and maps.wanted else []
    if not show_progress:
        return predict(detector, paths, out, options, identity, writers=writers)
    with _ProgressCallbacks() as callbacks:
        return predict(detector, paths, out, options, identity, callbacks, writers=writers)


class _ProgressCallbacks:
    """A bar over windows (what the time goes into), with images done, windows/s and the ETA."""

    def __enter__(self):
        from rich.progress import TextColumn

        from rotld_cli import ui
        from rotld_cli.predict.run import Callbacks

        self._ui = ui
        self._bar = ui.progress(TextColumn("{task.fields[images]} images, {task.fields[rate]} windows/s"))
        self._bar.start()
        self._task = None
        self._done_images = self._done_windows = 0
        self._total_images = 0
        self._started = time.perf_counter()
        base = self

        class _Hooks(Callbacks):
            def planned(self, images: int, windows: int) -> None:
                base._total_images = images
                base._task = base._bar.add_task("predict", total=windows, images=f"0/{images}", rate="-")

            def windows_done(self, count: int) -> None:
                base._done_windows += count
                rate = base._done_windows / max(time.perf_counter() - base._started, 1e-9)
                base._bar.update(base._task, advance=count, rate=f"{rate:.1f}")

            def image_done(self, outcome, planned_windows: int) -> None:
                base._done_images += 1
                for note in outcome.notes:
                    base._ui.warn(note)
                if outcome.problem:
                    base._ui.warn(f"{outcome.problem} (skipped)")
                    base._bar.update(base._task, advance=max(planned_windows - outcome.windows, 0))
                base._bar.update(base._task, images=f"{base._done_images}/{base._total_images}")

        return _Hooks()

    def __exit__(self, *exc) -> None:
        self._bar.stop()


def render(summary) -> None:
    from rich.markup import escape

    from rotld_cli import ui

    data = summary.to_dict()
    rows = [[name, count] for name, count in data["detections"].items() if count]
    rows.append(["total", sum(data["detections"].values())])
    ui.console.print(ui.table("detections per class", ["class", "detections"], rows))
    figures = [
        ["images", data["images"]],
        ["predicted now", data["predicted"]],
        ["resumed (done before)", data["resumed"]],
        ["unreadable", data["failed"]],
        ["windows", data["windows"]],
        ["windows skipped (all nodata)", data["windows_nodata"]],
        ["seconds", f"{data['seconds']:.1f}"],
        ["images/s", f"{data['images_per_s']:.2f}"],
        ["windows/s", f"{data['windows_per_s']:.2f}"],
    ]
    maps = [Path(f).name for f in data["map_files"]]
    if maps:
        more = f"\n... ({len(maps)} files)" if len(maps) > 8 else ""
        figures.append(["map files", escape("\n".join(maps[:8]) + more)])
    ui.console.print(ui.table(f"predict -> {escape(str(summary.out_dir))}", ["", "value"], figures))
