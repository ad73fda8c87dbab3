"""The user's own classes: `--classes` / `--classes-from` in prepare-dota and the training commands, a
label of a class outside the list counted and named (prepare-dota, the training dataset), the
teacher check naming which classes differ, and the class table behind every bundled recipe."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rotld_cli.cli import main
from rotld_cli.dota.classes import DIOR_R, DOTA_V1_5, DOTA_V2_0, FAIR1M, HRSC2016, read_classes_file
from rotld_cli.engine.teacher import class_difference
from rotld_cli.errors import UsageError
from rotld_cli.recipes import bundled_recipes, img_scale, load_recipe
from rotld_cli.training import TrainOptions, training_recipe


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, " ".join(err.split())


def test_class_files_are_read_with_located_errors(tmp_path):
    path = write(tmp_path / "classes.txt", "# mine\ncar\n\ntruck  # big ones\nbus\n")
    assert read_classes_file(path) == ("car", "truck", "bus")
    for text, message in [("car\ncar\n", "classes.txt:2: 'car' repeats line 1"),
                          ("big car\n", "classes.txt:1: class name 'big car' holds whitespace"),
                          ("# nothing\n", "classes.txt: no class names")]:  # fmt: skip
        write(path, text)
        with pytest.raises(UsageError, match=message):
            read_classes_file(path)


def test_prepare_dota_with_your_classes_counts_and_names_the_others(tmp_path, capsys):
    import cv2

    src = tmp_path / "DOTA" / "train"
    (src / "images").mkdir(parents=True)
    cv2.imwrite(str(src / "images" / "P1.png"), np.zeros((64, 64, 3), np.uint8))
    write(src / "labelTxt" / "P1.txt", "2 2 20 2 20 20 2 20 car 0\n30 30 40 30 40 40 30 40 tank 0\n"
                                       "5 40 15 40 15 50 5 50 truck 1\n")  # fmt: skip
    classes = write(tmp_path / "classes.txt", "car\ntruck\n")
    out = tmp_path / "split"
    code, _, err = run_main(["prepare-dota", str(tmp_path / "DOTA"), str(out), "--sizes", "64", "--gaps", "0",
                             "--classes-from", str(classes), "--workers", "1", "--json"], capsys)  # fmt: skip
    assert code == 1 and f"{src / 'labelTxt' / 'P1.txt'}:2: unknown class 'tank'; line skipped" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["classes"] == ["car", "truck"] and manifest["total"]["skipped_lines"] == 1
    assert [line.split()[8] for line in (out / "train" / "annfiles" / "P1__64__0___0.txt").read_text().splitlines()] \
        == ["car", "truck"]  # fmt: skip
    code, _, err = run_main(["prepare-dota", str(tmp_path / "DOTA"), str(tmp_path / "x"), "--classes", "car",
                             "--dota-version", "v1.5"], capsys)  # fmt: skip
    assert code == 2 and "--classes and --dota-version: choose one" in err


def test_training_commands_take_the_classes_of_a_file(tmp_path):
    classes = write(tmp_path / "classes.txt", "car\ntruck\nOXo|--)\n")
    recipe = training_recipe("dior/baseline-r18-gwd-1x", TrainOptions(classes_from=classes), student=False)
    assert recipe.classes == ("car", "truck", "OXo|--)") and recipe.get("data.classes") == ["car", "truck", "OXo|--)"]
    with pytest.raises(UsageError, match=r"classes\.txt: no class names"):
        training_recipe("dior/baseline-r18-gwd-1x", TrainOptions(classes_from=write(classes, "\n")), student=False)


def test_the_teacher_check_says_which_classes_differ():
    assert class_difference(["car", "bus"], ["car", "truck", "van"]) == (
        "the teacher's 2 classes differ from the student's 3: only the teacher has bus; only the student has truck, van"
    )
    assert class_difference(["car", "bus"], ["bus", "car"]) == (
        "the teacher has the student's classes in another order: label 0 is 'car' for the teacher, 'bus' for the "
        "student")  # fmt: skip


def test_dataset_recipes_take_their_classes_from_the_one_table():
    expected = {"dota15": DOTA_V1_5, "dota2": DOTA_V2_0, "hrsc": HRSC2016, "dior": DIOR_R}
    folders = {name.split("/")[0] for name, _, _ in bundled_recipes()}
    assert set(expected) <= folders
    for name, _, _ in bundled_recipes():
        folder = name.split("/")[0]
        recipe = load_recipe(name)
        if folder in expected:
            assert recipe.classes == expected[folder], name
            assert recipe.get("model.angle_version") == "oc"
        if recipe.is_student:  # its teacher recipe is its own folder's
            assert Path(recipe.get("teacher.recipe")).parent.name == folder, name
    hrsc = load_recipe("hrsc/student-r18-gwd-ld-kd-6x")
    assert (
        img_scale(hrsc) == (800, 512)
        and hrsc.get("schedule.epochs") == 72
        and hrsc.get("schedule.lr_steps") == [48, 66]
    )
    dior = load_recipe("dior/baseline-r18-gwd-1x")
    assert img_scale(dior) == (800, 800) and dior.get("schedule.epochs") == 12 and dior.get("data.train") == "trainval"
    assert load_recipe("dior/teacher-r34-gwd-2x").get("model.backbone.depth") == 34
    assert len(FAIR1M) == 37 and len(set(FAIR1M)) == 37


# ------------------------------------------------------------------------------------------
# Engine


@pytest.mark.engine
def test_the_training_dataset_counts_and_names_labels_of_other_classes(tmp_path, caplog):
    pytest.importorskip("mmrotate")
    from rotld_cli.engine import load_engine

    load_engine()
    from mmrotate.datasets import build_dataset

    ann = tmp_path / "annfiles"
    write(ann / "a.txt", "0 0 20 0 20 10 0 10 car 0\n30 30 50 30 50 40 30 40 tank 0\n40 0 60 0 60 8 40 8 car 1\n")
    write(ann / "b.txt", "0 0 20 0 20 10 0 10 tank 0\n")  # only other classes: no object left
    write(ann / "c.txt", "5 5 25 5 25 15 5 15 truck 0\n")

    def dataset(kind: str, classes: list[str]):
        return build_dataset(dict(type=kind, ann_file=str(ann) + "/", img_prefix=str(tmp_path) + "/", pipeline=[],
                                  classes=classes, version="oc", difficulty=100))  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="rotld_cli"):
        ours = dataset("RotldDOTADataset", ["car", "truck"])
    assert ours.outside == {"tank": 2}
    assert "2 object(s) of classes outside data.classes left out: tank (2, e.g." in caplog.text
    by_name = {info["filename"]: info["ann"] for info in ours.data_infos}
    assert sorted(by_name) == ["a.png", "c.png"]  # b has no object of the list: dropped like an empty image
    assert by_name["a.png"]["labels"].tolist() == [0, 0] and by_name["c.png"]["labels"].tolist() == [1]
    assert by_name["a.png"]["polygons"].tolist() == [[0, 0, 20, 0, 20, 10, 0, 10], [40, 0, 60, 0, 60, 8, 40, 8]]
    assert len(by_name["a.png"]["bboxes"]) == 2
    with pytest.raises(KeyError, match="tank"):  # MMRotate's own dataset: the bare KeyError of issue #587
        dataset("DOTADataset", ["car", "truck"])
    write(ann / "a.txt", "0 0 20 0 20 10 0 10 car 0\n40 0 60 0 60 8 40 8 car 1\n")
    write(ann / "b.txt", "1 1 9 1 9 9 1 9 truck 0\n")
    mine, theirs = dataset("RotldDOTADataset", ["car", "truck"]), dataset("DOTADataset", ["car", "truck"])
    assert mine.outside == {}
    for a, b in zip(mine.data_infos, theirs.data_infos):  # without other classes: MMRotate's loader, unchanged
        assert a["filename"] == b["filename"]
        for key in ("bboxes", "labels", "polygons"):
            np.testing.assert_array_equal(a["ann"][key], b["ann"][key])
