"""`rotld evaluate CKPT`: inference on a split's patches, merge, AP, submission zip, pictures, bad input.

The checkpoints are trained here, once per session, on synthetic data sized for 2 CPU cores:
256 px images cut by prepare-dota into nine 128 px patches each (stride 96, so objects in the
32 px overlaps are detected twice and must be merged), a ResNet-18 with a 16-channel FPN/head.
One epoch teaches such a model nothing, so most runs use `--score-thr 0 --max-per-img 10` to
get detections to merge, count and draw. A non-trivial AP is obtained by evaluating against a
ground truth made of the model's own best detections, where the expected AP is computed here.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]
torch = pytest.importorskip("torch")
pytest.importorskip("mmrotate")

import cv2  # noqa: E402
from shapely.geometry import Polygon  # noqa: E402
from train_helpers import write_recipe, write_student_recipe  # noqa: E402

from rotld_cli.cli import main  # noqa: E402
from rotld_cli.demo.scenes import generate_dataset  # noqa: E402
from rotld_cli.dota.formats import read_task1_file  # noqa: E402
from rotld_cli.dota.prepare import PrepareOptions, prepare_dota  # noqa: E402
from rotld_cli.dota.split import SplitParams  # noqa: E402

NAMES = ["AP50", "AP55", "AP60", "AP65", "AP70", "AP75", "AP80", "AP85", "AP90", "AP95"]
DETECT = ["--score-thr", "0", "--max-per-img", "10"]
PATCHES = 18  # 2 val images x 3 x 3 windows


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """Synthetic data, its split, and a teacher, a distilled student and a published teacher (1 epoch each)."""
    from rotld_cli.engine.train import TrainOptions, distill, train_teacher
    from rotld_cli.publish import publish_model
    from rotld_cli.recipes import load_recipe

    root = tmp_path_factory.mktemp("evaluate-checkpoint")
    data = root / "data"
    generate_dataset(
        data, num_train=2, num_val=2, image_size=256, seed=0, objects_per_image=(4, 7), distractors_per_image=(1, 3)
    )
    split = root / "split"
    prepare_dota(data, split, PrepareOptions(split=SplitParams(sizes=(128,), gaps=(32,))))
    teacher_recipe = write_recipe(root / "teacher.yaml", split)
    student_recipe = write_student_recipe(root / "student.yaml", split, teacher_recipe)
    common = dict(device="cpu", validate=False, overrides=["schedule.epochs=1"])
    teacher = train_teacher(str(teacher_recipe), TrainOptions(work_dir=root / "teacher", **common)).checkpoint
    student = distill(str(student_recipe), TrainOptions(work_dir=root / "student", teacher=teacher, **common))
    (root / "published").mkdir()
    published = publish_model(teacher, root / "published").output
    return {
        "root": root, "val": split / "val", "ann": data / "val" / "labelTxt", "images": data / "val" / "images",
        "teacher": teacher, "student": student.checkpoint, "published": published, "recipe": teacher_recipe,
        "classes": list(load_recipe(str(teacher_recipe)).classes),
    }  # fmt: skip


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def evaluate_json(capsys, *argv) -> dict:
    code, out, err = run(["evaluate", *argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def one_line_error(code: int, err: str, expected_code: int, message: str) -> None:
    assert code == expected_code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in " ".join(err.split()), err


@pytest.fixture(scope="session")
def teacher_eval(world, tmp_path_factory) -> tuple[dict, Path]:
    """The teacher evaluated on every val patch against the synthetic labels."""
    out = tmp_path_factory.mktemp("teacher-eval") / "eval"
    code, stdout, err = _run_plain(
        [
            "evaluate",
            world["teacher"],
            "--split-dir",
            world["val"],
            "--ann-dir",
            world["ann"],
            "--out",
            out,
            *DETECT,
            "--json",
        ]
    )
    assert code == 0, err
    return json.loads(stdout), out


def _run_plain(argv: list) -> tuple[int, str, str]:
    """`main` outside a test's capsys (session fixtures cannot use it): stdout and stderr via files."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code, out.getvalue(), err.getvalue()


def task1_rows(folder: Path, classes: list[str]) -> dict[str, list[tuple[str, float, np.ndarray]]]:
    rows = {}
    for name in classes:
        det = read_task1_file(folder / f"Task1_{name}.txt")
        rows[name] = list(zip(det.image_ids, det.scores.tolist(), det.polys))
    return rows


