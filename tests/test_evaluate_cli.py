"""`rotld evaluate --results`: JSON/table output, merge + save + zip, and one-line input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from rotld_cli.cli import main
from rotld_cli.dota.classes import DOTA_V1_0
from rotld_cli.dota.formats import format_task1_line, read_label_file

NAMES = ["AP50", "AP55", "AP60", "AP65", "AP70", "AP75", "AP80", "AP85", "AP90", "AP95"]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def case(dota_samples: Path, tmp_path: Path) -> dict:
    """The 7 real label files, and a perfect detector's Task1 files (every GT, score by order)."""
    ann = tmp_path / "ann"
    shutil.copytree(dota_samples / "labelTxt", ann)
    results = tmp_path / "results"
    results.mkdir()
    lines: dict[str, list[str]] = {c: [] for c in DOTA_V1_0}
    npos = dict.fromkeys(DOTA_V1_0, 0)
    objects = {}
    for path in sorted(ann.glob("*.txt")):
        objects[path.stem] = read_label_file(path).objects
        for k, obj in enumerate(objects[path.stem]):
            lines[obj.name].append(format_task1_line(path.stem, 1.0 - k / 1000.0, obj.poly))
            npos[obj.name] += obj.difficulty == 0
    for c, rows in lines.items():
        (results / f"Task1_{c}.txt").write_text("".join(row + "\n" for row in rows))
    return {"ann": ann, "results": results, "npos": npos, "objects": objects, "tmp": tmp_path}


