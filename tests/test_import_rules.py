"""The import rules of the layers, checked on the source (one place instead of a probe per command).

- No module under `engine/` or `dota/` imports the CLI (`rotld_cli.cli`) or the UI (`rotld_cli.ui`):
  they report through callbacks and `logging`.
- The engine-free modules (the DOTA toolkit, evaluation on result files, publish, the checkpoint
  loader, recipes, the detector contract, ...) import no mmcv/mmdet/mmrotate anywhere, not even
  inside a function, and import only other engine-free modules of rotld; torch only inside a
  function (the checkpoint loader needs it, importing the module must not).
- The commands that never need the engine (`prepare-dota`, `publish-model`, `recipes`) follow
  the same rule; every command module keeps heavy imports out of its module level, so `--help`
  stays fast. One subprocess confirms it at run time for the help pages.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rotld_cli"
HEAVY = ("torch", "torchvision", "mmcv", "mmdet", "mmrotate")
ENGINE_LIBS = ("mmcv", "mmdet", "mmrotate")
# below the CLI: never import it or draw UI
LAYERED = ("rotld_cli.engine", "rotld_cli.dota", "rotld_cli.evaluation", "rotld_cli.predict", "rotld_cli.deploy",
           "rotld_cli.datasets")
UI = ("rotld_cli.cli", "rotld_cli.ui")
ENGINE_FREE = (
    "rotld_cli.dota",
    "rotld_cli.evaluation",
    "rotld_cli.datasets",
    "rotld_cli.demo.scenes",
    "rotld_cli.deploy",
    "rotld_cli.predict.sources",
    "rotld_cli.predict.images",
    "rotld_cli.predict.pixels",
    "rotld_cli.predict.geo",
    "rotld_cli.predict.maps",
    "rotld_cli.predict.run",
    "rotld_cli.predict.outputs",
    "rotld_cli.engine.patches",  # the one patch loop: any Detector, no engine import
    "rotld_cli.quiet",
    "rotld_cli.publish",
    "rotld_cli.checkpoints",
    "rotld_cli.compat_libs",  # numpy/OpenCV version differences: numpy and cv2 only, inside functions
    "rotld_cli.recipes",
    "rotld_cli.detector",
    "rotld_cli.training",
    "rotld_cli.threads",
    "rotld_cli.fileio",
    "rotld_cli.errors",
    "rotld_cli.ui",
    "rotld_cli.engine.reporting",  # the engine's progress interface: logging only
    "rotld_cli.cli.prepare",
    "rotld_cli.cli.publish",
    "rotld_cli.cli.recipes",
    "rotld_cli.cli.convert",
)

ROOTS = ("rotld_cli", "rotld_cli.cli")  # the package and the command registry (checked by the last two tests)
WORKER = "rotld_cli.cli.worker"  # the entry of launched worker processes: never loaded by a command's --help


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(node, ast.If) and isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package, `level - 1` packages up
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base]).rstrip(".")
                found.append((base, child.lineno, top))
                found.extend((f"{base}.{alias.name}", child.lineno, top) for alias in child.names
                             if f"{base}.{alias.name}" in MODULES)
            top_here = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, top_here)

    visit(tree, True)
    return found


def test_the_scan_sees_the_package():
    assert {"rotld_cli.engine.train", "rotld_cli.dota.split", "rotld_cli.cli.train"} <= set(MODULES)
    # lazy (function-level) imports are found too: the training command imports the engine inside run_training
    lazy = [(name, top) for name, _, top in imports("rotld_cli.cli.train") if name == "rotld_cli.engine.train"]
    assert lazy == [("rotld_cli.engine.train", False)]


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, LAYERED)])
def test_engine_and_toolkit_never_import_the_cli_or_ui(module):
    bad = [f"line {line}: {name}" for name, line, _ in imports(module) if _in(name, UI)]
    assert not bad, f"{MODULES[module]} imports the CLI/UI layer: {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, ENGINE_FREE)])
def test_engine_free_modules_import_no_engine(module):
    bad = []
    for name, line, top in imports(module):
        root = name.split(".")[0]
        if root in ENGINE_LIBS or (root in HEAVY and top):
            bad.append(f"line {line}: {name}")
        elif root == "rotld_cli" and name in MODULES and not _in(name, ENGINE_FREE) and name not in ROOTS:
            bad.append(f"line {line}: {name} (not engine-free)")
    assert not bad, f"{MODULES[module]}: {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if _in(m, ("rotld_cli.cli",)) and m != WORKER])
def test_command_modules_import_nothing_heavy_at_module_level(module):
    bad = [f"line {line}: {name}" for name, line, top in imports(module)
           if top and (name.split(".")[0] in HEAVY or (_in(name, ("rotld_cli.engine",)) and
                       not _in(name, ENGINE_FREE)))]
    assert not bad, f"{MODULES[module]}: {bad}"


_HELP_PROBE = """
import json, sys
from rotld_cli.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"codes": codes, "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))}))
""".replace("HEAVY", repr(HEAVY))


def test_help_pages_import_no_engine():
    pages = [["--help"], ["prepare-dota", "--help"], ["train-teacher", "--help"], ["distill", "--help"],
             ["evaluate", "--help"], ["publish-model", "--help"], ["recipes", "--help"], ["doctor", "--help"],
             ["--version"]]
    done = subprocess.run([sys.executable, "-c", _HELP_PROBE, json.dumps(pages)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0] * len(pages), "loaded": []}