def test_checkpoint_evaluation_equals_evaluating_its_result_files(world, teacher_eval, tmp_path, capsys):
    report, out = teacher_eval
    assert report["patches"] == {"total": PATCHES, "run": PATCHES, "skipped_empty": 0, "unreadable": []}
    assert report["classes"] == world["classes"] and report["merged"] is True and report["num_images"] == 2
    assert report["test_cfg"] == {"score_thr": 0.0, "nms_iou": 0.1, "max_per_img": 10, "nms_pre": 500}
    assert json.loads((out / "report.json").read_text()) == report
    markdown = (out / "report.md").read_text()
    assert "| AP | AP50 | AP70 | AP90 | AP75 |" in markdown and "| mean |" in markdown

    again = evaluate_json(
        capsys,
        "--results",
        out / "patch_results",
        "--ann-dir",
        world["ann"],
        "--classes",
        ",".join(world["classes"]),
        "--save-merged",
        tmp_path / "merged",
    )
    for key in ["AP", *NAMES, "per_class", "num_images", "merged", "classes"]:
        assert again[key] == report[key], key
    patch_dets = sum(len(read_task1_file(p)) for p in (out / "patch_results").glob("Task1_*.txt"))
    merged_dets = sum(c["num_det"] for c in report["per_class"].values())
    assert patch_dets == PATCHES * 10 and 0 < merged_dets < patch_dets  # overlapping patches' duplicates removed
    for name in world["classes"]:
        assert (tmp_path / "merged" / f"Task1_{name}.txt").read_bytes() == (
            out / "merged" / f"Task1_{name}.txt"
        ).read_bytes()
        assert all("__" not in image for image in read_task1_file(out / "merged" / f"Task1_{name}.txt").image_ids)


def test_patch_results_are_the_models_own_detections(world, teacher_eval):
    """Each patch through plain mmdet `inference_detector`, one at a time: the same boxes as the batched run."""
    from mmdet.apis import inference_detector

    from rotld_cli.dota.polygons import detections_to_task1
    from rotld_cli.engine.infer import load_detector

    _, out = teacher_eval
    model, recipe, _, _ = load_detector(world["teacher"], device="cpu")
    model.module.bbox_head.test_cfg.score_thr = 0.0
    model.module.bbox_head.test_cfg.max_per_img = 10
    ours = task1_rows(out / "patch_results", world["classes"])
    for path in sorted((world["val"] / "images").glob("*.png")):
        raw = inference_detector(model.module, str(path))
        single = detections_to_task1([raw], [path.stem], recipe.classes)
        for name in world["classes"]:
            mine = [(s, p) for i, s, p in ours[name] if i == path.stem]
            assert len(mine) == len(single[name])
            if mine:
                np.testing.assert_allclose([s for s, _ in mine], single[name].scores, atol=1e-5)
                np.testing.assert_allclose([p for _, p in mine], single[name].polys, atol=0.01)


def voc07_ap(tp: np.ndarray, fp: np.ndarray, npos: int) -> float:
    recall = np.cumsum(tp) / npos
    precision = np.cumsum(tp) / np.maximum(np.cumsum(tp) + np.cumsum(fp), 1e-12)
    return sum(precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.arange(0, 1.1, 0.1)) / 11