def evaluate_json(capsys, *argv: str) -> dict:
    code, out, err = run_main(["evaluate", *argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_perfect_detector_json(case, capsys):
    report = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    with_gt = [c for c in DOTA_V1_0 if case["npos"][c] > 0]
    assert 0 < len(with_gt) < 15
    assert list(report)[:11] == ["AP", *NAMES]
    for name in NAMES:
        # classes without (non-difficult) GT score 0 and still count in the mean over 15
        assert report[name] == pytest.approx(len(with_gt) / 15, abs=1e-12)
    assert report["AP"] == pytest.approx(len(with_gt) / 15, abs=1e-12)
    for c in DOTA_V1_0:
        entry = report["per_class"][c]
        assert set(entry) == {*NAMES, "AP", "num_gt", "num_difficult", "num_det"}
        assert entry["num_gt"] == case["npos"][c]
        assert entry["AP"] == (pytest.approx(1.0, abs=1e-12) if c in with_gt else 0.0)
        assert 0.0 <= entry["AP"] <= 1.0
    assert report["seed_compat"] is False and report["merged"] is False
    assert report["num_images"] == 7


def test_table_output(case, capsys):
    code, out, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"])], capsys)
    assert code == 0, err
    for text in ("AP50:95", "small-vehicle", "mean", "AP70", "AP90", "paper form"):
        assert text in out


def _patch_results(case: dict, root: Path) -> Path:
    """The perfect detections cut into 1024 px patches at an 824 px stride: each object in the
    window of its top-left corner, again (jittered, lower score) in the window before it when
    it lies in their 200 px overlap."""
    out = root / "patches"
    out.mkdir()
    lines: dict[str, list[str]] = {c: [] for c in DOTA_V1_0}
    rng = np.random.default_rng(0)
    for image, objects in case["objects"].items():
        for k, obj in enumerate(objects):
            xs, ys = obj.poly[0::2], obj.poly[1::2]
            x = int(max(xs.min(), 0) // 824) * 824
            y = int(max(ys.min(), 0) // 824) * 824
            pid = f"{image}__1024__{x}___{y}"
            lines[obj.name].append(format_task1_line(pid, 1.0 - k / 1000.0, obj.poly - np.array([x, y] * 4)))
            if x >= 824 and xs.max() < x - 824 + 1024:
                local = obj.poly - np.array([x - 824, y] * 4) + rng.normal(0, 0.5, 8)
                lines[obj.name].append(format_task1_line(f"{image}__1024__{x - 824}___{y}", 0.0001, local))
    for c, rows in lines.items():
        (out / f"Task1_{c}.txt").write_text("".join(row + "\n" for row in rows))
    return out


def test_patch_results_are_merged_saved_and_zipped(case, capsys):
    tmp = case["tmp"]
    patches = _patch_results(case, tmp)
    full = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    merged = evaluate_json(
        capsys,
        "--results", str(patches), "--ann-dir", str(case["ann"]),
        "--save-merged", str(tmp / "merged"), "--zip", str(tmp / "submission.zip"),
    )  # fmt: skip
    assert merged["merged"] is True
    for name in ["AP", *NAMES]:
        assert merged[name] == full[name]
    # the duplicates were suppressed: one detection per object
    assert sum(len(p.read_text().splitlines()) for p in patches.glob("*.txt")) > sum(
        len(v) for v in case["objects"].values()
    )
    assert sum(c["num_det"] for c in merged["per_class"].values()) == sum(len(v) for v in case["objects"].values())
    again = evaluate_json(capsys, "--results", str(tmp / "merged"), "--ann-dir", str(case["ann"]), "--no-merge")
    assert again["merged"] is False
    assert {k: again[k] for k in NAMES} == {k: merged[k] for k in NAMES}
    with zipfile.ZipFile(tmp / "submission.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"Task1_{c}.txt" for c in DOTA_V1_0)
        for c in DOTA_V1_0:
            assert zf.read(f"Task1_{c}.txt") == (tmp / "merged" / f"Task1_{c}.txt").read_bytes()
    # --no-merge on patch ids: patches are not images of the ground truth
    code, _, err = run_main(
        ["evaluate", "--results", str(patches), "--ann-dir", str(case["ann"]), "--no-merge"], capsys
    )
    assert code == 1 and "__1024__" in err and "not in the ground truth" in err


def test_seed_compat_reproduces_the_accumulator(case, capsys):
    # a weaker detector so the thresholds differ: drop every third detection
    for path in case["results"].glob("Task1_*.txt"):
        rows = path.read_text().splitlines()
        path.write_text("".join(r + "\n" for k, r in enumerate(rows) if k % 3))
    report = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--seed-compat")
    true = report["devkit"]
    assert report["seed_compat"] is True
    assert report["AP50"] == pytest.approx(true["AP50"], abs=1e-12)
    for prev, name in zip(NAMES, NAMES[1:]):
        assert report[name] == pytest.approx(true[name] + report[prev] / 15, abs=1e-12)
    assert report["AP"] == pytest.approx(sum(report[n] for n in NAMES) / 10, abs=1e-12)
    code, out, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--seed-compat"], capsys
    )
    assert code == 0 and "accumulator bug" in out + err


def test_area_metric_and_dota_versions(case, capsys):
    report = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--metric", "area")
    assert report["metric"] == "area"
    assert report["per_class"]["ship"]["AP50"] == pytest.approx(1.0, abs=1e-12)
    report = evaluate_json(
        capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--dota-version", "v1.5"
    )
    assert len(report["per_class"]) == 16 and "container-crane" in report["missing_classes"]


def test_imageset_restricts_the_evaluation(case, capsys):
    imageset = case["tmp"] / "set.txt"
    imageset.write_text("P0706\n\nP1888\n")
    # P0770 detections are not in the image set: an error naming the first such line
    code, _, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--imageset", str(imageset)],
        capsys,
    )
    assert code == 1
    assert "Task1_" in err and "not in the --imageset list" in err
    report = evaluate_json(
        capsys,
        "--results",
        str(case["results"]),
        "--ann-dir",
        str(case["ann"]),
        "--imageset",
        str(imageset),
        "--lenient",
    )
    assert report["num_images"] == 2 and report["skipped"]["lines"] > 0
    ships = sum(o.name == "ship" and o.difficulty == 0 for i in ("P0706", "P1888") for o in case["objects"][i])
    assert report["per_class"]["ship"]["num_gt"] == ships
    assert report["per_class"]["ship"]["AP50"] == pytest.approx(1.0, abs=1e-12)


def _corrupt(case: dict, line: int, text: str) -> Path:
    path = case["results"] / "Task1_ship.txt"
    rows = path.read_text().splitlines()
    rows[line - 1] = text
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("P0706 0.5 1 2 3 4 5 6 7", "10 fields"),
        ("P0706 high 1 2 3 4 5 6 7 8", "must be numbers"),
        ("P0706 0.5 1 2 3 nan 5 6 7 8", "finite"),
        ("P9999 0.5 1 2 3 4 5 6 7 8", "P9999 is not in the ground truth"),
    ],
)
def test_bad_line_is_one_located_error_and_lenient_skips_it(case, capsys, bad, message):
    good = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    _corrupt(case, 3, bad)
    code, _, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"])], capsys)
    assert code == 1
    assert "Task1_ship.txt:3:" in err and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    report = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--lenient")
    assert report["skipped"]["lines"] == 1 and "Task1_ship.txt:3:" in report["skipped"]["problems"][0]
    assert report["per_class"]["ship"]["num_det"] == good["per_class"]["ship"]["num_det"] - 1


def test_unknown_class_file_and_empty_folder(case, capsys):
    (case["results"] / "Task1_boat.txt").write_text("P0706 0.5 1 2 3 4 5 6 7 8\n")
    code, _, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"])], capsys)
    assert code == 1 and "Task1_boat.txt" in err and "unknown class 'boat'" in err
    report = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--lenient")
    assert report["skipped"]["lines"] == 1
    empty = case["tmp"] / "empty"
    empty.mkdir()
    code, _, err = run_main(["evaluate", "--results", str(empty), "--ann-dir", str(case["ann"])], capsys)
    assert code == 1 and "no Task1_<class>.txt files" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["evaluate", "model.pth"], 2, "--split-dir DIR is required with a checkpoint"),
        (["evaluate"], 2, "--results"),
        (["evaluate", "--results", "."], 2, "--ann-dir"),
        (["evaluate", "model.pth", "--results", ".", "--ann-dir", "."], 2, "either"),
    ],
)
def test_usage_errors(argv, code, message, capsys):
    got, _, err = run_main(argv, capsys)
    assert got == code and message in err


