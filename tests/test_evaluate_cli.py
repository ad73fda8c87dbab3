"""`rotld evaluate --results`: JSON/table output, merge + save + zip, and one-line input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
        (["evaluate", "model.pth"], 2, "checkpoint evaluation is not available yet"),
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
        "try:\n    main(['evaluate', '--results', sys.argv[1], '--ann-dir', sys.argv[2], '--json'])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmcv', 'mmdet', 'mmrotate'))\n"
        "print('CODE=%s HEAVY=%s' % (code, ','.join(heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(case["results"]), str(case["ann"])],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip().splitlines()[-1] == "CODE=0 HEAVY=", proc.stderr


def test_benchmark_quick_runs(capsys) -> None:
    from bench.evaluate import main as bench_main

    bench_main(["--quick"])
    out = capsys.readouterr().out
    assert "max |AP difference| vs rotld on the same images" in out
    assert "merge:" in out
