"""Bad files and options are answered in one line before the engine loads (predict, export, distill,
evaluate CKPT), and the help pages say what the commands take."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from rotld_cli.checkpoints import check_checkpoint_file
from rotld_cli.errors import RotldError

PROBE = """
import json, sys
from rotld_cli.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"mmcv", "mmdet", "mmrotate", "torch"})
print(json.dumps({"code": code, "loaded": loaded}))
"""


@pytest.fixture
def files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage, not a checkpoint\n")
    archive = tmp_path / "archive.pth"  # what torch.save writes, as far as a cheap check can tell
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x062.14.1" + bytes(64))
    renamed = tmp_path / "renamed.pth"
    renamed.write_bytes(onnx.read_bytes())
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "afile").write_text("")
    (tmp_path / "existing.onnx").write_bytes(b"the user's model")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Task1_plane.txt").write_text("P1 0.9 1 1 2 1 2 2 1 2\n")
    return tmp_path


def probe(repo_root, args) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=repo_root, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"], proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["predict", "{t}/garbage.pth", "{t}/image.png", "--out", "{t}/o"], 1,
         "garbage.pth: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"),
        (["predict", "{t}/archive.pth", "{t}/image.png", "--out", "{t}/o", "--batch-size", "0"], 2,
         "--batch-size must be at least 1, got 0"),
        (["predict", "{t}/model.onnx", "{t}/image.png", "--out", "{t}/o", "--recipe", "r.yaml"], 2,
         "--recipe applies to .pth checkpoints"),
        (["predict", "{t}/archive.pth", "{t}/image.png", "--out", "{t}/mine"], 2,
         "holds files rotld predict did not write (Task1_plane.txt)"),
        (["predict", "{t}/archive.pth", "{t}/image.png", "--out", "{t}"], 2, "holds the SOURCE image"),
        (["predict", "{t}/archive.pth", "{t}/image.png", "--out", "{t}/afile/o"], 2, "afile is a file, not a folder"),
        (["predict", "{t}/renamed.pth", "{t}/image.png", "--out", "{t}/o"], 1, "renamed.pth: an ONNX model"),
        (["distill", "synthetic/student-r18-gwd-ld-kd", "--teacher", "{t}/nope.pth", "--work-dir", "{t}/w"], 1,
         "--teacher: {t}/nope.pth: no such file"),
        (["distill", "synthetic/student-r18-gwd-ld-kd", "--teacher", "{t}/model.onnx", "--work-dir", "{t}/w"], 1,
         "--teacher: {t}/model.onnx: an ONNX model, not a .pth checkpoint (give the .pth it was exported from"),
        (["export", "{t}/garbage.pth", "{t}/x.onnx"], 1, "garbage.pth: not a PyTorch checkpoint"),
        (["export", "{t}/model.onnx", "{t}/x.onnx"], 1, "model.onnx: an ONNX model, not a .pth checkpoint"),
        (["export", "{t}/archive.pth", "{t}/afile/x.onnx"], 2, "OUT {t}/afile/x.onnx: {t}/afile is a file"),
        (["export", "{t}/archive.pth", "{t}/existing.onnx"], 2, "exists; pass --overwrite to replace it"),
        (["export", "{t}/archive.pth", "{t}/x.onnx", "--check-images", "{t}/nope"], 2,
         "--check-images {t}/nope: no such folder"),
        (["evaluate", "{t}/garbage.pth", "--split-dir", "{t}"], 1, "garbage.pth: not a PyTorch checkpoint"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_before_the_engine_loads(files, repo_root, args, code, message):
    got, loaded, stderr = probe(repo_root, [a.format(t=files) for a in args])
    assert (got, loaded) == (code, []), stderr
    assert message.format(t=files) in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert (files / "existing.onnx").read_bytes() == b"the user's model"
    assert (files / "mine" / "Task1_plane.txt").read_text() == "P1 0.9 1 1 2 1 2 2 1 2\n"
    assert not (files / "o").exists() and not (files / "x.onnx").exists()


def test_the_cheap_check_tells_the_formats_apart(files):
    assert check_checkpoint_file(files / "archive.pth") == files / "archive.pth"
    pickled = files / "legacy.pth"  # torch's legacy format is a protocol-2 pickle
    pickled.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.")
    check_checkpoint_file(pickled)
    for name, reason in (("garbage.pth", "neither a torch.save zip archive nor a pickle"),
                         ("renamed.pth", "an ONNX model"), ("nope.pth", "no such file")):  # fmt: skip
        with pytest.raises(RotldError, match=reason):
            check_checkpoint_file(files / name)
    empty = files / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(RotldError, match="the file is empty"):
        check_checkpoint_file(empty)
    foreign = files / "foreign.pth"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(RotldError, match=r"a zip archive that torch\.save did not write"):
        check_checkpoint_file(foreign, "--teacher")


def test_help_pages_say_what_the_commands_take(repo_root):
    def page(*args) -> str:
        proc = subprocess.run([sys.executable, "-m", "rotld_cli", *args, "-h"], cwd=repo_root, capture_output=True,
                              text=True, timeout=120, check=True, env={"COLUMNS": "200", "PATH": ""})  # fmt: skip
        return " ".join(proc.stdout.split())

    predict = page("predict")
    for words in (".onnx", "--recipe", "same size and modification time, or else same SHA-256",
                  "centred outside the image", "lowered to it"):  # fmt: skip
        assert words in predict, words
    distill = page("distill")
    assert "CrossKD" in distill and "BCKD" in distill and "LD+KD" in distill
    export = page("export")
    assert "--overwrite" in export and "float-level tie" in export