def test_bad_options_and_imageset_lines(case, capsys):
    base = ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"])]
    code, _, err = run_main([*base, "--metric", "auc"], capsys)
    assert code == 2 and "--metric" in err
    code, _, err = run_main([*base, "--merge-iou", "0"], capsys)
    assert code == 2 and "--merge-iou" in err
    imageset = case["tmp"] / "set.txt"
    imageset.write_text("P0706\nP4242\n")
    code, _, err = run_main([*base, "--imageset", str(imageset)], capsys)
    assert code == 1 and "set.txt:2:" in err and "P4242" in err


def test_evaluate_imports_no_engine(case, repo_root: Path):
    probe = (
        "import sys\n"
        "from rotld_cli.cli import main\n"
        "try:\n    main(['evaluate', '--results', sys.argv[1], '--ann-dir', sys.argv[2], '--json', '--plot',\n"
        "          '--out', sys.argv[3]])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmcv', 'mmdet', 'mmrotate'))\n"
        "print('CODE=%s HEAVY=%s' % (code, ','.join(heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(case["results"]), str(case["ann"]), str(case["tmp"] / "out")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip().splitlines()[-1] == "CODE=0 HEAVY=", proc.stderr
    assert (case["tmp"] / "out" / "ap_vs_iou.png").is_file()


def test_benchmark_quick_runs(capsys) -> None:
    from bench.evaluate import main as bench_main

    bench_main(["--quick"])
    out = capsys.readouterr().out
    assert "max |AP difference| vs rotld on the same images" in out
    assert "merge:" in out


def test_classes_option_sets_the_mean_and_leaves_out_other_files(case, capsys):
    full = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    report = evaluate_json(
        capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--classes", "ship, harbor,plane"
    )
    assert report["classes"] == ["ship", "harbor", "plane"] and list(report["per_class"]) == report["classes"]
    assert sorted(report["ignored_classes"]) == sorted(set(DOTA_V1_0) - {"ship", "harbor", "plane"})
    for name in report["classes"]:
        assert report["per_class"][name] == full["per_class"][name]
    for key in ["AP", *NAMES]:
        assert report[key] == pytest.approx(sum(full["per_class"][c][key] for c in report["classes"]) / 3, abs=1e-12)
    (case["results"] / "Task1_boat.txt").write_text("P0706 0.5 1 2 3 4 5 6 7 8\n")
    code, _, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--classes", "ship"], capsys
    )
    assert code == 1 and "unknown class 'boat' for the 1 evaluated classes" in err and "see --classes" in err
    code, _, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--classes", "ship,ship"], capsys
    )
    assert code == 2 and "--classes: ship given twice" in err


