"""`rotld recipes list|show`: the bundled YAML recipes and what a recipe resolves to."""

from __future__ import annotations

import json
from typing import Optional

import typer

from rotld_cli.cli import app

recipes_app = typer.Typer(
    help="List and show YAML recipes (bundled names such as dota1/teacher-r34-gwd-2x, or files).",
    no_args_is_help=True,
)
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list", help="List the bundled recipes by detector family, with their descriptions.")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    from rotld_cli import ui
    from rotld_cli.recipes import FAMILIES, bundled_by_family

    found = bundled_by_family()
    if as_json:
        rows = [{"name": name, "family": family, "path": str(path), "description": text}
                for family, name, path, text in found]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        ui.warn("no bundled recipes found (rotld_cli/recipes_data/ is missing from this installation)")
        return
    rows, previous = [], None
    for family, name, _, text in found:
        rows.append([FAMILIES[family].title if family != previous else "", name, text])
        previous = family
    ui.console.print(ui.table("Bundled recipes", ["family", "name", "description"], rows, justify_numbers=False))
    ui.info("Show one resolved: [bold]rotld recipes show NAME[/] (add [bold]--set key=value[/] to try overrides).")


@recipes_app.command("show", help="Print a recipe fully resolved (bases merged, overrides applied, absolute paths).")
def show_cmd(
    recipe: str = typer.Argument(..., help="Bundled name (see `rotld recipes list`) or path to a recipe YAML."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a key: --set schedule.lr=0.005 (repeatable)."
    ),
) -> None:
    from rotld_cli.recipes import load_recipe

    resolved = load_recipe(recipe, overrides or ())
    header = [f"# {resolved.name}: resolved from {', '.join(str(p) for p in resolved.files)}"]
    header += [f"# --set {item}" for item in resolved.overrides]
    typer.echo("\n".join(header))
    typer.echo(resolved.to_yaml(), nl=False)
