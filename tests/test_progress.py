"""Progress without a terminal: periodic plain log lines (done/total, rate, elapsed, ETA), never silence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.progress import TextColumn

from rotld_cli import ui


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines_of(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_lines_every_interval_and_every_tenth_and_at_the_end(capsys, monkeypatch):
    monkeypatch.delenv("ROTLD_PROGRESS_SECONDS", raising=False)
    clock = Clock()
    bar = ui.LoggedProgress(TextColumn("{task.description}"), console=ui.console, get_time=clock)
    with bar:
        task = bar.add_task("training", total=1000)
        for _ in range(5):  # 5 steps of 3 s: 0.5% each, nothing until 10 s have passed
            clock.now += 3
            bar.advance(task)
        # speed over the samples: 3 steps in the 9 s between the first and the fourth -> 3 s each
        assert lines_of(capsys) == ["training: 4/1000 (0%), 3.0 s each, elapsed 0:00:12, ETA 0:49:48"]
        clock.now += 0.5
        bar.update(task, completed=100)  # a tenth done: a line before the 10 s are up
        # Rich's rate: completed after the first sample over the time since it, (4 + 95) / 12.5 s
        assert lines_of(capsys) == ["training: 100/1000 (10%), 7.92/s, elapsed 0:00:15, ETA 0:01:54"]
        clock.now += 0.3
        bar.update(task, completed=200)  # another tenth, but less than 1 s after the last line
        assert lines_of(capsys) == []
        clock.now += 1
        bar.update(task, completed=201)
        assert lines_of(capsys) == ["training: 201/1000 (20%), 14.49/s, elapsed 0:00:16, ETA 0:00:56"]
        clock.now += 2
        bar.update(task, completed=1000)
    # one line when done ((4 + 95 + 100 + 1 + 799) / 15.8 s; elapsed 18.8 s; no ETA), not repeated at stop
    assert lines_of(capsys) == ["training: 1000/1000 (100%), 63.23/s, elapsed 0:00:18"]


def test_the_callers_columns_and_an_unknown_total(capsys, monkeypatch):
    monkeypatch.setenv("ROTLD_PROGRESS_SECONDS", "0")
    clock = Clock()
    extra = TextColumn("{task.fields[patches]} patches")
    bar = ui.LoggedProgress(extra, extra_columns=(extra,), console=ui.console, get_time=clock)
    with bar:
        task = bar.add_task("splitting images", total=None, patches=0)
        clock.now += 4
        bar.update(task, advance=2, patches=18)
    assert lines_of(capsys) == ["splitting images: 2 done, 18 patches, elapsed 0:00:04, ETA ?"]


def test_a_terminal_gets_the_live_bar_and_a_pipe_gets_lines(monkeypatch):
    monkeypatch.setattr(ui.console, "_force_terminal", True)
    assert type(ui.progress()) is ui.Progress
    monkeypatch.setattr(ui.console, "_force_terminal", False)
    assert isinstance(ui.progress(), ui.LoggedProgress)


def test_prepare_dota_into_a_pipe_logs_its_progress(dota_samples: Path, tmp_path: Path, repo_root: Path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    for image_id in ("P0706", "P1888"):
        shutil.copy(dota_samples / "images" / f"{image_id}.png", src / "images")
    env = {**os.environ, "ROTLD_PROGRESS_SECONDS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rotld_cli", "prepare-dota", str(src), str(tmp_path / "out"), "--workers", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=repo_root,
    )
    assert proc.returncode == 0, proc.stderr
    logged = [line for line in proc.stdout.splitlines() if line.startswith("splitting images: ")]
    assert [line.split(",")[0] for line in logged] == ["splitting images: 1/2 (50%)", "splitting images: 2/2 (100%)"]
    assert logged[-1].split(", ")[1] == "5 patches"  # P0706: 4, P1888: 1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["total"]["patches"] == 5