def test_merge_only_without_ground_truth(case, capsys):
    tmp = case["tmp"]
    patches = _patch_results(case, tmp)
    scored = evaluate_json(
        capsys, "--results", str(patches), "--ann-dir", str(case["ann"]), "--save-merged", str(tmp / "merged")
    )
    report = evaluate_json(capsys, "--results", str(patches), "--zip", str(tmp / "test.zip"))
    assert report["evaluated"] is False and "AP" not in report and report["merged"] is True
    assert report["num_images"] == len(case["objects"])
    assert {c: v["num_det"] for c, v in report["per_class"].items()} == {
        c: v["num_det"] for c, v in scored["per_class"].items()
    }
    with zipfile.ZipFile(tmp / "test.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"Task1_{c}.txt" for c in DOTA_V1_0)
        for c in DOTA_V1_0:
            assert zf.read(f"Task1_{c}.txt") == (tmp / "merged" / f"Task1_{c}.txt").read_bytes()
    code, out, err = run_main(["evaluate", "--results", str(patches), "--save-merged", str(tmp / "m2")], capsys)
    assert code == 0 and "no --ann-dir: no AP" in " ".join(out.split()), err
    code, _, err = run_main(["evaluate", "--results", str(patches), "--plot", "--zip", str(tmp / "z.zip")], capsys)
    assert code == 2 and "--plot needs --ann-dir" in err


def test_pictures_and_report_files_in_results_mode(case, dota_samples, capsys):
    tmp = case["tmp"]
    (tmp / "images").mkdir()  # beside ann/: the default image folder of --save-vis
    for image in ("P0706", "P1888"):
        shutil.copy(dota_samples / "images" / f"{image}.png", tmp / "images")
    imageset = tmp / "set.txt"
    imageset.write_text("P0706\nP1888\n")
    for path in case["results"].glob("Task1_*.txt"):  # keep the detections of the two images
        rows = [r for r in path.read_text().splitlines() if r.split()[0] in ("P0706", "P1888")]
        path.write_text("".join(r + "\n" for r in rows))
    base = ["--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--imageset", str(imageset)]
    report = evaluate_json(capsys, *base, "--save-vis", str(tmp / "vis"), "--plot")
    out = tmp / "results-eval"  # --plot without --out: beside the results folder
    assert report["out"] == str(out)
    assert report["pictures"]["visualizations"] == {"dir": str(tmp / "vis"), "written": 2, "problems": []}
    for image in ("P0706", "P1888"):
        drawn = cv2.imread(str(tmp / "vis" / f"{image}.png"))
        original = cv2.imread(str(tmp / "images" / f"{image}.png"))
        assert drawn.shape == original.shape and (drawn != original).any(axis=2).sum() > 1000
    names = ["ap_vs_iou.png", "pr_curves_iou50.png", "pr_curves_iou75.png", "report.json", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert json.loads((out / "report.json").read_text()) == report
    markdown = (out / "report.md").read_text()
    assert "| mean |" in markdown and f"| {100 * report['AP50']:.2f} |" in markdown
    for name in names[:3]:
        assert cv2.imread(str(out / name)).std() > 5
    # an explicit --out, and no image folder to draw from
    report = evaluate_json(capsys, *base, "--out", str(tmp / "o"))
    assert sorted(p.name for p in (tmp / "o").iterdir()) == ["report.json", "report.md"]
    shutil.rmtree(tmp / "images")
    code, _, err = run_main(["evaluate", *base, "--save-vis", str(tmp / "vis2")], capsys)
    assert code == 2 and "images beside --ann-dir; pass --image-dir DIR" in " ".join(err.split())
    code, _, err = run_main(["evaluate", *base, "--save-vis", str(tmp / "v"), "--image-dir", str(tmp / "no")], capsys)
    assert code == 2 and "--image-dir" in err and "not a directory" in err
    assert not (tmp / "vis2").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "r.yaml"], "--recipe applies to checkpoint evaluation"),
        (["--score-thr", "0"], "--score-thr applies to checkpoint evaluation"),
        (["--workers", "0"], "--workers applies to checkpoint evaluation"),
        (["--skip-empty-patches"], "--skip-empty-patches applies to checkpoint evaluation"),
        (["--split-dir", "."], "--split-dir applies to checkpoint evaluation"),
    ],
)
def test_checkpoint_options_are_refused_with_results(case, capsys, extra, message):
    code, _, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), *extra], capsys
    )
    assert code == 2 and message in err


def test_checkpoint_option_errors_need_no_engine(tmp_path: Path, repo_root: Path):
    """Checkpoint-mode option errors are found before torch or MMRotate is imported."""
    probe = (
        "import sys\n"
        "from rotld_cli.cli import main\n"
        "try:\n    main(['evaluate', sys.argv[1], '--split-dir', sys.argv[2], '--batch-size', '0'])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmcv', 'mmdet', 'mmrotate'))\n"
        "print('CODE=%s HEAVY=%s' % (code, ','.join(heavy)))\n"
    )
    (tmp_path / "model.pth").write_bytes(b"x")
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "model.pth"), str(tmp_path)],
        cwd=repo_root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "CODE=2 HEAVY=", proc.stderr
    assert "--batch-size must be at least 1" in proc.stderr


