"""The one safe loader: a checkpoint that pickles a callable (`os.system`) is refused on every path.

The refusal is one complete line naming the file, the offending global and `--trust-checkpoint`,
whether the file is read by rotld's loader (publish, --teacher, evaluate) or by mmcv's (seed
configs' `teacher_ckpt`, `load_checkpoint`), and the pickled command never runs.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from rotld_cli.checkpoints import load_checkpoint_file  # noqa: E402
from rotld_cli.cli import main  # noqa: E402
from rotld_cli.errors import RotldError  # noqa: E402


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"hook": _RunsACommand(marker)}}, path)
    return path, marker


def _assert_refusal(message: str, path) -> None:
    assert message.splitlines() == [message]
    assert f"{path}: holds Python objects that a safe load refuses ({os.system.__module__}.system)" in message
    assert message.endswith("pass --trust-checkpoint only if you trust the file's source")


def test_rotld_loader_names_the_file_the_global_and_the_trust_option(evil):
    path, marker = evil
    with pytest.raises(RotldError) as info:
        load_checkpoint_file(path)
    _assert_refusal(str(info.value), path)
    assert not marker.exists()


def test_publish_model_prints_the_whole_refusal_on_one_line(evil, tmp_path, capsys):
    path, marker = evil
    with pytest.raises(SystemExit) as exit_info:
        main(["publish-model", str(path), str(tmp_path / "out.pth")])
    err = " ".join(capsys.readouterr().err.split())  # Rich may wrap a long line on a narrow terminal
    assert exit_info.value.code == 1
    assert f"error: {path}: holds Python objects that a safe load refuses" in err
    assert "posix.system" in err or "nt.system" in err
    assert err.endswith("pass --trust-checkpoint only if you trust the file's source")
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


@pytest.mark.engine
def test_mmcv_loader_goes_through_the_same_refusal(evil):
    pytest.importorskip("mmrotate")
    from mmcv.runner.checkpoint import CheckpointLoader

    from rotld_cli.engine import load_engine

    load_engine()
    path, marker = evil
    with pytest.raises(RotldError) as info:
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    _assert_refusal(str(info.value), path)
    assert not marker.exists()


@pytest.mark.engine
def test_distill_refuses_a_pickled_command_as_teacher_before_writing_anything(evil, tmp_path, capsys):
    pytest.importorskip("mmrotate")
    path, marker = evil
    work = tmp_path / "student"
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "synthetic/student-r18-gwd-ld-kd", "--teacher", str(path), "--work-dir", str(work)])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 1
    assert f"error: --teacher: {path}: holds Python objects that a safe load refuses" in err
    assert err.endswith("pass --trust-checkpoint only if you trust the file's source")
    assert not marker.exists() and not work.exists()
