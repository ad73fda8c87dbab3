"""Every synthetic recipe of the rotated FCOS, rotated ATSS and Oriented R-CNN families, end to end
through the CLI: `train-teacher`, `distill` (1 epoch, then `--resume` for a second), `evaluate CKPT`
and `predict` on each family's LD+KD student, `export` of the one-stage families, and the teacher
check refusing what cannot teach.

Each recipe inherits the bundled one and is shrunk to test size: two 128² training patches (one
iteration per epoch), a 16-channel FPN and heads, every detection kept down to score 0 (a 1-iteration
model scores low, yet merge, AP and the export's parity check must see boxes). One teacher per family
is trained once and shared; the one-stage teachers are also exported to ONNX.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

from train_helpers import PATCH, make_split  # noqa: E402

from rotld_cli.cli import main  # noqa: E402

SHRINK = {
    "fcos": "  head: {feat_channels: 16, norm_groups: 8}\n",
    "atss": "  head: {feat_channels: 16, norm_groups: 8}\n",
    "orcnn": "  rpn: {feat_channels: 16, proposals: 100}\n  roi_head: {fc_out_channels: 32, num_samples: 64}\n",
}
STUDENTS = {
    "fcos": {
        "ld-kd": ("loss_ld", "loss_kd"),
        "ld-kd-binary": ("loss_ld", "loss_kd"),
        "bckd": ("loss_bckd_cls", "loss_bckd_iou"),
        "crosskd": ("loss_crosskd_cls", "loss_crosskd_ld"),
    },
    "atss": {
        "ld-kd": ("loss_ld", "loss_kd"),
        "ld-kd-binary": ("loss_ld", "loss_kd"),
        "bckd": ("loss_bckd_cls", "loss_bckd_iou"),
        "crosskd": ("loss_crosskd_cls", "loss_crosskd_ld"),
    },
    "orcnn": {"ld-kd": ("loss_ld", "loss_kd")},
}
OWN_TERMS = {
    "fcos": ("loss_cls", "loss_bbox", "loss_centerness"),
    "atss": ("loss_cls", "loss_bbox"),
    "orcnn": ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"),
}


def write(path: Path, base: str, family: str, split: Path, extra: str = "") -> Path:
    path.write_text(
        f"""base: {base}
model:
  neck: {{out_channels: 16}}
  test: {{score_thr: 0.0, max_per_img: 30}}
{SHRINK[family]}data: {{root: {split}, img_scale: {PATCH}, samples_per_gpu: 2}}
schedule: {{epochs: 1, lr_steps: [1], warmup_iters: 1}}
runtime: {{eval_interval: 2, checkpoint_interval: 1, log_interval: 1, seed: 0}}
{extra}""",
        encoding="utf-8",
    )
    return path


def run(argv: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return make_split(tmp_path_factory.mktemp("families"), num_train=2, num_val=1)


@pytest.fixture(scope="module")
def teachers(split, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """family → (teacher recipe, checkpoint): `train-teacher` on each family's synthetic teacher, 1 iteration."""
    from rotld_cli.engine.train import TrainOptions, train_teacher

    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for family in STUDENTS:
        recipe = write(root / f"{family}.yaml", f"synthetic-{family}/teacher-r34", family, split)
        run_ = train_teacher(str(recipe), TrainOptions(work_dir=root / family, device="cpu", validate=False))
        out[family] = (recipe, run_.checkpoint)
    return out


