"""`rotld distill` with the CrossKD, BCKD and LD+CrossKD synthetic recipes: a real few-iteration run each.

Each student recipe inherits the bundled `synthetic/student-r18-gwd-{method}` recipe, shrunk to test
size (train_helpers); one tiny teacher is trained first. Checked: the run finishes through the CLI,
its progress line shows every loss term, each new term is logged and positive, the logged total is
the sum of the terms, and resuming picks the run up again.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import make_split, write_recipe  # noqa: E402

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.engine import load_engine  # noqa: E402
from rotld_cli.engine.train import TrainOptions, train_teacher  # noqa: E402

load_engine()

METHODS = {
    "crosskd": ("loss_crosskd_cls", "loss_crosskd_ld"),
    "bckd": ("loss_bckd_cls", "loss_bckd_iou"),
    "ld-crosskd": ("loss_ld", "loss_crosskd_cls", "loss_crosskd_ld"),
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("successors")
    split = make_split(root)
    recipe = write_recipe(root / "teacher.yaml", split)
    run = train_teacher(str(recipe), TrainOptions(work_dir=root / "teacher", device="cpu", validate=False,
                                                  overrides=["schedule.epochs=1"]))
    return root, split, recipe, run.checkpoint


@pytest.mark.parametrize("method", list(METHODS))
def test_distill_trains_each_successor_recipe(teacher, method, tmp_path, capsys):
    _, split, teacher_recipe, teacher_ckpt = teacher
    student = write_recipe(tmp_path / f"{method}.yaml", split, base=f"synthetic/student-r18-gwd-{method}",
                           extra=f"teacher:\n  recipe: {teacher_recipe}\n")
    work = tmp_path / "run"
    args = ["distill", str(student), "--teacher", str(teacher_ckpt), "--work-dir", str(work), "--device", "cpu",
            "--no-validate", "--set", "schedule.epochs=1"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    terms = METHODS[method]
    progress = [line for line in (out + err).splitlines() if line.startswith("epoch 1/1 it ")]
    assert progress
    for key in ("loss_cls", "loss_bbox", *terms):
        assert re.search(rf"[( ]{key.removeprefix('loss_')} [0-9]", progress[-1]), (key, progress[-1])
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("mode") == "train"]
    assert len(train) == 2
    for record in train:
        logged = sorted(k for k in record if k.startswith("loss_"))
        assert logged == sorted(("loss_cls", "loss_bbox", *terms))
        assert all(record[key] > 0 for key in terms)
        assert record["loss"] == pytest.approx(sum(record[k] for k in logged), rel=1e-5)

    # Resume: a second epoch continues from the saved one (same teacher, recorded by hash).
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-1], "schedule.epochs=2", "--resume"])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert max(r.get("epoch", 0) for r in records if r.get("mode") == "train") == 2


def test_crosskd_refuses_a_teacher_whose_head_it_cannot_feed(teacher, tmp_path, capsys):
    from test_distill import untrained_teacher

    _, split, teacher_recipe, _ = teacher
    wide = untrained_teacher(teacher_recipe, tmp_path / "wide.pth", overrides=["model.head.feat_channels=32"])
    student = write_recipe(tmp_path / "crosskd.yaml", split, base="synthetic/student-r18-gwd-crosskd",
                           extra=f"teacher:\n  recipe: {teacher_recipe}\n")
    work = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", str(student), "--teacher", str(wide), "--work-dir", str(work), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert f"--teacher {wide}: CrossKD feeds the student's head features to the teacher's head: " \
           "model.head.feat_channels differs (student 16, teacher 32" in err
    assert len(err.strip().splitlines()) == 1 and not work.exists()