def test_nontrivial_ap_against_a_ground_truth_of_its_own_best_detections(world, teacher_eval, tmp_path, capsys):
    """GT = per class, in S0002 its best merged detection (plain) and the second best (difficult); in S0003
    its worst (plain) and the second worst (difficult).

    Merging leaves no two detections of a class overlapping by IoU > 0.1, so at every threshold each
    GT detection is a TP (IoU 1), each difficult one is ignored, and all others are FPs: the AP is the
    same at all 10 thresholds and follows from the scores alone. S0003's better detections are FPs
    that outrank its TP, so a class with 3+ detections there has 0 < AP < 1 by construction.
    """
    from collections import Counter

    _, out = teacher_eval
    merged = task1_rows(out / "merged", world["classes"])
    gt_lines: dict[str, list[str]] = {"S0002": [], "S0003": []}
    expected = {}
    for name, rows in merged.items():
        count, seen = Counter(image for image, _, _ in rows), Counter()
        kind = []
        for image, _, poly in rows:  # per image, the merged file lists detections by descending score
            seen[image] += 1
            rank = seen[image] if image == "S0002" else count[image] - seen[image] + 1
            if rank <= 2:
                gt_lines[image].append(" ".join(f"{v:.2f}" for v in poly) + f" {name} {rank - 1}")
            kind.append(min(rank, 3))
        order = np.argsort(-np.array([s for _, s, _ in rows]), kind="stable")
        kind_sorted = np.array(kind)[order]
        keep = kind_sorted != 2
        npos = sum(1 for k in kind if k == 1)
        expected[name] = voc07_ap((kind_sorted == 1)[keep], (kind_sorted == 3)[keep], npos) if npos else 0.0
    ann = tmp_path / "labelTxt"
    ann.mkdir()
    for image, lines in gt_lines.items():
        (ann / f"{image}.txt").write_text("\n".join(lines) + "\n")

    report = evaluate_json(
        capsys, world["teacher"], "--split-dir", world["val"], "--ann-dir", ann, "--out", tmp_path / "eval", *DETECT
    )
    assert any(0.0 < ap < 1.0 for ap in expected.values()), expected  # the case is not trivial
    for name, ap in expected.items():
        entry = report["per_class"][name]
        for key in NAMES:
            assert entry[key] == pytest.approx(ap, abs=1e-12), (name, key)
        assert entry["num_gt"] == sum(
            1 for line in gt_lines["S0002"] + gt_lines["S0003"] if line.endswith(f" {name} 0")
        )
    assert report["AP50"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-12)
    assert report["AP95"] == pytest.approx(report["AP50"], abs=1e-12)


def test_test_split_writes_the_submission_zip_without_ap(world, teacher_eval, tmp_path, capsys):
    _, scored = teacher_eval
    zip_path = tmp_path / "submission.zip"
    report = evaluate_json(
        capsys, world["teacher"], "--split-dir", world["val"], "--zip", zip_path, "--out", tmp_path / "eval", *DETECT
    )
    assert report["evaluated"] is False and "AP" not in report and "AP50" not in report
    assert report["zip"] == str(zip_path) and report["num_images"] == 2
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(f"Task1_{c}.txt" for c in world["classes"])
        for name in world["classes"]:
            # the same merged detections as the labelled run: the ground truth does not change them
            assert zf.read(f"Task1_{name}.txt") == (scored / "merged" / f"Task1_{name}.txt").read_bytes()
    assert "no AP" in (tmp_path / "eval" / "report.md").read_text()
    # --results without --ann-dir: merge and zip only, the same bytes
    again = evaluate_json(
        capsys,
        "--results",
        tmp_path / "eval" / "patch_results",
        "--zip",
        tmp_path / "again.zip",
        "--classes",
        ",".join(world["classes"]),
    )
    assert again["evaluated"] is False
    with zipfile.ZipFile(zip_path) as a, zipfile.ZipFile(tmp_path / "again.zip") as b:
        assert {n: a.read(n) for n in a.namelist()} == {n: b.read(n) for n in b.namelist()}


