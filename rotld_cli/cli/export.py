"""`rotld export`: a checkpoint as an ONNX model that runs on onnxruntime without the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rotld_cli.cli import app
from rotld_cli.deploy.parity import ANGLE_TOL, BOX_TOL, REL_TOL, SCORE_TOL

HELP = (
    "Export a checkpoint's network (backbone, FPN, head) as an ONNX model for onnxruntime. "
    "The integral, box decoding and rotated NMS run in rotld's engine-free numpy code, so the .onnx file "
    "(its metadata: classes, angle version, normalisation, test settings, source SHA-256) runs wherever "
    "onnxruntime does, without torch or MMRotate. The file is written only if the same images give the same "
    f"detections through torch and onnxruntime (boxes within {BOX_TOL:g} px + {REL_TOL:g}·|value|, angles "
    f"{ANGLE_TOL:g} rad, scores {SCORE_TOL:g}). A detection only one backend finds is tolerated when a float-level "
    "tie explains it: its score is within the score tolerance of the score threshold, of the other backend's last "
    "box under max_per_img, of a tied nms_pre top-k cut, or of an overlapping box the other backend kept instead "
    "(NMS order). A check that matches no detection says so. An existing OUT is replaced only with --overwrite."
)


@app.command("export", help=HELP)
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A rotld checkpoint (train-teacher, distill or publish-model output)."),
    out: Path = typer.Argument(..., help="The ONNX file to write (e.g. student.onnx); written only if parity holds."),
    size: Optional[int] = typer.Option(
        None, "--size", help="Fixed square input size (multiple of 32). Default: any size, padded to a multiple of 32."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset of the graph."),
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help="The model's recipe (default: the one stored in the checkpoint)."
    ),
    check_images: Optional[Path] = typer.Option(
        None, "--check-images", help="Patches for the parity check (default: synthetic scenes at the input size)."
    ),
    check_count: int = typer.Option(4, "--check-count", help="How many images the parity check runs."),
    box_tol: float = typer.Option(BOX_TOL, "--box-tol", help="Parity: allowed box difference in pixels."),
    score_tol: float = typer.Option(SCORE_TOL, "--score-tol", help="Parity: allowed score difference."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists (default: refuse)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    from rotld_cli import ui
    from rotld_cli.deploy.parity import Tolerance
    from rotld_cli.engine.export import NOT_EXERCISED, ExportOptions, as_json_dict, check_options, export_model

    options = ExportOptions(
        checkpoint=checkpoint, out=out, size=size, opset=opset, recipe=recipe, check_images=check_images,
        check_count=check_count, tolerance=Tolerance(box=box_tol, score=score_tol), overwrite=overwrite,
    )  # fmt: skip
    check_options(options)
    result = export_model(options, on_step=None if as_json else ui.info)
    parity = result.parity
    if not parity.exercised:  # on stderr, with --json too
        ties = f" ({parity.borderline} one-sided at float-level ties)" if parity.borderline else ""
        ui.warn(NOT_EXERCISED.format(ties=ties))
    if as_json:
        print(json.dumps(as_json_dict(result), indent=2))
        return
    meta = result.metadata
    rows = [
        ["output", f"{result.out} ({result.size_bytes / 2**20:.1f} MiB)"],
        ["sha256", result.sha256],
        ["source", f"{checkpoint} (sha256 {meta.source_sha256[:16]}…)"],
        ["input", f"{'any H, W (multiple of 32)' if meta.input.fixed_size is None else meta.input.fixed_size}, "
                  f"dynamic batch, opset {meta.opset}"],
        ["classes", ", ".join(meta.classes)],
        ["parity", f"{len(result.check_images)} images: {parity.summary()}"],
        ["raw head outputs", f"max |torch − onnxruntime|: scores {result.raw_score_diff:.2g}, "
                             f"logits {result.raw_logit_diff:.2g}"],
    ]  # fmt: skip
    table = ui.table("export", ["", "value"], rows, justify_numbers=False)
    table.columns[1].overflow = "fold"
    ui.console.print(table)
    ui.info(f"exported {result.out} in {result.seconds:.1f} s")
