"""`rotld distill`: the teacher checks (one line naming the field) and a real few-iteration student run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import make_split, write_recipe, write_student_recipe  # noqa: E402

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.engine import checkpoints as ckpt  # noqa: E402
from rotld_cli.engine import load_engine  # noqa: E402
from rotld_cli.engine.train import TrainOptions, distill, train_teacher  # noqa: E402

load_engine()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    split = make_split(root)
    teacher_recipe = write_recipe(root / "teacher.yaml", split)
    student_recipe = write_student_recipe(root / "student.yaml", split, teacher_recipe)
    return root, split, teacher_recipe, student_recipe


def untrained_teacher(recipe: Path, out: Path, overrides=(), meta_update=None, plain_head=False) -> Path:
    """A teacher checkpoint as `train-teacher` writes it, from an initialised (not trained) model."""
    from mmrotate.models import build_detector

    from rotld_cli.engine.config import build_config
    from rotld_cli.recipes import load_recipe

    loaded = load_recipe(str(recipe), list(overrides))
    cfg = build_config(loaded)
    cfg.model.backbone.init_cfg = None
    meta = {"recipe": loaded.to_yaml(), "classes": list(loaded.classes), "angle_version": "oc", "epoch": 1}
    if plain_head:
        cfg.model.bbox_head.type = "RotatedRetinaHead"
        cfg.model.bbox_head.pop("reg_max")
        meta = {}  # a foreign (mmrotate) checkpoint: no rotld metadata
    meta.update(meta_update or {})
    model = build_detector(cfg.model)
    return ckpt.save_checkpoint(out, ckpt.model_state_dict(model), meta)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    _, err = capsys.readouterr()
    return exit_info.value.code, err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plain_head": True}, "head is not a distribution head (a plain rotated RetinaNet head"),
        ({"overrides": ["model.head.reg_max=4"]}, "reg_max 4 does not match the student's reg_max 8 (model.head"),
        ({"overrides": ["data.classes=[plane, ship, tank]"]},
         "the teacher's 3 classes differ from the student's 5: only the teacher has tank; only the student has "
         "small-vehicle, large-vehicle, storage-tank (data.classes)"),
        ({"overrides": ["data.classes=[ship, plane, small-vehicle, large-vehicle, storage-tank]"]},
         "the teacher has the student's classes in another order: label 0 is 'ship' for the teacher, 'plane' for "
         "the student (data.classes)"),
        ({"meta_update": {"angle_version": "le90"}}, "angle version 'le90' does not match the student's 'oc'"),
        ({"overrides": ["model.neck.out_channels=32"]}, "FPN width 32 does not match the student's 16"),
    ],
)
def test_mismatched_teacher_is_refused_before_training(setup, tmp_path, capsys, kwargs, message):
    _, _, teacher_recipe, student_recipe = setup
    teacher = untrained_teacher(teacher_recipe, tmp_path / "teacher.pth", **kwargs)
    work = tmp_path / "student"
    code, err = run_cli(["distill", str(student_recipe), "--teacher", str(teacher), "--work-dir", str(work)], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and message in " ".join(err.split()), err
    assert f"--teacher {teacher}" in " ".join(err.split())
    assert not work.exists(), "nothing may be written before the teacher is accepted"


def test_distill_needs_a_teacher_and_a_student_recipe(setup, tmp_path, capsys):
    _, _, teacher_recipe, student_recipe = setup
    code, err = run_cli(["distill", str(student_recipe), "--work-dir", str(tmp_path / "w")], capsys)
    assert code == 2 and "--teacher: required" in err
    args = ["distill", str(teacher_recipe), "--teacher", "x.pth", "--work-dir", str(tmp_path / "w")]
    code, err = run_cli(args, capsys)
    assert code == 2 and "has no teacher/distill sections" in err
    code, err = run_cli(["distill", str(student_recipe), "--teacher", str(tmp_path / "none.pth")], capsys)
    assert code == 1 and "none.pth: no such file" in err


def test_student_run_records_the_teacher_and_never_stores_its_weights(setup, tmp_path, capsys):
    _, _, teacher_recipe, student_recipe = setup
    teacher_run = train_teacher(
        str(teacher_recipe),
        TrainOptions(work_dir=tmp_path / "teacher", device="cpu", validate=False,
                     overrides=["schedule.epochs=1"]),
    )
    teacher_ckpt = teacher_run.checkpoint
    result = distill(
        str(student_recipe),
        TrainOptions(work_dir=tmp_path / "student", device="cpu", validate=False,
                     overrides=["schedule.epochs=1"], teacher=teacher_ckpt),
    )
    sha = ckpt.sha256_file(teacher_ckpt)
    assert result.teacher == {"path": str(teacher_ckpt.resolve()), "sha256": sha}
    student = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert student["meta"]["teacher"] == {"path": str(teacher_ckpt.resolve()), "sha256": sha}
    teacher = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
    # The student's weights are exactly a plain detector's keys: no teacher_model.* entries.
    assert not [k for k in student["state_dict"] if "teacher" in k]
    assert set(student["state_dict"]) == set(teacher["state_dict"])
    assert not any(torch.equal(student["state_dict"][k], teacher["state_dict"][k])
                   for k in student["state_dict"] if k.endswith("conv1.weight")), "student weights are its own"
    records = [json.loads(line) for line in (tmp_path / "student" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("mode") == "train"]
    assert len(train) == 2
    for r in train:
        assert r["loss_ld"] > 0 and r["loss_kd"] > 0 and r["loss_im"] == 0
        parts = r["loss_cls"] + r["loss_bbox"] + r["loss_ld"] + r["loss_kd"] + r["loss_im"]
        assert r["loss"] == pytest.approx(parts, rel=1e-5)

    # Resuming with a different teacher file is refused (its hash differs from the recorded one).
    other = untrained_teacher(teacher_recipe, tmp_path / "other.pth")
    code, err = run_cli(["distill", str(student_recipe), "--teacher", str(other), "--resume",
                         "--work-dir", str(tmp_path / "student")], capsys)
    assert code == 1 and "differs from the teacher this run started with" in err
