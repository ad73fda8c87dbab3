"""A built wheel carries the bundled recipes: installed outside the checkout, `rotld recipes` finds them.

The wheel is built from a copy of the package sources (nothing is written into the checkout) and
installed with `--no-deps` into a fresh venv in tmp_path. Its third-party packages (typer, rich,
yaml, ...) come from the environment running the tests through a `.pth` file, as bootstrap.py
links each checkout's .venv to the shared environment: nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import typer

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(cwd)})
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_ships_the_recipes(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "rotld_cli", source / "rotld_cli", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-q", "-w", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("rotld-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path).stdout.strip())
    shared = Path(typer.__file__).resolve().parent.parent  # where this environment keeps typer, rich, yaml
    assert not (shared / "rotld_cli").exists(), "the shared packages must not hold rotld itself"
    (purelib / "_shared_packages.pth").write_text(f"{shared}\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
         cwd=tmp_path)

    installed = _run(python, "-c", "import rotld_cli; print(rotld_cli.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(installed).is_relative_to(purelib), installed  # the wheel's copy, not the checkout
    rotld = env_dir / "bin" / "rotld"
    listed = _run(rotld, "recipes", "list", cwd=tmp_path).stdout
    for name in ("dota1/teacher-r34-gwd-2x", "dota1/student-r18-gwd-ld-kd-1x", "synthetic/baseline-r18-gwd"):
        assert name in listed
    shown = _run(rotld, "recipes", "show", "dota1/teacher-r34-gwd-2x", cwd=tmp_path).stdout
    assert "depth: 34" in shown and "epochs: 24" in shown and "torchvision://resnet34" in shown
    assert str(REPO_ROOT) not in listed + shown