def test_save_merged_never_replaces_the_users_files(case, capsys):
    tmp = case["tmp"]
    patches = _patch_results(case, tmp)
    before = {p.name: p.read_bytes() for p in patches.iterdir()}
    base = ["evaluate", "--results", str(patches), "--ann-dir", str(case["ann"])]
    code, _, err = run_main([*base, "--save-merged", str(patches)], capsys)
    assert code == 2 and "is the --results folder" in err
    theirs = tmp / "theirs"
    theirs.mkdir()
    (theirs / "Task1_plane.txt").write_text("mine\n")
    code, _, err = run_main([*base, "--save-merged", str(theirs)], capsys)
    assert code == 2 and "holds Task1 files rotld did not write (Task1_plane.txt)" in err
    assert (theirs / "Task1_plane.txt").read_text() == "mine\n"
    assert {p.name: p.read_bytes() for p in patches.iterdir()} == before
    # a folder rotld wrote is rotld's to rewrite; its manifest names the files and the classes
    evaluate_json(capsys, *base[1:], "--save-merged", str(tmp / "ours"))
    again = evaluate_json(capsys, *base[1:], "--save-merged", str(tmp / "ours"))
    assert again["saved"] == str(tmp / "ours")
    manifest = json.loads((tmp / "ours" / "rotld-task1.json").read_text())
    assert manifest["classes"] == list(DOTA_V1_0) and manifest["files"] == [f"Task1_{c}.txt" for c in DOTA_V1_0]


def test_one_class_set_rule_stated_in_every_report(case, capsys):
    base = ["--results", str(case["results"]), "--ann-dir", str(case["ann"])]
    default = evaluate_json(capsys, *base)
    assert default["class_set"] == "DOTA v1.0's 15 classes" and default["classes"] == list(DOTA_V1_0)
    alias = evaluate_json(capsys, *base, "--classes", "dota1.0")
    assert {k: alias[k] for k in ["AP", *NAMES]} == {k: default[k] for k in ["AP", *NAMES]}
    assert alias["class_set"] == "DOTA v1.0's 15 classes"
    # a folder rotld wrote for a model: its classes are the mean's, as in `evaluate CKPT`
    (case["results"] / "rotld-task1.json").write_text(json.dumps({"kind": "patch", "classes": ["ship", "plane"]}))
    model = evaluate_json(capsys, *base)
    assert model["classes"] == ["ship", "plane"] and model["class_set"] == "the model's 2 classes"
    assert model["AP"] == pytest.approx((default["per_class"]["ship"]["AP"] + default["per_class"]["plane"]["AP"]) / 2)
    code, out, _ = run_main(["evaluate", *base], capsys)
    assert code == 0 and "mean over the model's 2 classes" in " ".join(out.split())
    # the ground truth's other classes are counted, not silently dropped
    outside = {c: n for c, n in default["ground_truth"]["outside_classes"].items()}
    assert outside == {} and sum(model["ground_truth"]["outside_classes"].values()) == sum(
        len([o for o in objs if o.name not in ("ship", "plane")]) for objs in case["objects"].values()
    )


def test_unknown_class_names_are_errors_with_a_suggestion(case, capsys):
    code, _, err = run_main(
        ["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]), "--classes", "plane,shipp"],
        capsys,
    )
    assert code == 2 and "--classes: unknown class 'shipp'" in err and "did you mean 'ship'?" in err


def test_byte_order_marks_are_read(case, capsys):
    before = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    for path in [*case["ann"].glob("*.txt"), *case["results"].glob("Task1_*.txt")]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    after = evaluate_json(capsys, "--results", str(case["results"]), "--ann-dir", str(case["ann"]))
    assert after == before


def test_bad_ground_truth_lines_are_skipped_counted_and_stop_with_strict(case, capsys):
    label = case["ann"] / "P0706.txt"
    lines = label.read_text().splitlines()
    first_object = next(k for k, line in enumerate(lines) if len(line.split()) >= 9)
    bad = lines[first_object].split()
    lines[first_object] = " ".join(["oops", *bad[1:]])
    label.write_text("\n".join(lines) + "\n")
    where = f"{label}:{first_object + 1}:"
    code, out, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]),
                               "--json"], capsys)  # fmt: skip
    assert code == 1  # the numbers are there, but a label file needs fixing
    report = json.loads(out)
    assert report["ground_truth"]["lines"] == 1 and report["ground_truth"]["problems"][0].startswith(where)
    assert report["per_class"][bad[8]]["num_gt"] == case["npos"][bad[8]] - (bad[9:] in ([], ["0"]))
    code, _, err = run_main(["evaluate", "--results", str(case["results"]), "--ann-dir", str(case["ann"]),
                             "--strict"], capsys)  # fmt: skip
    assert code == 1 and err.startswith(f"error: {where}") and "--strict" in err