@pytest.mark.parametrize(("family", "method"), [(f, m) for f, methods in STUDENTS.items() for m in methods])
def test_distill_trains_and_resumes_every_student_recipe(teachers, split, family, method, tmp_path, capsys):
    teacher_recipe, teacher_ckpt = teachers[family]
    student = write(
        tmp_path / "student.yaml",
        f"synthetic-{family}/student-r18-{method}",
        family,
        split,
        f"teacher:\n  recipe: {teacher_recipe}\n",
    )
    work = tmp_path / "run"
    args = ["distill", student, "--teacher", teacher_ckpt, "--work-dir", work, "--device", "cpu", "--no-validate"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    terms = (*OWN_TERMS[family], *STUDENTS[family][method])
    progress = [line for line in (out + err).splitlines() if line.startswith("epoch 1/1 it ")]
    assert progress
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("mode") == "train"]
    assert len(train) == 1
    logged = sorted(k for k in train[0] if k.startswith("loss_"))
    assert logged == sorted(terms)
    assert all(train[0][key] > 0 for key in STUDENTS[family][method]), train[0]
    assert train[0]["loss"] == pytest.approx(sum(train[0][k] for k in logged), rel=1e-5)
    for key in terms:
        assert re.search(rf"[( ]{key.removeprefix('loss_')} [0-9]", progress[-1]), (key, progress[-1])
    code, _, err = run([*args, "--resume", "--set", "schedule.epochs=2"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r.get("mode") == "train"] == [1, 2]
    state = torch.load(work / "latest.pth", map_location="cpu", weights_only=True)
    assert state["meta"]["epoch"] == 2 and not any("teacher" in key for key in state["state_dict"])
    if method == "ld-kd":  # one student per family is also evaluated and run on full images
        evaluate_and_predict(work / "latest.pth", split, tmp_path, capsys)


def test_baselines_train_with_train_teacher(split, tmp_path, capsys):
    for family in STUDENTS:
        recipe = write(tmp_path / f"{family}.yaml", f"synthetic-{family}/baseline-r18", family, split)
        code, _, err = run(
            ["train-teacher", recipe, "--work-dir", tmp_path / family, "--device", "cpu", "--no-validate"], capsys
        )
        assert code == 0, (family, err)
        assert (tmp_path / family / "epoch_1.pth").is_file()


def evaluate_and_predict(checkpoint: Path, split: Path, out: Path, capsys) -> None:
    """`rotld evaluate CKPT` on the val patches (with test settings of its own) and `rotld predict` on the images."""
    data = split.parent / "data"
    evaluate = ["evaluate", checkpoint, "--split-dir", split / "val", "--ann-dir", data / "val" / "labelTxt",
                "--out", out / "eval", "--score-thr", "0", "--max-per-img", "20", "--json"]  # fmt: skip
    code, stdout, err = run(evaluate, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["test_cfg"]["score_thr"] == 0.0 and report["test_cfg"]["max_per_img"] == 20
    classes = ["plane", "small-vehicle", "large-vehicle", "ship", "storage-tank"]
    rows = sum(len((out / "eval" / "patch_results" / f"Task1_{c}.txt").read_text().splitlines()) for c in classes)
    assert rows > 0, "the student's detections reach the Task1 files"
    assert 0.0 <= report["AP"] <= 1.0 and report["classes"] == classes
    predict = ["predict", checkpoint, data / "val" / "images", "--out", out / "pred", "--sizes", PATCH, "--gaps", "0"]
    code, _, err = run(predict, capsys)
    assert code == 0, err
    images = sorted(p.stem for p in (data / "val" / "images").iterdir())
    assert sorted(p.stem for p in (out / "pred" / "images").glob("*.json")) == images


@pytest.mark.parametrize(
    ("student_family", "teacher_family", "message"),
    [
        ("atss", "fcos", "a rotated FCOS teacher cannot teach a rotated ATSS student"),
        ("fcos", "orcnn", "an Oriented R-CNN teacher cannot teach a rotated FCOS student"),
        ("orcnn", "atss", "a rotated ATSS teacher cannot teach an Oriented R-CNN student"),
    ],
)
def test_a_teacher_of_another_family_is_refused_in_one_line(
    teachers, split, student_family, teacher_family, message, tmp_path, capsys
):
    _, teacher_ckpt = teachers[teacher_family]
    own_recipe, _ = teachers[student_family]
    student = write(
        tmp_path / "student.yaml",
        f"synthetic-{student_family}/student-r18-ld-kd",
        student_family,
        split,
        f"teacher:\n  recipe: {own_recipe}\n",
    )
    work = tmp_path / "run"
    code, _, err = run(["distill", student, "--teacher", teacher_ckpt, "--work-dir", work, "--device", "cpu"], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"--teacher {teacher_ckpt}: {message}" in " ".join(err.split()), err
    assert "(model.family)" in err and not work.exists()


@pytest.mark.parametrize(
    ("family", "override", "message"),
    [
        ("fcos", "model.head.reg_max=8", "reg_max 8 does not match the student's reg_max 16"),
        ("orcnn", "model.roi_head.reg_max=8", "reg_max 8 does not match the student's reg_max 16"),
        ("atss", "data.classes=[plane, ship]", "the teacher's 2 classes differ from the student's"),
        ("fcos", "model.fcos.strides=[4, 8, 16, 32, 64]", "point strides [4, 8, 16, 32, 64] do not match"),
    ],
)
def test_a_teacher_with_other_bins_or_classes_is_refused(teachers, split, family, override, message, tmp_path, capsys):
    from test_distill import untrained_teacher

    own_recipe, _ = teachers[family]
    angle = {"angle_version": "oc" if family == "atss" else "le90"}
    teacher = untrained_teacher(own_recipe, tmp_path / "teacher.pth", overrides=[override], meta_update=angle)
    student = write(
        tmp_path / "student.yaml",
        f"synthetic-{family}/student-r18-ld-kd",
        family,
        split,
        f"teacher:\n  recipe: {own_recipe}\n",
    )
    code, _, err = run(["distill", student, "--teacher", teacher, "--work-dir", tmp_path / "run"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert message in " ".join(err.split()), err


@pytest.mark.parametrize("family", ["fcos", "atss"])
def test_one_stage_families_export_to_onnx_with_the_parity_check(teachers, split, family, tmp_path, capsys):
    from rotld_cli.deploy.onnx_detector import OnnxDetector

    _, checkpoint = teachers[family]
    out = tmp_path / f"{family}.onnx"
    code, stdout, err = run(["export", checkpoint, out, "--check-images", split / "val", "--json"], capsys)
    assert code == 0, err
    parity = json.loads(stdout)["parity"]
    assert parity["matched"] == parity["engine_detections"] == parity["onnx_detections"] > 0
    assert parity["max_box_diff"] <= 0.05 and parity["max_score_diff"] <= 1e-4
    meta = OnnxDetector.from_file(out).meta
    assert meta.family == family and meta.reg_max == (16 if family == "fcos" else 8)
    assert (meta.points is not None) == (family == "fcos") and meta.format == (2 if family == "fcos" else 1)


def test_two_stage_export_is_refused_in_one_line(teachers, tmp_path, capsys):
    _, checkpoint = teachers["orcnn"]
    out = tmp_path / "orcnn.onnx"
    code, _, err = run(["export", checkpoint, out], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and not out.exists(), err
    assert "Oriented R-CNN cannot be exported yet: a two-stage graph needs the proposal step" in " ".join(err.split())
