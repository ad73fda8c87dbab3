"""`rotld publish-model`: strip a checkpoint for release: no optimizer, no teacher, hashed name."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rotld_cli import ui
from rotld_cli.cli import app


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def size_change(before: int, after: int) -> str:
    """`12.5% smaller` / `3.0% larger` (metadata converted to plain types can grow a small file)."""
    if not before or before == after:
        return "same size"
    change = 100.0 * (after - before) / before
    return f"{-change:.1f}% smaller" if change < 0 else f"{change:.1f}% larger"


def distillation_note(from_distill: bool, teacher_keys_removed: int) -> str:
    if not from_distill:
        return "no"
    if teacher_keys_removed:
        return f"yes ({teacher_keys_removed} teacher weights removed)"
    return "yes (no teacher weights in the input: removed before)"


@app.command("publish-model", help="Strip a checkpoint for release: no optimizer, no teacher, hashed name.")
def publish_cmd(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (.pth) to publish.", show_default=False),
    out: str = typer.Argument(
        ...,
        help="Desired output, e.g. student.pth (written as student-<sha256[:8]>.pth), or a directory.",
        show_default=False,
    ),
    keep_optimizer: bool = typer.Option(False, "--keep-optimizer", help="Keep the optimizer state (to resume)."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Load a full pickle (runs code from the file): only for trusted files."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
) -> None:
    from rotld_cli.publish import publish_model

    result = publish_model(checkpoint, out, keep_optimizer=keep_optimizer, trust=trust_checkpoint)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    change = size_change(result.size_before, result.size_after)
    rows = [
        ["input", f"{result.input} ({_size(result.size_before)})"],
        ["output", f"{result.output} ({_size(result.size_after)}, {change})"],
        ["sha256", result.sha256],
        ["kept", "\n".join(result.kept)],
        ["removed", "\n".join(result.removed) or "nothing"],
        ["from distillation", distillation_note(result.published_from_distill, result.teacher_keys_removed)],
    ]
    if result.converted:
        rows.append(["converted to plain types", "\n".join(result.converted)])
    tbl = ui.table("publish-model", ["", "value"], rows, justify_numbers=False)
    tbl.columns[1].overflow = "fold"
    ui.console.print(tbl)
    ui.console.print(f"published [bold]{result.output}[/] sha256 {result.sha256}", highlight=False, soft_wrap=True)
    for note in result.notes:
        ui.warn(note)