def test_pictures_of_checkpoint_and_results_modes(world, teacher_eval, tmp_path, capsys):
    _, scored = teacher_eval
    out = tmp_path / "eval"
    report = evaluate_json(
        capsys,
        world["teacher"],
        "--split-dir",
        world["val"],
        "--ann-dir",
        world["ann"],
        "--out",
        out,
        "--save-vis",
        tmp_path / "vis",
        "--vis-score-thr",
        "0",
        "--plot",
        *DETECT,
    )
    assert report["pictures"]["visualizations"] == {"dir": str(tmp_path / "vis"), "written": 2, "problems": []}
    for image in ("S0002", "S0003"):
        drawn = cv2.imread(str(tmp_path / "vis" / f"{image}.png"))
        original = cv2.imread(str(world["images"] / f"{image}.png"))
        assert drawn is not None and drawn.shape == original.shape
        assert (drawn != original).any(axis=2).sum() > 500  # boxes and labels drawn
    plots = ["pr_curves_iou50.png", "pr_curves_iou75.png", "ap_vs_iou.png"]
    assert report["pictures"]["plots"] == [str(out / p) for p in plots]
    for name in plots:
        image = cv2.imread(str(out / name))
        assert image is not None and image.std() > 5
    # --results mode draws the same pictures from the written files (images found beside --ann-dir)
    report = evaluate_json(
        capsys,
        "--results",
        scored / "patch_results",
        "--ann-dir",
        world["ann"],
        "--classes",
        ",".join(world["classes"]),
        "--save-vis",
        tmp_path / "vis2",
        "--vis-score-thr",
        "0",
        "--plot",
        "--out",
        tmp_path / "eval2",
    )
    for image in ("S0002", "S0003"):
        assert (tmp_path / "vis2" / f"{image}.png").read_bytes() == (tmp_path / "vis" / f"{image}.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "eval2").iterdir()) == sorted([*plots, "report.json", "report.md"])


def test_skip_empty_patches_runs_only_patches_with_objects(world, teacher_eval, tmp_path, capsys):
    _, full = teacher_eval
    with_objects = {p.stem for p in (world["val"] / "annfiles").glob("*.txt") if p.read_text().strip()}
    assert 0 < len(with_objects) < PATCHES
    report = evaluate_json(
        capsys,
        world["teacher"],
        "--split-dir",
        world["val"],
        "--ann-dir",
        world["ann"],
        "--out",
        tmp_path / "eval",
        "--skip-empty-patches",
        *DETECT,
    )
    assert report["patches"]["run"] == len(with_objects)
    assert report["patches"]["skipped_empty"] == PATCHES - len(with_objects)
    assert report["num_images"] == 2
    ours = task1_rows(tmp_path / "eval" / "patch_results", world["classes"])
    everything = task1_rows(full / "patch_results", world["classes"])
    for name in world["classes"]:
        kept = [row for row in everything[name] if row[0] in with_objects]
        assert [i for i, _, _ in ours[name]] == [i for i, _, _ in kept]
        np.testing.assert_allclose([s for _, s, _ in ours[name]], [s for _, s, _ in kept], atol=1e-6)
    assert sum(len(v) for v in ours.values()) < sum(len(v) for v in everything.values())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(a.reshape(4, 2)), Polygon(b.reshape(4, 2))
    return pa.intersection(pb).area / pa.union(pb).area


def _max_same_class_iou(rows: list) -> float:
    worst = 0.0
    for k, (image, _, poly) in enumerate(rows):
        for other, _, q in rows[k + 1 :]:
            if other == image:
                worst = max(worst, _iou(poly, q))
    return worst


def test_test_settings_override_the_recipe(world, teacher_eval, tmp_path, capsys):
    _, full = teacher_eval
    everything = task1_rows(full / "patch_results", world["classes"])
    scores = sorted(s for rows in everything.values() for _, s, _ in rows)
    thr = scores[len(scores) // 2]
    report = evaluate_json(
        capsys,
        world["teacher"],
        "--split-dir",
        world["val"],
        "--out",
        tmp_path / "thr",
        "--score-thr",
        f"{thr!r}",
        "--max-per-img",
        "10",
    )
    assert report["test_cfg"]["score_thr"] == thr
    ours = task1_rows(tmp_path / "thr" / "patch_results", world["classes"])
    for name in world["classes"]:  # the same boxes, minus those at or below the threshold
        assert [(i, s) for i, s, _ in ours[name]] == [(i, s) for i, s, _ in everything[name] if s > thr]

    report = evaluate_json(
        capsys,
        world["teacher"],
        "--split-dir",
        world["val"],
        "--out",
        tmp_path / "top3",
        "--score-thr",
        "0",
        "--max-per-img",
        "3",
    )
    ours = task1_rows(tmp_path / "top3" / "patch_results", world["classes"])
    for patch in {i for rows in everything.values() for i, _, _ in rows}:
        best = sorted((s for rows in everything.values() for i, s, _ in rows if i == patch), reverse=True)[:3]
        mine = sorted((s for rows in ours.values() for i, s, _ in rows if i == patch), reverse=True)
        assert mine == best

    # rotated NMS inside each patch: IoU 0.1 leaves no overlap above it; 0.5 keeps some. (The score
    # threshold keeps the candidates few: at 0 a loose NMS over ~10k boxes per patch takes long on a CPU.)
    few = ["--score-thr", f"{scores[0]!r}", "--max-per-img", "30"]
    loose = evaluate_json(
        capsys, world["teacher"], "--split-dir", world["val"], "--out", tmp_path / "nms", *few, "--nms-iou", "0.5"
    )
    tight = evaluate_json(capsys, world["teacher"], "--split-dir", world["val"], "--out", tmp_path / "nms01", *few)
    assert loose["test_cfg"]["nms_iou"] == 0.5 and tight["test_cfg"]["nms_iou"] == 0.1
    loose_rows = task1_rows(tmp_path / "nms" / "patch_results", world["classes"])
    tight_rows = task1_rows(tmp_path / "nms01" / "patch_results", world["classes"])
    assert max(_max_same_class_iou(r) for r in tight_rows.values()) <= 0.1 + 0.02
    assert 0.1 + 0.02 < max(_max_same_class_iou(r) for r in loose_rows.values()) <= 0.5 + 0.02


def test_student_and_published_checkpoints_evaluate(world, teacher_eval, capsys):
    report, out = teacher_eval
    student = evaluate_json(capsys, world["student"], "--split-dir", world["val"], "--ann-dir", world["ann"], *DETECT)
    default_out = world["student"].parent / f"{world['student'].stem}-eval"
    assert student["out"] == str(default_out) and (default_out / "report.json").is_file()
    assert student["recipe"] == "student" and student["patches"]["run"] == PATCHES
    assert sum(len(read_task1_file(p)) for p in (default_out / "patch_results").glob("*.txt")) == PATCHES * 10

    published = evaluate_json(
        capsys, world["published"], "--split-dir", world["val"], "--ann-dir", world["ann"], *DETECT
    )
    for key in ["AP", *NAMES, "per_class"]:
        assert published[key] == report[key]
    pub_out = Path(published["out"])
    for name in world["classes"]:
        assert (pub_out / "patch_results" / f"Task1_{name}.txt").read_bytes() == (
            out / "patch_results" / f"Task1_{name}.txt"
        ).read_bytes()


def _recipe(world, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "other.yaml"
    path.write_text(f"base: {world['recipe']}\n{text}")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  classes: [plane, ship]\n", "but --recipe"),
        ("data:\n  classes: [ship, plane, small-vehicle, large-vehicle, storage-tank]\n", "trained on classes [plane,"),
        ("model:\n  head: {feat_channels: 32}\n", "has shape [16, 16, 3, 3] in the checkpoint but [32, 16, 3, 3]"),
        ("model:\n  head: {stacked_convs: 2}\n", "weights do not fit the model"),
    ],
)
def test_a_recipe_that_does_not_match_the_checkpoint(world, tmp_path, capsys, text, message):
    out = tmp_path / "eval"
    code, _, err = run(
        [
            "evaluate",
            world["teacher"],
            "--split-dir",
            world["val"],
            "--ann-dir",
            world["ann"],
            "--recipe",
            _recipe(world, tmp_path, text),
            "--out",
            out,
        ],
        capsys,
    )
    one_line_error(code, err, 1, message)
    assert not out.exists()


def test_split_folder_errors(world, tmp_path, capsys):
    base = ["evaluate", world["teacher"], "--out", tmp_path / "eval", "--split-dir"]
    code, _, err = run([*base, tmp_path / "none"], capsys)
    one_line_error(code, err, 2, "none: not a directory")
    (tmp_path / "split").mkdir()
    code, _, err = run([*base, tmp_path / "split"], capsys)
    one_line_error(code, err, 2, "no images/ folder")
    (tmp_path / "split" / "images").mkdir()
    code, _, err = run([*base, tmp_path / "split"], capsys)
    one_line_error(code, err, 1, "no patch images")
    shutil.copy(next((world["val"] / "images").glob("*.png")), tmp_path / "split" / "images")
    code, _, err = run([*base, tmp_path / "split", "--skip-empty-patches"], capsys)
    one_line_error(code, err, 2, "--skip-empty-patches: no")
    assert "annfiles" in err
    assert not (tmp_path / "eval").exists()
    (tmp_path / "eval").write_text("a file")
    code, _, err = run([*base, world["val"]], capsys)
    one_line_error(code, err, 2, "eval: exists and is not a directory")


def test_an_unreadable_patch_is_reported_and_skipped(world, teacher_eval, tmp_path, capsys):
    report, _ = teacher_eval
    split = tmp_path / "val"
    shutil.copytree(world["val"], split)
    bad = split / "images" / "S0002__128__64___64.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = run(
        [
            "evaluate",
            world["teacher"],
            "--split-dir",
            split,
            "--ann-dir",
            world["ann"],
            "--out",
            tmp_path / "eval",
            *DETECT,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"{bad}: skipped (cannot decode the image)" in " ".join(err.split())
    got = json.loads(out)
    assert got["patches"] == {
        "total": PATCHES + 1,
        "run": PATCHES,
        "skipped_empty": 0,
        "unreadable": [{"path": str(bad), "reason": "cannot decode the image"}],
    }
    for key in ["AP", *NAMES, "per_class"]:
        assert got[key] == report[key]


def test_ann_dir_without_labels_for_the_patches_images(world, tmp_path, capsys):
    ann = tmp_path / "labelTxt"
    ann.mkdir()
    shutil.copy(world["ann"] / "S0002.txt", ann)
    code, _, err = run(
        ["evaluate", world["teacher"], "--split-dir", world["val"], "--ann-dir", ann, "--out", tmp_path / "eval"],
        capsys,
    )
    one_line_error(code, err, 1, "no label file for 1 of the 2 images (e.g. S0003.txt)")
    assert not (tmp_path / "eval").exists()


def test_a_checkpoint_without_recipe_needs_one(world, teacher_eval, tmp_path, capsys):
    from rotld_cli.engine import checkpoints as ckpt

    report, _ = teacher_eval
    state = torch.load(world["teacher"], map_location="cpu", weights_only=True)["state_dict"]
    bare = ckpt.save_checkpoint(tmp_path / "bare.pth", state, {})
    code, _, err = run(["evaluate", bare, "--split-dir", world["val"]], capsys)
    one_line_error(code, err, 1, "no recipe in the checkpoint's metadata")
    assert "--recipe" in err
    got = evaluate_json(
        capsys, bare, "--split-dir", world["val"], "--ann-dir", world["ann"], "--recipe", world["recipe"], *DETECT
    )
    assert got["per_class"] == report["per_class"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--batch-size", "0"], 2, "--batch-size must be at least 1"),
        (["--score-thr", "1.5"], 2, "--score-thr must be in [0, 1)"),
        (["--nms-iou", "0"], 2, "--nms-iou must be in (0, 1]"),
        (["--max-per-img", "0"], 2, "--max-per-img must be at least 1"),
        (["--plot"], 2, "--plot needs --ann-dir"),
        (["--save-vis", "vis"], 2, "--save-vis: pass --image-dir DIR"),
        (["--no-merge"], 2, "--no-merge applies to --results evaluation only"),
        (["--classes", "plane"], 2, "--classes applies to --results evaluation only"),
        (["--device", "gpu"], 2, "--device: expected 'cuda', 'cpu' or 'auto'"),
    ],
)
def test_option_errors(world, tmp_path, capsys, extra, code, message):
    argv = ["evaluate", world["teacher"], "--out", tmp_path / "eval", "--split-dir", world["val"]]
    got, _, err = run([*argv, *extra], capsys)
    one_line_error(got, err, code, message)
    assert not (tmp_path / "eval").exists()


def test_benchmark_quick_runs(capsys):
    from bench.inference import main as bench_main

    bench_main(["--quick", "--patches", "2"])
    out = capsys.readouterr().out
    assert "student/teacher:" in out and "rotld/plain MMRotate on the same model:" in out
    assert "max |difference|" in out


def test_imageset_restricts_inference_and_evaluation(world, teacher_eval, tmp_path, capsys):
    """Only the patches of the listed images run (here with 2-patch batches decoded in a worker process)."""
    _, full = teacher_eval
    imageset = tmp_path / "set.txt"
    imageset.write_text("S0003\n")
    report = evaluate_json(
        capsys,
        world["teacher"],
        "--split-dir",
        world["val"],
        "--ann-dir",
        world["ann"],
        "--imageset",
        imageset,
        "--out",
        tmp_path / "eval",
        "--batch-size",
        "2",
        "--workers",
        "1",
        *DETECT,
    )
    assert report["num_images"] == 1 and report["patches"]["run"] == report["patches"]["total"] == 9
    assert report["inference"]["batch_size"] == 2
    ours = task1_rows(tmp_path / "eval" / "patch_results", world["classes"])
    everything = task1_rows(full / "patch_results", world["classes"])
    for name in world["classes"]:
        kept = [row for row in everything[name] if row[0].startswith("S0003__")]
        assert [i for i, _, _ in ours[name]] == [i for i, _, _ in kept]
        np.testing.assert_allclose([s for _, s, _ in ours[name]], [s for _, s, _ in kept], atol=1e-5)
    code, _, err = run(["evaluate", world["teacher"], "--split-dir", world["val"], "--imageset", imageset], capsys)
    one_line_error(code, err, 2, "--imageset needs --ann-dir")
