"""Atomic writes: the final name holds either the old content or the complete new one."""

from __future__ import annotations

import os
import stat

import pytest

from rotld_cli.fileio import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_creates_parents_and_content(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert os.listdir(target.parent) == ["out.txt"]


def test_failure_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.pth"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.pth"]


def test_temp_file_keeps_the_suffix_for_encoders(tmp_path):
    with atomic_path(tmp_path / "patch.png") as tmp:
        assert tmp.suffix == ".png"
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode) == 0o644
