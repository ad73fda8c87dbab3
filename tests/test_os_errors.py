"""Ordinary file-system mistakes (an output that is a file or a folder, a path under /proc or
/sys, a full disk) are one line naming the user's path, exit 1: never "internal error", never
a temp file's name; `--debug` still shows the traceback."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from rotld_cli.cli import main
from rotld_cli.errors import describe_os_error


def rotld(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err and "/." not in err  # no hidden temp file
    return lines[0]


@pytest.fixture()
def src(tmp_path: Path, dota_samples: Path) -> Path:
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    shutil.copy(dota_samples / "images" / "P1888.png", root / "images")
    return root


def test_prepare_dota_out_below_a_file(src, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "afile" / "out")
    assert code == 1
    assert one_error_line(err) == f"error: {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file, not a folder"
    assert (tmp_path / "afile").read_text() == "mine"


def test_prepare_dota_out_under_proc(src, capsys):
    code, _, err = rotld(capsys, "prepare-dota", src, "/proc/rotld-test-out")
    assert code == 1
    assert one_error_line(err) == (
        "error: /proc/rotld-test-out: no such file or folder (and it cannot be created in /proc)"
    )


def test_prepare_dota_out_under_sys(src, capsys):
    code, _, err = rotld(capsys, "prepare-dota", src, "/sys/rotld-test-out")
    assert code == 1 and one_error_line(err).startswith("error: /sys/rotld-test-out: ")


def test_debug_keeps_the_traceback(src, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code, _, err = rotld(capsys, "prepare-dota", src, tmp_path / "afile" / "out", "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err and "NotADirectoryError" in err
    assert err.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'afile' / 'out'}: ")


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}, "meta": {"CLASSES": ["plane"]}}, path)
    return path


@pytest.mark.engine
def test_publish_onto_a_folder_names_the_folder_not_a_temp_file(checkpoint, tmp_path, capsys):
    code, out, _ = rotld(capsys, "publish-model", checkpoint, tmp_path / "rel" / "student.pth", "--json")
    assert code == 0
    written = Path(json.loads(out)["output"])
    written.unlink()
    written.mkdir()  # a folder where the hashed file goes
    (written / "keep.txt").write_text("mine")
    code, _, err = rotld(capsys, "publish-model", checkpoint, tmp_path / "rel" / "student.pth")
    assert code == 1
    assert one_error_line(err) == f"error: {written}: is a folder, but a file is needed here"
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == [written.name]
    assert (written / "keep.txt").read_text() == "mine"


@pytest.mark.engine
def test_publish_below_a_file(checkpoint, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    code, _, err = rotld(capsys, "publish-model", checkpoint, tmp_path / "afile" / "student.pth")
    assert code == 1
    assert one_error_line(err) == f"error: {tmp_path / 'afile'}: is a file, but a folder is needed here"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EEXIST, "already exists"),
        (errno.EISDIR, "is a folder, but a file is needed here"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system"),
        (errno.ENOSPC, "no space left on the device"),
    ],
)
def test_the_reasons(code, expected, tmp_path):
    path = tmp_path / "out" / "x.png"
    assert describe_os_error(OSError(code, "ignored", str(path))) == f"{path}: {expected}"
    # a hidden temp name is replaced by the user's path
    assert describe_os_error(OSError(code, "ignored", str(tmp_path / ".x.png.abc")), path) == f"{path}: {expected}"


def test_an_error_without_a_path_is_not_described():
    assert describe_os_error(OSError(errno.EPIPE, "Broken pipe")) is None


@pytest.mark.engine
def test_publish_into_sys_names_the_output_not_the_temp_file(checkpoint, capsys):
    code, _, err = rotld(capsys, "publish-model", checkpoint, "/sys/student.pth")
    assert code == 1
    line = one_error_line(err)  # also: no `/.student.pth.<random>` temp name
    assert line.startswith("error: /sys/student-") and ".pth: " in line
