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


HELP = (
    "Detect on full-size images of any size: windows as prepare-dota cuts them, merged by rotated NMS. "
    "A detection centred outside the image (in a window's padding) is dropped. OUT must be new, empty or a "
    "folder rotld predict wrote; its Task1 files hold every image predicted there with the same model and "
    "settings. A rerun resumes: an image is skipped when its images/<id>.json was made with the same model, "
    "settings and source file (same path, and same size and modification time, or else same SHA-256)."
)


@app.command("predict", help=HELP)
def predict_cmd(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="A rotld checkpoint (.pth) or a model from `rotld export` (.onnx)."
    ),
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
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help=".pth: the model's recipe (default: the one stored in the checkpoint; needed for a "
        "plain state dict)."
    ),
    device: str = typer.Option("auto", "--device", help="auto: the GPU when there is one."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Windows per forward (default: 1 on the CPU, 4 with a GPU)."
    ),
    merge_iou: float = typer.Option(0.1, "--merge-iou", help="IoU of the per-class rotated NMS across windows."),
    score_thr: float = typer.Option(
        0.0, "--score-thr", help="Drop merged detections scoring below this; below the model's own score_thr, the "
        "model's is lowered to it."
    ),
    max_per_img: Optional[int] = typer.Option(None, "--max-per-img", help="Keep the best N per image (default: all)."),
    class_agnostic: bool = typer.Option(False, "--class-agnostic", help="Merge across classes (one NMS per image)."),
    save_vis: bool = typer.Option(
        False, "--save-vis", help="Draw the detections into OUT/vis/<id>.png (resumed images too)."
    ),
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
    from rotld_cli.predict.outputs import check_out_dir
    from rotld_cli.predict.pixels import PixelOptions
    from rotld_cli.predict.run import PredictOptions
    from rotld_cli.predict.sources import collect_sources

    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if device not in DEVICES:
        raise UsageError(f"--device: expected {', '.join(DEVICES)}, got {device!r}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
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
    if recipe is not None and model.suffix.lower() == ".onnx":
        raise UsageError(f"--recipe applies to .pth checkpoints; {model} carries its own settings")
    paths = collect_sources(sources)
    check_out_dir(out, paths)
    summary = run_predict(model, paths, out, options, device, batch_size, recipe, show_progress=not as_json,
                          maps=maps)
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
    for note in notes(summary):
        ui.warn(note)
    if summary.problems:
        raise RotldError(f"{len(summary.problems)} image(s) could not be read; the others are in {out}")


def _listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def notes(summary) -> list[str]:
    """What the user must know besides the table: outputs that are not what they may expect."""
    data = summary.to_dict()
    found = list(summary.writer_notes)  # per-image notes are printed as each image is done
    cfg = data["model_test_cfg"]
    if "lowered_from" in cfg:
        found.append(f"--score-thr {cfg['score_thr']:g}: the model's own score_thr {cfg['lowered_from']:g} was "
                     "lowered to it, so the windows keep those boxes")  # fmt: skip
    if data["outside_image"]:
        found.append(f"{data['outside_image']} detection(s) centred outside their image (in a window's padding) "
                     "were dropped")  # fmt: skip
    if data["no_picture"]:
        found.append(f"--save-vis: no picture of {len(data['no_picture'])} image(s) read by windows (too large to "
                     f"draw): {_listed(data['no_picture'])}")  # fmt: skip
    blank = [o for o in summary.outcomes if o.drawn == 0]
    if blank:
        best = max((o.best_score for o in blank if o.best_score is not None), default=None)
        why = f"best score {best:.3g}" if best is not None else "no detections"
        found.append(f"--save-vis: {len(blank)} picture(s) show no box, every detection scores below "
                     f"--vis-score-thr {summary.vis_score_thr:g} ({why}): {_listed([o.image_id for o in blank])}")
    for image_id, before in data["replaced"].items():
        found.append(f"images/{image_id}.json held the result of {before}; replaced by this run's {image_id}")
    if data["left_out_of_task1"]:
        files = [f["file"] for f in data["left_out_of_task1"]]
        found.append(f"{len(files)} result(s) in {summary.out_dir}/images are not in the Task1 files (made with "
                     f"another model or other settings; predict those images again with these): {_listed(files)}")
    return found


def run_predict(model: Path, paths, out: Path, options, device: str, batch_size: int | None, recipe: str | None,
                show_progress: bool, maps=None):
    """Load the backend (the engine only now), then predict with a progress bar; `maps`: the map outputs."""
    from dataclasses import replace
    from functools import partial

    from rotld_cli.checkpoints import sha256_file
    from rotld_cli.predict.backend import load_detector_backend, lower_score_thr
    from rotld_cli.predict.run import predict

    detector = load_detector_backend(model, None if device == "auto" else device, batch_size, recipe)
    lowered_from = lower_score_thr(detector, options.score_thr)
    options = replace(options, batch_size=getattr(detector, "batch_size", options.batch_size))
    identity = {"file": model.name, "sha256": sha256_file(model)}
    if recipe is not None:
        identity["recipe"] = recipe
    from rotld_cli.predict.maps import write_map_outputs

    writers = [partial(write_map_outputs, options=maps)] if maps is not None and maps.wanted else []
    if not show_progress:
        summary = predict(detector, paths, out, options, identity, writers=writers)
    else:
        with _ProgressCallbacks() as callbacks:
            summary = predict(detector, paths, out, options, identity, callbacks, writers=writers)
    if lowered_from is not None:
        summary.model_settings["lowered_from"] = lowered_from
    return summary


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
        ["in the Task1 files", data["task1_images"]],
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
