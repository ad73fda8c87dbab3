"""The training commands check their arguments before the engine loads, and name what the user passed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rotld_cli.engine.reporting import rate_text

# run `rotld ARGS` in a fresh interpreter; report its exit code, stderr and which heavy modules it imported
_PROBE = """
import contextlib, io, json, sys
from rotld_cli.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        main(sys.argv[1:])
        code = 0
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in ("torch", "mmcv", "mmdet", "mmrotate") if m in sys.modules]
print(json.dumps({"code": code, "err": err.getvalue(), "heavy": heavy}))
"""


def probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="300"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a constraint between keys broken by --set blames the option, not the bundled recipe file
        (["train-teacher", "synthetic/teacher-r34-gwd", "--set", "data.flip_ratio=[1]"],
         "error: --set data.flip_ratio=[1]: data.flip_ratio: 1 ratios for 3 flip_direction entries"),
        (["train-teacher", "synthetic/teacher-r34-gwd", "--set", "data.flip_ratio=[0.5,0.5,0.5]"],
         "error: --set data.flip_ratio=[0.5,0.5,0.5]: data.flip_ratio: the ratios sum to 1.5 > 1"),
        (["train-teacher", "synthetic/teacher-r34-gwd", "--set", "schedule.lr=abc"],
         "error: --set schedule.lr=abc: schedule.lr: expected float, got str 'abc'"),
        (["distill", "synthetic/student-r18-gwd-ld-kd"],
         "error: --teacher: required (the teacher checkpoint, e.g. work_dirs/<teacher>/latest.pth)"),
        (["train-teacher", "synthetic/student-r18-gwd-ld-kd"], "is a student recipe (it has a teacher section)"),
        (["distill", "synthetic/teacher-r34-gwd", "--teacher", "t.pth"], "has no teacher/distill sections"),
    ],
)
def test_recipe_and_set_errors_exit_2_before_the_engine_is_imported(args, message):
    result = probe(*args)
    assert result["code"] == 2
    assert message in result["err"] and len(result["err"].strip().splitlines()) == 1, result["err"]
    assert result["heavy"] == [], f"imported before refusing: {result['heavy']}"


def test_a_bad_set_in_a_recipe_file_still_names_the_file(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("base: synthetic/teacher-r34-gwd\ndata:\n  flip_ratio: [1]\n")
    result = probe("train-teacher", str(recipe))
    assert result["code"] == 1 and result["heavy"] == []
    assert f"{recipe.name}: data.flip_ratio: 1 ratios for 3 flip_direction entries" in result["err"]


@pytest.mark.parametrize(
    ("iters_per_s", "text"),
    [(2.5, "2.50 it/s"), (1.0, "1.00 it/s"), (0.25, "4.00 s/it"), (1 / 90, "90.00 s/it"), (0.0, "0.00 it/s")],
)
def test_a_step_slower_than_a_second_shows_seconds_per_iteration(iters_per_s, text):
    assert rate_text(iters_per_s) == text


def test_the_live_training_display_draws_what_the_hooks_report(monkeypatch):
    import io

    from rich.console import Console

    from rotld_cli import ui

    screen = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=screen, force_terminal=True, width=160, color_system=None))
    display = ui.TrainDisplay()
    assert display.live  # a terminal: the bar, not periodic lines
    display.start(total=4, completed=1)
    display.update(2, "epoch 1/2", "it 2/2 loss 1.2500 (cls 1.0000 bbox 0.2500) lr 1.00e-02", rate_text(0.5))
    display.stop()
    display.table("Validation after epoch 1", [("ap50", "0.5000")])
    text = screen.getvalue()
    assert "epoch 1/2" in text and "it 2/2 loss 1.2500" in text and "2.00 s/it" in text and "2/4" in text
    assert "Validation after epoch 1" in text and "ap50" in text and "0.5000" in text
